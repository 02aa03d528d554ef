"""The message log: one slot per sequence number within the water marks (OSDI'99 4.2-4.3).

A replica accepts protocol messages for sequence numbers n with h < n <= h + L only, where
h is the last stable checkpoint and L the log window. Slots are created on demand inside
that window and discarded when a checkpoint at or above them becomes stable, so the log
never holds more than L slots, each with at most one vote per replica and phase: memory
is bounded however long the cluster runs and whatever peers send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import PrePrepare, Request
from .quorum import VoteSet


@dataclass(slots=True)
class Slot:
    seq: int
    view: int
    pre_prepare: PrePrepare | None = None
    pre_prepare_env: bytes = b""
    requests: tuple[tuple[Request, bytes], ...] = ()
    # Votes of this slot's view, one per authenticated signer: signer -> (digest, envelope).
    # Each certificate is complete once its VoteSet has `reached` its quorum.
    prepares: VoteSet = field(default_factory=VoteSet)
    commits: VoteSet = field(default_factory=VoteSet)
    # Votes that only added to a complete certificate, kept unverified: signer ->
    # (digest, envelope). Checked only if that signer later votes another digest
    # (evidence); never counted, never sent on.
    surplus_prepares: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    surplus_commits: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    my_prepare: bytes = b""
    my_commit: bytes = b""

    @property
    def digest(self) -> bytes | None:
        return self.pre_prepare.digest if self.pre_prepare else None

    @property
    def prepared(self) -> bool:
        """prepared(m, v, n, i): the pre-prepare and 2f matching PREPAREs (4.2)."""
        return self.prepares.done

    @property
    def committed(self) -> bool:
        """committed-local(m, v, n, i): prepared and 2f+1 matching COMMITs (4.2)."""
        return self.commits.done


class MessageLog:
    def __init__(self, window: int) -> None:
        self.window = window
        self.low = 0  # h: the last stable checkpoint
        self.slots: dict[int, Slot] = {}

    @property
    def high(self) -> int:
        """H = h + L."""
        return self.low + self.window

    def in_window(self, seq: int) -> bool:
        return self.low < seq <= self.high

    def get(self, seq: int) -> Slot | None:
        return self.slots.get(seq)

    def slot(self, seq: int, view: int) -> Slot:
        """The slot for seq, created for `view` if absent. Callers check the window first."""
        assert self.in_window(seq), (seq, self.low, self.high)
        s = self.slots.get(seq)
        if s is None:
            s = self.slots[seq] = Slot(seq, view)
        return s

    def advance(self, stable: int) -> None:
        """Garbage-collect at a new stable checkpoint (section 4.3)."""
        if stable <= self.low:
            return
        self.low = stable
        for seq in [s for s in self.slots if s <= stable]:
            del self.slots[seq]

    def invariants(self) -> None:
        """Never more than L slots, whatever peers send (the water marks, 4.2)."""
        assert len(self.slots) <= self.window, f"log holds {len(self.slots)} entries, bound {self.window}"

    def __len__(self) -> int:
        return len(self.slots)
