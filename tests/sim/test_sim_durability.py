"""Simulated durability: the store follows events.py exactly, a crash restarts from it
through `Replica.recover`, the oracle judges a durably restarted replica as one signer
across incarnations, and a restart from nothing (amnesia) is a faulty replica."""

from __future__ import annotations

import pytest
from conftest import make_config, make_replica
from test_sim_oracle import CFG, D1, D2, KEYS

from pbft.errors import UsageError
from pbft.protocol.crypto import seal
from pbft.protocol.events import Broadcast, Persist, Received, Record, Tick, Truncate
from pbft.protocol.messages import Commit
from pbft.protocol.viewchange import ViewStatus
from pbft.sim.oracle import Oracle
from pbft.sim.scenario import NetworkFault, Scenario, parse_scenario, to_toml
from pbft.sim.simulation import Simulation, apply_durability, run_scenario


def test_store_replaces_by_key_and_truncates_only_log_records():
    store: dict = {}
    for a in (
        Persist(Record.VOTE, 3, 0, "prepare", b"a"),
        Persist(Record.VOTE, 3, 0, "prepare", b"b"),  # same key: replaces
        Persist(Record.VOTE, 9, 0, "prepare", b"c"),
        Persist(Record.PREPARED, 2, 0, "", b"p"),
        Persist(Record.EXECUTED, 2, 0, "", b"e"),
        Persist(Record.CHECKPOINT, 0, 0, "", b"k"),
        Persist(Record.VIEW, 0, 0, "", b"v"),
        Truncate(3),
    ):
        apply_durability(store, a)
    assert sorted((r.record.value, r.seq, r.value) for r in store.values()) == [
        ("checkpoint", 0, b"k"),
        ("view", 0, b"v"),
        ("vote", 9, b"c"),
    ]


def test_durable_restart_is_one_signer_across_incarnations():
    o = Oracle(CFG, [0, 1, 2, 3], ["c0"])
    a = seal(KEYS[1], "t", 1, Commit(0, 5, D1)).to_bytes()
    b = seal(KEYS[1], "t", 1, Commit(0, 5, D2)).to_bytes()
    o.observe_replica(1, (1, 0), 0, [Broadcast(a)], (1, 0))
    o.observe_replica(1, (1, 1), 0, [Broadcast(b)], (1, 0))  # same identity, new incarnation
    assert [v.check for v in o.violations] == ["prepared-uniqueness"]


def test_amnesia_parses_counts_as_faulty_and_round_trips():
    data = {"network": [{"crash": 2, "at_ms": 10, "until_ms": 50, "amnesia": True}]}
    s = parse_scenario(data)
    assert s.faulty_replicas() == [2]
    import tomllib

    assert parse_scenario(tomllib.loads(to_toml(s))) == parse_scenario(data)
    with pytest.raises(UsageError, match="amnesia"):
        parse_scenario({"network": [{"crash": 2, "at_ms": 10, "amnesia": True}]})
    durable = parse_scenario({"network": [{"crash": 2, "at_ms": 10, "until_ms": 50}]})
    assert durable.faulty_replicas() == []


def test_crashed_backup_recovers_its_executions_from_the_store():
    s = Scenario(name="r", seed=3, clients=2, requests=40, network=(NetworkFault(200, 700, crash=2),))
    sim = Simulation(s)
    seen = []
    original = sim.oracle.note_recovered
    sim.oracle.note_recovered = lambda rid, who, rep: (seen.append((rid, who, rep.last_executed)), original(rid, who, rep))
    r = sim.run()
    assert r.passed, r.violations
    assert len(seen) == 1 and seen[0][0] == 2 and seen[0][1] == (2, 1) and seen[0][2] > 0
    assert r.requests_completed == r.requests_total


def test_recovered_state_that_differs_from_the_history_is_caught():
    s = Scenario(name="r", seed=3, clients=2, requests=40, network=(NetworkFault(200, 700, crash=2),))
    sim = Simulation(s)
    original = sim._new_instance

    def tampered(rid, store=None, state=None, spec=None):
        inst = original(rid, store, state, spec)
        if store:
            inst.node.service.data[b"k0"] = b"tampered"
        return inst

    sim._new_instance = tampered
    r = sim.run()
    assert r.violations and r.violations[0].check == "exactly-once" and "recovered" in r.violations[0].detail


def test_every_replica_crashing_at_once_loses_no_acknowledged_write():
    s = Scenario(
        name="all",
        seed=9,
        clients=2,
        requests=40,
        read_only=0.3,
        network=tuple(NetworkFault(300, 600, crash=i) for i in range(4)),
    )
    r = run_scenario(s)
    assert r.passed, r.violations
    assert r.requests_completed == r.requests_total
    assert min(rep.last_executed for rep in r.replicas) > 0


def test_a_crash_before_anything_was_persisted_restarts_fresh():
    # A crash at time 0 (nothing stored yet) restarts as a fresh replica.
    s = Scenario(name="early", seed=1, clients=1, requests=5, network=(NetworkFault(0, 100, crash=1),))
    assert run_scenario(s).passed



def test_amnesiac_primary_never_raises_from_step():
    # Seed 24 once made an amnesiac primary prepare its own relayed pre-prepare, and its
    # next VIEW-CHANGE check raised from step().
    from pathlib import Path

    from pbft.sim.scenario import load_scenario

    s = load_scenario(str(Path(__file__).parents[1] / "scenarios" / "crash-amnesia.toml"))
    r = run_scenario(s, 24)
    assert r.passed, r.violations


def test_unsynced_reply_only_writes_are_rolled_back_exactly():
    """The runtime lets replies precede the commit of a step whose writes are only
    EXECUTED/CHECKPOINT records (or truncation): the simulator keeps such writes in an
    undo log and a crash takes them back, leaving exactly the store before them."""
    from pbft.protocol.events import SendClient
    from pbft.protocol.ready import Durability, Ready
    from pbft.sim.simulation import roll_back

    store: dict = {}
    base = [
        Persist(Record.VOTE, 3, 0, "prepare", b"a"),
        Persist(Record.PREPARED, 3, 0, "", b"p"),
        Persist(Record.CHECKPOINT, 0, 0, "", b"old"),
    ]
    for a in base:
        apply_durability(store, a)
    before = dict(store)
    step = [
        Persist(Record.EXECUTED, 3, 0, "", b"e"),
        Persist(Record.CHECKPOINT, 0, 0, "", b"new"),
        Truncate(3),
        SendClient("c0", b"reply"),
    ]
    assert Ready.of(step).durability is Durability.MAY_FOLLOW_REPLIES
    undo: list = []
    for a in step:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a, undo)
    assert store != before
    roll_back(store, undo)
    assert store == before and undo == []
    # A step that also writes its PREPARED record, or sends a vote, waits for its commit.
    def durability(actions):
        return Ready.of(actions).durability

    assert durability([Persist(Record.PREPARED, 4, 0, "", b"p"), SendClient("c0", b"r")]) is Durability.BEFORE_SENDS
    assert durability([Persist(Record.EXECUTED, 4, 0, "", b"e"), Broadcast(b"checkpoint")]) is Durability.BEFORE_SENDS
    assert durability([SendClient("c0", b"r")]) is Durability.NONE  # no writes: behind earlier commits


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_all_replicas_crashing_with_unsynced_executions_lose_no_acknowledged_write(seed):
    """Every replica crashes at once, repeatedly, while replies run ahead of their
    EXECUTED records (rolled back by each crash): no acknowledged write is lost and
    every request still completes."""
    s = Scenario(
        name="all-unsynced",
        seed=seed,
        clients=3,
        requests=60,
        read_only=0.3,
        network=tuple(
            NetworkFault(start, start + 150, crash=i)
            for start in (200 + 37 * seed, 900 + 11 * seed)
            for i in range(4)
        ),
    )
    r = run_scenario(s)
    assert r.passed, r.violations
    assert r.requests_completed == r.requests_total


def test_a_replica_restarted_while_awaiting_a_new_view_runs_its_new_view_timer_again():
    """2f+1 VIEW-CHANGEs for view 1 started replica 2's new-view timer (4.5.2); it crashes.
    Those VIEW-CHANGEs are not persisted, and peers that moved on to view 2 never resend
    them, so the restarted replica must time view 1 out again on its own (fuzz seed
    70238, tests/scenarios/fuzz-70238-restart-awaiting-new-view.toml). A replica that was
    in view 1 alone gets no timer: it must not race ahead of the others."""
    cfg = make_config()
    reps = {i: make_replica(cfg, i) for i in (1, 2, 3)}
    records: dict[int, list] = {i: [] for i in reps}
    vcs = {}
    for i, rep in reps.items():
        rep._out = []
        rep.become_view_change(1)
        out, rep._out = rep._out, []
        records[i] += [a for a in out if isinstance(a, Persist)]
        vcs[i] = next(a.data for a in out if isinstance(a, Broadcast))
    for i in (1, 3):
        records[2] += [a for a in reps[2].step(Received(i, vcs[i])) if isinstance(a, Persist)]
    assert reps[2].new_view_timeout.running and not reps[3].new_view_timeout.running
    for i, expect_timer in ((2, True), (3, False)):
        again = make_replica(cfg, i)
        again.recover(records[i])
        assert again.view == 1 and again.status is ViewStatus.VIEW_CHANGE
        assert again.new_view_timeout.running == expect_timer
        for _ in range(10 * cfg.view_change_timeout_ms // cfg.tick_ms):
            again.step(Tick())
        assert again.view == (2 if expect_timer else 1)


def test_a_restarted_new_primary_can_still_send_its_new_view():
    """Replica 1 installs view 1 with its NEW-VIEW and crashes; replica 3 missed the
    NEW-VIEW and keeps sending its VIEW-CHANGE for view 1. Restarted from its records,
    replica 1 answers with the same NEW-VIEW (fuzz seed 120835,
    tests/scenarios/fuzz-120835-restarted-primary-resends-new-view.toml)."""
    cfg = make_config()
    reps = {i: make_replica(cfg, i) for i in (0, 1, 2, 3)}
    vcs = {}
    for i in (0, 2, 3):
        rep = reps[i]
        rep._out = []
        rep.become_view_change(1)
        out, rep._out = rep._out, []
        vcs[i] = next(a.data for a in out if isinstance(a, Broadcast))
    primary = reps[1]
    records = []
    for i in (0, 2, 3):
        records += [a for a in primary.step(Received(i, vcs[i])) if isinstance(a, Persist)]
    assert primary.view == 1 and primary.status is ViewStatus.NORMAL and primary.new_view_data
    again = make_replica(cfg, 1)
    again.recover(records)
    assert again.view == 1 and again.status is ViewStatus.NORMAL
    sent = again.step(Received(3, vcs[3]))
    assert [a.data for a in sent if getattr(a, "to", None) == 3] == [primary.new_view_data]


def test_new_view_is_resent_only_for_a_signed_view_change_and_once_per_period():
    cfg = make_config()
    vcs = {}
    for i in (0, 2, 3):
        rep = make_replica(cfg, i)
        rep._out = []
        rep.become_view_change(1)
        out, rep._out = rep._out, []
        vcs[i] = next(a.data for a in out if isinstance(a, Broadcast))
    primary = make_replica(cfg, 1)
    for i in (0, 2, 3):
        primary.step(Received(i, vcs[i]))
    assert primary.status is ViewStatus.NORMAL and primary.new_view_data

    def resent(data) -> int:
        return sum(1 for a in primary.step(Received(3, data)) if getattr(a, "to", None) == 3)

    from pbft.protocol.messages import Envelope, envelope_from_bytes

    env = envelope_from_bytes(vcs[3])
    forged = Envelope(env.body, 3, bytes(64)).to_bytes()
    for _ in range(primary._retransmit_ticks):  # past the NEW-VIEW's own broadcast
        primary.step(Tick())
    assert resent(forged) == 0  # a bad signature: counted, nothing sent
    assert resent(vcs[3]) == 1
    assert resent(vcs[3]) == 0  # replayed within the retransmission period
    for _ in range(primary._retransmit_ticks):
        primary.step(Tick())
    assert resent(vcs[3]) == 1
