"""Evidence: two conflicting messages one replica signed, reported once (OSDI'99 4.2, 4.4).

Theory of operation. Every protocol message is signed, so two messages one replica
signed for the same slot and phase with different digests (two PRE-PREPAREs for one
(v, n), two PREPAREs or COMMITs, two CHECKPOINTs for one n, or a pre-prepare in a
prepared certificate that contradicts the one we accepted) convince any third party that
the replica is faulty (docs/attacks.md `equivocate`). The replica reports such a pair as
an `Evidence` action. Retransmissions repeat the same pair, so each is reported once:
the digests of the pairs reported are remembered, at most EVIDENCE_MEMORY of them, and
forgetting them all when full only means reporting one again.
"""

from __future__ import annotations

from . import codec
from .bounds import Bound, check
from .crypto import digest

EVIDENCE_MEMORY = 4096
"""Evidence pairs remembered to report each once; forgetting only means repeating one."""


class EvidenceMemory:
    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    def first_time(self, culprit: int, kind: str, first: bytes, second: bytes) -> bool:
        """True (and remembered) the first time this pair is reported."""
        key = digest(codec.encode([culprit, kind, first, second]))
        if key in self.seen:
            return False
        if len(self.seen) >= EVIDENCE_MEMORY:
            self.seen.clear()
        self.seen.add(key)
        return True

    def bounds(self) -> list[Bound]:
        return [("evidence", len(self.seen), EVIDENCE_MEMORY)]

    def invariants(self) -> None:
        check(self.bounds())
