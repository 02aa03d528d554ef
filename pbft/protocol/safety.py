"""The only signer of protocol votes (docs/architecture.md "Conventions in the code"; Aptos safety-rules, Malachite).

A correct replica must never sign two different digests for one (view, seq) in one phase:
that is what makes "prepared" unique (OSDI'99 section 4.2, invariant: if prepared(m, v, n,
i) and prepared(m', v, n, j) then D(m) = D(m')). Every PRE-PREPARE, PREPARE, COMMIT and
CHECKPOINT goes through `SafetyRules.sign_vote`, which remembers what it signed and
refuses a conflicting request. Asking it to equivocate is a bug in our core, so it
raises rather than returning an error.

Re-signing the same vote returns the same envelope (retransmission). The record of
votes is what must be persisted before a vote is sent (docs/architecture.md "The durability contract"); `forget_below`
drops votes at or below the stable checkpoint, which no correct replica revisits.
"""

from __future__ import annotations

from .crypto import KeyPair, seal
from .messages import (
    Checkpoint,
    Commit,
    Envelope,
    Epochs,
    Message,
    Prepare,
    PrePrepare,
    StableProof,
    StateChunk,
)


class SafetyViolation(AssertionError):
    """Our own core asked to sign a vote that conflicts with an earlier one."""


Vote = PrePrepare | Prepare | Commit | Checkpoint


def vote_slot(msg: Vote) -> tuple[str, int, int]:
    """The (phase, view, seq) a vote occupies; checkpoints have no view."""
    match msg:
        case PrePrepare(view=v, seq=n):
            return ("pre-prepare", v, n)
        case Prepare(view=v, seq=n):
            return ("prepare", v, n)
        case Commit(view=v, seq=n):
            return ("commit", v, n)
        case Checkpoint(seq=n):
            return ("checkpoint", 0, n)
    raise TypeError(msg)


class SafetyRules:
    def __init__(self, key: KeyPair, cluster_id: str, replica_id: int) -> None:
        self._key = key
        self._cluster_id = cluster_id
        self.replica_id = replica_id
        self.signed: dict[tuple[str, int, int], tuple[bytes, Envelope]] = {}
        self.retired = False
        """Removed from the group (`retire`): no vote, only what helps replicas left behind."""

    @property
    def signatures(self) -> int:
        """Signatures this replica's key has made (metrics, the bench's CPU split)."""
        return self._key.signed

    def sign_vote(self, msg: Vote) -> Envelope:
        if self.retired:
            raise SafetyViolation(f"refusing to sign {msg!r}: this replica was removed from the group")
        slot = vote_slot(msg)
        prior = self.signed.get(slot)
        if prior is not None:
            if prior[0] != msg.digest:
                raise SafetyViolation(f"refusing to sign {slot} for a second digest")
            return prior[1]
        env = seal(self._key, self._cluster_id, self.replica_id, msg)
        self.signed[slot] = (msg.digest, env)
        return env

    def sign_other(self, msg: Message) -> Envelope:
        """Non-vote messages (view-change, new-view, status) carry no per-slot promise."""
        assert not isinstance(msg, PrePrepare | Prepare | Commit | Checkpoint)
        if self.retired and not isinstance(msg, StableProof | Epochs | StateChunk):
            raise SafetyViolation(f"refusing to sign {type(msg).__name__}: this replica was removed from the group")
        return seal(self._key, self._cluster_id, self.replica_id, msg)

    @property
    def public_key(self) -> bytes:
        return self._key.public

    def rebind(self, domain: str) -> None:
        """A new configuration epoch (epochs.py): sign under its domain from now on. What
        was signed under the old one binds nothing in the new one, so it is forgotten."""
        self._cluster_id = domain
        self.signed = {}

    def retire(self, domain: str) -> None:
        """Removed from the group: sign under `domain`, that of the last epoch we were a
        member of (the replicas left behind there check our signatures), and from now on
        only the answers a removed replica gives them (Replica._on_received_retired): its
        votes were truncated with the epoch it left, so a vote signed now would be an
        unguarded promise."""
        self._cluster_id = domain
        self.signed = {}
        self.retired = True

    def forget_below(self, seq: int) -> None:
        self.signed = {s: v for s, v in self.signed.items() if s[2] > seq}
