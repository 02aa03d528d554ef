"""Rules on a Byzantine client (pbft/adversary/client_rules.py): what a client sends,
scripted in the scenario file; narrowed to REQUESTs with one-sentence errors; and the
cluster stays safe and live for the correct clients."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pbft.adversary.client_rules import client_rules_of
from pbft.errors import UsageError
from pbft.sim.scenario import load_scenario, parse_scenario, to_toml
from pbft.sim.simulation import Simulation

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "rules-client.toml"


def run(s):
    sim = Simulation(s, None)
    return sim, sim.run()


def test_the_client_rules_fire_and_the_cluster_stays_correct():
    sim, r = run(load_scenario(str(SCENARIO)))
    assert r.verdict == "PASS", r.violations
    assert r.requests_completed == r.requests_total == 40
    rules = client_rules_of(sim.clients["c1"].driver)
    assert rules is not None and all(n > 0 for n in rules.fired), rules.fired


def test_same_seed_same_run_and_the_file_round_trips():
    s = load_scenario(str(SCENARIO))
    assert run(s)[1].trace_digest == run(s)[1].trace_digest
    again = parse_scenario(tomllib.loads(to_toml(s)))
    assert again.byzantine[0].params == s.byzantine[0].params
    assert run(again)[1].trace_digest == run(s)[1].trace_digest


def entry(rule: str, behaviour: str = "") -> dict:
    text = f'[workload]\nclients = 2\nrequests = 5\n[[byzantine]]\nclient = 1\n{behaviour}[[byzantine.rule]]\n{rule}\n'
    return tomllib.loads(text)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('action = "drop"\ndirection = "receive"', "act on what it sends"),
        ('action = "drop"\nkinds = ["COMMIT"]', "sends REQUESTs only, not COMMIT"),
        ('action = "drop"\nseq_min = 3', "'seq_min' does not apply to a client's requests"),
        ('action = "mutate"\nmutate = "digest"', "mutate its request by random or older, not 'digest'"),
        ('action = "equivocate"\nsplit = ["c0"]', "name replica ids"),
        ('action = "dorp"', "did you mean 'drop'"),
    ],
)
def test_what_a_client_cannot_do_is_one_sentence(rule, expected):
    with pytest.raises(UsageError, match=expected) as info:
        parse_scenario(entry(rule), "s.toml")
    assert "s.toml [[byzantine]] #1 rule #1" in str(info.value)


def test_rules_combine_with_a_client_behaviour():
    s = parse_scenario(entry('action = "duplicate"', 'behaviour = "client-replay"\nevery = 3\n'), "s.toml")
    sim, r = run(s)
    assert r.verdict == "PASS", r.violations
    rules = client_rules_of(sim.clients["c1"].driver)
    assert rules is not None and rules.fired[0] > 0
    assert type(sim.clients["c1"].driver.core.behaviour).name == "client-replay"
