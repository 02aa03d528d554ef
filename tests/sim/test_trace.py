"""The simulator's JSON-lines trace (pbft.sim.trace, docs/formats.md "The simulator's trace")."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pbft.cli.main import main
from pbft.sim.fuzz import fuzz
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation
from pbft.sim.trace import VERSION, TraceError, TraceWriter, read_trace, split_runs

pytestmark = pytest.mark.timeout(120)

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def traced(scenario, path, seed=None):
    with TraceWriter(str(path)) as tw:
        result = Simulation(scenario, seed, trace=tw).run()
    return result, list(read_trace(str(path)))


def test_equivocation_trace_has_header_record_types_and_marks_the_forged_pre_prepare(tmp_path):
    s = load_scenario(SCENARIOS / "byz-equivocate.toml")
    r, recs = traced(s, tmp_path / "t.jsonl")
    head = recs[0]
    assert head == {"type": "header", "version": VERSION, "scenario": s.name, "seed": 1, "n": 4, "f": 1,
                    "byzantine": [0], "clients": ["c0", "c1", "c2"], "mode": "sim"}
    types = {rec["type"] for rec in recs}
    assert {"send", "deliver", "prepared", "committed", "executed", "checkpoint-stable",
            "submit", "complete", "end"} <= types
    assert recs[-1]["type"] == "end" and recs[-1]["verdict"] == r.verdict == "PASS"
    assert all(isinstance(rec["t"], int) for rec in recs[1:])
    times = [rec["t"] for rec in recs[1:]]
    assert times == sorted(times)
    lies = [rec for rec in recs if rec["type"] == "send" and "lie" in rec]
    assert lies, "the equivocating primary's second PRE-PREPARE is not marked"
    first = lies[0]
    assert first["from"] == 0 and first["kind"] == "PRE-PREPARE" and first["lie"] == "mutated"
    assert first["honest"] != first["id"] and first["honest_digest"] != first["digest"]
    # The first half of the backups got the honest PRE-PREPARE: no lie on it.
    same_slot = [rec for rec in recs if rec["type"] == "send" and rec["from"] == 0
                 and rec["kind"] == "PRE-PREPARE" and rec["seq"] == first["seq"] and rec["view"] == first["view"]]
    assert any("lie" not in rec and rec["id"] == first["honest"] for rec in same_slot)
    # Honest replicas never lie.
    assert all(rec["from"] == 0 for rec in lies)
    complete = next(rec for rec in recs if rec["type"] == "complete")
    assert {"client", "timestamp", "result", "latency"} <= set(complete)


def test_a_partition_drop_is_recorded_with_its_reason(tmp_path):
    _, recs = traced(load_scenario(SCENARIOS / "net-partition-heals.toml"), tmp_path / "t.jsonl")
    drops = [rec for rec in recs if rec["type"] == "drop"]
    assert drops and all(rec["reason"] == "partition" for rec in drops)
    assert {"from", "to", "kind", "id", "fault"} <= set(drops[0])


def test_crash_restart_and_drops_to_a_crashed_replica(tmp_path):
    _, recs = traced(load_scenario(SCENARIOS / "crash-backup.toml"), tmp_path / "t.jsonl")
    types = [rec["type"] for rec in recs]
    assert "crash" in types and "restart" in types
    crashed = [rec for rec in recs if rec["type"] == "drop" and rec["reason"] == "crashed"]
    assert crashed and all(rec["to"] == 2 for rec in crashed)


def test_a_broken_core_violation_is_recorded_before_end(tmp_path):
    s = replace(load_scenario(SCENARIOS / "byz-equivocate.toml"), broken="weak-prepare-quorum")
    r, recs = traced(s, tmp_path / "t.jsonl")
    assert r.violations
    assert recs[-1]["type"] == "end" and recs[-1]["verdict"] == "FAIL"
    assert recs[-2]["type"] == "violation"
    assert recs[-2]["check"] == r.violations[0].check and recs[-2]["detail"] == r.violations[0].detail
    assert recs[0]["broken"] == "weak-prepare-quorum"


def test_same_seed_same_trace_and_digest_unchanged_by_tracing(tmp_path):
    s = load_scenario(SCENARIOS / "net-duplicate.toml")
    r1, _ = traced(s, tmp_path / "a.jsonl")
    r2, _ = traced(s, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    plain = Simulation(s).run()
    assert r1.trace_digest == r2.trace_digest == plain.trace_digest
    recs = list(read_trace(str(tmp_path / "a.jsonl")))
    assert any(rec["type"] == "duplicate" for rec in recs)
    assert recs[-1]["trace_digest"] == plain.trace_digest


def test_digest_unchanged_with_byzantine_delays_and_rules(tmp_path):
    for name in ("byz-slow-primary.toml", "net-delay-reorder.toml", "rules-client.toml"):
        s = load_scenario(SCENARIOS / name)
        r, recs = traced(s, tmp_path / "t.jsonl")
        assert r.trace_digest == Simulation(s).run().trace_digest, name
        if name == "net-delay-reorder.toml":
            assert any(rec["type"] == "delay" and rec["ms"] > 0 for rec in recs)


def test_cli_trace_writes_a_readable_file(tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    code = main(["scenario", "run", str(SCENARIOS / "byz-equivocate.toml"), "--broken", "weak-prepare-quorum",
                 "--trace", str(out)])
    assert code == 1
    assert f"trace: {out}" in capsys.readouterr().out
    recs = list(read_trace(str(out)))
    assert recs[0]["type"] == "header" and recs[-1]["type"] == "end"
    assert [rec["type"] for rec in recs].count("violation") == 1


def test_cli_trace_with_several_files_writes_the_runs_one_after_another(tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    files = [str(SCENARIOS / "net-one-way.toml"), str(SCENARIOS / "design-example.toml")]
    assert main(["scenario", "run", *files, "--trace", str(out), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)  # --json output stays pure JSON
    runs = split_runs(read_trace(str(out)))
    assert [r[0]["scenario"] for r in runs] == [x["name"] for x in results]
    assert all(r[0]["type"] == "header" and r[-1]["type"] == "end" for r in runs)
    assert any(rec["type"] == "drop" and rec["reason"] == "one-way" for rec in runs[0])
    # each run is the trace it would be alone
    alone = tmp_path / "alone.jsonl"
    assert main(["scenario", "run", files[1], "--trace", str(alone), "--json"]) == 0
    assert list(read_trace(str(alone))) == runs[1]


def test_a_later_header_of_another_version_is_refused(tmp_path):
    path = tmp_path / "two.jsonl"
    head = '{"type": "header", "version": 1, "n": 4, "f": 1, "byzantine": [], "clients": [], "mode": "sim"}'
    path.write_text(f'{head}\n{{"t": 1, "type": "end"}}\n{head.replace("1", "7", 1)}\n')
    with pytest.raises(TraceError, match="line 3: trace version 7"):
        list(read_trace(str(path)))


def test_cli_real_trace_to_an_unwritable_path_is_refused_before_the_run(tmp_path, capsys):
    # --real runs write traces too (tests/cluster/test_real_trace.py); a path that cannot
    # be written is one sentence before any process starts.
    code = main(["scenario", "run", str(SCENARIOS / "design-example.toml"), "--real",
                 "--trace", str(tmp_path / "no-such-dir" / "x.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--trace" in err and err.count("\n") == 1


def test_fuzz_writes_a_trace_per_failing_seed(tmp_path):
    report = fuzz(30, 0, 1, mode="mutation", broken="weak-prepare-quorum", stop_at_first=True,
                  trace_dir=str(tmp_path))
    assert report.violations
    v = report.violations[0]
    assert v.trace == str(tmp_path / f"fuzz-{v.seed}.jsonl")
    recs = list(read_trace(v.trace))
    assert recs[0]["broken"] == "weak-prepare-quorum"
    assert [rec for rec in recs if rec["type"] == "violation"][0]["check"] == v.check


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "empty"),
        ("not json\n", "not a JSON object"),
        ('{"type": "send"}\n', "not a trace header"),
        ('{"type": "header", "version": 99}\n', "version 99"),
        ('{"type": "header", "version": 1}\n', "the header has no 'n'"),
        ('{"type": "header", "version": 1, "n": 4, "f": 1, "byzantine": [], "clients": [], "mode": "sim"}\n[1]\n',
         "without a 'type'"),
    ],
)
def test_read_trace_rejects_a_bad_file_in_one_sentence(tmp_path, content, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceError, match=words) as info:
        list(read_trace(str(path)))
    assert "\n" not in str(info.value)
    with pytest.raises(TraceError, match="cannot read"):
        list(read_trace(str(tmp_path / "missing.jsonl")))


def test_the_end_record_carries_every_checks_figures(tmp_path):
    out = tmp_path / "run.jsonl"
    assert main(["scenario", "run", str(SCENARIOS / "byz-equivocate.toml"), "--trace", str(out)]) == 0
    end = list(read_trace(str(out)))[-1]
    assert end["type"] == "end"
    assert end["checks"]["agreement"] > 0 and end["latency"]["completed"] == end["requests_completed"]
    assert end["faulty"]["0"]["lies"]["mutated"] > 0 and end["resources"]


def test_a_byzantine_clients_lies_are_marked(tmp_path):
    out = tmp_path / "run.jsonl"
    assert main(["scenario", "run", str(SCENARIOS / "byz-client-equivocate.toml"), "--trace", str(out)]) == 0
    lies = [r for r in read_trace(str(out)) if r["type"] == "send" and r.get("lie")]
    assert lies and all(isinstance(r["from"], str) for r in lies)  # only the client lies here


def test_what_a_byzantine_replica_withheld_is_recorded(tmp_path):
    # A silent primary's honest core keeps pre-preparing; the trace says each message the
    # behaviour kept back, and the replica sends none of them.
    out = tmp_path / "run.jsonl"
    main(["scenario", "run", str(SCENARIOS / "byz-silent.toml"), "--trace", str(out)])
    recs = list(read_trace(str(out)))
    silent = recs[0]["byzantine"][0]
    withheld = [r for r in recs if r["type"] == "withhold"]
    assert withheld and {r["from"] for r in withheld} == {silent}
    sent_ids = {r["id"] for r in recs if r["type"] == "send" and r["from"] == silent}
    assert not sent_ids & {r["id"] for r in withheld}
