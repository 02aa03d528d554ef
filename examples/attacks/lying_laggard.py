"""A backup that ignores the primary for a while and lies about checkpoints.

Run it:  pbft scenario run examples/attacks/lying_laggard.toml

It uses the other hooks: `on_message` hides PRE-PREPAREs in a window of sequence numbers
from its own honest core (so the core falls behind and must catch up), and `on_tick`
reads the core's state (`self.state`) and broadcasts a CHECKPOINT for the next checkpoint
with a random digest, signed with its own key. A correct replica counts a checkpoint only
when 2f+1 replicas sign the same digest (OSDI'99 section 4.3), so one liar moves nothing.
"""

from pbft.adversary import Behaviour, Checkpoint, Incoming, Param


class LyingLaggard(Behaviour):
    """Drops PRE-PREPAREs for seqs in [ignore_from, ignore_until]; claims bogus checkpoints."""

    parameters = {
        "ignore_from": Param.integer(5, lo=1, help="first seq whose PRE-PREPARE it ignores"),
        "ignore_until": Param.integer(25, lo=1, help="last seq whose PRE-PREPARE it ignores"),
        "every_ms": Param.integer(200, lo=1, help="how often it claims a checkpoint"),
    }

    def setup(self) -> None:
        if self.args.ignore_until < self.args.ignore_from:
            # Raised here, this becomes a one-sentence usage error before the run.
            raise ValueError("ignore_until must not be below ignore_from")
        self.ignored = 0
        self.claims = 0
        self._next_claim = self.args.every_ms

    def on_message(self, msg: Incoming) -> None:
        if msg.kind == "PRE-PREPARE" and self.args.ignore_from <= (msg.seq or 0) <= self.args.ignore_until:
            msg.drop()  # the honest core never sees it
            self.ignored += 1

    def on_tick(self) -> None:
        if self.now_ms < self._next_claim:
            return
        self._next_claim = self.now_ms + self.args.every_ms
        # The next checkpoint after the stable one, read from the core (read-only).
        seq = self.state.stable_seq + self.state.checkpoint_interval
        self.broadcast(Checkpoint(seq, self.rng.randbytes(32)))  # signed by broadcast()
        self.claims += 1
