"""The replicated state as partitioned entries with copy-on-write checkpoints (TOCS 5.3).

Theory of operation. A service keeps its whole state in a `Store`: byte keys to byte
values. The store files every key under its leaf partition (`partition.bucket_of`) and
keeps the partition tree's digests (`PartitionTree`) up to date at each checkpoint, so a
checkpoint costs the writes since the previous one.

A checkpoint's state must stay readable after execution moves on: a lagging replica
fetches it, partition by partition, while we keep executing (section 5.3.1). We do that
the way the paper does, by copy on write at partition granularity: the first write to a
bucket after checkpoint c saves the bucket's contents as they were (`saved[c][bucket]`).
The contents of bucket b at a kept checkpoint c are then the copy saved under the first
kept checkpoint c' >= c that saved b (no write touched b between c and c', or it would
have been saved earlier), or the current contents if b was not written since c. Memory
for this is bounded by the buckets written while checkpoints are kept, not by the state.

`MemoryStore` keeps the entries in memory: the simulator's and the tests' store, and the
reference the durable store (in the replica process) must agree with.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Protocol

from .partition import DEPTH, FANOUT, PartitionTree, bucket_of

Entries = list[tuple[bytes, bytes]]


class Store(Protocol):
    """What the core and a service see of the state."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> bool: ...

    def scan(self, start: bytes, end: bytes | None, limit: int) -> Entries:
        """Entries with start <= key < end (no upper bound for None), in key order, at
        most `limit`."""
        ...

    def digest(self) -> bytes:
        """The digest of the current state."""
        ...

    def checkpoint(self, seq: int) -> bytes:
        """Keep the current state as checkpoint `seq`; its digest."""
        ...

    def release(self, below: int) -> None:
        """Forget the checkpoints below `below` (they are no longer served)."""
        ...

    def children_at(self, seq: int, level: int, index: int) -> tuple[bytes, ...] | None: ...

    def bucket_at(self, seq: int, bucket: int) -> Entries | None: ...

    def digest_at(self, seq: int) -> bytes | None: ...

    def tree_now(self) -> PartitionTree:
        """A copy of the current state's partition tree, refreshed (what a fetcher
        compares a checkpoint's tree with)."""
        ...

    def rollback(self, seq: int) -> None: ...

    def install_bucket(self, bucket: int, entries: Entries) -> None: ...

    def clear(self) -> None:
        """Forget every entry and every kept checkpoint (a store started over)."""
        ...

    @property
    def kept(self) -> list[int]: ...


class Namespace:
    """The part of a store under one key prefix, seen as a store of its own (get, put,
    delete, scan; keys without the prefix). The replica keeps the service's entries
    under one prefix and its reply cache under another, in one store, so that one tree
    digests, checkpoints and transfers both (exactly-once survives a state transfer,
    OSDI'99 4.1)."""

    __slots__ = ("_store", "_prefix", "_end")

    def __init__(self, store: Store, prefix: bytes) -> None:
        self._store = store
        self._prefix = prefix
        self._end = prefix[:-1] + bytes([prefix[-1] + 1])  # the first key past the prefix

    def get(self, key: bytes) -> bytes | None:
        return self._store.get(self._prefix + key)

    def put(self, key: bytes, value: bytes) -> None:
        self._store.put(self._prefix + key, value)

    def delete(self, key: bytes) -> bool:
        return self._store.delete(self._prefix + key)

    def scan(self, start: bytes, end: bytes | None, limit: int) -> Entries:
        n = len(self._prefix)
        stop = self._end if end is None else self._prefix + end
        return [(k[n:], v) for k, v in self._store.scan(self._prefix + start, stop, limit)]


class MemoryStore:
    def __init__(self) -> None:
        self.buckets: dict[int, dict[bytes, bytes]] = {}
        self.keys: dict[bytes, None] = {}  # every key, O(1) to add and remove
        self._sorted: list[bytes] | None = []  # `keys` in order, for scans; None: rebuild
        self.tree = PartitionTree()
        self.kept: list[int] = []  # checkpoints still served, ascending
        self.trees: dict[int, PartitionTree] = {}
        self.saved: dict[int, dict[int, dict[bytes, bytes]]] = {}

    # -- the service's view ---------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        b = self.buckets.get(bucket_of(key))
        return None if b is None else b.get(key)

    def _writable(self, key: bytes) -> dict[bytes, bytes]:
        bucket = bucket_of(key)
        current = self.buckets.get(bucket)
        if self.kept:
            saved = self.saved[self.kept[-1]]
            if bucket not in saved:
                saved[bucket] = dict(current) if current else {}
        self.tree.touch(bucket)
        if current is None:
            current = self.buckets[bucket] = {}
        return current

    def put(self, key: bytes, value: bytes) -> None:
        bucket = self._writable(key)
        if key not in bucket:
            self.keys[key] = None
            self._sorted = None
        bucket[key] = value

    def delete(self, key: bytes) -> bool:
        if self.get(key) is None:
            return False
        del self._writable(key)[key]
        del self.keys[key]
        self._sorted = None
        return True

    def scan(self, start: bytes, end: bytes | None, limit: int) -> Entries:
        out: Entries = []
        for key in self._range(start, end):
            if len(out) >= limit:
                break
            out.append((key, self.get(key)))  # type: ignore[arg-type]
        return out

    def _range(self, start: bytes, end: bytes | None) -> Iterator[bytes]:
        # Sorted on demand: a write is O(1) (an ordered index kept on every insert costs a
        # memmove of the whole index: 11 us per new key at 200k keys, growing), and a scan
        # after writes pays one sort. Scans are rare next to writes.
        if self._sorted is None:
            self._sorted = sorted(self.keys)
        keys = self._sorted
        i = bisect_left(keys, start)
        while i < len(keys) and (end is None or keys[i] < end):
            yield keys[i]
            i += 1

    def __len__(self) -> int:
        return len(self.keys)

    # -- checkpoints ------------------------------------------------------------------------

    def digest(self) -> bytes:
        """The digest of the current state (refreshes the tree)."""
        return self.tree.refresh(self._entries)

    def _entries(self, bucket: int) -> Entries:
        return list(self.buckets.get(bucket, {}).items())

    def checkpoint(self, seq: int) -> bytes:
        root = self.digest()
        if self.kept and seq <= self.kept[-1]:
            raise ValueError(f"checkpoint {seq} is not after {self.kept[-1]}")
        self.kept.append(seq)
        self.trees[seq] = self.tree.copy()
        self.saved[seq] = {}
        return root

    def release(self, below: int) -> None:
        while self.kept and self.kept[0] < below:
            seq = self.kept.pop(0)
            del self.trees[seq], self.saved[seq]

    def digest_at(self, seq: int) -> bytes | None:
        tree = self.trees.get(seq)
        return None if tree is None else tree.root

    def children_at(self, seq: int, level: int, index: int) -> tuple[bytes, ...] | None:
        """The digests under node (`level`, `index`) of checkpoint `seq`'s tree (level
        DEPTH is the root), or None if `seq` is not kept or the node does not exist."""
        tree = self.trees.get(seq)
        if tree is None or not 1 <= level <= DEPTH:
            return None
        if not 0 <= index < FANOUT ** (DEPTH - level):
            return None
        return tree.children(level, index)

    def bucket_at(self, seq: int, bucket: int) -> Entries | None:
        """Bucket `bucket`'s entries at kept checkpoint `seq`, in key order."""
        if seq not in self.trees or not 0 <= bucket < len(self.tree.levels[0]):
            return None
        for c in self.kept[bisect_left(self.kept, seq):]:
            saved = self.saved[c].get(bucket)
            if saved is not None:
                return sorted(saved.items())
        return sorted(self.buckets.get(bucket, {}).items())

    def tree_now(self) -> PartitionTree:
        self.digest()
        return self.tree.copy()

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def rollback(self, seq: int) -> None:
        """Put the state back as it was at kept checkpoint `seq` and forget the later
        ones: each bucket written since gets its earliest copy saved at or after `seq`
        (what a restarted replica does before replaying the batches it executed after
        its stable checkpoint). Costs the buckets written since `seq`."""
        if seq not in self.trees:
            raise ValueError(f"checkpoint {seq} is not kept")
        restored: set[int] = set()
        for c in self.kept[bisect_left(self.kept, seq):]:
            for bucket, entries in self.saved[c].items():
                if bucket in restored:
                    continue
                restored.add(bucket)
                for key in list(self.buckets.get(bucket, {})):
                    del self.keys[key]
                for key in entries:
                    self.keys[key] = None
                self._sorted = None
                self.buckets[bucket] = dict(entries)
        for c in self.kept[bisect_left(self.kept, seq) + 1:]:
            del self.trees[c], self.saved[c]
        self.kept = self.kept[: bisect_left(self.kept, seq) + 1]
        self.saved[seq] = {}
        self.tree = self.trees[seq].copy()

    def install_bucket(self, bucket: int, entries: Entries) -> None:
        """Replace one bucket's contents (state transfer, after `check_leaf`)."""
        old = self.buckets.get(bucket, {})
        for key in list(old):
            self.delete(key)
        for key, value in entries:
            self.put(key, value)
