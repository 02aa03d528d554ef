"""The oracle judges a correct replica's `Diverged` (its state is not the group's at a
checkpoint) as a failure, never as a report to ignore; honest runs never emit it (their
trace digests are unchanged: tools/baselines/scenario-trace-digests.json)."""

from __future__ import annotations

import pytest
from conftest import make_config

from pbft.protocol.events import Diverged, Divergence
from pbft.protocol.replica import Replica
from pbft.sim.oracle import Oracle
from pbft.sim.scenario import Scenario
from pbft.sim.simulation import Simulation

pytestmark = pytest.mark.timeout(120)


class RecordsAWrongOwnDigest(Replica):
    """Broadcasts the right CHECKPOINT, but remembers another digest as its own state, so
    the stable checkpoint differs from "its" state: only its `Diverged` says so."""

    def _take_checkpoint(self, seq: int) -> None:
        super()._take_checkpoint(seq)
        if seq in self.checkpoints.own:
            self.checkpoints.own[seq] = b"\x99" * 32


def test_a_correct_replicas_divergence_fails_the_run():
    s = Scenario(name="diverging replica", seed=1, clients=2, requests=40)
    sim = Simulation(s, replica_class={3: RecordsAWrongOwnDigest})
    r = sim.run()
    assert not r.passed
    [v] = [v for v in r.violations if "differs from the stable one" in v.detail]
    assert v.check == "exactly-once" and "not deterministic" in v.detail


def test_the_oracle_fails_on_any_diverged_of_a_correct_replica():
    oracle = Oracle(make_config(), [0, 1, 2, 3], [])
    oracle.observe_replica(2, (2, 0), 0, [Diverged(8, b"\x01" * 32, b"", Divergence.SPLIT, 3)])
    assert [v.check for v in oracle.violations] == ["exactly-once"]
    assert "replica 2: the replicas disagree on the state at checkpoint 8" in oracle.violations[0].detail


def test_honest_runs_report_no_divergence():
    s = Scenario(name="honest", seed=2, clients=3, requests=60)
    sim = Simulation(s)
    seen: list = []
    observe = sim.oracle.observe_replica

    def spy(rid, who, now, actions, identity=None):
        seen.extend(a for a in actions if isinstance(a, Diverged))
        return observe(rid, who, now, actions, identity)

    sim.oracle.observe_replica = spy
    r = sim.run()
    assert r.passed, r.violations
    assert seen == []
