"""The default replicated service: a deterministic key-value store.

Operations and results are canonical CBOR so every replica produces byte-identical
results (clients compare f+1 replies byte for byte):

    ["put", key, value] -> true          ["get", key] -> value or null
    ["delete", key]     -> existed       anything else -> {"error": text}
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from ..protocol import codec
from ..protocol.store import Store
from .api import MAX_KEY, MAX_VALUE, Hosted
from .kvservice import KeyValue

__all__ = ["MAX_KEY", "MAX_VALUE", "KeyValueStore", "op_put", "op_get", "op_delete", "is_read_only"]


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


class StoreMapping(MutableMapping[bytes, bytes]):
    """A store seen as a dict of bytes to bytes (tests and tools read and set entries
    through it; the replica goes through the service)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getitem__(self, key: bytes) -> bytes:
        value = self._store.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._store.put(key, value)

    def __delitem__(self, key: bytes) -> None:
        if not self._store.delete(key):
            raise KeyError(key)

    def __iter__(self) -> Iterator[bytes]:
        return iter([k for k, _ in self._store.scan(b"", None, 1 << 62)])

    def __len__(self) -> int:
        return len(self._store.scan(b"", None, 1 << 62))


class KeyValueStore(Hosted):
    """The key-value service (`pbft.service.kvservice.KeyValue`) on a store of its own:
    the replicated service a replica runs unless told otherwise. `data` is its state as a
    mapping."""

    def __init__(self, store: Store | None = None) -> None:
        super().__init__(KeyValue(), store)

    @property
    def data(self) -> StoreMapping:
        return StoreMapping(self.store)
