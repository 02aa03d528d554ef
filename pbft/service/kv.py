"""The default replicated service: a deterministic key-value store.

Operations and results are canonical CBOR so every replica produces byte-identical
results (clients compare f+1 replies byte for byte):

    ["put", key, value] -> true          ["get", key] -> value or null
    ["delete", key]     -> existed       anything else -> {"error": text}
"""

from __future__ import annotations

import hashlib

from ..protocol import codec

MAX_KEY = 1024
MAX_VALUE = 60 * 1024


def op_put(key: bytes, value: bytes) -> bytes:
    return codec.encode(["put", key, value])


def op_get(key: bytes) -> bytes:
    return codec.encode(["get", key])


def op_delete(key: bytes) -> bytes:
    return codec.encode(["delete", key])


def is_read_only(operation: bytes) -> bool:
    try:
        op = codec.decode(operation)
    except codec.CodecError:
        return False
    return isinstance(op, list) and len(op) == 2 and op[0] == "get"


def decode_result(result: bytes) -> object:
    return codec.decode(result)


def _error(text: str) -> bytes:
    return codec.encode({"error": text})


class KeyValueStore:
    """An in-memory dict of bytes to bytes implementing `StateMachine`."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def _parse(self, operation: bytes) -> list | bytes:
        try:
            op = codec.decode(operation)
        except codec.CodecError as exc:
            return _error(f"operation is not canonical CBOR: {exc}")
        if not isinstance(op, list) or not op or not isinstance(op[0], str):
            return _error("operation must be [name, args...]")
        if not all(isinstance(a, bytes) for a in op[1:]):
            return _error("operation arguments must be byte strings")
        if op[1:] and len(op[1]) > MAX_KEY:
            return _error(f"key longer than {MAX_KEY} bytes")
        return op

    def execute(self, operation: bytes, client: str) -> bytes:
        op = self._parse(operation)
        if isinstance(op, bytes):
            return op
        match op:
            case ["put", key, value]:
                if len(value) > MAX_VALUE:
                    return _error(f"value longer than {MAX_VALUE} bytes")
                self.data[key] = value
                return codec.encode(True)
            case ["get", key]:
                return codec.encode(self.data.get(key))
            case ["delete", key]:
                return codec.encode(self.data.pop(key, None) is not None)
        return _error(f"unknown operation {op[0]!r} with {len(op) - 1} arguments")

    def query(self, operation: bytes, client: str) -> bytes | None:
        op = self._parse(operation)
        if isinstance(op, list) and len(op) == 2 and op[0] == "get":
            return codec.encode(self.data.get(op[1]))
        return None

    def snapshot(self) -> bytes:
        return codec.encode(sorted([k, v] for k, v in self.data.items()))

    def restore(self, snapshot: bytes) -> None:
        try:
            items = codec.decode(snapshot)
        except codec.CodecError as exc:
            raise ValueError(f"unreadable snapshot: {exc}") from None
        if not isinstance(items, list) or not all(
            isinstance(i, list) and len(i) == 2 and all(isinstance(x, bytes) for x in i)
            for i in items
        ):
            raise ValueError("snapshot is not a list of [key, value] pairs")
        self.data = {k: v for k, v in items}

    def digest(self) -> bytes:
        return hashlib.sha256(self.snapshot()).digest()
