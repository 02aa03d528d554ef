"""Named repliers: a write asks f+1 replicas to reply, and every fault of a named one
costs the client at most one retransmission per ClientCore.SUSPECT_REQUESTS requests.

Rules under test: Request.repliers on the wire (one encoding per request), the client's
choice of repliers and what it does when one fails it (ClientCore), which replicas reply
as a request executes (Replica._replies_to), and end to end in the simulator, with
replicas that crash, lie to clients or withhold replies.
"""

from __future__ import annotations

import pytest
from conftest import (
    actions_of,
    decoded,
    drive_to_execution,
    feed,
    make_client,
    make_config,
    make_replica,
    seal_as,
    sign_pre_prepare,
)
from hypothesis import given
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Completed, Received, SendClient, Tick
from pbft.protocol.messages import Envelope, Reply, Request, SchemaError, from_body, to_body
from pbft.service.kv import op_put
from pbft.sim.scenario import NetworkFault, Scenario
from pbft.sim.simulation import Simulation

# -- the wire -----------------------------------------------------------------------------


@given(
    st.lists(st.integers(0, 63), unique=True, max_size=64).map(lambda ids: tuple(sorted(ids))),
    st.booleans(),
)
def test_repliers_round_trip_and_are_left_out_when_empty(repliers, ro):
    req = Request(b"op", 7, "alice", ro, repliers)
    body = to_body(req)
    assert from_body(body) == req
    assert len(codec.decode(body)) == (6 if repliers else 5)


@pytest.mark.parametrize(
    "bad",
    [
        [1, b"op", 7, "alice", False, []],  # empty: must be left out, one encoding
        [1, b"op", 7, "alice", False, [2, 1]],  # not increasing
        [1, b"op", 7, "alice", False, [1, 1]],  # repeated
        [1, b"op", 7, "alice", False, [-1]],
        [1, b"op", 7, "alice", False, list(range(65))],
        [1, b"op", 7, "alice", False, 3],
        [1, b"op", 7, "alice"],  # read_only is not optional
    ],
)
def test_malformed_repliers_are_schema_errors(bad):
    with pytest.raises(SchemaError):
        from_body(codec.encode(bad))


# -- the client ---------------------------------------------------------------------------


def reply(replica: int, ts: int, result: bytes = b"ok", client: str = "alice") -> bytes:
    return Envelope(to_body(Reply(0, ts, client, replica, result)), replica, b"").to_bytes()


def named(sent) -> tuple[int, ...]:
    return decoded(sent.data)[1].repliers


def complete(client, result: bytes = b"ok", from_: tuple[int, ...] | None = None) -> None:
    """Deliver matching replies from the named replicas (or `from_`) until it completes."""
    ts = client.outstanding.timestamp
    for r in from_ if from_ is not None else client.outstanding.repliers:
        out = client.step(Received(r, reply(r, ts, result)))
    assert out == [Completed(ts, result)]


def test_writes_name_f_plus_1_repliers_in_turn():
    cfg = make_config()
    alice = make_client(cfg, "alice")
    counts = {r: 0 for r in cfg.replica_ids()}
    for _ in range(40):
        [send] = alice.submit(op_put(b"k", b"v"))
        assert len(named(send)) == cfg.f + 1
        for r in named(send):
            counts[r] += 1
        complete(alice)
    assert set(counts.values()) == {20}  # every replica replies to its share


def test_reads_strong_writes_and_all_replies_name_nobody_or_a_quorum():
    cfg = make_config()
    assert named(make_client(cfg, "alice").submit(b"op", read_only=True)[0]) == ()
    assert named(make_client(cfg, "alice", all_replies=True).submit(b"op")[0]) == ()
    assert len(named(make_client(cfg, "alice", strong_writes=True).submit(b"op")[0])) == cfg.quorum


def tick_until_resend(client) -> list:
    for _ in range(1000):
        out = client.step(Tick())
        if out:
            return out
    raise AssertionError("the timer never fired")


def test_a_silent_named_replica_is_worked_around_and_left_out():
    cfg = make_config()
    alice = make_client(cfg, "alice", retransmit_ticks=4)
    [send] = alice.submit(b"op")
    answered, silent = named(send)
    assert alice.step(Received(answered, reply(answered, 1))) == []
    resent = tick_until_resend(alice)
    # Executed (one reply came), so only the replicas it did not name are asked, and the
    # timeout is not doubled: still nothing reaches a replica that is merely cut off.
    others = sorted(set(cfg.replica_ids()) - {answered, silent})
    assert sorted(a.to for a in resent) == others and all(a.data == send.data for a in resent)
    assert alice.outstanding.timeout == 4
    complete(alice, from_=(others[0],))
    assert alice.retransmissions == 1
    for _ in range(alice.SUSPECT_REQUESTS):
        [send] = alice.submit(b"op")
        assert silent not in named(send)
        complete(alice)
    [send] = alice.submit(b"op")  # trusted again after SUSPECT_REQUESTS requests
    seen = set(named(send))
    complete(alice)
    for _ in range(3):
        seen |= set(named(alice.submit(b"op")[0]))
        complete(alice)
    assert silent in seen


def test_no_reply_at_all_is_an_ordering_problem_sent_to_everyone():
    cfg = make_config()
    alice = make_client(cfg, "alice", retransmit_ticks=4)
    [send] = alice.submit(b"op")
    resent = tick_until_resend(alice)
    assert sorted(a.to for a in resent) == list(cfg.replica_ids())
    assert alice.outstanding.timeout == 8  # backed off as before
    complete(alice, from_=named(send))
    assert set(named(alice.submit(b"op")[0])) <= set(cfg.replica_ids())
    assert len(alice._left_out) == 0  # nobody blamed for the primary's delay


def test_after_a_targeted_resend_the_next_one_goes_to_everyone():
    cfg = make_config()
    alice = make_client(cfg, "alice", retransmit_ticks=4)
    [send] = alice.submit(b"op")
    first = named(send)[0]
    alice.step(Received(first, reply(first, 1)))
    tick_until_resend(alice)
    assert sorted(a.to for a in tick_until_resend(alice)) == list(cfg.replica_ids())


def test_a_named_replica_that_lies_is_left_out():
    cfg = make_config()
    alice = make_client(cfg, "alice")
    [send] = alice.submit(b"op")
    honest, liar = named(send)
    alice.step(Received(liar, reply(liar, 1, b"lie")))
    alice.step(Received(honest, reply(honest, 1)))
    other = next(r for r in cfg.replica_ids() if r not in (honest, liar))
    assert alice.step(Received(other, reply(other, 1))) == [Completed(1, b"ok")]
    for _ in range(20):
        [send] = alice.submit(b"op")
        assert liar not in named(send)
        complete(alice)


def test_with_too_few_trusted_replicas_everyone_is_asked():
    cfg = make_config()
    alice = make_client(cfg, "alice")
    alice._leave_out([0, 1, 2])
    assert named(alice.submit(b"op")[0]) == ()


# -- the replica --------------------------------------------------------------------------


def request(client: str, ts: int, repliers: tuple[int, ...]) -> bytes:
    return seal_as(client, Request(op_put(b"k", client.encode()), ts, client, False, repliers))


def replied_to(actions) -> list[str]:
    return sorted(a.client for a in actions_of(actions, SendClient))


def execute(rep, batch: tuple[bytes, ...], seq: int = 1) -> list:
    feed(rep, 0, sign_pre_prepare(seq, batch))
    return drive_to_execution(rep, seq, batch_digest(batch))


def test_only_named_replicas_reply_in_a_batch():
    cfg = make_config(clients=("alice", "bob", "carol"))
    batch = (request("alice", 1, (1, 2)), request("bob", 1, (2, 3)), request("carol", 1, ()))
    assert replied_to(execute(make_replica(cfg, 1), batch)) == ["alice", "carol"]
    assert replied_to(execute(make_replica(cfg, 3), batch)) == ["bob", "carol"]


def test_a_request_alone_in_its_batch_gets_every_reply():
    # The cluster is idle: the client takes the fastest f+1 of all n.
    batch = (request("alice", 1, (2, 3)),)
    assert replied_to(execute(make_replica(make_config(), 1), batch)) == ["alice"]


def test_a_backup_the_client_sent_the_request_to_replies_though_not_named():
    rep = make_replica(make_config(), 1)
    alice = request("alice", 1, (2, 3))
    feed(rep, "alice", alice)  # a retransmission: the first send goes to the primary
    batch = (alice, request("bob", 1, (2, 3)))
    assert replied_to(execute(rep, batch)) == ["alice"]


def test_a_primary_that_got_the_request_twice_replies_though_not_named():
    rep = make_replica(make_config(clients=("alice", "bob", "carol")), 0)
    feed(rep, "carol", request("carol", 1, (2, 3)))  # proposed at once, alone, as seq 1
    alice, bob = request("alice", 1, (2, 3)), request("bob", 1, (2, 3))
    feed(rep, "alice", alice)
    feed(rep, "bob", bob)  # two waiting: a worthwhile batch, seq 2
    assert len(rep.log.get(2).requests) == 2
    feed(rep, "alice", alice)  # resent while ordered
    drive_to_execution(rep, 1, rep.log.get(1).digest)
    assert replied_to(drive_to_execution(rep, 2, rep.log.get(2).digest)) == ["alice"]


def test_a_resent_executed_request_gets_every_replicas_cached_reply():
    for r in (1, 3):
        rep = make_replica(make_config(), r)
        alice = request("alice", 1, (2,))
        execute(rep, (alice, request("bob", 1, (2,))))
        assert replied_to(feed(rep, "alice", alice)) == ["alice"]


# -- end to end ---------------------------------------------------------------------------


def run(scenario: Scenario):
    sim = Simulation(scenario)
    replies = {"n": 0}
    step = sim._client_step

    def counting(cs, event):
        if isinstance(event, Received) and isinstance(event.peer, int):
            replies["n"] += 1
        return step(cs, event)

    sim._client_step = counting
    result = sim.run()
    assert result.passed, [v.detail for v in result.violations]
    assert result.view_changes == 0
    resent = sum(cs.core.retransmissions for cs in sim.clients.values())
    return result, replies["n"], resent


def test_under_load_a_fault_free_cluster_sends_about_f_plus_1_replies_per_request():
    result, replies, resent = run(Scenario(name="load", seed=7, clients=12, requests=25, read_only=0.0))
    assert result.requests_completed == 300 and resent == 0
    # Every replica would send 4 per request; batches of one (idle moments) still do.
    assert replies < 2.6 * result.requests_completed


@pytest.mark.parametrize("f", [1, 2])
def test_a_crashed_replica_costs_each_client_at_most_one_retransmission(f):
    crashed = 3 * f  # a backup, down for the whole run
    s = Scenario(
        name="crashed backup",
        f=f,
        seed=11,
        clients=8,
        requests=40,
        read_only=0.0,
        network=(NetworkFault(0, None, crash=crashed),),
    )
    result, _, resent = run(s)
    assert result.requests_completed == 320
    assert resent <= 8  # at most one per client in SUSPECT_REQUESTS requests
