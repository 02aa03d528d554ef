"""The view-change rules of pbft/protocol/viewchange.py, table by table (OSDI'99 4.4).

f = 1, n = 4, K = 4, L = 8 (make_config). Each row builds one VIEW-CHANGE or NEW-VIEW and
says whether it checks out and, if not, what the InvalidCertificate says.
"""

from __future__ import annotations

import pytest
from conftest import (
    make_config,
    make_verifier,
    seal_as,
    sign_checkpoint,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
)

from pbft.protocol.crypto import NULL_DIGEST, batch_digest
from pbft.protocol.messages import NewView, PrePrepare, ViewChange, detached
from pbft.protocol.viewchange import (
    InvalidCertificate,
    check_new_view,
    check_view_change,
    plan_new_view,
)
from pbft.service.kv import op_put

CFG = make_config()
VERIFIER = make_verifier(CFG)
BATCH = (sign_request("alice", op_put(b"k", b"v"), 1),)
D = batch_digest(BATCH)
OTHER = (sign_request("bob", op_put(b"k", b"w"), 1),)
S4 = b"\x04" * 32  # a state digest at checkpoint 4


def proof(signers, seq=4, digest=S4):
    return tuple(sign_checkpoint(s, seq, digest) for s in signers)


def cert(view=0, seq=1, backups=(1, 2), batch=BATCH, pp_signer=None, prepare_view=None):
    """A prepared certificate: the pre-prepare of `view` and PREPAREs from `backups`."""
    d = batch_digest(batch)
    pv = view if prepare_view is None else prepare_view
    return (
        detached(sign_pre_prepare(seq, batch, view=view, signer=pp_signer)),
        *(sign_prepare(b, seq, d, pv) for b in backups),
    )


def vc(signer=1, new_view=1, stable_seq=0, checkpoint_proof=(), prepared=()):
    msg = ViewChange(new_view, stable_seq, checkpoint_proof, prepared)
    return msg, seal_as(signer, msg)


# -- check_view_change ---------------------------------------------------------------------

VIEW_CHANGES = [
    # (name, kwargs of vc(), None if valid else a fragment of the error)
    ("empty, from view 0", {}, None),
    ("stable checkpoint with 2f+1 signers", {"stable_seq": 4, "checkpoint_proof": proof((0, 1, 2))}, None),
    ("stable checkpoint with 2f signers", {"stable_seq": 4, "checkpoint_proof": proof((0, 1))}, "2 signers, needs 3"),
    ("one signer twice", {"stable_seq": 4, "checkpoint_proof": proof((0, 1, 1))}, "two messages of replica 1"),
    ("proof with two digests", {"stable_seq": 4, "checkpoint_proof": proof((0, 1)) + proof((2,), digest=D)}, "two digests"),
    ("proof for another seq", {"stable_seq": 4, "checkpoint_proof": proof((0, 1, 2), seq=8)}, "other than checkpoint 4"),
    ("stable seq not a multiple of K", {"stable_seq": 3, "checkpoint_proof": proof((0, 1, 2), seq=3)}, "not a multiple of K"),
    ("a proof for checkpoint 0", {"checkpoint_proof": proof((0, 1, 2))}, "a proof for checkpoint 0"),
    ("prepared certificate of view 0", {"new_view": 1, "prepared": (cert(),)}, None),
    ("certificate from the new view itself", {"new_view": 1, "prepared": (cert(view=1, backups=(0, 2)),)}, "view 1 >= 1"),
    ("certificate from a later view", {"new_view": 1, "prepared": (cert(view=2, backups=(0, 1)),)}, "view 2 >= 1"),
    ("certificate with 2f-1 prepares", {"prepared": (cert(backups=(1,)),)}, "has 1 prepares, needs 2"),
    ("certificate with one backup twice", {"prepared": (cert(backups=(1, 1)),)}, "has 1 prepares, needs 2"),
    ("prepare from the primary", {"prepared": (cert(backups=(0, 1)),)}, "prepare from the primary"),
    ("pre-prepare not by the primary", {"prepared": (cert(pp_signer=1, backups=(2, 3)),)}, "not signed by its primary"),
    ("prepare of another view", {"new_view": 2, "prepared": (cert(backups=(1, 2), prepare_view=1),)}, "does not match"),
    ("two certificates for one seq", {"prepared": (cert(), cert(backups=(2, 3)))}, "two prepared certificates for n=1"),
    ("certificate above the water marks", {"prepared": (cert(seq=9),)}, "outside the water marks"),
    ("certificate at the stable checkpoint", {"stable_seq": 4, "checkpoint_proof": proof((0, 1, 2)), "prepared": (cert(seq=4),)}, "outside the water marks"),
]


@pytest.mark.parametrize("name,kwargs,error", VIEW_CHANGES, ids=[r[0] for r in VIEW_CHANGES])
def test_check_view_change(name, kwargs, error):
    msg, data = vc(**kwargs)
    if error is None:
        checked = check_view_change(CFG, VERIFIER, 1, msg, data)
        assert checked.signer == 1 and checked.msg == msg and checked.data == data
        assert sorted(checked.certs) == [1] * len(msg.prepared)
        return
    with pytest.raises(InvalidCertificate, match=error):
        check_view_change(CFG, VERIFIER, 1, msg, data)


def test_a_certificate_that_carries_its_batch_is_refused():
    """A certificate names a digest (4.4): one carrying its batch, even the right one,
    would let a VIEW-CHANGE (and a NEW-VIEW holding it) outgrow any frame."""
    for batch in (BATCH, OTHER):
        whole = sign_pre_prepare(1, batch, digest=D)
        msg, data = vc(prepared=((whole, sign_prepare(1, 1, D), sign_prepare(2, 1, D)),))
        with pytest.raises(InvalidCertificate, match="carries its batch"):
            check_view_change(CFG, VERIFIER, 1, msg, data)


# -- plan_new_view ---------------------------------------------------------------------------


def checked(signer, new_view=2, **kw):
    msg, data = vc(signer=signer, new_view=new_view, **kw)
    return check_view_change(CFG, VERIFIER, signer, msg, data)


PLANS = [
    # (name, view-changes, min_s, [(seq, batch or None for a null request)])
    ("nothing prepared", lambda: [checked(0), checked(1), checked(2)], 0, []),
    ("one certificate", lambda: [checked(0, prepared=(cert(),)), checked(1), checked(2)], 0, [(1, BATCH)]),
    (
        "a hole is filled with a null request",
        lambda: [checked(0, prepared=(cert(seq=2),)), checked(1), checked(2)],
        0,
        [(1, None), (2, BATCH)],
    ),
    (
        "the certificate of the higher view wins",
        lambda: [
            checked(0, prepared=(cert(),)),
            checked(2, prepared=(cert(view=1, batch=OTHER, backups=(0, 2)),)),
            checked(3),
        ],
        0,
        [(1, OTHER)],
    ),
    (
        "the latest stable checkpoint is min-s; certificates at or below it are dropped",
        lambda: [
            checked(0, prepared=(cert(seq=3),)),
            checked(1, stable_seq=4, checkpoint_proof=proof((0, 1, 2)), prepared=(cert(seq=5),)),
            checked(2),
        ],
        4,
        [(5, BATCH)],
    ),
]


@pytest.mark.parametrize("name,make,min_s,slots", PLANS, ids=[r[0] for r in PLANS])
def test_plan_new_view(name, make, min_s, slots):
    plan = plan_new_view(make())
    assert plan.min_s == min_s
    want = [(s, NULL_DIGEST) if b is None else (s, batch_digest(b)) for s, b in slots]
    assert list(plan.slots) == want
    if min_s:
        assert plan.stable_digest == S4 and len(plan.checkpoint_proof) == 3


# -- check_new_view ---------------------------------------------------------------------------


def new_view(view=1, senders=(0, 2, 3), prepared=None, pre_prepares=None, pp_signer=None):
    """A NEW-VIEW for `view` (primary 1 for view 1) from the VIEW-CHANGEs of `senders`; its
    pre-prepares recomputed honestly unless given."""
    msgs = [
        vc(signer=s, new_view=view, prepared=(prepared,) if prepared and i == 0 else ())
        for i, s in enumerate(senders)
    ]
    vcs = [data for _, data in msgs]
    if pre_prepares is None:
        plan = plan_new_view(
            [check_view_change(CFG, VERIFIER, s, m, d) for s, (m, d) in zip(senders, msgs, strict=True)]
        )
        signer = CFG.primary(view) if pp_signer is None else pp_signer
        pre_prepares = tuple(seal_as(signer, PrePrepare(view, s, d)) for s, d in plan.slots)
    return NewView(view, tuple(vcs), pre_prepares)


NEW_VIEWS = [
    ("empty, 2f+1 view-changes", lambda: new_view(), None),
    ("re-issues a prepared batch", lambda: new_view(prepared=cert()), None),
    ("2f view-changes", lambda: new_view(senders=(0, 2)), "only 2 view-changes, needs 3"),
    ("one replica twice", lambda: new_view(senders=(0, 2, 2)), "two view-changes from replica 2"),
    (
        "a view-change for another view",
        lambda: NewView(1, (vc(0, 1)[1], vc(2, 1)[1], vc(3, 2)[1]), ()),
        "other than view-changes for its view",
    ),
    (
        "a view-change with a certificate from the new view",
        lambda: NewView(
            1, (vc(0, 1, prepared=(cert(view=1, backups=(0, 2)),))[1], vc(2, 1)[1], vc(3, 1)[1]), ()
        ),
        "invalid view-change from 0: prepared certificate from view 1 >= 1",
    ),
    (
        "a view-change whose checkpoint proof has 2f signers",
        lambda: NewView(
            1, (vc(0, 1, stable_seq=4, checkpoint_proof=proof((0, 1)))[1], vc(2, 1)[1], vc(3, 1)[1]), ()
        ),
        "2 signers, needs 3",
    ),
    (
        "a prepared batch left out (a null request instead would be another message)",
        lambda: new_view(prepared=cert(), pre_prepares=()),
        "0 pre-prepares where 1 were due",
    ),
    (
        "the prepared batch replaced by a null request",
        lambda: new_view(prepared=cert(), pre_prepares=(seal_as(1, PrePrepare(1, 1, NULL_DIGEST, ())),)),
        "differs from the recomputed one",
    ),
    (
        "a re-issued pre-prepare that carries a batch",
        lambda: new_view(prepared=cert(), pre_prepares=(seal_as(1, PrePrepare(1, 1, batch_digest(BATCH), BATCH)),)),
        "carries its batch",
    ),
    (
        "a pre-prepare not from the new primary",
        lambda: new_view(prepared=cert(), pp_signer=2),
        "not the new primary's for the new view",
    ),
    (
        "a re-issued pre-prepare of the old view",
        lambda: new_view(prepared=cert(), pre_prepares=(seal_as(1, PrePrepare(0, 1, D, BATCH)),)),
        "not the new primary's for the new view",
    ),
    (
        "a malformed view-change",
        lambda: NewView(1, (b"\x00garbage", vc(2, 1)[1], vc(3, 1)[1]), ()),
        "malformed view-change",
    ),
    (
        "a view-change with a bad signature",
        lambda: NewView(1, (vc(0, 1)[1][:-1] + bytes([vc(0, 1)[1][-1] ^ 1]), vc(2, 1)[1], vc(3, 1)[1]), ()),
        "bad signature on the view-change of 0",
    ),
]


@pytest.mark.parametrize("name,make,error", NEW_VIEWS, ids=[r[0] for r in NEW_VIEWS])
def test_check_new_view(name, make, error):
    nv = make()
    if error is None:
        got = check_new_view(CFG, VERIFIER, nv)
        assert [raw for _, raw in got.pre_prepares] == list(nv.pre_prepares)
        assert [pp.seq for pp, _ in got.pre_prepares] == [s for s, _ in got.plan.slots]
        return
    with pytest.raises(InvalidCertificate, match=error):
        check_new_view(CFG, VERIFIER, nv)
