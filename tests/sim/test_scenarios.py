"""Every scenario file in tests/scenarios meets its [expect] (docs/attacks.md: each behaviour
has a scenario with its expected outcome)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import run_scenario

FILES = sorted((Path(__file__).parents[1] / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_meets_its_expectations(path):
    s = load_scenario(str(path))
    assert not s.exceeds_fault_assumption(), "scenario files stay within f"
    r = run_scenario(s)
    detail = "\n".join([f"{v.check}: {v.detail}" for v in r.violations] + r.trace_tail)
    assert r.passed, f"seed {r.seed}: {detail}"
    if s.expect.all_requests_complete:
        assert r.requests_completed == r.requests_total


def test_every_scenario_has_a_name_of_its_own():
    # Reports, traces (`--run NAME`) and the digest baseline (tools/baselines) find a
    # scenario by its name.
    names = [load_scenario(str(f)).name for f in FILES]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
