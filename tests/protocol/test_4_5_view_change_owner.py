"""The owner of view-change bookkeeping (viewchange.ViewChanges), rule by rule: what a
replica resends of its VIEW-CHANGE and to whom (retransmission, section 4.5.2's liveness
needs it), and how the wait before joining a replica alone in the next view grows.

Written from mutmut's survivors over viewchange.py (docs/mutation.md): each test fails
on the mutant named in its docstring.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import (
    make_config,
    make_pre_prepare,
    make_verifier,
    seal_as,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
)

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Reason
from pbft.protocol.log import MessageLog
from pbft.protocol.messages import (
    Checkpoint,
    NewView,
    Prepare,
    PrePrepare,
    ViewChange,
    decode_envelope,
    detached,
    envelope_from_bytes,
)
from pbft.protocol.viewchange import (
    LONE_FACTOR,
    CheckedViewChange,
    InvalidCertificate,
    NewViewPlan,
    ViewChanges,
    certificates_to_send,
    check_checkpoint_proof,
    check_new_view,
    check_prepared_cert,
    check_view_change,
    check_view_changes,
    next_seq_after,
)
from pbft.service.kv import op_put

pytestmark = pytest.mark.timeout(30)

PERIOD, TIMEOUT = 10, 100


def owner() -> ViewChanges:
    return ViewChanges(make_config(), PERIOD, TIMEOUT)  # f = 1, n = 4


def checked(signer: int, new_view: int) -> CheckedViewChange:
    msg = ViewChange(new_view, 0, (), ())
    return CheckedViewChange(signer, msg, b"vc %d %d" % (signer, new_view), b"", {})


def test_only_our_view_change_for_the_view_we_wait_in_is_retransmitted():
    """`retransmission`: `... == view) or True` resent another view's (or raised)."""
    vcs = owner()
    assert vcs.retransmission(0, 1) is None  # we sent none
    vcs.add(checked(0, 1), view=0, now=0)
    assert vcs.retransmission(0, 1) == b"vc 0 1"
    assert vcs.retransmission(0, 2) is None  # we wait in view 2 now: view 1's is stale


def test_a_peer_in_the_very_view_of_our_view_change_still_gets_it_resent():
    """`ignore_resend`: `peer_view > view` made `>=`: a replica that says it is in view
    v (its STATUS) and lacks our VIEW-CHANGE for v would never get it."""
    vcs = owner()
    vcs.own[2] = b"ours for 2"
    vcs.saw(1, 2)
    assert vcs.ignore_resend(1, 2, now=0) is None
    vcs.saw(1, 3)  # it has moved past: a replay, or an old copy
    assert vcs.ignore_resend(1, 2, now=0) == (Reason.STALE, None)


def test_an_older_view_heard_later_does_not_lower_what_a_peer_told_us():
    """`saw`: `peer_view.get(None, -1)` forgot the max: a replayed message of an older
    view, arriving after a newer one, made us resend an old VIEW-CHANGE to a replica
    that had moved past it."""
    vcs = owner()
    vcs.own[4] = b"ours for 4"
    vcs.saw(1, 5)
    vcs.saw(1, 3)  # an old copy, delivered late
    assert vcs.peer_view[1] == 5
    assert vcs.ignore_resend(1, 4, now=0) == (Reason.STALE, None)


def test_a_resend_is_allowed_again_exactly_one_period_later():
    """`ignore_resend`: `now - last < period` made `<=` held it a tick too long."""
    vcs = owner()
    vcs.own[1] = b"ours for 1"
    assert vcs.resend(1, 1, now=50) == b"ours for 1"
    assert vcs.ignore_resend(1, 1, now=50 + PERIOD - 1) == (Reason.DUPLICATE, None)
    assert vcs.ignore_resend(1, 1, now=50 + PERIOD) is None
    assert vcs.ignore_resend(1, 2, now=51) is None  # another view's budget is its own


def test_the_wait_to_join_a_lone_replica_doubles_with_each_join_of_it():
    """`joined_lone`: counting from 1, adding 2, or counting under another key all give
    a faulty replica that forces view changes this way more joins than log2."""
    vcs = owner()
    base = LONE_FACTOR * TIMEOUT
    vcs.add(checked(3, 1), view=0, now=0)
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base)]
    vcs.joined_lone(3)
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base << 1)]
    vcs.joined_lone(3)
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base << 2)]
    vcs.joined_lone(2)  # another replica's joins are counted apart
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base << 2)]


def test_only_replicas_still_alone_in_the_next_view_and_still_sending_are_joined():
    """`lone_deadlines` (section 4.5.2's liveness aid): each condition on its own, with a
    valid lone replica after every skipped one (a `continue` made `break` dropped it),
    the edge of "retransmitted lately", and the cap on the doubling."""
    vcs = owner()
    base = LONE_FACTOR * TIMEOUT
    vcs.add(checked(0, 1), view=0, now=0)  # lone in 1, then moved on to 2: not alone in 1
    vcs.add(checked(0, 2), view=0, now=0)
    vcs.lone_since[0] = (1, 0, 0)
    vcs.add(checked(1, 2), view=0, now=0)  # lone in 2, which is not our next view
    vcs.lone_since[1] = (2, 0, 0)
    vcs.add(checked(2, 1), view=0, now=0)  # alone in 1 and still sending
    assert vcs.lone_deadlines(0, now=0) == [(2, 1, base)]
    # Retransmitted lately: up to two periods since its last copy, not beyond.
    edge = 2 * PERIOD
    assert vcs.lone_deadlines(0, now=edge) == [(2, 1, base)]
    assert vcs.lone_deadlines(0, now=edge + 1) == []
    vcs.add(checked(3, 1), view=0, now=edge + 1)  # silent 2 first, then 3, still sending
    assert vcs.lone_deadlines(0, now=edge + 1) == [(3, 1, edge + 1 + base)]
    # The doubling stops at 2**40 (an int that large is already years of ticks).
    vcs.lone_joins[3] = 45
    assert vcs.lone_deadlines(0, now=edge + 1) == [(3, 1, edge + 1 + (base << 40))]


def _cert(prepares=(2, 3)):
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    d = batch_digest(batch)
    # View 1: primary 1, backups 0, 2, 3.
    return (detached(sign_pre_prepare(1, batch, view=1)), *(sign_prepare(r, 1, d, 1) for r in prepares))


def test_a_certificate_of_n_messages_is_whole_and_one_more_is_refused():
    """`check_prepared_cert`: `len(cert) > n` made `>=` refused a certificate with a
    prepare from every backup (the pre-prepare and n - 1 prepares: n messages)."""
    cfg = make_config()
    verifier = make_verifier(cfg)
    assert check_prepared_cert(cfg, verifier, 2, _cert((0, 2, 3))).seq == 1
    with pytest.raises(InvalidCertificate, match="of 5 messages, at most 4"):
        check_prepared_cert(cfg, verifier, 2, _cert((0, 2, 3, 3)))


@pytest.mark.parametrize(
    ("cert", "why"),
    [
        ((), "empty prepared certificate"),
        ("prepare-first", "prepared certificate does not start with a pre-prepare"),
        ("forged", "bad signature by 1 in certificate"),
        ("garbage", "malformed message in certificate: "),
        ("client-signed", "certificate message not signed by a replica"),
        ("primary-prepares", "prepare from the primary in a certificate"),
        ("short", "prepared certificate n=1 has 1 prepares, needs 2"),
    ],
    ids=["empty", "no-pre-prepare", "forged", "garbage", "client-signed", "primary-prepares", "short"],
)
def test_a_refused_certificate_says_why(cert, why):
    """The reason goes into the rejection an operator reads (`Rejected.detail`): the
    mutants that blank or alter these texts (check_cert_pre_prepare, _verified)."""
    cfg = make_config()
    verifier = make_verifier(cfg)
    if cert == "prepare-first":
        cert = _cert()[1:]
    elif cert == "forged":
        good = _cert()
        env = envelope_from_bytes(good[0])
        cert = (replace(env, signature=bytes(64)).to_bytes(), *good[1:])
    elif cert == "garbage":
        cert = (b"\xff\x00", *_cert()[1:])
    elif cert == "client-signed":
        pp = envelope_from_bytes(_cert()[0])
        cert = (seal_as("alice", decode_envelope(pp.to_bytes())[1]), *_cert()[1:])
    elif cert == "primary-prepares":
        cert = _cert((1, 2))
    elif cert == "short":
        cert = _cert((2,))
    with pytest.raises(InvalidCertificate) as raised:
        check_prepared_cert(cfg, verifier, 2, cert)
    assert str(raised.value).startswith(why) and (why.endswith(": ") or str(raised.value) == why)


def test_a_certificate_needs_2f_prepares_at_f_2_too():
    """`check_prepared_cert`: `2 * f` made `2 / f` is the same number at f = 1 (and so
    every f = 1 test passed); at f = 2 it asked for 1 prepare instead of 4."""
    cfg = make_config(f=2)  # n = 7; view 1: primary 1
    verifier = make_verifier(cfg)
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    d = batch_digest(batch)
    pp = detached(seal_as(1, make_pre_prepare(1, batch, view=1)))
    for backups in ((2,), (2, 3, 4)):
        with pytest.raises(InvalidCertificate, match=f"has {len(backups)} prepares, needs 4$"):
            check_prepared_cert(cfg, verifier, 2, (pp, *(sign_prepare(r, 1, d, 1) for r in backups)))
    assert check_prepared_cert(cfg, verifier, 2, (pp, *(sign_prepare(r, 1, d, 1) for r in (2, 3, 4, 5)))).seq == 1


def test_the_owner_checks_its_own_bounds():
    """`ViewChanges.invariants`: one VIEW-CHANGE per replica is the bound (n)."""
    vcs = owner()
    for r in range(4):
        vcs.add(checked(r, 1), view=0, now=0)
    vcs.invariants()
    vcs.received[4] = checked(4, 1)  # a fifth signer in a group of four: a bug upstream
    with pytest.raises(AssertionError, match="view_changes"):
        vcs.invariants()


def test_the_owners_bounds_are_reported_by_name_and_limit():
    """`ViewChanges.bounds`: the names and limits reach the simulator's resource report
    (a scenario's `resources`, the soak's table), so they are pinned: one entry per
    replica in each structure, n = 4 here."""
    vcs = owner()
    names = ["view_changes", "_new_view_resent", "_own_vcs", "_vc_resent", "_peer_view",
             "_lone_since", "_lone_joins", "_vc_refused", "_nv_refused"]
    assert vcs.bounds() == [(name, 0, 4) for name in names]
    vcs.own[1] = b"ours"
    vcs.saw(2, 1)
    assert dict((name, size) for name, size, _ in vcs.bounds())["_own_vcs"] == 1
    assert dict((name, size) for name, size, _ in vcs.bounds())["_peer_view"] == 1


def test_a_plan_contradicts_only_a_pre_prepare_we_signed_for_another_digest():
    """`NewViewPlan.contradicts`: comparing the signed envelope (`prior[1]`) instead of
    its digest made every plan that re-issues a slot we signed contradict us, so a
    restarted new primary would never send its NEW-VIEW."""
    plan = NewViewPlan(0, b"", (), ((1, b"A" * 32), (2, b"N" * 32)))
    env = envelope_from_bytes(seal_as(1, Prepare(1, 1, b"A" * 32)))  # any envelope
    assert not plan.contradicts({}, 1)
    assert not plan.contradicts({("pre-prepare", 1, 1): (b"A" * 32, env)}, 1)
    assert plan.contradicts({("pre-prepare", 1, 2): (b"B" * 32, env)}, 1)
    assert not plan.contradicts({("pre-prepare", 0, 2): (b"B" * 32, env)}, 1)  # another view's


def test_the_next_sequence_number_is_past_the_plan_the_window_and_what_we_executed():
    """`next_seq_after`: each of the three bounds matters (dropping `low`: a primary whose
    window jumped past its execution would assign a seq below h; dropping `executed`: one
    that executed past the re-issued slots would assign a seq it already executed)."""
    pp = make_pre_prepare(6, ())
    assert next_seq_after([(pp, b"")], min_s=4, low=4, executed=5) == 7
    assert next_seq_after([], min_s=4, low=4, executed=4) == 5
    assert next_seq_after([], min_s=0, low=8, executed=3) == 9
    assert next_seq_after([(pp, b"")], min_s=4, low=4, executed=12) == 13


def test_a_new_view_holds_2f_plus_1_view_changes_ours_first():
    """`ViewChanges.chosen`: `quorum - 1` others made `quorum + 1` put every VIEW-CHANGE
    received into the NEW-VIEW (up to n, more to send and to check for nothing)."""
    vcs = owner()
    for r in (3, 1, 0, 2):
        vcs.add(checked(r, 1), view=0, now=0)
    chosen = vcs.chosen(vcs.for_view(1), me=1)
    assert [c.signer for c in chosen] == [1, 0, 2]


def test_an_installed_view_spends_its_view_changes_and_its_lone_waits():
    """`ViewChanges.installed`: `new_view > view` made `>=` kept the installed view's own
    VIEW-CHANGEs; comparing the lone wait's first tick (`v[1]`) instead of its view kept
    waits for views already installed."""
    vcs = owner()
    vcs.add(checked(2, 1), view=0, now=100)
    vcs.add(checked(3, 2), view=1, now=100)
    assert set(vcs.lone_since) == {2, 3}
    vcs.installed(1)
    assert set(vcs.received) == {3} and set(vcs.lone_since) == {3}


def _new_view(view: int, signers, vc_view: int | None = None) -> NewView:
    vcs = tuple(seal_as(r, ViewChange(view if vc_view is None else vc_view, 0, (), ())) for r in signers)
    return NewView(view, vcs, ())


def test_a_new_view_may_carry_a_view_change_from_every_replica_but_no_more():
    """`check_view_changes`: `len > n` made `>=` refused a NEW-VIEW holding all n."""
    cfg = make_config()
    verifier = make_verifier(cfg)
    assert [c.signer for c in check_view_changes(cfg, verifier, _new_view(1, (0, 1, 2, 3)))] == [0, 1, 2, 3]
    with pytest.raises(InvalidCertificate) as raised:
        check_view_changes(cfg, verifier, _new_view(1, (0, 1, 2, 3, 3)))
    assert str(raised.value) == "5 view-changes, at most 4"


@pytest.mark.parametrize(
    ("nv", "why"),
    [
        (_new_view(1, (0, 1, 4)), "view-change not signed by a replica"),  # id n: one past the last
        (_new_view(1, (0, 1, 7)), "view-change not signed by a replica"),
        (_new_view(2, (0, 1, 2), vc_view=1), "carries something other than view-changes for its view"),
    ],
    ids=["signer-n", "signer-beyond", "another-view"],
)
def test_a_refused_new_view_says_why(nv, why):
    """`check_view_changes`: the signer's range is checked before its signature (`or`
    made `and`, `<` made `<=` let an id n through to the signature check, which said
    something else), and each text is what the operator reads."""
    cfg = make_config()
    with pytest.raises(InvalidCertificate) as raised:
        check_view_changes(cfg, make_verifier(cfg), nv)
    assert str(raised.value) == why


def test_certificates_at_or_below_the_window_are_left_out_silently_and_above_it_with_a_note():
    """`certificates_to_send`: `seq > low` made `>=` reported the certificate at the
    stable checkpoint (garbage by then, 4.3) as if it were a damaged one above H."""
    cfg = make_config()
    log = MessageLog(cfg.log_window)
    log.low = 4
    dummy = (0, b"", ())
    certs, left_out = certificates_to_send(cfg, make_verifier(cfg), 1, {3: dummy, 4: dummy, 13: dummy}, log)
    assert certs == [] and left_out == ["leaving out our certificate for n=13: outside the window"]


def test_the_view_changes_of_a_new_view_keep_their_signed_bytes():
    """`check_view_changes` hands each VIEW-CHANGE's own bytes on (passing None lost
    them: a replica resends and forwards those bytes, which must still verify)."""
    cfg = make_config()
    nv = _new_view(1, (0, 1, 2))
    checked_vcs = check_view_changes(cfg, make_verifier(cfg), nv)
    assert [c.data for c in checked_vcs] == list(nv.view_changes)


def _reissuing(pre_prepare: bytes) -> NewView:
    """A NEW-VIEW for view 1 whose VIEW-CHANGEs name a prepared slot n=1 (so one
    pre-prepare is due), with `pre_prepare` as that re-issued pre-prepare."""
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    d = batch_digest(batch)
    cert = (detached(sign_pre_prepare(1, batch, view=0)), sign_prepare(1, 1, d, 0), sign_prepare(2, 1, d, 0))
    vcs = tuple(seal_as(r, ViewChange(1, 0, (), (cert,))) for r in (0, 1, 2))
    return NewView(1, vcs, (pre_prepare,))


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda pp: b"\xff\x00", "malformed pre-prepare: "),
        (lambda pp: seal_as(2, pp), "a re-issued pre-prepare is not the new primary's for the new view"),
        (lambda pp: replace(envelope_from_bytes(seal_as(1, pp)), signature=bytes(64)).to_bytes(),
         "bad signature on pre-prepare n=1"),
    ],
    ids=["garbage", "not-the-primary", "forged"],
)
def test_a_refused_re_issued_pre_prepare_says_why(make, why):
    cfg = make_config()
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    pp = PrePrepare(1, 1, batch_digest(batch), None)
    with pytest.raises(InvalidCertificate) as raised:
        check_new_view(cfg, make_verifier(cfg), _reissuing(make(pp)))
    assert str(raised.value).startswith(why) and (why.endswith(": ") or str(raised.value) == why)
    check_new_view(cfg, make_verifier(cfg), _reissuing(seal_as(1, pp)))  # the right one passes


def _prepared(seq: int) -> tuple[int, bytes, tuple[bytes, ...]]:
    """Our prepared certificate for `seq` in view 0 (primary 0; backups 1, 2 prepared)."""
    batch = (sign_request("alice", op_put(b"k", b"%d" % seq), seq),)
    d = batch_digest(batch)
    return 0, sign_pre_prepare(seq, batch), (sign_prepare(1, seq, d), sign_prepare(2, seq, d))


def test_one_certificate_left_out_does_not_drop_the_ones_after_it():
    """`certificates_to_send`: `continue` made `break` after a certificate below the
    window or a damaged one lost every later certificate, and with them the slots they
    keep (4.4: a prepared request must reach the new view)."""
    cfg = make_config()
    log = MessageLog(cfg.log_window)
    log.low = 4
    damaged = (0, _prepared(6)[1], ())  # its prepares lost
    prepared = {3: _prepared(3), 5: _prepared(5), 6: damaged, 7: _prepared(7)}
    certs, left_out = certificates_to_send(cfg, make_verifier(cfg), 1, prepared, log)
    assert [decode_envelope(c[0])[1].seq for c in certs] == [5, 7]
    assert left_out == ["leaving out our certificate for n=6: prepared certificate n=6 has 0 prepares, needs 2"]


def test_a_view_change_counts_where_its_signer_is_and_starts_a_lone_wait_only_for_the_next_view():
    """`ViewChanges.add`: `saw(None, ...)` lost the signer's view; `and` made `or`
    started lone waits for any view; `sent_own` drops waits at or below the view we move
    to, by view (not by tick, `vs[1]`), and keeps the one above (`>=` kept its own)."""
    vcs = owner()
    vcs.add(checked(2, 3), view=0, now=7)  # view 3 is not our view + 1: no lone wait
    assert vcs.peer_view == {2: 3} and vcs.lone_since == {}
    vcs.add(checked(3, 1), view=0, now=7)
    assert vcs.lone_since == {3: (1, 7, 7)}
    vcs.add(checked(1, 2), view=1, now=50)
    vcs.sent_own(1, b"ours for 1")
    assert set(vcs.lone_since) == {1}  # view 2's wait stays; view 1's is ours now
    vcs.sent_own(2, b"ours for 2")
    assert vcs.lone_since == {}


def test_a_view_change_with_an_empty_certificate_is_refused_and_one_of_n_messages_is_whole():
    """`check_view_change`'s shape check: `or` made `and` let an empty certificate reach
    `raw[0]` (an IndexError out of a peer's message, not a refusal); `>` made `>=`
    refused a certificate with a prepare from every backup."""
    cfg = make_config()
    verifier = make_verifier(cfg)
    empty = ViewChange(2, 0, (), ((),))
    with pytest.raises(InvalidCertificate, match="^prepared certificate of 0 messages$"):
        check_view_change(cfg, verifier, 2, empty, seal_as(2, empty))
    whole = ViewChange(2, 0, (), (_cert((0, 2, 3)),))
    assert set(check_view_change(cfg, verifier, 2, whole, seal_as(2, whole)).certs) == {1}


def test_f_plus_1_view_changes_for_higher_views_name_the_lowest_view_they_all_reached():
    """Section 4.5.2's join rule (`ViewChanges.join_target`): f + 1 replicas other than
    us asking for views above ours; we join the (f+1)-th highest of them, the highest view
    that f + 1 of them reached. Sorting ascending picked a view only one asked for;
    `>= f + 1` made `> f + 1` waited for f + 2."""
    vcs = owner()  # f = 1
    vcs.add(checked(2, 3), view=0, now=0)
    assert vcs.join_target(0, me=0) is None  # one replica may be faulty
    vcs.add(checked(3, 2), view=0, now=0)
    assert vcs.join_target(0, me=0) == 2  # both reached 2; only one asked for 3
    vcs.add(checked(0, 5), view=0, now=0)
    assert vcs.join_target(0, me=0) == 2  # ours does not count
    assert vcs.join_target(2, me=0) is None  # only one above view 2


def test_a_second_view_change_for_the_same_view_keeps_the_lone_wait_running():
    """`ViewChanges.add`: the wait for a replica alone in view + 1 starts at its first
    VIEW-CHANGE for that view; another one for the same view (another stable checkpoint
    in it) does not restart the clock (comparing the default's or the wait's tick
    instead of its view did)."""
    vcs = owner()
    vcs.add(checked(3, 1), view=0, now=7)
    again = CheckedViewChange(3, ViewChange(1, 4, (), ()), b"vc 3 1 at 4", b"", {})
    vcs.add(again, view=0, now=50)
    assert vcs.lone_since[3][:2] == (1, 7)


def test_a_view_change_certificate_at_the_top_of_the_window_counts_and_a_prepare_first_does_not():
    """`check_view_change`: certificates lie in (h, h + L] of the VIEW-CHANGE's own h, so
    one for h + L is whole (`<=` made `<` refused it); one that opens with a PREPARE is
    refused with its reason."""
    cfg = make_config()  # L = 8
    verifier = make_verifier(cfg)
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    d = batch_digest(batch)
    top = (detached(sign_pre_prepare(8, batch, view=1)), sign_prepare(0, 8, d, 1), sign_prepare(2, 8, d, 1))
    vc = ViewChange(2, 0, (), (top,))
    assert set(check_view_change(cfg, verifier, 2, vc, seal_as(2, vc)).certs) == {8}
    backwards = ViewChange(2, 0, (), (top[1:],))
    with pytest.raises(InvalidCertificate) as raised:
        check_view_change(cfg, verifier, 2, backwards, seal_as(2, backwards))
    assert str(raised.value) == "prepared certificate does not start with a pre-prepare"


@pytest.mark.parametrize(
    ("seq", "proof", "why"),
    [
        (0, ("x",), "a proof for checkpoint 0"),
        (4, (b"\xff\x00",), "malformed message in certificate: "),
        (4, ("client",), "certificate message not signed by a replica"),
        (4, (4,), "certificate message not signed by a replica"),  # id n: one past the last
        (4, (9,), "certificate message not signed by a replica"),
        (4, (0, "other-digest"), "checkpoint proof with two digests"),
        (4, (0, 1, "forged"), "bad signature by 2 in certificate"),
    ],
    ids=["at-0", "garbage", "client-signed", "signer-n", "signer-beyond", "two-digests", "forged"],
)
def test_a_refused_checkpoint_proof_says_why(seq, proof, why):
    """`check_checkpoint_proof` (4.3): each refusal's reason, and the signer's range
    checked before anything else of its message (`or` made `and`, `<` made `<=`)."""
    cfg = make_config()

    def message(p) -> bytes:
        if isinstance(p, bytes):
            return p
        if p == "other-digest":
            return seal_as(1, Checkpoint(4, b"E" * 32))
        if p == "forged":  # replica 2's message with a signature that is not its
            return replace(envelope_from_bytes(seal_as(2, Checkpoint(4, b"D" * 32))), signature=bytes(64)).to_bytes()
        return seal_as(p if p != "x" else 0, Checkpoint(4, b"D" * 32))

    raw = tuple(message(p) for p in proof)
    with pytest.raises(InvalidCertificate) as raised:
        check_checkpoint_proof(cfg, make_verifier(cfg), seq, raw)
    assert str(raised.value).startswith(why) and (why.endswith(": ") or str(raised.value) == why)


def test_checkpoint_0_needs_no_proof_and_proves_the_empty_digest_and_n_messages_are_whole():
    """`check_checkpoint_proof`: the initial state's digest is b"" (what every replica
    starts from); a proof of n messages, one per replica, is whole (`>` made `>=`)."""
    cfg = make_config()
    verifier = make_verifier(cfg)
    assert check_checkpoint_proof(cfg, verifier, 0, ()) == b""
    proof = tuple(seal_as(r, Checkpoint(4, b"D" * 32)) for r in range(4))
    assert check_checkpoint_proof(cfg, verifier, 4, proof) == b"D" * 32
