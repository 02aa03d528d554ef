"""Behaviours that try to exhaust a correct replica or strand a lagging one
(`status-flood`, `buffer-stuffing`, `stale-proof`; docs/robustness.md): the attacks behind issue 13's
resource and catch-up holes, so that the simulator and the fuzzer exercise them.

* `status-flood`: `rate` signed STATUS messages per tick claiming to be at the very
  start of the current view (nothing executed, no stable checkpoint), and never its own
  true STATUS (which would make the flood look like replays of an older one). What a correct replica answers
  a STATUS (a stable proof, a NEW-VIEW, certified slots, its own STATUS) costs far more
  than the question, so answers are budgeted per replica and retransmission period.
* `buffer-stuffing`: `rate` PRE-PREPAREs per tick for the next view in which this replica
  is the primary (so they pass the "signed by the primary of that view" check), each
  with a batch of `size` bytes of garbage, at sequence numbers inside the window. A
  correct replica keeps messages for future views only once their signature holds, and
  only up to a byte budget per signer.
* `stale-proof`: its own CHECKPOINTs for far-future sequence numbers, `rate` per tick,
  broadcast to everyone; a laggard that judged stable proofs one CHECKPOINT at a time kept
  only the two latest claims per signer, so these pushed this replica's genuine
  signature out of a proof sent to it.

The honest core underneath runs unchanged; these only add traffic.
"""

from __future__ import annotations

from ..protocol.crypto import batch_digest
from ..protocol.events import Action, Broadcast, Send
from ..protocol.messages import Checkpoint, PrePrepare, Status, open_envelope
from .wire import ReplicaBehaviour, random_digest


class StatusFlood(ReplicaBehaviour):
    name = "status-flood"
    summary = "signed STATUS claiming to be far behind, `rate` per tick"
    allowed = ("rate",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.rate = self.p.integer("rate", 10, 1, 10_000)

    def rewrite(self, actions: list[Action]) -> list[Action]:
        # Its own true STATUS would show it is not behind (a correct replica ignores a
        # STATUS older than the newest from the same replica): keep it to itself.
        return [a for a in actions if not (isinstance(a, Broadcast | Send) and _is_status(a.data))]

    def every_tick(self) -> list[Action]:
        data = self.forge(Status(self.replica.view, 0, 0, 0))
        return [Broadcast(data) for _ in range(self.rate)]


def _is_status(data: bytes) -> bool:
    opened = open_envelope(data)
    return opened is not None and isinstance(opened[1], Status)


class BufferStuffing(ReplicaBehaviour):
    name = "buffer-stuffing"
    summary = "large PRE-PREPAREs for a future view it leads, `rate` per tick of `size` bytes"
    allowed = ("rate", "size")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.rate = self.p.integer("rate", 2, 1, 1_000)
        self.size = self.p.integer("size", 256 * 1024, 1, 15 * 1024 * 1024)

    def _future_view(self) -> int:
        """The next view above the core's (within n) whose primary is this replica."""
        core = self.replica
        return next(v for v in range(core.view + 1, core.view + self.n + 1) if v % self.n == self.me)

    def every_tick(self) -> list[Action]:
        core = self.replica
        view = self._future_view()
        out: list[Action] = []
        for _ in range(self.rate):
            seq = core.log.low + 1 + self.rng.randrange(core.config.log_window)
            batch = (self.rng.randbytes(self.size),)  # garbage requests, but its own digest
            pp = PrePrepare(view, seq, batch_digest(batch), batch)
            out.append(Broadcast(self.forge(pp)))
        return out


class StaleProof(ReplicaBehaviour):
    name = "stale-proof"
    summary = "its own CHECKPOINTs for far-future sequence numbers, `rate` per tick"
    allowed = ("rate",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.rate = self.p.integer("rate", 2, 1, 1_000)

    def every_tick(self) -> list[Action]:
        core = self.replica
        k = core.config.checkpoint_interval
        out: list[Action] = []
        for _ in range(self.rate):
            seq = (core.log.high // k + 2 + self.rng.randrange(1 << 16)) * k
            out.append(Broadcast(self.forge(Checkpoint(seq, random_digest(self.rng)))))
        return out


RESOURCES = (StatusFlood, BufferStuffing, StaleProof)
