"""A run with the simulator's memos (decoding, signatures, verdicts on signatures made in
the run, batch digests: issue 21, item 1) is the run without them: the same trace digest,
verdict, checks, peaks and coverage, also where behaviours forge, replay and mutate."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from pbft.protocol import crypto
from pbft.sim import simulation
from pbft.sim.fuzz import scenario_of
from pbft.sim.result import result_json
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import run_scenario

SCENARIOS = Path(__file__).parents[1] / "scenarios"
NAMES = [
    "byz-bad-signature", "byz-forge-request", "byz-oversize", "byz-replay", "byz-flood",
    "byz-client-partial-signature", "rules-equivocate-pre-prepare", "twin-primary",
    "reconfigure-replace-grow-shrink",
]


def _everything(scenario) -> dict:
    r = run_scenario(scenario)
    return {**result_json(r), "coverage": r.coverage}


def _without_memos(monkeypatch, scenario) -> dict:
    with monkeypatch.context() as m:
        m.setattr(simulation, "memoised_decoding", contextlib.nullcontext)
        m.setattr(crypto, "memoised", contextlib.nullcontext)
        return _everything(scenario)


@pytest.mark.parametrize("name", NAMES)
def test_a_scenario_runs_the_same_with_and_without_the_memos(monkeypatch, name):
    s = load_scenario(str(SCENARIOS / f"{name}.toml"))
    assert _everything(s) == _without_memos(monkeypatch, s)


@pytest.mark.parametrize("mode,seed", [("random", 3), ("random", 62), ("mutation", 1), ("mutation", 7)])
def test_a_fuzz_seed_runs_the_same_with_and_without_the_memos(monkeypatch, mode, seed):
    s = scenario_of(seed, 1, mode)
    assert _everything(s) == _without_memos(monkeypatch, s)
