"""Your first malicious node: a replica that holds back its COMMITs.

Run it:  pbft scenario run examples/attacks/slow_commits.toml
         pbft scenario run examples/attacks/slow_commits.toml --real

A correct cluster does not need this replica's COMMITs (2f+1 others suffice), so every
request must still complete, and the oracle must find nothing wrong.
"""

from pbft.adversary import Behaviour, Outgoing, Param


class SlowCommits(Behaviour):
    """Delays every COMMIT it sends by `delay_ms`, and drops a share of them."""

    # Declared parameters: the scenario file sets them; a typo or a bad value is one
    # clear sentence before the run starts.
    parameters = {
        "delay_ms": Param.integer(300, lo=0, hi=60_000, help="how long each COMMIT waits"),
        "drop": Param.probability(0.0, help="share of COMMITs never sent"),
    }

    def setup(self) -> None:
        self.delayed = 0  # read by the tests: the attack really ran

    def on_send(self, out: Outgoing) -> None:
        # Called once per message and receiver, before it leaves this replica.
        if out.kind != "COMMIT":
            return
        if self.rng.random() < self.args.drop:  # the run's seeded RNG: replays exactly
            out.drop()
        else:
            out.delay(self.args.delay_ms)
            self.delayed += 1
