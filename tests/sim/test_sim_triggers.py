"""Crashes at the worst moment: a `[[network]]` crash with `on = EVENT` fires right after
the step in which that replica makes a checkpoint stable, starts or installs a state
transfer, starts a view change or installs a NEW-VIEW (docs/robustness.md)."""

from __future__ import annotations

import tomllib

import pytest

from pbft.errors import UsageError
from pbft.sim.scenario import Expect, NetworkFault, Scenario, parse_scenario, to_toml
from pbft.sim.simulation import Simulation


def test_crash_on_checkpoint_fires_each_time_and_restarts():
    s = Scenario(
        clients=3,
        requests=30,
        network=(NetworkFault(200, None, crash=3, on="checkpoint", down_ms=150, times=2),),
    )
    sim = Simulation(s)
    r = sim.run()
    assert r.passed, r.violations
    assert sim.restarts == 2
    assert sum(1 for line in r.trace_tail if "crashes" in line) <= 2


def test_crash_on_transfer_of_a_lagging_replica():
    s = Scenario(
        clients=3,
        requests=40,
        network=(
            NetworkFault(100, 900, crash=3),
            NetworkFault(900, None, crash=3, on="transfer", down_ms=100),
        ),
        expect=Expect(catch_up=True),
    )
    sim = Simulation(s)
    sim.run()
    assert sim.restarts == 2  # the timed restart, then the one after the triggered crash


def test_a_trigger_that_never_fires_crashes_nothing():
    s = Scenario(
        clients=2,
        requests=4,
        network=(NetworkFault(0, None, crash=1, on="view-change", down_ms=100),),
    )
    sim = Simulation(s)
    assert sim.run().passed and sim.restarts == 0


def test_triggered_crash_round_trips_and_is_validated():
    s = Scenario(
        network=(
            NetworkFault(300, None, crash=2, on="new-view", down_ms=50, times=3, amnesia=True),
        )
    )
    assert parse_scenario(tomllib.loads(to_toml(s))).network == s.network
    assert s.faulty_replicas() == [2]
    bad = [
        {"crash": 1, "on": "lunch", "down_ms": 5},
        {"crash": 1, "on": "transfer", "until_ms": 5},
        {"drop": 0.1, "down_ms": 5},
        {"crash": 1, "on": "transfer", "amnesia": True},
    ]
    for entry in bad:
        with pytest.raises(UsageError):
            parse_scenario({"network": [entry]})
