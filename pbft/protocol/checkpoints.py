"""Checkpoints: votes, claims, our own states and the stable proof (OSDI'99 4.3; TOCS 5.3).

Theory of operation. After executing a multiple of K a replica multicasts CHECKPOINT with
the digest of its state; 2f+1 matching CHECKPOINTs from distinct replicas make the
checkpoint *stable*: the low water mark moves up to it, everything at or below it is
discarded, and the 2f+1 messages are kept as its proof (they are what a VIEW-CHANGE and a
lagging replica are shown). This module owns that state; the replica decides when to
count (`Replica.on_checkpoint`) and what a stable checkpoint changes elsewhere.

* `votes`: CHECKPOINTs inside the window, a VoteSet per sequence number (one vote per
  signer). Bounded by the window: multiples of K in (h, h + L], n votes each.
* `claims`: CHECKPOINTs beyond the window (we may be behind), the latest two per
  replica, so f faulty replicas cannot fill memory with far-future claims; 2f+1 matching
  ones start a state transfer.
* `own`: our own checkpoint digests from the stable one up: the states we serve to
  replicas fetching them (the store keeps their contents, copy on write: store.py).
* `stable_digest`, `stable_proof`: the latest stable checkpoint and its 2f+1 messages.
"""

from __future__ import annotations

from .bounds import Bound, check
from .config import ClusterConfig
from .events import Ignored, Reason
from .quorum import VoteSet

CLAIMS_PER_REPLICA = 2
"""Checkpoints beyond our window remembered per replica (`fake-stable-checkpoint`)."""

CHECKPOINT_BYTES = 512
"""Largest signed CHECKPOINT envelope we keep (about 110 bytes: a view-less vote with a
32-byte digest and a 64-byte signature), with room to spare."""


class Checkpoints:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.votes: dict[int, VoteSet] = {}  # seq -> signer -> (digest, envelope)
        self.claims: dict[int, dict[int, tuple[bytes, bytes]]] = {}  # signer -> seq -> ...
        self.own: dict[int, bytes] = {}  # seq -> digest
        self.stable_digest = b""
        self.stable_proof: tuple[bytes, ...] = ()

    def vote_set(self, seq: int) -> VoteSet:
        votes = self.votes.get(seq)
        if votes is None:
            votes = self.votes[seq] = VoteSet()
        return votes

    def ignore(self, seq: int, low: int) -> Ignored | None:
        """Why a CHECKPOINT for `seq` is not counted, with `low` the stable one, or None."""
        if seq <= low:
            return Reason.STALE, None  # a late vote for a checkpoint already stable
        if seq % self.config.checkpoint_interval:
            return Reason.OUT_OF_WINDOW, f"checkpoint n={seq} not a multiple of K"
        return None

    def own_votes(self, replica: int, low: int) -> list[bytes]:
        """Our own CHECKPOINTs above `low`, to retransmit (in the order of `votes`)."""
        out = []
        for seq, votes in self.votes.items():
            mine = votes.get(replica)
            if mine is not None and seq > low:
                out.append(mine[1])
        return out

    def prior(self, seq: int, signer: int) -> tuple[bytes, bytes] | None:
        votes = self.votes.get(seq)
        return None if votes is None else votes.get(signer)

    def claim(self, signer: int, seq: int, digest: bytes, data: bytes) -> list[bytes]:
        """Remember a CHECKPOINT beyond the window; the claims that match it, from all."""
        mine = self.claims.setdefault(signer, {})
        mine[seq] = (digest, data)
        for old in sorted(mine)[:-CLAIMS_PER_REPLICA]:
            del mine[old]
        return [
            d for claims in self.claims.values() for s, (dg, d) in claims.items()
            if s == seq and dg == digest
        ]

    def collect(self, seq: int, state_digest: bytes, proof: tuple[bytes, ...]) -> None:
        """`seq` is stable with this proof: drop what lies at or below it (4.3); our own
        state at `seq` stays (it is what we serve)."""
        self.stable_digest = state_digest
        self.stable_proof = proof
        self.own = {s: v for s, v in self.own.items() if s >= seq}
        self.votes = {s: v for s, v in self.votes.items() if s > seq}
        for claims in self.claims.values():
            for s in [s for s in claims if s <= seq]:
                del claims[s]

    def bounds(self) -> list[Bound]:
        """The bounds above, whatever peers sent (a named limit on every structure)."""
        cfg = self.config
        held = cfg.log_window // cfg.checkpoint_interval + 2  # in the window, stable, one above
        # No sums over nothing (the simulator asks after every step, and claims are rare).
        votes = vote_bytes = claims = claim_bytes = 0
        if self.votes:
            votes = sum(map(len, self.votes.values()))
            vote_bytes = sum(len(d) for v in self.votes.values() for _, d in v.values())
        if self.claims:
            claims = sum(map(len, self.claims.values()))
            claim_bytes = sum(len(d) for c in self.claims.values() for _, d in c.values())
        return [
            ("checkpoint_votes", len(self.votes), held),
            ("checkpoint_votes (votes)", votes, held * cfg.n),
            ("checkpoint_votes (bytes)", vote_bytes, held * cfg.n * CHECKPOINT_BYTES),
            ("own_checkpoints", len(self.own), held),
            ("claims", len(self.claims), cfg.n),
            ("claims (checkpoints)", claims, CLAIMS_PER_REPLICA * cfg.n),
            ("claims (bytes)", claim_bytes, CLAIMS_PER_REPLICA * cfg.n * CHECKPOINT_BYTES),
        ]

    def invariants(self) -> None:
        check(self.bounds())
