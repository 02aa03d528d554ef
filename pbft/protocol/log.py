"""The message log: one slot per sequence number within the water marks (OSDI'99 4.2-4.3).

A replica accepts protocol messages for sequence numbers n with h < n <= h + L only, where
h is the last stable checkpoint and L the log window. Slots are created on demand inside
that window and discarded when a checkpoint at or above them becomes stable, so the log
never holds more than L slots, each with at most one vote per replica and phase: memory
is bounded however long the cluster runs and whatever peers send.

Besides the slots, the log answers the questions the replica asks of them: a vote's
prior under the one-vote rule, or whether it only adds to a complete certificate
(`Slot.prior_vote`), whether a slot holds a pre-prepare of a view (`pre_prepared`),
whether a request is already in a pre-prepare (`holds_request`), what proves our
committed slots to a peer that lags (`committed_proof`), our own messages to retransmit
(`own_messages`), and it drops the old view's slots that a NEW-VIEW supersedes
(`supersede`, `reopen`; 4.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .bounds import Bound, check
from .crypto import Verifier
from .messages import PrePrepare, Request, envelope_from_bytes
from .quorum import VoteSet

SURPLUS: tuple[bytes, bytes] = (b"", b"")
"""`Slot.prior_vote`: the vote only adds to a complete certificate; it is kept aside
unverified and goes no further."""


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

    def completes(self, view: int, digest: bytes) -> bool:
        """A vote that would only add to this slot's finished certificate (same view, same
        digest as its pre-prepare). Such a vote changes nothing, so it is kept aside
        unverified (`surplus_*`), which saves the verifications beyond the quorum (at
        f = 1, two of a replica's seven per batch). A vote for another digest still goes
        through the checks, with the surplus vote of the same signer as its prior (evidence)."""
        pp = self.pre_prepare
        return pp is not None and self.view == view and pp.digest == digest

    def prior_vote(
        self, kind: str, signer: int, view: int, digest: bytes, data: bytes, verifier: Verifier
    ) -> tuple[bytes, bytes] | None:
        """For the one-vote rule on a PREPARE or COMMIT (`kind`) of `signer`: the vote it
        already cast here, (digest, envelope); else SURPLUS when the certificate is
        complete and this vote `completes` it (kept aside unverified); else its surplus
        vote for another digest when that signature holds (so a double vote hidden behind
        a complete certificate is still evidence; a forged one is forgotten); else None."""
        if kind == "prepare":
            votes, surplus, complete = self.prepares, self.surplus_prepares, self.prepared
        else:
            votes, surplus, complete = self.commits, self.surplus_commits, self.committed
        prior = votes.get(signer)
        if prior is not None:
            return prior
        if complete and self.completes(view, digest):
            surplus.setdefault(signer, (digest, data))
            return SURPLUS
        held = surplus.get(signer)
        if held is None or held[0] == digest:
            return None
        if verifier.verify(envelope_from_bytes(held[1])):
            return held
        del surplus[signer]
        return None


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

    def pre_prepared(self, seq: int, view: int) -> Slot | None:
        """The slot for seq if it holds a pre-prepare of `view`."""
        s = self.slots.get(seq)
        return s if s is not None and s.pre_prepare is not None and s.view == view else None

    def reopen(self, seq: int, view: int) -> Slot:
        """The slot for seq in `view`; a slot of an earlier view there is superseded and
        dropped first. Callers check the window first."""
        s = self.slots.get(seq)
        if s is not None and s.view != view:
            del self.slots[seq]
        return self.slot(seq, view)

    def holds_request(self, client: str, timestamp: int, first: int, end: int) -> bool:
        """A pre-prepare of a slot in [first, end) carries this request."""
        for seq in range(first, end):
            slot = self.slots.get(seq)
            if slot is not None and any(
                r.client == client and r.timestamp == timestamp for r, _ in slot.requests
            ):
                return True
        return False

    def committed_proof(self, to: int, first: int, last: int, view: int) -> list[bytes]:
        """What proves the committed slots first..last of `view` to replica `to`: each
        one's pre-prepare, its matching prepares and commits (but `to`'s own)."""
        out: list[bytes] = []
        for seq in range(first, last + 1):
            slot = self.slots.get(seq)
            if slot is None or not slot.committed or slot.view != view:
                continue
            if slot.pre_prepare is None or slot.pre_prepare.batch is None:
                continue  # committed by digest here too: nothing to execute it with
            d = slot.digest
            out.append(slot.pre_prepare_env)
            for votes in (slot.prepares, slot.commits):
                for signer, (dg, data) in sorted(votes.items()):
                    if dg == d and signer != to:
                        out.append(data)
        return out

    def own_messages(self, view: int, executed: int, primary: bool) -> list[bytes]:
        """Our own pre-prepares (as primary), prepares and commits of `view` in the
        window, for slots not executed and committed here. Also below what we executed: a
        slot a NEW-VIEW re-issued that we executed in an earlier view still needs our
        votes in this one, or a replica that is behind can never commit it (fuzz seed
        1002721)."""
        out: list[bytes] = []
        for seq in range(self.low + 1, self.high + 1):
            slot = self.slots.get(seq)
            if slot is None or slot.view != view:
                continue
            if seq <= executed and slot.committed:
                continue
            # A pre-prepare we hold without its batch is of no use to anyone who lacks it.
            whole = primary and slot.pre_prepare is not None and slot.pre_prepare.batch is not None
            for data in (slot.pre_prepare_env if whole else b"", slot.my_prepare, slot.my_commit):
                if data:
                    out.append(data)
        return out

    def supersede(self) -> None:
        """A NEW-VIEW re-issues every slot above h (OSDI'99 4.4): drop the old ones."""
        for seq in [s for s in self.slots if s > self.low]:
            del self.slots[seq]

    def advance(self, stable: int) -> None:
        """Garbage-collect at a new stable checkpoint (section 4.3)."""
        if stable <= self.low:
            return
        self.low = stable
        for seq in [s for s in self.slots if s <= stable]:
            del self.slots[seq]

    def bounds(self) -> list[Bound]:
        """Never more than L slots, whatever peers send (the water marks, 4.2)."""
        return [("log", len(self.slots), self.window, "entries")]

    def invariants(self) -> None:
        check(self.bounds())

    def __len__(self) -> int:
        return len(self.slots)
