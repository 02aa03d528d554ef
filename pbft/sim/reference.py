"""The oracle's reference instance of the replicated service: the agreed order replayed
on a fresh instance of the same class, remembering every state it went through, so that
a read-only result can be judged against the states between two sequence numbers
(linearizability of reads, OSDI'99 5.1.3) for any service, not only the key-value store.

`VersionedStore` keeps, for every key ever written, the value it held after each
sequence number that wrote it (setup's writes at seq 0). Reads at an earlier seq look the
history up; sizes are those of a simulated run, so nothing is ever forgotten.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from ..protocol.store import Entries, MemoryStore
from ..service.api import Hosted, Service


class VersionedStore(MemoryStore):
    """A MemoryStore that remembers each key's values by the seq that wrote them."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = 0
        """The sequence number being executed (the writer sets it)."""
        self.history: dict[bytes, tuple[list[int], list[bytes | None]]] = {}
        self.write_seqs: list[int] = []
        """Every seq that wrote something, ascending."""

    def _note(self, key: bytes, value: bytes | None) -> None:
        seqs, values = self.history.setdefault(key, ([], []))
        if seqs and seqs[-1] == self.seq:
            values[-1] = value
        else:
            seqs.append(self.seq)
            values.append(value)
        if not self.write_seqs or self.write_seqs[-1] != self.seq:
            self.write_seqs.append(self.seq)

    def put(self, key: bytes, value: bytes) -> None:
        super().put(key, value)
        self._note(key, value)

    def delete(self, key: bytes) -> bool:
        existed = super().delete(key)
        if existed:
            self._note(key, None)
        return existed

    def at(self, seq: int) -> StoreAt:
        return StoreAt(self, seq)


class StoreAt:
    """The state of a VersionedStore as it was after `seq` (reads only)."""

    def __init__(self, store: VersionedStore, seq: int) -> None:
        self.store, self.seq = store, seq

    def get(self, key: bytes) -> bytes | None:
        h = self.store.history.get(key)
        if h is None:
            return None
        i = bisect_right(h[0], self.seq)
        return h[1][i - 1] if i else None

    def scan(self, start: bytes, end: bytes | None, limit: int) -> Entries:
        out: Entries = []
        for key in sorted(k for k in self.store.history if k >= start and (end is None or k < end)):
            if len(out) >= limit:
                break
            value = self.get(key)
            if value is not None:
                out.append((key, value))
        return out


class Reference:
    """One instance of the service, fed the agreed order (`execute` with its seq), and
    asked read-only operations at any seq it went through (`query_at`)."""

    def __init__(self, service: Service) -> None:
        self.store = VersionedStore()
        self.hosted = Hosted(service, self.store)

    def execute(self, seq: int, operation: bytes, client: str) -> bytes:
        self.store.seq = seq
        return self.hosted.execute(operation, client)

    def query_at(self, seq: int, operation: bytes, client: str) -> bytes | None:
        return self.hosted.query_on(self.store.at(seq), operation, client)

    def reads_between(self, lower: int, upper: int) -> list[int]:
        """The seqs whose states a read issued after `lower` and answered by `upper` may
        have seen: `lower` itself and every later seq up to `upper` that wrote."""
        w = self.store.write_seqs
        return [lower] + w[bisect_right(w, lower): bisect_right(w, upper)]

    def snapshot(self) -> bytes:
        return self.hosted.snapshot()


def same_state(service: Any, reference_snapshot: bytes) -> bool | None:
    """Whether a replica's service holds the reference's state (None: it cannot say)."""
    snapshot = getattr(service, "snapshot", None)
    return None if snapshot is None else snapshot() == reference_snapshot
