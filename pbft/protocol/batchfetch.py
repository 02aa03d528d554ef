"""Serving the batches a NEW-VIEW names by digest only (OSDI'99 4.4).

A NEW-VIEW re-issues each prepared slot by its digest; the requests themselves are not in
it (messages.py: a certificate's pre-prepare goes without its batch). A replica that
never received a batch asks the others for it (FETCH-BATCH) and takes the first answer
whose digest matches (BATCH). Since a slot is re-issued only for a digest that 2f+1
replicas prepared, at least f+1 correct replicas hold the batch, in the slot or in their
prepared certificate, until a stable checkpoint covers it; past that point the asker is
behind a stable checkpoint and catches up by state transfer instead.

Where the batches are kept (`HeldBatches`): a correct replica keeps every batch it
accepted in a pre-prepare, by sequence number and digest, until a stable checkpoint covers
the slot, whatever views come and go (the paper's replicas keep the requests they
accepted in their log). Keeping it only in the slot of the current view and in our own
prepared certificate was not enough: a replica that accepted a pre-prepare but did not
prepare it dropped the batch at the next NEW-VIEW, and a later NEW-VIEW could re-issue
it from a certificate of a replica that then crashed, leaving a committed slot no live
replica could execute (found by review: tests/scenarios/lost-batch-crash.toml). At most
DIGESTS_PER_SLOT batches are kept per slot, the latest accepted.

An answer is large and the question small, so `BatchAnswers` sends each (asker, seq) at
most once per retransmission period and at most ANSWERS_PER_PERIOD batches to one asker
per period; what it remembers is dropped at each stable checkpoint and pruned to one
period, so it stays within n x L entries.
"""

from __future__ import annotations

from .bounds import Bound, check

DIGESTS_PER_SLOT = 4
"""Batches kept per sequence number: the latest accepted (each view's primary proposes at
most one per slot that a correct replica accepts; a NEW-VIEW re-issues the digest of the
highest-view certificate, which is among the latest)."""

ANSWERS_PER_PERIOD = 16
"""BATCH answers one asker gets per retransmission period (a batch is up to 4 MiB)."""


class HeldBatches:
    def __init__(self, window: int) -> None:
        self.window = window
        self.by_seq: dict[int, dict[bytes, tuple[bytes, ...]]] = {}

    def keep(self, seq: int, digest: bytes, batch: tuple[bytes, ...]) -> None:
        held = self.by_seq.setdefault(seq, {})
        held.pop(digest, None)
        held[digest] = batch  # the latest last
        while len(held) > DIGESTS_PER_SLOT:
            del held[next(iter(held))]

    def get(self, seq: int, digest: bytes) -> tuple[bytes, ...] | None:
        return self.by_seq.get(seq, {}).get(digest)

    def collect(self, stable: int) -> None:
        """A stable checkpoint at `stable` covers every slot at or below it."""
        for seq in [s for s in self.by_seq if s <= stable]:
            del self.by_seq[seq]

    def bounds(self) -> list[Bound]:
        kept = sum(map(len, self.by_seq.values()))
        return [("held-batches", kept, self.window * DIGESTS_PER_SLOT, "batches")]


class BatchAnswers:
    def __init__(self, period: int, replicas: int, window: int) -> None:
        self.period = period
        self.limit = replicas * window
        self.sent: dict[tuple[int, int], int] = {}  # (asker, seq) -> tick
        self.budget: dict[int, tuple[int, int]] = {}  # asker -> (period start, answers)

    def too_soon(self, asker: int, seq: int, now: int) -> bool:
        """Whether (asker, seq) was answered within a period, or the asker had its
        ANSWERS_PER_PERIOD answers this period."""
        last = self.sent.get((asker, seq))
        if last is not None and now - last < self.period:
            return True
        start, count = self.budget.get(asker, (now, 0))
        return now - start < self.period and count >= ANSWERS_PER_PERIOD

    def answered(self, asker: int, seq: int, now: int) -> None:
        self.sent[(asker, seq)] = now
        start, count = self.budget.get(asker, (now, 0))
        self.budget[asker] = (start, count + 1) if now - start < self.period else (now, 1)
        if len(self.sent) > self.limit:
            self.sent = {k: t for k, t in self.sent.items() if now - t < self.period}

    def collect(self, stable: int) -> None:
        self.sent = {k: t for k, t in self.sent.items() if k[1] > stable}

    def bounds(self) -> list[Bound]:
        return [("batch-answers", len(self.sent), self.limit, "entries")]

    def invariants(self) -> None:
        check(self.bounds())
