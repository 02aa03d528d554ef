"""The shipped attack examples (examples/attacks/) run in the simulator and really attack.

Each example is a scenario file next to its Python file; the scenario must pass (the
protocol tolerates one faulty replica) and the attacker's own counters must show that it
did what its docstring says. The same files run on real processes in
tests/cluster/test_examples_real.py.
"""

from __future__ import annotations

import pathlib

import pytest

from pbft.adversary.base import ByzantineReplica
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "attacks"
FIRED = {
    "slow_commits.toml": lambda b: b.delayed > 0,
    "two_faced_primary.toml": lambda b: b.lies > 0,
    "lying_laggard.toml": lambda b: b.ignored > 0 and b.claims > 0,
}


def test_every_example_is_checked_here():
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == sorted(FIRED)
    assert len(list(EXAMPLES.glob("*.py"))) >= 3


@pytest.mark.parametrize("name", sorted(FIRED))
def test_example_passes_and_attacks(name):
    sim = Simulation(load_scenario(str(EXAMPLES / name)), None)
    result = sim.run()
    assert result.verdict == "PASS", (result.violations, result.attacker_failures)
    [b] = [i.node.behaviour for insts in sim.replicas.values() for i in insts if isinstance(i.node, ByzantineReplica)]
    assert FIRED[name](b), vars(b)


def test_the_two_faced_primary_is_replaced():
    result = Simulation(load_scenario(str(EXAMPLES / "two_faced_primary.toml")), None).run()
    assert result.view_changes >= 1
