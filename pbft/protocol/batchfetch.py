"""Serving the batches a NEW-VIEW names by digest only (OSDI'99 4.4).

A NEW-VIEW re-issues each prepared slot by its digest; the requests themselves are not in
it (messages.py: a certificate's pre-prepare goes without its batch). A replica that
never received a batch asks the others for it (FETCH-BATCH) and takes the first answer
whose digest matches (BATCH). Since a slot is re-issued only for a digest that 2f+1
replicas prepared, at least f+1 correct replicas hold the batch, in the slot or in their
prepared certificate, until a stable checkpoint covers it; past that point the asker is
behind a stable checkpoint and catches up by state transfer instead.

An answer is large and the question small, so `BatchAnswers` sends each (asker, seq) at
most once per retransmission period; what it remembers is pruned to one period, so it
never holds more than n x L entries.
"""

from __future__ import annotations

from .bounds import Bound, check


class BatchAnswers:
    def __init__(self, period: int, replicas: int, window: int) -> None:
        self.period = period
        self.limit = replicas * window
        self.sent: dict[tuple[int, int], int] = {}  # (asker, seq) -> tick

    def too_soon(self, asker: int, seq: int, now: int) -> bool:
        last = self.sent.get((asker, seq))
        return last is not None and now - last < self.period

    def answered(self, asker: int, seq: int, now: int) -> None:
        self.sent[(asker, seq)] = now
        if len(self.sent) > self.limit:
            self.sent = {k: t for k, t in self.sent.items() if now - t < self.period}

    def bounds(self) -> list[Bound]:
        return [("batch-answers", len(self.sent), self.limit, "entries")]

    def invariants(self) -> None:
        check(self.bounds())
