"""`pbft scenario run FILE --real`: scenario files against real replica processes on
loopback (a silent primary, a backup voting for wrong digests, a backup killed and
restarted from its data directory, with lossy links). Each run is a subprocess with a hard
timeout. Link faults, twins and Byzantine clients: test_real_faults.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pbft.cluster.realscenario import behaviour_arg, unapplied, workload
from pbft.sim.scenario import ByzantineSpec, load_scenario

SCENARIOS = Path(__file__).parents[1] / "scenarios"
HARD_TIMEOUT_S = 60
"""Each run should take well under 20 s; this only stops a hung run."""


def run_real(name: str) -> dict:
    path = SCENARIOS / f"{name}.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(path), "--real", "--json"],
        capture_output=True,
        text=True,
        timeout=HARD_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize(
    ("name", "min_views", "max_views"),
    [
        ("real-silent-primary", 1, 2),
        ("real-wrong-digest-vote", 0, 0),
        ("real-crash-restart", 0, 1),
        ("real-crash-on-checkpoint", 0, 0),
    ],
)
def test_real_scenario_passes(name, min_views, max_views):
    r = run_real(name)
    assert r["passed"] and r["violations"] == []
    assert r["requests_completed"] == r["requests_total"] > 0
    assert min_views <= r["view_changes"] <= max_views
    assert r["trace_digest"] is None and r["mode"] == "real"
    correct = [rep for rep in r["replicas"] if not rep["byzantine"]]
    assert all(rep["reachable"] for rep in correct)
    assert len({rep["last_executed"] for rep in correct}) == 1  # all caught up
    # what each check looked at, as the simulator reports it
    assert r["checks"]["client-correctness"] == r["requests_completed"]
    assert r["checks"]["view-agreement"] == len(correct)
    assert {"agreement", "checkpoint-digests", "prepared-uniqueness"} <= set(r["checks"])
    assert r["latency"]["completed"] == r["requests_completed"]
    assert 0 < r["latency"]["worst_ms"] <= r["latency"]["bound_ms"]
    if name == "real-crash-on-checkpoint":
        kills = [c for c in r["crashes"] if "killed (SIGKILL) on its checkpoint" in c]
        restarts = [c for c in r["crashes"] if "restarted" in c]
        assert len(kills) == len(restarts) == 2, r["crashes"]
    if name == "real-crash-restart":
        assert [c.split(": ", 1)[1] for c in r["crashes"]] == [
            "replica 3 killed (SIGKILL)",
            "replica 3 restarted from its data directory",
        ]
        # Its whole-run `drop = 0.05` is applied by the replicas' link-fault layers.
        assert r["incomplete"] == [] and r["verdict"] == "PASS"
        assert r["link_faults"]["dropped"] > 0
        assert min(rep["stable_checkpoint"] for rep in correct) > 0


def test_real_workload_is_checkable_and_faults_are_reported():
    s = load_scenario(str(SCENARIOS / "real-crash-restart.toml"))
    plan = workload(s, 1)
    assert plan == workload(s, 1)
    # Each client writes only its own keys, so the last value it put is what a get returns.
    for name, ops in plan.items():
        assert all(key.startswith(name.encode() + b"/") for _, key, _ in ops)
    assert unapplied(s) == []  # the crash and the drop are both applied
    spec = ByzantineSpec("replica", 1, "silent", {"from_seq": 5, "to": [2, 3], "keep": True})
    assert behaviour_arg(spec, "") == "silent:from_seq=5,keep=true,to=[2,3]"
    assert behaviour_arg(spec, str(SCENARIOS / "real-silent-primary.toml")).endswith("real-silent-primary.toml")
