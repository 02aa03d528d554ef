"""docs/behaviours.md's tutorial runs as written: its files are written out where it says
and its scenario passes in the simulator, with the attack really applied (and on real
processes, as the tutorial says)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from pbft.adversary.base import ByzantineReplica
from pbft.cli.main import main
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation

DOC = Path(__file__).resolve().parents[2] / "docs" / "behaviours.md"


def write_tutorial(to: Path) -> Path:
    """Write every `<!-- tutorial: PATH -->` block under `to`; return the scenario file."""
    blocks = re.findall(r"<!-- tutorial: (\S+) -->\n```\w+\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 2
    scenario = None
    for rel, body in blocks:
        path = to / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        if rel.endswith(".toml"):
            scenario = path
    assert scenario is not None
    return scenario


def test_the_tutorial_is_short():
    body = re.search(r"<!-- tutorial: \S+\.py -->\n```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len([line for line in body.splitlines() if line.strip()]) <= 20


def test_the_tutorial_runs_as_written(tmp_path, capsys):
    scenario = write_tutorial(tmp_path)
    assert main(["scenario", "run", str(scenario)]) == 0
    assert capsys.readouterr().out.startswith("PASS slow-commits (seed 0): 40/40 requests")
    sim = Simulation(load_scenario(str(scenario)), None)
    assert sim.run().verdict == "PASS"
    [node] = [i.node for insts in sim.replicas.values() for i in insts if isinstance(i.node, ByzantineReplica)]
    assert node.behaviour.args.delay_ms == 500 and node.behaviour.args.drop == 0.5


def test_the_tutorial_runs_on_real_processes(tmp_path):
    scenario = write_tutorial(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(scenario), "--real", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (r,) = json.loads(proc.stdout)
    assert r["verdict"] == "PASS" and r["requests_completed"] == r["requests_total"] == 40
