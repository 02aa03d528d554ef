"""Inputs that would cost a replica far more than their sender (docs/robustness.md,
"What one input can cost"): each is refused on its shape, or its replay is refused, before
the signatures it carries are checked. Found by a red-team pass (the helper's
reproductions); each test fails without its rule."""

from __future__ import annotations

import pytest
from conftest import (
    feed,
    forge,
    make_config,
    make_replica,
    rejections,
    seal_as,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
)

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Reason
from pbft.protocol.messages import NewView, ViewChange, detached
from pbft.service.kv import op_put

pytestmark = pytest.mark.timeout(60)


def _cert(seq: int, pad: int = 0) -> tuple[bytes, ...]:
    """A genuine prepared certificate for (view 0, seq), with `pad` more copies of one of
    its PREPAREs."""
    batch = (sign_request("alice", op_put(b"k", b"v"), seq),)
    d = batch_digest(batch)
    p1, p2 = sign_prepare(1, seq, d), sign_prepare(2, seq, d)
    return (detached(sign_pre_prepare(seq, batch)), p1, p2) + (p1,) * pad


def _checked(rep) -> int:
    return rep.verifier.checked


def test_a_padded_certificate_is_refused_before_its_signatures_are_checked():
    """At most one message per replica in a certificate: 400 copies of one PREPARE cost
    400 verifications each time the VIEW-CHANGE arrived (up to ~150,000 in one frame)."""
    rep = make_replica(make_config(), 1)
    before = _checked(rep)
    out = feed(rep, 3, seal_as(3, ViewChange(1, 0, (), (_cert(1, pad=400),))))
    assert rejections(out) == [Reason.BAD_CERTIFICATE] and 3 not in rep.view_changes.received
    assert _checked(rep) - before <= 2  # the envelope (and nothing of the certificate)


def test_certificates_out_of_the_window_or_twice_for_a_seq_cost_no_signature():
    """So a VIEW-CHANGE has at most L certificates checked, whatever it carries."""
    rep = make_replica(make_config(), 1)
    far = rep.config.log_window + 1
    for certs in ((_cert(1), _cert(1)), (_cert(far),)):
        before = _checked(rep)
        assert rejections(feed(rep, 3, seal_as(3, ViewChange(1, 0, (), certs)))) == [Reason.BAD_CERTIFICATE]
        assert _checked(rep) - before <= 1


def test_a_refused_view_change_replayed_is_refused_as_a_duplicate_at_no_cost():
    """A refused VIEW-CHANGE is not stored, so every replay (by anyone: it is signed) was
    checked again in full."""
    rep = make_replica(make_config(), 1)
    bad = seal_as(3, ViewChange(1, 0, (), (_cert(1), _cert(1))))
    assert rejections(feed(rep, 3, bad)) == [Reason.BAD_CERTIFICATE]
    before = _checked(rep)
    for peer in (3, 2, "bob"):
        feed(rep, peer, bad)
    assert _checked(rep) == before
    assert rep.rejects[(3, Reason.DUPLICATE)] == 1 and rep.rejects[("bob", Reason.DUPLICATE)] == 1
    # A different, valid VIEW-CHANGE of the same replica is still checked and counted.
    assert rejections(feed(rep, 3, seal_as(3, ViewChange(1, 0, (), (_cert(1),))))) == []
    assert 3 in rep.view_changes.received


def test_a_new_view_with_more_view_changes_than_replicas_is_refused_unchecked():
    rep = make_replica(make_config(), 2)
    vc = forge(0, ViewChange(1, 0, (), ()), real_signer=3)
    nv = seal_as(1, NewView(1, (vc,) * (rep.config.n + 1), ()))
    before = _checked(rep)
    assert rejections(feed(rep, 1, nv)) == [Reason.BAD_CERTIFICATE]
    assert _checked(rep) - before <= 1


def test_a_refused_new_view_replayed_is_refused_as_a_duplicate_at_no_cost():
    """A NEW-VIEW for a view far ahead (no bound: it is how a replica down for many views
    catches up) that does not check was checked again, 2f+1 VIEW-CHANGEs and all, at
    every replay."""
    rep = make_replica(make_config(), 2)
    own = seal_as(1, ViewChange(401, 0, (), (_cert(1, pad=1),)))  # replica 1 leads view 401
    nv = seal_as(1, NewView(401, (own, forge(0, ViewChange(401, 0, (), ()), real_signer=1)), ()))
    assert rejections(feed(rep, 1, nv)) == [Reason.BAD_CERTIFICATE]
    before = _checked(rep)
    for peer in (1, 3, "alice"):
        feed(rep, peer, nv)
    assert _checked(rep) == before and rep.rejects[("alice", Reason.DUPLICATE)] == 1


def test_a_read_comes_over_its_clients_channel_and_a_replay_is_answered_once_per_period():
    """Each copy of a read ran the query again and sent its reply (up to 1 MiB) again: a
    replay over any channel made every replica compute and send it for nothing."""
    from conftest import actions_of

    from pbft.protocol.events import SendClient, Tick
    from pbft.service.kv import op_get

    rep = make_replica(make_config(), 1)
    read = sign_request("alice", op_get(b"k"), 7, read_only=True)
    assert len(actions_of(feed(rep, "alice", read), SendClient)) == 1
    for peer in ("alice", "alice", "bob", 2):
        assert actions_of(feed(rep, peer, read), SendClient) == []
    assert rep.rejects[("alice", Reason.DUPLICATE)] == 2
    assert rep.rejects[("bob", Reason.WRONG_ROLE)] == 1 and rep.rejects[(2, Reason.WRONG_ROLE)] == 1
    for _ in range(rep.read_answers.period):
        rep.step(Tick())
    # The client's own retransmission (after half its timeout at the earliest) is answered.
    assert len(actions_of(feed(rep, "alice", read), SendClient)) == 1


def test_a_result_larger_than_a_reply_may_carry_becomes_an_error_result():
    """A scan of 1,000 values of 60 KiB made a 60 MiB result: no client can decode such a
    REPLY (MAX_RESULT), and the reply cache kept it in the state."""
    from conftest import actions_of, decoded, execute_batch

    from pbft.protocol import codec
    from pbft.protocol.events import SendClient
    from pbft.protocol.messages import MAX_RESULT

    rep = make_replica(make_config(), 1)
    big = b"v" * (60 * 1024)
    for i in range(20):  # 1.2 MiB of values
        rep.service.execute(op_put(b"k%02d" % i, big), "alice")
    scan = codec.encode(["scan", b"", None, 1000])
    out = feed(rep, "alice", sign_request("alice", scan, 3, read_only=True))
    [reply] = actions_of(out, SendClient)
    result = decoded(reply.data)[1].result
    assert len(result) <= MAX_RESULT and "larger than" in codec.decode(result)["error"]
    executed = execute_batch(rep, 1, (sign_request("bob", scan, 1),))
    [ordered] = [a for a in executed if isinstance(a, SendClient)]
    assert decoded(ordered.data)[1].result == result
