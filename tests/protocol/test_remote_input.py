"""Remote input (docs/architecture.md, "Conventions in the code"): anything a peer sends that
is malformed, forged or out of place is dropped with a counted reason, changes nothing,
and never makes a replica raise; reads wait for prepared slots; surplus votes are dropped
unverified but a double vote behind them is still evidence.

Init, act, check against one replica of a 4-replica f=1 cluster (tests/conftest.py, "one
replica under test").
"""

from __future__ import annotations

import pytest
from conftest import (
    D_OTHER,
    actions_of,
    decoded,
    feed,
    forge,
    make_config,
    make_replica,
    pre_prepare,
    put,
    rejections,
    seal_as,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
    snapshot,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.crypto import KeyPair, batch_digest, seal
from pbft.protocol.events import (
    Broadcast,
    Evidence,
    Reason,
    Received,
    Rejected,
    Send,
    SendClient,
    Tick,
)
from pbft.protocol.messages import (
    Checkpoint,
    Commit,
    FetchState,
    NewView,
    Prepare,
    PrePrepare,
    QueryStatus,
    Reply,
    Request,
    StateChunk,
    Status,
    ViewChange,
)
from pbft.protocol.viewchange import ViewStatus
from pbft.service.kv import op_get, op_put

# -- bad input is dropped and changes nothing ------------------------------------------------


def _bad_inputs():
    good_prepare = sign_prepare(2, 2, D_OTHER)
    mallory = KeyPair.from_seed(b"mallory")
    return {
        "garbage": (b"\xff\xfe garbage", Reason.MALFORMED),
        "empty": (b"", Reason.MALFORMED),
        "truncated envelope": (good_prepare[:-5], Reason.MALFORMED),
        "body not a message": (codec.encode([b"\x01", 2, b"s" * 64]), Reason.MALFORMED),
        "unknown replica id": (seal(mallory, "test-cluster", 7, Prepare(0, 2, D_OTHER)).to_bytes(), Reason.UNKNOWN_SIGNER),
        "unknown client": (seal(mallory, "test-cluster", "mallory", Request(b"x", 1, "mallory")).to_bytes(), Reason.UNKNOWN_SIGNER),
        "prepare from a client": (seal_as("alice", Prepare(0, 2, D_OTHER)), Reason.WRONG_ROLE),
        "reply to a replica": (seal_as(2, Reply(0, 1, "alice", 2, b"")), Reason.WRONG_ROLE),
        "status from a client": (seal_as("alice", Status(0, 0, 0, 0)), None),
        "view-change from a client": (seal_as("alice", ViewChange(1, 0, (), ())), Reason.WRONG_ROLE),
        "new-view not by the new primary": (seal_as(2, NewView(1, (), ())), Reason.NOT_PRIMARY),
        "fetch-state for a state we lack": (seal_as(2, FetchState(4, D_OTHER, 2, 0, 0)), None),
        "state chunk nobody asked for": (seal_as(2, StateChunk(4, D_OTHER, 2, 0, 0, 1, b"")), None),
        "bad signature pre-prepare": (forge(0, PrePrepare(0, 2, batch_digest(()), ()), real_signer=3), Reason.BAD_SIGNATURE),
        "bad signature request": (forge("alice", Request(op_put(b"k", b"v"), 9, "alice"), real_signer="bob"), Reason.BAD_REQUEST),
        "query-status relayed": (forge("alice", QueryStatus(1), real_signer="bob"), Reason.WRONG_ROLE),
        "bad signature prepare, existing slot": (forge(2, Prepare(0, 1, D_OTHER), real_signer=3), Reason.BAD_SIGNATURE),
        "bad signature commit, existing slot": (forge(2, Commit(0, 1, D_OTHER), real_signer=3), Reason.BAD_SIGNATURE),
        "prepare for a far view": (sign_prepare(2, 2, D_OTHER, view=100), Reason.OUT_OF_WINDOW),
        "commit out of window": (sign_commit(2, 9, D_OTHER), Reason.OUT_OF_WINDOW),
    }  # fmt: skip


@pytest.mark.parametrize("data,reason", _bad_inputs().values(), ids=_bad_inputs().keys())
def test_bad_input_is_dropped_and_changes_nothing(backup, data, reason):
    pre_prepare(backup, 1, (put("alice", 1),))
    before = snapshot(backup)
    actions = feed(backup, 3, data)
    if reason is not None:
        assert rejections(actions) == [reason]
        assert backup.rejects[(3, reason)] == 1
    assert actions_of(actions, Broadcast) == [] and actions_of(actions, Send) == []
    assert snapshot(backup) == before


NEW_SLOT_FORGERIES = {
    "prepare": lambda: forge(2, Prepare(0, 2, D_OTHER), real_signer=3),
    "commit": lambda: forge(2, Commit(0, 2, D_OTHER), real_signer=3),
    "checkpoint": lambda: forge(2, Checkpoint(4, D_OTHER), real_signer=3),
}


@pytest.mark.parametrize("kind", NEW_SLOT_FORGERIES)
def test_forged_vote_for_a_new_slot_changes_nothing(backup, kind):
    before = snapshot(backup)
    actions = feed(backup, 3, NEW_SLOT_FORGERIES[kind]())
    assert rejections(actions) == [Reason.BAD_SIGNATURE]
    assert snapshot(backup) == before


def test_query_status_is_answered_with_a_signed_status(backup):
    actions = feed(backup, "alice", seal_as("alice", QueryStatus(5)))
    [sc] = actions_of(actions, SendClient)
    env, msg = decoded(sc.data)
    assert sc.client == "alice" and env.signer == 1 and msg == Status(0, 0, 0, 0)
    assert backup.verifier.verify(env)


def test_a_status_query_signed_by_a_replica_is_refused_as_a_role_it_does_not_have(backup):
    # Found by mutation testing: the refusal's detail was never read.
    actions = feed(backup, 3, seal_as(3, QueryStatus(5)))
    assert [(a.peer, a.reason, a.detail) for a in actions if isinstance(a, Rejected)] == [
        (3, Reason.WRONG_ROLE, "status queries come from clients")
    ]
    assert actions_of(actions, SendClient) == []


def test_query_status_is_answered_once_per_period_and_only_over_the_clients_channel(backup):
    """Each answer costs the replica a verification and a signature: at most
    STATUS_PER_PERIOD per client and retransmission period, asked over the client's own
    channel (a query costs the asker one signature, so an unmetered one let a client
    spend every replica's CPU)."""
    from pbft.protocol.replica import STATUS_PER_PERIOD

    def answers(actions):
        return len(actions_of(actions, SendClient))

    for nonce in range(STATUS_PER_PERIOD):
        assert answers(feed(backup, "alice", seal_as("alice", QueryStatus(nonce)))) == 1
    again = feed(backup, "alice", seal_as("alice", QueryStatus(6)))
    assert answers(again) == 0 and rejections(again) == [Reason.OVERLOAD]
    assert answers(feed(backup, "bob", seal_as("bob", QueryStatus(1)))) == 1  # per client
    relayed = feed(backup, 2, seal_as("alice", QueryStatus(7)))
    assert answers(relayed) == 0 and rejections(relayed) == [Reason.WRONG_ROLE]
    for _ in range(backup._retransmit_ticks):
        backup.step(Tick())
    # A forgery over alice's channel does not use up her answer for the period.
    forged = feed(backup, "alice", forge("alice", QueryStatus(8), real_signer="bob"))
    assert rejections(forged) == [Reason.BAD_SIGNATURE]
    assert answers(feed(backup, "alice", seal_as("alice", QueryStatus(9)))) == 1
    assert len(backup.status_answered) == 2


# -- never raises on remote input ------------------------------------------------------------


def _member_signed_messages():
    u = st.integers(0, 12)
    dg = st.sampled_from([D_OTHER, batch_digest(()), b"\x00" * 32])
    reqs = st.builds(
        lambda c, ts, ro: sign_request(c, op_put(b"k", b"v") if not ro else op_get(b"k"), ts, ro),
        st.sampled_from(["alice", "bob"]),
        st.integers(0, 3),
        st.booleans(),
    )
    batch = st.lists(st.one_of(reqs, st.binary(max_size=8)), max_size=3).map(tuple)
    msgs = st.one_of(
        st.builds(
            lambda b, v, n: PrePrepare(v, n, batch_digest(b), b), batch, st.integers(0, 1), u
        ),
        st.builds(PrePrepare, st.integers(0, 1), u, dg, batch),
        st.builds(Prepare, st.integers(0, 1), u, dg),
        st.builds(Commit, st.integers(0, 1), u, dg),
        st.builds(Checkpoint, u, dg),
        st.builds(Reply, u, u, st.just("alice"), u, st.binary(max_size=4)),
        st.builds(QueryStatus, u),
        st.builds(ViewChange, st.integers(0, 6), u, st.just(()), st.just(())),
        st.builds(NewView, st.integers(0, 6), st.just(()), st.just(())),
        st.builds(FetchState, u, dg, st.integers(0, 3), u, u),
        st.builds(Status, u, u, u, u),
        st.builds(
            Request, st.binary(max_size=8), u, st.sampled_from(["alice", "bob"]), st.booleans()
        ),
    )
    signer = st.sampled_from([0, 1, 2, 3, "alice", "bob"])
    return st.one_of(
        st.builds(seal_as, signer, msgs),
        reqs,
        st.binary(max_size=40),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 3, "alice", None]), st.binary(max_size=64)), max_size=8
    )
)
def test_arbitrary_bytes_never_raise(inputs):
    rep = make_replica(make_config(), 1)
    before = snapshot(rep)
    for peer, data in inputs:
        actions = rep.step(Received(peer, data))
        assert all(not isinstance(a, Broadcast) for a in actions)
    assert snapshot(rep) == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([0, 1]),
    st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 3, "alice", None]), _member_signed_messages()),
        max_size=12,
    ),
)
def test_member_signed_junk_never_raises(who, inputs):
    """Well-signed messages with arbitrary field values, from any member, in any order."""
    rep = make_replica(make_config(), who)
    for peer, data in inputs:
        rep.step(Received(peer, data))
        rep.step(Tick())
        assert len(rep.log) <= rep.config.log_window
        assert rep.last_executed <= rep.log.high


def test_a_frame_of_exactly_the_limit_is_read_and_one_byte_more_is_not():
    # The limit is inclusive, as the transport's (a mutation test found the edge unread).
    rep = make_replica(make_config(), 1)
    at, over = (rep.step(Received(2, b"\x00" * size)).actions for size in (codec.MAX_FRAME, codec.MAX_FRAME + 1))
    assert [(a.reason, a.detail) for a in at if isinstance(a, Rejected)] == [(Reason.MALFORMED, "trailing bytes")]
    assert [(a.reason, a.detail) for a in over if isinstance(a, Rejected)] == [
        (Reason.MALFORMED, f"{codec.MAX_FRAME + 1}-byte message exceeds the frame limit")
    ]


def test_a_request_handed_over_with_no_peer_is_refused_on_a_tick_naming_no_sender():
    # Found by the test above under tests/conftest.py's accounting fixture: a request that
    # arrives with no channel peer while its client's requests wait is checked on a later
    # tick, and its refusal can name no sender; the fixture must allow that (and does, for
    # a replica that was handed such a message).
    rep = make_replica(make_config(), 1)
    refused = []
    for peer, data in (
        (0, b""),
        (0, sign_request("alice", op_put(b"k", b"v"), 0)),
        (None, seal_as(0, Request(b"", 1, "alice", False))),
    ):
        rep.step(Received(peer, data))
        refused += [a for a in rep.step(Tick()) if isinstance(a, Rejected)]
    assert [(a.peer, a.reason) for a in refused] == [(None, Reason.BAD_REQUEST)]
    assert "not signed by its client" in refused[0].detail


def test_bogus_new_view_does_not_pull_an_active_replica_out_of_its_view(cfg):
    backup = make_replica(cfg, 2)
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    actions = feed(backup, 1, seal_as(1, NewView(1, (), ())))  # 0 view-changes: invalid
    assert rejections(actions) == [Reason.BAD_CERTIFICATE]
    assert backup.view == 0 and backup.status is ViewStatus.NORMAL


def test_a_read_waits_until_every_prepared_slot_is_executed(cfg):
    # Section 5.1.3 with committed (not tentative) execution: a replica prepared on a
    # write must not answer a read with the old value, or f liars plus f lagging correct
    # replicas could outvote it and a completed write would be unseen.
    backup = make_replica(cfg, 1)
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    for i in (2, 3):
        feed(backup, i, sign_prepare(i, 1, d))
    assert backup.log.get(1).prepared and backup.last_executed == 0
    read = sign_request("bob", op_get(b"k"), 1, read_only=True)
    assert actions_of(feed(backup, "bob", read), SendClient) == []
    out = []
    for i in (0, 2, 3):
        out += feed(backup, i, sign_commit(i, 1, d))
    assert backup.last_executed == 1
    replies = [decoded(a.data)[1] for a in actions_of(out, SendClient) if a.client == "bob"]
    assert [r.timestamp for r in replies] == [1]


def test_a_read_still_waits_after_a_view_change_for_a_slot_prepared_in_the_old_view(cfg):
    # The new view re-issues slot 1, but until it prepares again the only trace of it is
    # the prepared certificate: that must hold reads back just the same.
    backup = make_replica(cfg, 2)
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    for i in (1, 3):
        feed(backup, i, sign_prepare(i, 1, d))
    assert backup.log.get(1).prepared and backup.last_executed == 0
    backup.become_view_change(1)
    backup.become_normal(0, b"", (), [])  # a NEW-VIEW whose re-issued slot is still to come
    assert backup.status is ViewStatus.NORMAL and backup.log.get(1) is None
    read = sign_request("bob", op_get(b"k"), 1, read_only=True)
    assert actions_of(feed(backup, "bob", read), SendClient) == []


def test_votes_beyond_a_complete_certificate_are_dropped_unverified(backup):
    """Once a slot is prepared (committed), a further PREPARE (COMMIT) for the same view
    and digest can change nothing, so it is dropped before its signature is checked: a
    forged one is not even noticed. A vote for another digest is still checked."""
    from pbft.protocol.messages import Commit, Prepare

    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    pp = sign_pre_prepare(1, batch)
    feed(backup, 0, pp)
    digest = batch_digest(batch)
    feed(backup, 2, sign_prepare(2, 1, digest))  # own + one other: 2f, prepared
    assert backup.log.get(1).prepared
    out = feed(backup, 3, forge(3, Prepare(0, 1, digest), real_signer=2))  # surplus, forged
    assert actions_of(out, Rejected) == [] and backup.surplus_votes == 1
    assert 3 not in backup.log.get(1).prepares
    for r in (0, 2):
        feed(backup, r, sign_commit(r, 1, digest))
    assert backup.log.get(1).committed
    out = feed(backup, 3, forge(3, Commit(0, 1, digest), real_signer=2))
    assert actions_of(out, Rejected) == [] and backup.surplus_votes == 2
    # Another digest is not surplus: its (forged) signature is checked and rejected.
    out = feed(backup, 3, forge(3, Commit(0, 1, b"x" * 32), real_signer=2))
    assert [r.reason for r in actions_of(out, Rejected)] == [Reason.BAD_SIGNATURE]


def test_a_double_vote_hidden_behind_a_complete_certificate_is_still_evidence(backup):
    """Replica 3 votes the prepared digest (kept aside unverified: the certificate was
    complete), then another digest for the same slot: the pair is evidence, as if the
    first vote had been counted. A forged first vote is forgotten instead."""
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    feed(backup, 0, sign_pre_prepare(1, batch))
    digest = batch_digest(batch)
    feed(backup, 2, sign_prepare(2, 1, digest))
    assert backup.log.get(1).prepared
    feed(backup, 3, sign_prepare(3, 1, digest))  # surplus: not verified now
    out = feed(backup, 3, sign_prepare(3, 1, b"y" * 32))
    [ev] = actions_of(out, Evidence)
    assert ev.culprit == 3 and ev.kind == "double-prepare"
    assert [r.reason for r in actions_of(out, Rejected)] == [Reason.CONFLICT]
    # Commits: a forged surplus vote does not make an honest later vote look double.
    for r in (0, 2):
        feed(backup, r, sign_commit(r, 1, digest))
    feed(backup, 3, forge(3, Commit(0, 1, digest), real_signer=2))
    out = feed(backup, 3, sign_commit(3, 1, b"z" * 32))
    assert actions_of(out, Evidence) == []
