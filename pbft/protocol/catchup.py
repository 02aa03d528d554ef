"""Catch-up: where the other replicas are, from their STATUS messages (TOCS 2002 5.3).

Theory of operation. Every replica broadcasts a signed STATUS (its view, the last
sequence number it executed, its stable checkpoint) once per retransmission period
without progress. A peer that lags gets what proves where we are (the replica's
`on_status`): that answer costs far more than the question, so each replica's STATUS is
answered at most once per retransmission period (`answered`, issue 13 item 7).

What the peers report is kept per replica (`progress`): when f+1 of them (so at least
one correct) executed past us in our view, we are `behind`, and a backup does not judge
the primary by requests whose pre-prepares it has not caught up to (OSDI'99 4.4).

A replica restarted from its store does not know where the others are: until 2f others
sent their STATUS (`heard`), or until `located_by`, it is not `located`, and it starts no
view change of its own (a replica that timed out alone there went into a view change
the others never followed, issue 13 item 2).

Every structure is keyed by replica: bounded by n.
"""

from __future__ import annotations

from .bounds import Bound, check
from .config import ClusterConfig
from .events import Ignored, Reason


class CatchUp:
    """STATUS bookkeeping: answers given, peers' progress, and being located."""

    __slots__ = ("answered", "heard", "located", "located_by", "progress", "_f", "_n", "_period")

    def __init__(self, config: ClusterConfig, period: int) -> None:
        self._f = config.f
        self._n = config.n
        self._period = period
        self.answered: dict[int, int] = {}
        """Replica -> tick its STATUS was last answered."""
        self.progress: dict[int, tuple[int, int]] = {}
        """Replica -> (view, last executed) from its last STATUS."""
        self.located = True
        self.located_by = 0
        self.heard: set[int] = set()
        """Replicas whose STATUS arrived since a restart, until located."""

    def ignore(self, peer: object, signer: int, now: int) -> Ignored | None:
        """Why `signer`'s STATUS, come over `peer`'s channel, is not answered now, or None.
        What we answer (a proof, a NEW-VIEW, up to CATCH_UP_SLOTS certificates) costs far
        more than a STATUS: once per retransmission period per replica, which is as often
        as a correct one asks (issue 13, item 7: 42x amplification). Only over its
        signer's own channel (nobody relays a STATUS): a replica's old STATUS replayed by
        another would use up the answer its real one needs (review of issue 13). Not
        "only if newer than the last": a replica restarted from its disk may honestly
        report less than before its crash."""
        if peer is not None and peer != signer:
            return Reason.WRONG_ROLE, f"status of replica {signer} relayed by {peer!r}"
        if self.too_soon(signer, now):
            return Reason.DUPLICATE, None
        return None

    def too_soon(self, peer: int, now: int) -> bool:
        """`peer`'s STATUS was answered less than a retransmission period ago."""
        last = self.answered.get(peer)
        return last is not None and now - last < self._period

    def report(self, peer: int, view: int, last_executed: int, now: int) -> bool:
        """Record `peer`'s answered STATUS; True when a restarted replica has now heard
        from 2f others, so it knows where they are."""
        self.answered[peer] = now
        self.progress[peer] = (view, last_executed)
        if self.located:
            return False
        self.heard.add(peer)
        return len(self.heard) >= 2 * self._f

    def restarted(self, by: int) -> None:
        """Recovered from the store: not located until 2f others report, or `by`."""
        self.located = False
        self.located_by = by

    def locate(self) -> None:
        self.located = True
        self.heard.clear()

    def behind(self, view: int, last_executed: int) -> bool:
        """f+1 replicas told us, by STATUS in our view, that they executed past us."""
        ahead = sorted((ex for v, ex in self.progress.values() if v == view), reverse=True)
        return len(ahead) > self._f and ahead[self._f] > last_executed

    def bounds(self) -> list[Bound]:
        n = self._n
        return [
            ("catch_up.answered", len(self.answered), n),
            ("catch_up.heard", len(self.heard), n),
            ("catch_up.progress", len(self.progress), n),
        ]

    def invariants(self) -> None:
        check(self.bounds())
