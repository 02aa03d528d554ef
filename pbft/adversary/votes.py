"""Behaviours of any faulty replica against voting and checkpoints (docs/attacks.md).

Theory of operation. The honest core votes as usual; these behaviours rewrite or add to
its PREPARE, COMMIT and CHECKPOINT messages, always signing what they invent with the
replica's own key, so the attack reaches the receivers' quorum logic rather than stopping
at the signature check (`vote-stuffing`'s claimed-sender copies are the exception: their
point is to show the signer is authenticated). Invented digests are drawn from `rng` and
memoised per slot, so a run replays from its seed and retransmissions repeat themselves.
"""

from __future__ import annotations

from collections import OrderedDict

from ..protocol.crypto import seal
from ..protocol.events import Action, Broadcast, Event, Received, Send
from ..protocol.messages import Checkpoint, Commit, Message, Prepare, PrePrepare, open_envelope
from .wire import OutgoingLie, Plan, ReplicaBehaviour, random_digest

_PHASES = {"prepare": Prepare, "commit": Commit}


def with_digest(msg: Message, d: bytes) -> Message:
    if isinstance(msg, Checkpoint):
        return Checkpoint(msg.seq, d)
    assert isinstance(msg, Prepare | Commit)
    return type(msg)(msg.view, msg.seq, d)


class VoteLie(OutgoingLie):
    allowed = ("phases",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        phases = self.p.choices("phases", ("prepare", "commit"), tuple(_PHASES))
        self.kinds = tuple(_PHASES[p] for p in phases)


class WrongDigestVote(VoteLie):
    """Its PREPAREs and COMMITs name a random digest instead of the pre-prepared one."""

    name = "wrong-digest-vote"
    summary = "PREPARE or COMMIT for a digest other than the pre-prepared one"

    def lie(self, msg: Message, data: bytes) -> Plan:
        return self.everyone(self.forge(with_digest(msg, random_digest(self.rng))))


class DoubleVote(VoteLie):
    """The real vote to the first half of its peers and one for a random digest to the
    others; with `leak` (default) the first half gets the conflicting vote as well, so a
    correct receiver holds both signed votes as evidence."""

    name = "double-vote"
    summary = "two different PREPAREs (or COMMITs) for one slot to different peers"
    allowed = ("phases", "leak")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.leak = self.p.boolean("leak", True)

    def lie(self, msg: Message, data: bytes) -> Plan:
        other = self.forge(with_digest(msg, random_digest(self.rng)))
        peers = self.peers()
        cut = max(1, len(peers) // 2)
        plan: Plan = {r: [data, other] if self.leak else [data] for r in peers[:cut]}
        plan.update({r: [other] for r in peers[cut:]})
        return plan


class VoteStuffing(VoteLie):
    """Sends each vote `copies` times, plus (with `claim`) one copy per other replica
    whose envelope names that replica as signer but is signed with its own key."""

    name = "vote-stuffing"
    summary = "the same vote many times, and votes whose envelope claims another signer"
    allowed = ("phases", "copies", "claim")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.copies = self.p.integer("copies", 5, 1, 1000)
        self.claim = self.p.boolean("claim", True)

    def lie(self, msg: Message, data: bytes) -> Plan:
        cfg = self.replica.config
        claimed = [
            seal(self.key, cfg.signing_domain, r, msg).to_bytes() for r in self.peers() if self.claim
        ]
        return self.everyone(*claimed, *[data] * self.copies)


class PrematureCommit(ReplicaBehaviour):
    """Sends a COMMIT for every pre-prepare it accepts, before it is prepared, and each
    tick `rate` COMMITs with random digests for random slots in the window."""

    name = "premature-commit"
    summary = "COMMITs for slots it is not prepared on, or unknown slots, with random digests"
    allowed = ("rate",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.rate = self.p.integer("rate", 2, 0, 10_000)
        self._early: list[Action] = []

    def intercept(self, event: Event) -> list[Event]:
        if isinstance(event, Received):
            opened = open_envelope(event.data)
            if opened is not None and isinstance(opened[1], PrePrepare):
                pp = opened[1]
                self._early.append(Broadcast(self.forge(Commit(pp.view, pp.seq, pp.digest))))
        return [event]

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out, self._early = [*self._early, *actions], []
        return out

    def every_tick(self) -> list[Action]:
        core = self.replica
        out: list[Action] = []
        for _ in range(self.rate):
            seq = core.log.low + 1 + self.rng.randrange(core.log.window)
            out.append(Broadcast(self.forge(Commit(core.view, seq, random_digest(self.rng)))))
        return out


class Amnesia(ReplicaBehaviour):
    """Forgets what it voted: every `every` ticks (default: the retransmission period)
    it votes again on its most recent slots still in the window, each time for a fresh
    random digest, as a replica restarted without its vote record would."""

    name = "amnesia"
    summary = "forgets its votes and signs conflicting ones for the same slots"
    allowed = ("every", "recent")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        cfg = replica.config
        self.every = self.p.integer("every", max(1, cfg.retransmit_ms // cfg.tick_ms), 1)
        self.recent = self.p.integer("recent", 4, 1, 1 << 16)
        self.votes: OrderedDict[tuple[type, int, int], Message] = OrderedDict()

    def rewrite(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Send | Broadcast):
                opened = open_envelope(a.data)
                if (
                    opened
                    and opened[0].signer == self.me
                    and isinstance(opened[1], Prepare | Commit)
                ):
                    m = opened[1]
                    self.votes[(type(m), m.view, m.seq)] = m
                    while len(self.votes) > self.recent:
                        self.votes.popitem(last=False)
        return actions

    def every_tick(self) -> list[Action]:
        if self.ticks % self.every:
            return []
        low = self.replica.stable_seq
        return [
            Broadcast(self.forge(with_digest(m, random_digest(self.rng))))
            for m in self.votes.values()
            if m.seq > low
        ]


class BadCheckpoint(OutgoingLie):
    """Its CHECKPOINTs carry a random state digest, correctly signed."""

    name = "bad-checkpoint"
    summary = "CHECKPOINT with a wrong state digest, correctly signed"
    kinds = (Checkpoint,)

    def lie(self, msg: Message, data: bytes) -> Plan:
        return self.everyone(self.forge(with_digest(msg, random_digest(self.rng))))


class FakeStableCheckpoint(ReplicaBehaviour):
    """Every `every` ticks claims checkpoints ahead of everyone: the next few checkpoint
    seqs inside the window and one far beyond it, each with a made-up digest."""

    name = "fake-stable-checkpoint"
    summary = "claims checkpoints (stable states) far ahead of the cluster"
    allowed = ("every", "ahead")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.every = self.p.integer("every", 10, 1)
        self.ahead = self.p.integer("ahead", 3, 1, 64)
        self.claims: dict[int, bytes] = {}

    def every_tick(self) -> list[Action]:
        if self.ticks % self.every:
            return []
        core = self.replica
        k = core.config.checkpoint_interval
        base = (core.last_executed // k + 1) * k
        seqs = [base + i * k for i in range(self.ahead)] + [(core.log.high // k + 1000) * k]
        self.claims = {s: self.claims.get(s) or random_digest(self.rng) for s in seqs}
        return [Broadcast(self.forge(Checkpoint(s, d))) for s, d in self.claims.items()]


VOTES = (
    WrongDigestVote,
    DoubleVote,
    VoteStuffing,
    PrematureCommit,
    Amnesia,
    BadCheckpoint,
    FakeStableCheckpoint,
)
