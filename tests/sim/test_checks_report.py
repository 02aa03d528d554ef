"""Every simulated run says what its checks looked at, with their figures (liveness:
latencies; resources: each bounded structure's peak against its bound) and, per faulty
node, what it sent, how much of it was lies, what the correct replicas refused of it and
the evidence they collected (text and --json)."""

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
                             "checkpoint-digests", "client-correctness", "resources", "accounting"}
    assert r.checks["client-correctness"] == 20  # every correct client result
    assert r.checks["agreement"] >= r.checks["validity"] > 0 and r.refused == {}


def test_refusals_are_counted_per_faulty_node(capsys):
    r = Simulation(load_scenario(str(SCENARIOS / "byz-bad-signature.toml")), None).run()
    assert r.refused["2"]["bad-signature"] > 0
    path = str(SCENARIOS / "byz-bad-signature.toml")
    assert main(["scenario", "run", path]) == 0
    out = capsys.readouterr().out
    assert "  checks:\n    agreement " in out and "faulty 2: sent " in out and "the correct replicas refused" in out
    assert main(["scenario", "run", path, "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["checks"]["client-correctness"] > 0 and doc["refused"]["2"]["bad-signature"] > 0


def test_liveness_figures_measure_latency_after_the_heal():
    r = Simulation(load_scenario(str(SCENARIOS / "net-partition-heals.toml")), None).run()
    lat = r.latency
    assert lat is not None and lat.completed == r.requests_completed
    assert lat.heal_ms > 0 and 0 < lat.after_heal <= lat.completed
    # The partition held some requests up: the worst overall includes the wait for the heal.
    assert lat.worst_ms > lat.worst_after_heal_ms > 0
    assert lat.bound_ms is not None and lat.worst_after_heal_ms <= lat.bound_ms


def test_resource_peaks_stay_within_their_bounds_and_name_every_structure():
    r = Simulation(Scenario(seed=3, clients=2, requests=10), None).run()
    assert {"log", "prepared_certs", "checkpoint_votes", "rejects", "view_changes"} <= set(r.resources)
    assert all(0 <= p.peak <= p.bound for p in r.resources.values())
    assert r.resources["log"].peak > 0 and r.resources["log"].bound == 32


def _trace_lies(tmp_path, name):
    from pbft.sim.trace import TraceWriter, read_trace

    path = str(tmp_path / "t.jsonl")
    with TraceWriter(path) as w:
        traced = Simulation(load_scenario(str(SCENARIOS / name)), None, trace=w).run()
    return traced, [rec for rec in read_trace(path) if rec["type"] == "send"]


def test_a_byzantine_replicas_lies_are_counted_without_a_trace_as_the_trace_marks_them(tmp_path):
    plain = Simulation(load_scenario(str(SCENARIOS / "byz-equivocate.toml")), None).run()
    traced, sends = _trace_lies(tmp_path, "byz-equivocate.toml")
    assert plain.trace_digest == traced.trace_digest and plain.faulty == traced.faulty
    mine = [s for s in sends if s["from"] == 0]
    node = plain.faulty["0"]
    assert node.sent == len(mine)
    assert node.lies == {"forged": sum(s.get("lie") == "forged" for s in mine),
                         "mutated": sum(s.get("lie") == "mutated" for s in mine)}
    assert node.lies["mutated"] > 0
    assert node.evidence.get("equivocate", 0) > 0 and node.refused == plain.refused["0"]


def test_a_byzantine_clients_lies_are_counted():
    r = Simulation(load_scenario(str(SCENARIOS / "byz-client-equivocate.toml")), None).run()
    (name,) = r.faulty
    node = r.faulty[name]
    assert name.startswith("c") and node.sent > 0 and node.lies is not None
    assert 0 < sum(node.lies.values()) <= node.sent


def test_a_twin_sends_no_lies_its_core_would_not_and_is_not_judged():
    r = Simulation(load_scenario(str(SCENARIOS / "twin-backup.toml")), None).run()
    assert r.faulty["3"].lies is None and r.faulty["3"].sent > 0


def test_the_figures_in_text_and_json(capsys):
    path = str(SCENARIOS / "net-partition-heals.toml")
    assert main(["scenario", "run", path]) == 0
    out = capsys.readouterr().out
    assert "after the last fault healed at" in out and "nearest their bound" in out
    assert main(["scenario", "run", str(SCENARIOS / "byz-equivocate.toml"), "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert set(doc["latency"]) == {"completed", "worst_ms", "heal_ms", "after_heal", "worst_after_heal_ms",
                                   "bound_ms"}
    assert doc["resources"]["log"]["bound"] == 32
    faulty = doc["faulty"]["0"]
    assert faulty["lies"]["mutated"] > 0 and faulty["evidence"]["equivocate"] > 0
    assert faulty["refused"] == doc["refused"]["0"]
