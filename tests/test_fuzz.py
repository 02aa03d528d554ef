"""A fixed set of fuzz seeds runs clean in CI; the fuzzer's generation is deterministic and
its shrinker keeps a failing schedule failing."""

from __future__ import annotations

import json

from pbft.cli import main
from pbft.sim.fuzz import fuzz, random_scenario, shrink
from pbft.sim.scenario import NetworkFault, Scenario
from pbft.sim.simulation import run_scenario

CI_SEEDS = 60


def test_fixed_fuzz_seeds_find_no_violation():
    report = fuzz(CI_SEEDS, start=0, f=1)
    assert report.runs == CI_SEEDS
    assert not report.violations, "\n".join(
        f"seed {v.seed}: {v.check}: {v.detail}\n{v.toml}" for v in report.violations
    )


def test_f2_fuzz_seeds_find_no_violation():
    report = fuzz(6, start=1000, f=2)
    assert not report.violations, [(v.seed, v.check, v.detail) for v in report.violations]


def test_generation_is_deterministic():
    assert random_scenario(17) == random_scenario(17)
    assert random_scenario(17) != random_scenario(18)


def test_shrink_drops_irrelevant_faults():
    # No quorum (three replicas crashed) fails liveness whatever else is going on.
    s = Scenario(
        clients=3,
        requests=6,
        network=(
            NetworkFault(drop=0.05),
            NetworkFault(0, None, crash=1),
            NetworkFault(0, None, crash=2),
            NetworkFault(10, 200, duplicate=0.5),
        ),
    )
    s = Scenario(**{**{k: getattr(s, k) for k in s.__slots__}, "expect": s.expect.__class__(liveness_ms=5000)})
    assert run_scenario(s).violations[0].check == "liveness"
    small = shrink(s, "liveness")
    assert len(small.network) == 2 and all(nf.crash is not None for nf in small.network)
    assert small.requests == 1 and small.clients == 1


def test_fuzz_cli_json(capsys):
    assert main(["fuzz", "--seeds", "3", "--start", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 3 and out["violations"] == [] and out["runs_per_second"] > 0
