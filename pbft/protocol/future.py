"""Messages of views to come, kept until their view is installed (OSDI'99 4.4).

Theory of operation. While a replica waits for the NEW-VIEW of view v (or has not yet
heard of a view the others already entered), the new primary's PRE-PREPAREs and the
PREPAREs and COMMITs of view v may arrive first; they are not retransmitted soon, so
they are kept and replayed once the view is installed (`Replica.become_normal`).

Bounded per *signer* (not per channel, where every client identity had a budget of its
own) in count and bytes, and in total bytes; and only once the signature holds, so nobody
fills another replica's budget. One Byzantine replica parked 784 x 16 MiB PRE-PREPAREs in
a correct one before (issue 13, item 6). What does not fit is dropped: the sender
retransmits once we are in its view.
"""

from __future__ import annotations

from collections import Counter, deque

from .bounds import Bound, check
from .config import ClusterConfig
from .events import Ignored, Reason
from .messages import Signer

FUTURE_SIGNER_BYTES = 16 * 1024 * 1024
"""Bytes of future-view messages kept per signer (one largest frame); in total, f+2 times
that, so f Byzantine replicas filling theirs leave room for the correct ones."""


class FutureViews:
    def __init__(self, config: ClusterConfig) -> None:
        self.messages: deque[tuple[Signer | None, bytes]] = deque()  # (channel, bytes)
        self.count: Counter[int] = Counter()  # per signer
        self.bytes: Counter[int] = Counter()  # per signer
        self.total = 0
        self.seen: set[bytes] = set()
        # Enough for one view's traffic per signer.
        self.per_signer = 3 * config.log_window + 4 * config.n
        self.total_limit = (config.f + 2) * FUTURE_SIGNER_BYTES
        self.signers = config.n

    def ignore(self, view: int, current: int, signer: int, data: bytes, what: str) -> Ignored | None:
        """Why a replica's message for `view`, not our active view `current`, is not kept
        here: an old view, one too far ahead, no room for its signer, or a copy."""
        if view < current:
            return Reason.WRONG_VIEW, f"{what} for old view {view}"
        if view > current + self.signers:
            return Reason.OUT_OF_WINDOW, f"{what} for far-future view {view}"
        if self.full(signer, len(data)):
            return Reason.OVERLOAD, f"future-view buffer full for replica {signer}"
        if data in self.seen:
            return Reason.DUPLICATE, None  # a copy must not fill the budget
        return None

    def full(self, signer: int, size: int) -> bool:
        """`size` more bytes from `signer` would exceed one of the bounds."""
        return (
            self.count[signer] >= self.per_signer
            or self.bytes[signer] + size > FUTURE_SIGNER_BYTES
            or self.total + size > self.total_limit
        )

    def add(self, peer: Signer | None, signer: int, data: bytes) -> None:
        self.messages.append((peer, data))
        self.seen.add(data)
        self.count[signer] += 1
        self.bytes[signer] += len(data)
        self.total += len(data)

    def take(self) -> deque[tuple[Signer | None, bytes]]:
        """Everything kept, in arrival order; the buffer is empty afterwards."""
        taken, self.messages = self.messages, deque()
        self.count.clear()
        self.bytes.clear()
        self.seen.clear()
        self.total = 0
        return taken

    def bounds(self) -> list[Bound]:
        held = self.signers * self.per_signer
        return [
            ("_future", len(self.messages), held),
            ("_future_seen", len(self.seen), held),
            ("_future (signers)", len(self.count), self.signers),
            ("_future (one signer)", max(self.count.values()) if self.count else 0, self.per_signer),
            ("_future (one signer's bytes)", max(self.bytes.values()) if self.bytes else 0, FUTURE_SIGNER_BYTES),
            ("_future (total bytes)", self.total, self.total_limit),
        ]

    def invariants(self) -> None:
        check(self.bounds())
