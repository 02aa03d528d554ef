"""The issue's three rule scenarios (drop COMMITs from replica 2 to replica 1 for seq
5-20; the primary equivocating PRE-PREPAREs to two halves; an old NEW-VIEW replayed), and
a client's rules, on
real processes: the rules run inside the real Byzantine replica (loaded from the scenario
file), the faults through the link-fault layer, and the verdict and the view changes
that show the attack bit reach the simulator's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation

SCENARIOS = Path(__file__).parents[1] / "scenarios"
NAMES = ("rules-drop-commits", "rules-equivocate-pre-prepare", "rules-replay-old-new-view", "rules-client")


def test_rule_scenarios_get_the_simulators_verdict_on_real_processes():
    files = [str(SCENARIOS / f"{n}.toml") for n in NAMES]
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", *files, "--real", "--json"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    real = json.loads(proc.stdout)
    for path, r in zip(files, real, strict=True):
        sim = Simulation(load_scenario(path), None).run()
        assert r["verdict"] == sim.verdict == "PASS", (path, r["violations"])
        assert r["requests_completed"] == r["requests_total"] == sim.requests_total
        # The equivocating primary is replaced; the replay needs the view to reach 2.
        assert r["view_changes"] >= sim.view_changes, (path, r["view_changes"], sim.view_changes)
        assert r["incomplete"] == []
