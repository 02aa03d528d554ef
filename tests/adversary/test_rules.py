"""Declarative message rules (pbft/adversary/rules.py, docs/rules.md): scenario files
script a Byzantine replica without Python, the rules visibly act, the protocol tolerates
them, bad rules are one sentence, and everything replays from the seed."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from pbft.adversary.rules import MUTATIONS, rules_of
from pbft.errors import UsageError
from pbft.protocol.events import Reason
from pbft.sim.scenario import load_scenario, parse_scenario, to_toml
from pbft.sim.simulation import Simulation, run_scenario

pytestmark = pytest.mark.timeout(120)

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def _run(s):
    sim = Simulation(s)
    return sim, sim.run()


def _rules(sim, rid):
    b = rules_of(sim.replicas[rid][0].node)
    assert b is not None
    return b


def _scenario(text: str, source: str = "t.toml"):
    return parse_scenario(tomllib.loads(text), source)


HEAD = """
name = "t"
seed = 4
[workload]
clients = 2
requests = 6
[[byzantine]]
replica = {rid}
{extra}
"""


def _with_rule(rule: str, rid: int = 0, extra: str = "", more: str = "") -> str:
    return HEAD.format(rid=rid, extra=extra) + "[[byzantine.rule]]\n" + rule + "\n" + more


def test_drop_commits_scenario_acts_and_passes():
    sim, r = _run(load_scenario(str(SCENARIOS / "rules-drop-commits.toml")))
    assert r.passed, r.violations
    assert _rules(sim, 2).fired[0] > 0


def test_equivocating_primary_scenario_acts_and_passes():
    sim, r = _run(load_scenario(str(SCENARIOS / "rules-equivocate-pre-prepare.toml")))
    assert r.passed, r.violations
    assert _rules(sim, 0).fired[0] > 0
    assert r.view_changes >= 1  # the equivocation stalled view 0


def test_replayed_old_new_view_scenario_acts_and_passes():
    sim, r = _run(load_scenario(str(SCENARIOS / "rules-replay-old-new-view.toml")))
    assert r.passed, r.violations
    b = _rules(sim, 3)
    assert b.fired[0] > 0 and b.fired[1] > 0
    # The re-signed copy was refused by a correct replica: 3 is not the primary of view 2.
    refused = sum(
        inst.node.rejects[(3, Reason.NOT_PRIMARY)]
        for rid in (0, 2) for inst in sim.replicas[rid]
    )
    assert refused > 0


def test_same_seed_same_trace_and_toml_round_trip():
    s = load_scenario(str(SCENARIOS / "rules-replay-old-new-view.toml"))
    a, b = run_scenario(s), run_scenario(s)
    assert a.trace_digest == b.trace_digest
    again = _scenario(to_toml(s), "again.toml")
    assert again.byzantine[0].params["rule"] == s.byzantine[0].params["rule"]
    assert run_scenario(again).trace_digest == a.trace_digest


def test_behaviour_and_rules_combine():
    # The behaviour votes for random digests; the rules then drop those PREPAREs to 2.
    s = _scenario(_with_rule('kinds = ["PREPARE"]\nto = [2]\naction = "drop"', rid=1,
                             extra='behaviour = "wrong-digest-vote"'))
    sim, r = _run(s)
    assert r.passed, r.violations
    assert _rules(sim, 1).fired[0] > 0
    assert sim.replicas[1][0].node.core.behaviour.name == "wrong-digest-vote"
    out = to_toml(s)
    assert 'behaviour = "wrong-digest-vote"' in out and "[[byzantine.rule]]" in out


def test_received_messages_can_be_dropped_and_the_window_holds():
    s = _scenario(_with_rule('direction = "receive"\nkinds = ["PREPARE"]\nfrom = [2]\n'
                             'at_ms = 0\nuntil_ms = 60\naction = "drop"', rid=1))
    sim, r = _run(s)
    assert r.passed, r.violations
    assert _rules(sim, 1).fired[0] > 0


def test_times_and_probability_limit_firing():
    s = _scenario(_with_rule('kinds = ["COMMIT"]\nprobability = 0.5\ntimes = 3\naction = "drop"', rid=1))
    sim, r = _run(s)
    assert r.passed, r.violations
    assert _rules(sim, 1).fired == [3]


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_every_mutation_acts_and_is_tolerated(mutation):
    kinds = {"batch": "PRE-PREPARE", "request": "PRE-PREPARE", "kind": "PREPARE"}.get(mutation)
    rid = 0 if kinds == "PRE-PREPARE" else 1
    rule = f'action = "mutate"\nmutate = "{mutation}"\n'
    rule += f'kinds = ["{kinds}"]\n' if kinds else 'kinds = ["PREPARE", "COMMIT", "CHECKPOINT"]\n'
    s = _scenario(_with_rule(rule, rid=rid).replace("requests = 6", "requests = 12"))
    sim, r = _run(s)
    assert r.passed, r.violations
    assert _rules(sim, rid).fired[0] > 0, (mutation, _rules(sim, rid).inapplicable)


def test_duplicate_and_delay_and_replay_of_own_messages():
    s = _scenario(_with_rule('kinds = ["COMMIT"]\naction = "duplicate"\ncopies = 2', rid=1,
                             more='[[byzantine.rule]]\nkinds = ["PREPARE"]\naction = "delay"\ndelay_ms = 30\n'
                                  '[[byzantine.rule]]\nkinds = ["CHECKPOINT"]\naction = "replay"\n'
                                  'pick = "random"\nsend_to = [0, 2, 3]\n'))
    sim, r = _run(s)
    assert r.passed, r.violations
    b = _rules(sim, 1)
    assert b.fired[0] > 0 and b.fired[1] > 0


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ('kind = ["COMMIT"]\naction = "drop"', ["rule #1", "unknown key 'kind'", "did you mean 'kinds'"]),
        ('action = "dorp"', ["rule #1", "did you mean 'drop'"]),
        ('kinds = ["COMIT"]\naction = "drop"', ["did you mean 'COMMIT'"]),
        ('seqs = "5-20"\naction = "drop"', ["'seq_min' and 'seq_max'"]),
        ('action = "delay"', ["needs 'delay_ms'"]),
        ('action = "mutate"\nmutate = "batch"\nkinds = ["COMMIT"]', ["changes only PRE-PREPARE"]),
        ('direction = "receive"\naction = "mutate"\nmutate = "seq"', ["can only be dropped"]),
        ('from = [1]\naction = "drop"', ["'from' applies to received messages"]),
        ('action = "drop"\ndelay_ms = 5', ["'delay_ms' belongs to action delay or replay"]),
        ('seq_min = 9\nseq_max = 3\naction = "drop"', ["'seq_max' (3) is below 'seq_min' (9)"]),
        ('action = "equivocate"\nsplit = [7]', ["'split' names 7"]),
        # The bound is said (a red-team pass read "must be non-zero" for a value that was).
        ('action = "mutate"\nmutate = "seq"\nby = 9223372036854775807',
         ["'by' must be a non-zero integer from -2^32 to 2^32, not 9223372036854775807"]),
    ],
)
def test_a_bad_rule_is_one_sentence_naming_the_entry_and_rule(rule, words):
    text = _with_rule('action = "drop"') + "[[byzantine.rule]]\n" + rule + "\n"
    with pytest.raises(UsageError) as err:
        _scenario(text, "bad.toml")
    msg = str(err.value)
    assert msg.startswith("bad.toml [[byzantine]] #1 rule #2") or "rule #1" in words, msg
    for w in words:
        assert w.replace("rule #1", "rule #2") in msg, msg
    assert msg.count("\n") == 0


def test_parameters_without_a_behaviour_are_refused():
    with pytest.raises(UsageError, match="names no 'behaviour'"):
        _scenario(_with_rule('action = "drop"', extra="seq_min = 3"))


def test_a_client_entry_takes_only_rules_a_client_can_follow():
    text = HEAD.format(rid=0, extra="").replace("replica = 0", "client = 0") + '[[byzantine.rule]]\naction = "drop"\n'
    assert _scenario(text).byzantine[0].target == "client"  # tests/adversary/test_client_rules.py
    with pytest.raises(UsageError, match="sends REQUESTs only"):
        _scenario(text + 'kinds = ["PREPARE"]\n')


def test_a_rule_layer_over_a_behaviour_reports_failures_in_one_place():
    s = _scenario(_with_rule('kinds = ["PREPARE"]\naction = "duplicate"', rid=1,
                             extra='behaviour = "wrong-digest-vote"'))
    sim = Simulation(s)
    node = sim.replicas[1][0].node
    assert node.failures is node.core.failures
    node._failed("on_send", RuntimeError("boom"))
    assert node.failure_count == 1 and "rules" in node.failures[0].sentence()


@pytest.mark.parametrize(
    ("name", "broken", "rid"),
    [
        ("rules-new-view-batch", "new-view-not-recomputed", 1),
        ("rules-view-change-cert-batch", "unchecked-prepared-cert", 0),
        ("rules-state-chunk-flip", "unverified-chunk", 1),
    ],
)
def test_rule_scenarios_catch_their_broken_core(name, broken, rid):
    s = load_scenario(str(SCENARIOS / f"{name}.toml"))
    sim, r = _run(s)
    assert r.passed, r.violations
    assert _rules(sim, rid).fired[0] > 0
    bad = run_scenario(replace(s, broken=broken))
    assert bad.violations and bad.violations[0].check in ("agreement", "exactly-once", "liveness")
