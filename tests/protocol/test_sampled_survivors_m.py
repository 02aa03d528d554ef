"""Rules of one place each, found by the third mutation sample (docs/mutation.md, "A third
sample"): each test was checked against the mutant it was written for."""

from __future__ import annotations

from conftest import feed, make_config, make_replica, seal_as

from pbft.protocol.crypto import NULL_DIGEST
from pbft.protocol.epochs import first_view
from pbft.protocol.events import Reason, Send
from pbft.protocol.messages import FetchBatch, StableProof, ViewChange


def test_the_null_batch_is_never_sent_in_answer_to_a_fetch():
    """Every replica knows the null request's batch (it is empty), so a FETCH-BATCH for
    it is not ours to answer: counted as stale against the asker, nothing sent.
    pbft.protocol.replica.xǁReplicaǁon_fetch_batch__mutmut_27 (`or` made `and`) sent an
    empty BATCH."""
    rep = make_replica(make_config(), 1)
    out = feed(rep, 2, seal_as(2, FetchBatch(1, NULL_DIGEST)))
    assert not [a for a in out if isinstance(a, Send)]
    assert rep.rejects[(2, Reason.STALE)] == 1


def test_a_stable_proof_at_or_below_our_checkpoint_is_stale_against_its_sender():
    """pbft.protocol.replica.xǁReplicaǁon_stable_proof__mutmut_6 counted it against no one."""
    rep = make_replica(make_config(), 1)
    assert feed(rep, 2, seal_as(2, StableProof(0, ()))) == []
    assert rep.rejects[(2, Reason.STALE)] == 1
    assert rep.rejects[(None, Reason.STALE)] == 0


def test_a_view_change_for_a_view_we_are_past_counts_once():
    """pbft.protocol.replica.xǁReplicaǁon_view_change__mutmut_51 counted it twice."""
    rep = make_replica(make_config(), 1)
    assert feed(rep, 2, seal_as(2, ViewChange(0, 0, (), ()))) == []
    assert rep.rejects[(2, Reason.STALE)] == 1
    # A view of another configuration epoch is not ours to count either: once.
    feed(rep, 3, seal_as(3, ViewChange(first_view(1) + 1, 0, (), ())))
    assert rep.rejects[(3, Reason.STALE)] == 1


def test_a_second_prepare_for_another_digest_is_not_counted():
    """One vote per signer and phase, the first one: a backup that prepared another
    digest first and then ours is evidence against it, and its second vote does not
    complete our certificate. pbft.protocol.replica.xǁReplicaǁ_admit_vote__mutmut_26
    (the vote admitted after the conflict) let it prepare."""
    from conftest import actions_of, pre_prepare, put, sign_prepare

    from pbft.protocol.crypto import batch_digest
    from pbft.protocol.events import Evidence, Prepared, Rejected

    rep = make_replica(make_config(), 1)
    batch = (put("alice", 1),)
    d = batch_digest(batch)
    other = batch_digest((put("bob", 1),))
    pre_prepare(rep, 1, batch)  # our own PREPARE: one vote for d
    feed(rep, 2, sign_prepare(2, 1, other))
    out = feed(rep, 2, sign_prepare(2, 1, d))
    assert [e.kind for e in actions_of(out, Evidence)] == ["double-prepare"]
    assert [(r.peer, r.reason) for r in actions_of(out, Rejected)] == [(2, Reason.CONFLICT)]
    assert not actions_of(out, Prepared) and not rep.log.get(1).prepared
    assert rep.log.get(1).prepares.count(d) == 1
    # A third backup's vote completes it.
    assert actions_of(feed(rep, 3, sign_prepare(3, 1, d)), Prepared)


def test_a_prepared_certificate_holds_exactly_2f_prepares():
    """The certificate kept for view changes is the pre-prepare and 2f matching PREPAREs
    (section 4.2), sorted, however many arrived before the pre-prepare.
    pbft.protocol.replica.xǁReplicaǁ_maybe_prepared__mutmut_17 kept them all."""
    from conftest import pre_prepare, put, sign_prepare

    from pbft.protocol.crypto import batch_digest

    rep = make_replica(make_config(), 1)
    batch = (put("alice", 1),)
    d = batch_digest(batch)
    feed(rep, 2, sign_prepare(2, 1, d))
    feed(rep, 3, sign_prepare(3, 1, d))
    pre_prepare(rep, 1, batch)  # with our own, three matching votes
    view, _, proof = rep.prepared_certs[1]
    assert view == 0 and len(proof) == 2 and list(proof) == sorted(proof)


def test_a_request_executed_before_does_not_stop_the_rest_of_its_batch():
    """Exactly-once (4.1): a request already executed is a no-op in a later batch, and the
    requests after it in that batch are executed. pbft.protocol.replica.xǁReplicaǁ_execute
    __mutmut_38 (`continue` made `break`) dropped them."""
    from conftest import execute_batch, put

    from pbft.protocol.events import Executed

    rep = make_replica(make_config(), 1)
    execute_batch(rep, 1, (put("alice", 1),))
    out = execute_batch(rep, 2, (put("alice", 1), put("bob", 1)))
    [executed] = [a for a in out if isinstance(a, Executed)]
    assert [(r.client, r.timestamp, r.result != b"") for r in executed.requests] == [
        ("alice", 1, False), ("bob", 1, True)
    ]
    assert rep.replies.settled("bob", 1) is not None


def test_a_prepare_outside_the_window_says_so_word_for_word():
    """pbft.protocol.replica.xǁReplicaǁignore_prepare__mutmut_2 said "None n=…"."""
    from conftest import actions_of, sign_prepare

    from pbft.protocol.events import Rejected

    rep = make_replica(make_config(), 1)
    far = rep.log.low + rep.config.log_window + 1
    out = feed(rep, 2, sign_prepare(2, far, b"d" * 32))
    assert [(r.peer, r.reason, r.detail) for r in actions_of(out, Rejected)] == [
        (2, Reason.OUT_OF_WINDOW, f"vote n={far}")
    ]


def _ticks_to_view_change(view_change_timeout_ms: int) -> int:
    from conftest import put

    from pbft.protocol.events import Broadcast, Tick
    from pbft.protocol.messages import decode_envelope

    rep = make_replica(make_config(view_change_timeout_ms=view_change_timeout_ms, tick_ms=10), 1)
    feed(rep, "alice", put("alice", 1))  # a backup's request the primary never orders
    for t in range(1, 100):
        for a in rep.step(Tick()):
            if isinstance(a, Broadcast) and isinstance(decode_envelope(a.data)[1], ViewChange):
                return t
    raise AssertionError("no view change")


def test_a_view_change_timeout_of_one_tick_is_one_tick():
    """`view_change_timeout_ms` may be as short as one tick (docs/formats.md: 10 ms, and
    `tick_ms` 10): the backup suspects the primary after that one tick, sooner than after
    two. pbft.protocol.replica.xǁReplicaǁ__init____mutmut_53 made every timeout at least
    two ticks."""
    assert _ticks_to_view_change(10) == 1 < _ticks_to_view_change(20)


def test_a_message_layer_sentence_is_word_for_word():
    """The codec's and the envelope's refusals are sentences a person reads in a metric
    label and a log line. pbft.protocol.codec.x__head__mutmut_52 and
    pbft.protocol.messages.x_envelope_from_bytes__mutmut_26 changed them."""
    import pytest

    from pbft.protocol import codec
    from pbft.protocol.messages import decode_envelope

    with pytest.raises(codec.CodecError, match=r"^integer out of 64-bit range$"):
        codec.encode(2**64)
    with pytest.raises(codec.CodecError, match=r"^malformed envelope$"):
        decode_envelope(codec.encode(["not bytes", 0, b"s"]))


def test_a_primary_with_its_window_full_waits_for_it_to_move():
    """A primary whose next sequence number is past the high water mark proposes nothing
    more and keeps the request for later (4.2). pbft.protocol.replica.xǁReplicaǁ
    _reinstate_own_pre_prepare__mutmut_3 (True for a number outside the window) made
    `_maybe_propose` count upwards for ever."""
    from conftest import put

    from pbft.protocol.events import Broadcast
    from pbft.protocol.messages import PrePrepare, decode_envelope

    clients = ("alice", "bob", "carol", "dave", "erin")
    config = make_config(clients=clients, checkpoint_interval=2, log_window=4, pipeline=4, batch_max=1)
    rep = make_replica(config, 0)
    proposed = []
    for client in clients:
        for a in feed(rep, client, put(client, 1)):
            if isinstance(a, Broadcast) and isinstance(msg := decode_envelope(a.data)[1], PrePrepare):
                proposed.append(msg.seq)
    assert proposed == [1, 2, 3, 4]
    assert rep.next_seq == 5 and rep.batching.pending
