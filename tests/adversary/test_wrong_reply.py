"""Replicas that lie to clients or never reply (behaviour `wrong-reply`), and replicas
that are down: every replica replies (OSDI'99 4.1), so the n-f correct ones complete each
request without a retransmission, and a lie is never accepted."""

from __future__ import annotations

import pytest

from pbft.sim.scenario import ByzantineSpec, NetworkFault, Scenario
from pbft.sim.simulation import Simulation


def run(scenario: Scenario):
    sim = Simulation(scenario)
    result = sim.run()
    assert result.passed, [v.detail for v in result.violations]
    assert result.view_changes == 0
    resent = sum(cs.core.retransmissions for cs in sim.clients.values())
    return result, resent


@pytest.mark.parametrize("f", [1, 2])
@pytest.mark.parametrize("mode", ["lie", "withhold"])
def test_f_replicas_lying_to_clients_or_silent_cost_no_retransmission(f, mode):
    liars = tuple(ByzantineSpec("replica", r, "wrong-reply", {"mode": mode})
                  for r in range(1, f + 1))
    s = Scenario(name=f"wrong-reply {mode}", f=f, seed=5, clients=6, requests=20,
                 read_only=0.0, byzantine=liars)
    result, resent = run(s)
    assert result.requests_completed == 120 and resent == 0


@pytest.mark.parametrize("f", [1, 2])
def test_a_crashed_backup_costs_no_retransmission(f):
    s = Scenario(name="crashed backup", f=f, seed=11, clients=8, requests=20, read_only=0.0,
                 network=(NetworkFault(0, None, crash=3 * f),))
    result, resent = run(s)
    assert result.requests_completed == 160 and resent == 0
