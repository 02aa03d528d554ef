"""The key-value store as a `Service` (pbft/service/api.py), with what users of a
replicated store expect: paged range and prefix scans, compare-and-set and an atomic
multi-key write.

Operations and results are canonical CBOR (clients compare f+1 replies byte for byte):

    ["put", key, value]            -> true
    ["get", key]                   -> value or null                  (read-only)
    ["delete", key]                -> whether it existed
    ["cas", key, expected, new]    -> true if the key held `expected` (null: absent) and
                                      now holds `new` (null: delete it); else
                                      ["conflict", current value or null]
    ["mput", [[key, value or null], ...]] -> true: every write, or none (at most
                                      MAX_MULTI pairs; null deletes)
    ["scan", start, end or null, limit] -> [[key, value], ...] in key order, start <= key
                                      < end, at most `limit` (MAX_SCAN); to page on, scan
                                      again from the last key + b"\\0"   (read-only)
    ["list", prefix, after, limit] -> the same for keys starting with `prefix` and
                                      greater than `after` (b"" for the first page)
                                                                     (read-only)
    anything else                  -> {"error": text}

Keys and values are byte strings within MAX_KEY and MAX_VALUE; a request as a whole is
still bounded by the protocol's request size.
"""

from __future__ import annotations

from typing import Any

from ..protocol import codec
from .api import MAX_KEY, MAX_SCAN, MAX_VALUE, Service, State, error_result

MAX_MULTI = 256
"""Most pairs in one `mput`."""

READ_ONLY = frozenset({"get", "scan", "list"})


def prefix_end(prefix: bytes) -> bytes | None:
    """The least key greater than every key starting with `prefix` (None: no bound)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


class KeyValue(Service):
    name = "pbft.kv"
    version = "2"

    def execute(self, state: State, operation: bytes, client: str) -> bytes:
        op = _parse(operation)
        if isinstance(op, bytes):
            return op
        if op[0] in _CLASSIC and (why := _classic_error(op)) is not None:
            return why
        match op:
            case ["put", bytes() as key, bytes() as value]:
                state.put(key, value)
                return codec.encode(True)
            case ["delete", bytes() as key]:
                return codec.encode(state.delete(key))
            case ["cas", bytes() as key, (bytes() | None) as expected, (bytes() | None) as new]:
                current = state.get(key)
                if current != expected:
                    return codec.encode(["conflict", current])
                if new is None:
                    state.delete(key)
                else:
                    state.put(key, new)
                return codec.encode(True)
            case ["mput", list() as pairs]:
                if len(pairs) > MAX_MULTI:
                    return error_result(f"mput of more than {MAX_MULTI} pairs")
                if not all(_pair(p) for p in pairs):
                    return error_result("mput takes [[key, value or null], ...]")
                for key, value in pairs:
                    if value is None:
                        state.delete(key)
                    else:
                        state.put(key, value)  # a bad one raises: nothing is written
                return codec.encode(True)
        if op[0] in READ_ONLY:
            return self._read(state, op)
        return error_result(f"unknown operation {op[0]!r} with {len(op) - 1} arguments")

    def query(self, state: State, operation: bytes, client: str) -> bytes | None:
        op = _parse(operation)
        if isinstance(op, bytes) or op[0] not in READ_ONLY:
            return None
        if op[0] in _CLASSIC and _classic_error(op) is not None:
            return None  # ordered, and answered with the error by execute
        return self._read(state, op)

    def _read(self, state: State, op: list) -> bytes:
        match op:
            case ["get", bytes() as key]:
                return codec.encode(state.get(key))
            case ["scan", bytes() as start, (bytes() | None) as end, int() as limit] if type(limit) is int and 0 <= limit:
                return codec.encode([[k, v] for k, v in state.scan(start, end, min(limit, MAX_SCAN))])
            case ["list", bytes() as prefix, bytes() as after, int() as limit] if type(limit) is int and 0 <= limit:
                start = max(prefix, after + b"\0") if after else prefix
                entries = state.scan(start, prefix_end(prefix), min(limit, MAX_SCAN))
                return codec.encode([[k, v] for k, v in entries])
        return error_result(f"bad arguments to {op[0]!r}")


_ARITY = {"put": 3, "get": 2, "delete": 2}
"""Items of each classic operation, its name included."""

_CLASSIC = frozenset(_ARITY)
"""The first operations, whose malformed forms keep the error results they always had
(clients and recorded histories compare results byte for byte)."""


def _classic_error(op: list) -> bytes | None:
    # Plain loops and a module constant: this runs once per operation on every replica.
    for a in op[1:]:
        if not isinstance(a, bytes):
            return error_result("operation arguments must be byte strings")
    n = len(op)
    if n > 1 and len(op[1]) > MAX_KEY:
        return error_result(f"key longer than {MAX_KEY} bytes")
    if n == 3 and op[0] == "put" and len(op[2]) > MAX_VALUE:
        return error_result(f"value longer than {MAX_VALUE} bytes")
    if n != _ARITY[op[0]]:
        return error_result(f"unknown operation {op[0]!r} with {n - 1} arguments")
    return None


def _pair(p: Any) -> bool:
    return isinstance(p, list) and len(p) == 2 and isinstance(p[0], bytes) and isinstance(p[1], bytes | None)


def _parse(operation: bytes) -> list | bytes:
    try:
        op = codec.decode(operation)
    except codec.CodecError as exc:
        return error_result(f"operation is not canonical CBOR: {exc}")
    if not isinstance(op, list) or not op or not isinstance(op[0], str):
        return error_result("operation must be [name, args...]")
    return op
