"""Batches go by digest in a view change (OSDI'99 4.2, 4.4; messages.py, batchfetch.py).

A PRE-PREPARE's signature covers (v, n, d); its batch rides beside it. Prepared
certificates in a VIEW-CHANGE and the re-issued pre-prepares of a NEW-VIEW carry no
batch, so neither grows with the requests; a replica that never had a batch a NEW-VIEW
names fetches it (FETCH-BATCH) and takes the answer whose digest matches (BATCH).

f = 1, n = 4, K = 4, L = 8 (make_config). Replica 3 never received view 0's PRE-PREPARE
for n=1; replicas 0, 1 and 2 prepared it; view 1 (primary 1) re-issues it by digest.
"""

from __future__ import annotations

from conftest import (
    actions_of,
    broadcast_messages,
    feed,
    make_config,
    make_replica,
    put,
    rejections,
    replies,
    seal_as,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
)

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Broadcast, Executed, Reason, Send
from pbft.protocol.messages import (
    Batch,
    FetchBatch,
    NewView,
    PrePrepare,
    ViewChange,
    decode_envelope,
    detached,
)
from pbft.protocol.viewchange import ViewStatus

CLIENTS = ("alice", "bob", "carol")
BIG = tuple(put(c, 1, value=bytes(60 * 1024)) for c in CLIENTS)
D = batch_digest(BIG)


def certificate(seq=1, batch=BIG):
    d = batch_digest(batch)
    return (detached(sign_pre_prepare(seq, batch)), sign_prepare(1, seq, d), sign_prepare(2, seq, d))


def view_change(signer, prepared=()):
    return seal_as(signer, ViewChange(1, 0, (), prepared))


def new_view():
    """View 1's NEW-VIEW from the VIEW-CHANGEs of 0, 1 and 2, n=1 re-issued by digest."""
    vcs = (view_change(0), view_change(1, (certificate(),)), view_change(2))
    return seal_as(1, NewView(1, vcs, (detached(seal_as(1, PrePrepare(1, 1, D))),)))


def fetches(actions):
    return [m for m in broadcast_messages(actions) if isinstance(m, FetchBatch)]


def committed_in_view_1(rep):
    feed(rep, 1, new_view())
    for r in (1, 2):
        feed(rep, r, sign_commit(r, 1, D, view=1))
    return feed(rep, 2, sign_prepare(2, 1, D, view=1))


def test_a_view_change_carries_certificates_without_their_batches():
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 1)
    feed(rep, 0, sign_pre_prepare(1, BIG))
    feed(rep, 2, sign_prepare(2, 1, D))
    assert rep.log.get(1).prepared
    rep.become_view_change(1)
    vc = decode_envelope(rep.view_changes.own[1])[1]
    [cert] = vc.prepared
    pp = decode_envelope(cert[0])[1]
    assert (pp.seq, pp.digest, pp.batch) == (1, D, None)
    assert len(rep.view_changes.own[1]) < 4096 < sum(map(len, BIG))


def test_a_replica_that_lacks_a_re_issued_batch_fetches_it_and_then_executes():
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 3)
    out = feed(rep, 1, new_view())
    assert rep.status is ViewStatus.NORMAL and rep.view == 1
    assert fetches(out) == [FetchBatch(1, D)]
    assert rep.log.get(1).pre_prepare.batch is None
    out = committed_in_view_1(rep)
    assert rep.log.get(1).committed and not actions_of(out, Executed)  # committed by digest
    # An answer whose requests are not the digest's is refused; the right one executes.
    wrong = seal_as(2, Batch(1, D, BIG[:-1]))
    assert rejections(feed(rep, 2, wrong)) == [Reason.BAD_DIGEST]
    assert rep.last_executed == 0
    out = feed(rep, 2, seal_as(2, Batch(1, D, BIG)))
    assert [a.seq for a in actions_of(out, Executed)] == [1]
    assert {r.client for r in replies(out)} == {"alice", "bob", "carol"}
    # A restart replays the execution: the batch was recorded with the certificate.
    assert rep.prepared_certs[1][1] == rep.log.get(1).pre_prepare_env
    assert decode_envelope(rep.prepared_certs[1][1])[1].batch == BIG


def test_fetches_are_repeated_until_the_batch_comes():
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 3)
    feed(rep, 1, new_view())
    rep._out = []
    rep._retransmit()
    assert fetches(rep._out) == [FetchBatch(1, D)]
    feed(rep, 1, seal_as(1, Batch(1, D, BIG)))
    rep._out = []
    rep._retransmit()
    assert fetches(rep._out) == []


def test_a_replica_that_holds_the_batch_answers_once_per_period_and_only_the_asker():
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 2)
    feed(rep, 0, sign_pre_prepare(1, BIG))
    feed(rep, 1, sign_prepare(1, 1, D))
    ask = seal_as(3, FetchBatch(1, D))
    out = feed(rep, 3, ask)
    [send] = actions_of(out, Send)
    assert send.to == 3 and decode_envelope(send.data)[1] == Batch(1, D, BIG)
    assert not actions_of(feed(rep, 3, ask), Send)  # the same question again, too soon
    assert rejections(feed(rep, 1, seal_as(0, FetchBatch(1, D)))) == [Reason.WRONG_ROLE]  # relayed
    assert not actions_of(feed(rep, 0, seal_as(0, FetchBatch(1, batch_digest(BIG[:1])))), Send)  # not held
    assert not actions_of(out, Broadcast)


def test_a_pre_prepare_without_its_batch_is_refused_outside_a_new_view():
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 1)
    assert rejections(feed(rep, 0, detached(sign_pre_prepare(1, BIG)))) == [Reason.MALFORMED]
    assert rep.log.get(1) is None


def test_the_primary_cuts_batches_at_the_byte_limit(monkeypatch):
    import pbft.protocol.batching as batching_module

    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 0)
    monkeypatch.setattr(batching_module, "MAX_BATCH_BYTES", sum(map(len, BIG[:2])))
    for data in BIG:
        rep.batching.enqueue(decode_envelope(data)[1], data)
    assert [d for _, d in rep.batching.take()] == list(BIG[:2])
    assert [d for _, d in rep.batching.take()] == list(BIG[2:])


def test_a_batch_over_the_byte_limit_is_refused(monkeypatch):
    import pbft.protocol.replica as replica_module

    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 1)
    monkeypatch.setattr(replica_module, "MAX_BATCH_BYTES", sum(map(len, BIG)) - 1)
    assert rejections(feed(rep, 0, sign_pre_prepare(1, BIG))) == [Reason.BATCH_TOO_LARGE]


def test_batch_answers_are_rationed_per_seq_and_per_asker_each_period():
    """`BatchAnswers` directly (mutmut survivors: every test that reached it asked once):
    one answer per (asker, seq) per period, at most ANSWERS_PER_PERIOD per asker per
    period, the budget restarting with the first answer of a new period, and the memory
    of answers bounded by n * L, pruned of what is a period old."""
    from pbft.protocol.batchfetch import ANSWERS_PER_PERIOD, BatchAnswers

    period = 10
    a = BatchAnswers(period, replicas=4, window=8)
    assert not a.too_soon(1, 5, now=100)
    a.answered(1, 5, now=100)
    assert a.too_soon(1, 5, now=100 + period - 1)  # the same seq within a period
    assert not a.too_soon(1, 5, now=100 + period)  # one period later: again
    assert not a.too_soon(2, 5, now=101)  # another asker's is its own
    for seq in range(6, 5 + ANSWERS_PER_PERIOD):
        assert not a.too_soon(1, seq, now=101)
        a.answered(1, seq, now=101)
    assert a.budget[1] == (100, ANSWERS_PER_PERIOD)
    assert a.too_soon(1, 99, now=100 + period - 1)  # the asker's budget is spent
    assert not a.too_soon(2, 99, now=100 + period - 1)
    assert not a.too_soon(1, 99, now=100 + period)  # a new period
    a.answered(1, 99, now=100 + period)
    assert a.budget[1] == (100 + period, 1)
    # Bounded: beyond n * L entries, those a period old are forgotten.
    b = BatchAnswers(period, replicas=4, window=8)
    for seq in range(31):
        b.answered(seq % 4, seq, now=0)
    b.answered(0, 100, now=period)
    assert len(b.sent) == 32  # n * L exactly: nothing forgotten yet
    b.answered(1, 101, now=period)
    assert b.sent == {(0, 100): period, (1, 101): period}
    b.invariants()
