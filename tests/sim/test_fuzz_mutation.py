"""`pbft fuzz --mode mutation` (ByzzFuzz small-scope mutations, docs/rules.md), `--broken`
and `--behaviours`: the mutation fuzzer finds cheap broken cores within a fixed seed range,
and the shrunk scenario file it prints replays to the same failing check."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from pbft.cli.main import main
from pbft.sim.fuzz import fuzz, mutation_scenario, random_scenario, shrink
from pbft.sim.scenario import ByzantineSpec, load_scenario, parse_scenario, to_toml
from pbft.sim.simulation import run_scenario

pytestmark = pytest.mark.timeout(180)

SCENARIOS = Path(__file__).parents[1] / "scenarios"
CHEAP = ["weak-prepare-quorum", "commit-unprepared", "weak-checkpoint-quorum"]
"""Broken cores the mutation mode finds within seeds 0-29 (f = 1)."""


@pytest.mark.parametrize("name", CHEAP)
def test_mutation_mode_finds_a_cheap_broken_core_and_the_shrunk_file_replays(name):
    report = fuzz(30, 0, 1, mode="mutation", broken=name, stop_at_first=True)
    assert report.violations, f"{name}: no violation in mutation seeds 0-29"
    v = report.violations[0]
    assert f'broken = "{name}"' in v.toml
    again = parse_scenario(tomllib.loads(v.toml), "shrunk.toml")
    assert again.broken == name
    r = run_scenario(again)
    assert r.violations and r.violations[0].check == v.check


def test_mutation_mode_on_the_correct_core_finds_nothing():
    report = fuzz(25, 0, 1, mode="mutation")
    assert not report.violations, [(v.seed, v.check, v.detail) for v in report.violations]


def test_mutation_scenarios_are_deterministic_and_round_trip():
    for seed in range(8):
        s = mutation_scenario(seed)
        assert to_toml(s) == to_toml(mutation_scenario(seed))
        assert not s.exceeds_fault_assumption()
        assert all(b.params.get("rule") for b in s.byzantine)
        again = parse_scenario(tomllib.loads(to_toml(s)), "again.toml")
        assert run_scenario(again).trace_digest == run_scenario(s).trace_digest


def test_shrinking_removes_rules_one_at_a_time():
    s = load_scenario(str(SCENARIOS / "rules-equivocate-pre-prepare.toml"))
    spec = s.byzantine[0]
    rules = list(spec.params["rule"]) + [
        {"kinds": ["CHECKPOINT"], "action": "delay", "delay_ms": 10},
        {"kinds": ["VIEW-CHANGE"], "action": "duplicate"},
    ]
    s = replace(s, broken="weak-prepare-quorum", byzantine=(ByzantineSpec("replica", 0, "", {"rule": rules}),))
    r = run_scenario(s)
    assert r.violations
    small = shrink(s, r.violations[0].check)
    kept = sum(len(b.params["rule"]) for b in small.byzantine)
    assert kept < len(rules)
    assert run_scenario(small).violations[0].check == r.violations[0].check


def test_behaviours_restrict_the_random_mode():
    for seed in range(40):
        s = random_scenario(seed, behaviours=["equivocate"])
        assert {b.behaviour for b in s.byzantine if b.target == "replica"} <= {"equivocate"}


def test_cli_broken_scenario_run_fails_and_says_so(capsys):
    code = main(["scenario", "run", str(SCENARIOS / "byz-equivocate.toml"), "--broken", "weak-prepare-quorum"])
    out = capsys.readouterr().out
    assert code == 1
    assert "broken on purpose" in out and "weak-prepare-quorum" in out


def test_cli_unknown_broken_core_gets_the_list_and_a_suggestion(capsys):
    code = main(["fuzz", "--seeds", "1", "--broken", "weak-prepare-quorm"])
    err = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'weak-prepare-quorum'" in err and "unverified-chunk" in err


def test_cli_fuzz_mutation_with_a_broken_core(capsys):
    code = main(["fuzz", "--mode", "mutation", "--seeds", "1", "--broken", "weak-checkpoint-quorum"])
    out = capsys.readouterr().out
    assert code == 1
    assert "broken on purpose" in out and "[expect]" in out


def test_cli_behaviours_unknown_name(capsys):
    code = main(["fuzz", "--seeds", "1", "--behaviours", "equivocate,silnt"])
    assert code == 2
    assert "did you mean 'silent'" in capsys.readouterr().err


def test_broken_key_in_a_scenario_file():
    text = 'broken = "weak-prepare-quorm"\n'
    with pytest.raises(Exception, match="did you mean 'weak-prepare-quorum'"):
        parse_scenario(tomllib.loads(text), "b.toml")
    s = parse_scenario(tomllib.loads('broken = "weak-checkpoint-quorum"\n'), "b.toml")
    assert 'broken = "weak-checkpoint-quorum"' in to_toml(s)
