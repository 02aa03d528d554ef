"""Every simulated run says what its checks looked at and, per faulty node, what the
correct replicas refused of what it sent (text and --json)."""

from __future__ import annotations

import json
from pathlib import Path

from pbft.cli.main import main
from pbft.sim.scenario import Scenario, load_scenario
from pbft.sim.simulation import Simulation

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def test_every_check_reports_how_much_it_looked_at():
    r = Simulation(Scenario(seed=3, clients=2, requests=10), None).run()
    assert set(r.checks) == {"agreement", "prepared-uniqueness", "exactly-once", "validity",
                             "checkpoint-digests", "client-correctness", "resources"}
    assert r.checks["client-correctness"] == 20  # every correct client result
    assert r.checks["agreement"] >= r.checks["validity"] > 0 and r.refused == {}


def test_refusals_are_counted_per_faulty_node(capsys):
    r = Simulation(load_scenario(str(SCENARIOS / "byz-bad-signature.toml")), None).run()
    assert r.refused["2"]["bad-signature"] > 0
    path = str(SCENARIOS / "byz-bad-signature.toml")
    assert main(["scenario", "run", path]) == 0
    out = capsys.readouterr().out
    assert "  checked: agreement " in out and "faulty 2: the correct replicas refused" in out
    assert main(["scenario", "run", path, "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["checks"]["client-correctness"] > 0 and doc["refused"]["2"]["bad-signature"] > 0
