"""Quorums counted in one place (OSDI'99 4.2-4.3; TOCS 2002 2.3).

Theory of operation. Every certificate in PBFT is "k messages from distinct replicas that
agree on one value": 2f PREPAREs matching a pre-prepare's digest, 2f+1 COMMITs, 2f+1
CHECKPOINTs for one state digest, f+1 (or 2f+1 for a read) matching replies at a client.
A `VoteSet` holds one vote per signer, signer -> (value, signed bytes), so counting
distinct signers is counting entries; a second vote of the same signer never counts:

* `add` keeps the first vote of a signer and says whether a later one repeated it
  (DUPLICATE, a retransmission) or contradicted it (CONFLICT: the caller keeps the pair
  as evidence, both were signed by the same replica).
* `reached(value, k)` is true exactly once, the first time k votes match `value`: the
  transition a certificate makes (prepared, committed-local, stable) happens once.
* `proof(value, k)` is the certificate itself: k matching signed messages, in a
  canonical order (sorted bytes) so that every replica that builds it sends the same.

It is a dict (signer -> (value, data)) so that reading votes costs what it did before:
a VoteSet per slot and phase is the only allocation, never one per vote.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class Added(Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"  # the same value again from the same signer
    CONFLICT = "conflict"  # another value from a signer that already voted


class VoteSet(dict):
    """One vote per signer: signer -> (value, signed bytes)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        super().__init__()
        self.done = False  # `reached` has been true once

    def add(self, signer: Any, value: bytes, data: bytes) -> Added:
        prior = self.get(signer)
        if prior is None:
            self[signer] = (value, data)
            return Added.ADDED
        return Added.DUPLICATE if prior[0] == value else Added.CONFLICT

    def count(self, value: bytes | None) -> int:
        """Distinct signers that voted `value`."""
        return sum(1 for v, _ in self.values() if v == value)

    def reached(self, value: bytes | None, k: int) -> bool:
        """True exactly once: the first call at which k signers voted `value`."""
        if self.done or self.count(value) < k:
            return False
        self.done = True
        return True

    def quorum_value(self, k: int) -> bytes | None:
        """The first value (in the order values were first voted) with k votes, if any."""
        counts: dict[bytes, int] = {}
        for v, _ in self.values():
            counts[v] = counts.get(v, 0) + 1
        return next((v for v, c in counts.items() if c >= k), None)

    def proof(self, value: bytes | None, k: int) -> tuple[bytes, ...]:
        """Up to k signed messages for `value`, sorted (the same certificate everywhere)."""
        return tuple(sorted(d for v, d in self.values() if v == value)[:k])
