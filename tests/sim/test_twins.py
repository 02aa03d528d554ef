"""Twins (pbft.sim.twins, scenario.Twins): the enumeration's size and reductions, the
per-instance addressing of a twinned replica, the `[twins]` scenario table, the
enumeration run at a reduced R on the real core, and on broken cores, where it must find
the violation (a search that cannot fail proves nothing)."""

from __future__ import annotations

import json
from functools import partial

import pytest

from pbft.cli.main import main
from pbft.errors import UsageError
from pbft.sim import campaign, twins
from pbft.sim.network import RoundPartitions
from pbft.sim.scenario import Scenario, Twins, load_scenario, parse_scenario, to_toml
from pbft.sim.simulation import Simulation, run_scenario

T, TP = (3, 0), (3, 1)  # replica 3 and its twin, 3'


def test_thirteen_partitions_a_round_and_the_count_of_schedules():
    # At most two groups, one of them able to form a quorum of 3 distinct replicas.
    for twin in range(4):
        options = twins.round_partitions(4, 1, twin)
        assert len(options) == 13
        for p in options:
            assert 1 <= len(p) <= 2
            assert sorted(i for g in p for i in g) == sorted(twins.instances(4, twin))
            assert any(len({rid for rid, _ in g}) >= 3 for g in p)
    # Per twinned replica: 13^R schedules, of which 5^R keep the twin's copies together
    # (or both alone) in every round and are their own mirror image.
    assert [len(twins.cases(r)) for r in (1, 2, 3)] == [4 * (13**r + 5**r) // 2 for r in (1, 2, 3)]
    assert len(twins.cases(3)) == 4644


def test_each_schedule_once_up_to_exchanging_the_twins_copies():
    cases = twins.cases(2)
    seen = {(c.replica, c.rounds) for c in cases}
    assert len(seen) == len(cases)
    for c in cases:
        mirror = tuple(twins.swap_copies(p, c.replica) for p in c.rounds)
        assert mirror == c.rounds or (c.replica, mirror) not in seen
    # Every twinned replica, so the twin leads round 0, round 1, or neither of them.
    assert {c.replica for c in cases} == {0, 1, 2, 3}


def test_a_quorum_counts_the_twins_two_copies_once():
    assert not twins.has_quorum((((3, 0), (3, 1), (0, 0)), ((1, 0), (2, 0))), 3)
    assert twins.has_quorum((((3, 0), (0, 0), (1, 0)), ((3, 1), (2, 0))), 3)


def schedule(*rounds, round_ms: int = 1000) -> Twins:
    return Twins(3, round_ms, tuple(tuple(tuple(sorted(g)) for g in r) for r in rounds))


SPLIT = ([(0, 0), (1, 0), T], [(2, 0), TP])  # 3 with 0 and 1; its twin with 2
ALL = ([(0, 0), (1, 0), (2, 0), T, TP],)  # one group


def test_a_message_belongs_to_the_view_it_carries_and_ends_with_its_round():
    rp = RoundPartitions(schedule(SPLIT, ALL))
    assert rp.heal_ms == 2000
    assert rp.reaches(0, 0, (0, 0), T) and not rp.reaches(0, 0, (0, 0), TP)
    assert rp.reaches(999, 0, TP, (2, 0)) and not rp.reaches(999, 0, TP, (1, 0))
    assert not rp.reaches(1000, 0, (0, 0), (1, 0))  # round 0 is over: lost until the heal
    assert rp.reaches(1000, 1, (0, 0), TP)  # round 1: everyone together
    assert rp.reaches(500, 5, (0, 0), TP)  # a view past the schedule is not filtered
    assert rp.reaches(2000, 0, (0, 0), TP)  # healed


def test_a_message_to_the_twinned_replica_reaches_the_copies_in_the_senders_group():
    s = Scenario(name="addressing", clients=1, requests=1, twins=schedule(SPLIT, SPLIT))
    sim = Simulation(s)
    status = sim.replicas[0][0].node._status()  # no view of its own: the round under way
    sim._from = sim.replicas[0][0]
    assert sim._reach(0, 3, status) == (0,)
    sim._from = sim.replicas[2][0]
    assert sim._reach(2, 3, status) == (1,)
    sim._from = sim.replicas[3][1]  # 3' sends as replica 3
    assert sim._reach(3, 2, status) == (0,) and sim._reach(3, 1, status) == ()
    assert sim._reach("c0", 3, status) is None  # clients reach both copies
    sim.now = 1500  # round 1, same groups
    sim._from = sim.replicas[1][0]
    assert sim._reach(1, 3, status) == (0,)
    sim.now = 2000  # healed
    assert sim._reach(1, 3, status) == (0, 1)
    assert sim.heal == 2000 and 3 not in sim.correct


def test_the_twins_table_is_read_and_written_back():
    text = """
name = "t"
[workload]
clients = 1
requests = 2
think_ms = 100
[twins]
replica = 3
round_ms = 500
rounds = [[[0, 1, 3], [2, "3'"]], [[0, 1, 2, 3, "3'"]]]
"""
    import tomllib

    s = parse_scenario(tomllib.loads(text), "t.toml")
    assert s.twins == schedule(SPLIT, ALL, round_ms=500)
    assert s.think_ms == 100 and s.faulty_replicas() == [3] and not s.exceeds_fault_assumption()
    again = parse_scenario(tomllib.loads(to_toml(s)), "t.toml")
    assert again.twins == s.twins and again.think_ms == 100


@pytest.mark.parametrize(
    "rounds, extra, says",
    [
        ('[[[0, 1, 3], [2]]]', "", "leaves out 3'"),
        ('[[[0, 1, 3], [2, "3\'", 1]]]', "", "twice"),
        ('[[[0, 1, 3], [2, "2\'"]]]', "", "is not an instance"),
        ('[[[0, 1, 3], [2, "3\'"]]]', "[[network]]\ntwin = 1\n", "twins a replica already"),
        ('[[[0, 1, 3], [2, "3\'"]]]', "[[network]]\ncrash = 3\n", "cannot also crash"),
    ],
)
def test_a_bad_twins_table_is_one_sentence(rounds, extra, says):
    import tomllib

    text = f"[twins]\nreplica = 3\nrounds = {rounds}\n{extra}"
    with pytest.raises(UsageError, match=says):
        parse_scenario(tomllib.loads(text), "bad.toml")


def outcomes(rounds: int, broken: str = "", indices=None) -> list[campaign.SeedOutcome]:
    opts = campaign.Options(1, f"twins R={rounds} seed=0", broken)
    runner = partial(twins.run_case, rounds=rounds)
    seq = range(len(twins.cases(rounds))) if indices is None else indices
    return [runner(i, opts) for i in seq]


def test_every_one_round_schedule_and_a_sample_of_two_round_ones_pass_on_the_real_core():
    done = outcomes(1) + outcomes(2, indices=range(0, len(twins.cases(2)), 13))
    assert len(done) == 36 + 30
    bad = [(o.seed, o.what, o.violation.check if o.violation else o.crash) for o in done if o.violation or o.crash]
    assert bad == []


@pytest.mark.parametrize("broken, check, partitioned", [("weak-prepare-quorum", "prepared-uniqueness", True),
                                                        ("commit-unprepared", "agreement", False)])
def test_the_enumeration_finds_what_a_broken_core_gets_wrong(broken, check, partitioned, tmp_path):
    found = [o for o in outcomes(1, broken) if o.violation is not None]
    assert found and {o.violation.check for o in found} == {check}
    if partitioned:
        # It takes a partition (the per-instance addressing): the schedules that keep
        # everyone together pass. (Committing unprepared breaks with twins together too.)
        together = [i for i, c in enumerate(twins.cases(1)) if len(c.rounds[0]) == 1]
        assert together and not {o.seed for o in found} & set(together)
    # The scenario file written for it replays the violation.
    o = found[0]
    path = tmp_path / "found.toml"
    path.write_text(o.violation.toml)
    r = run_scenario(load_scenario(str(path)))
    assert r.violations and r.violations[0].check == check


def test_pbft_twins_runs_the_enumeration_and_writes_what_it_finds(tmp_path, capsys):
    out = tmp_path / "found"
    code = main(["twins", "--rounds", "1", "--jobs", "1", "--broken", "commit-unprepared", "--shard", "0/4",
                 "--out-dir", str(out), "-o", str(tmp_path / "r.json")])
    assert code == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["runs"] == 9 and doc["twins"]["cases"] == 36 and doc["violations"]
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(f"twins-R1-{v['seed']}.toml" for v in doc["violations"])
    text = capsys.readouterr().out
    assert "case " in text and "agreement" in text and "9 of 36 cases (R=1)" in text
    assert main(["scenario", "run", str(files[0])]) == 1
