"""Tests that kill mutants of protocol rules which used to survive the whole suite.

Each test names the rule it pins, the paper section it comes from, and the one-line
mutant of pbft/protocol it was checked against (applied by hand: the test fails with
the mutant and passes without it).
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import (
    actions_of,
    decoded,
    drive_to_execution,
    feed,
    forge,
    make_config,
    make_replica,
    make_verifier,
    sign_checkpoint,
    sign_pre_prepare,
    sign_request,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol.events import (
    Broadcast,
    Evidence,
    Persist,
    Reason,
    Received,
    Rejected,
    Send,
    Tick,
    Truncate,
)
from pbft.protocol.messages import FetchState, Prepare
from pbft.protocol.partition import DEPTH, FANOUT, bucket_of, check_children, check_leaf
from pbft.protocol.statetransfer import pages
from pbft.protocol.store import MemoryStore
from pbft.protocol.viewchange import InvalidCertificate, ViewStatus, check_checkpoint_proof
from pbft.service.kv import op_put
from pbft.sim.simulation import apply_durability

pytestmark = pytest.mark.timeout(120)


# -- 1. The partition tree and partial state transfer (TOCS 2002 section 5.3) ------------


entry_sets = st.dictionaries(st.binary(min_size=1, max_size=12), st.binary(max_size=20), max_size=30)


@settings(max_examples=60, deadline=None)
@given(entries=entry_sets, data=st.data())
def test_every_tree_node_verifies_and_every_tampering_fails(entries, data):
    """TOCS 2002 section 5.3.2: a fetched node is checked against the digest its parent
    (up to the signed root) gives it. Every node's children and every leaf's entries
    verify; a changed digest, a changed or extra entry, a key of another bucket, or
    children out of order fail.

    Kills: `check_children` or `check_leaf` accepting what does not hash to the digest,
    `check_leaf` without the bucket check."""
    store = MemoryStore()
    for k, v in entries.items():
        store.put(k, v)
    root = store.checkpoint(1)
    top = store.children_at(1, DEPTH, 0)
    assert check_children(root, DEPTH, top)
    bad = list(top)
    i = data.draw(st.integers(0, FANOUT - 1), label="child")
    bad[i] = bytes(32) if bad[i] != bytes(32) else b"\1" * 32
    assert not check_children(root, DEPTH, tuple(bad))
    if len(set(top)) > 1:
        assert not check_children(root, DEPTH, tuple(reversed(top)))
    for key in list(entries)[:5]:
        b = bucket_of(key)
        leaf = store.bucket_at(1, b)
        node = store.children_at(1, 1, b // FANOUT)
        assert check_children(top[b // FANOUT], 1, node)
        expected = node[b % FANOUT]
        assert check_leaf(expected, b, leaf)
        k0, v0 = leaf[0]
        assert not check_leaf(expected, b, [(k0, v0 + b"x"), *leaf[1:]])
        assert not check_leaf(expected, b, leaf[1:]) or len(leaf) == 0
        other = next(k for k in (b"o%d" % n for n in range(10**6)) if bucket_of(k) != b)
        assert not check_leaf(expected, b, [*leaf, (other, b"")])
        assert not check_leaf(expected, b, [*leaf, leaf[0]])  # a key twice


VALUE = 40 * 1024  # 8 puts of 40 KiB into ONE bucket: a 320 KiB leaf, 5+ pages


def _big_value(seq: int) -> bytes:
    return b"".join(hashlib.sha256(b"v%d-%d" % (seq, k)).digest() for k in range(VALUE // 32))


def _keys_in_one_bucket(count: int) -> list[bytes]:
    """`count` keys whose service keys (under the store's service prefix) share a bucket."""
    target = bucket_of(b"sbig-0")
    out = [b"big-0"]
    n = 1
    while len(out) < count:
        k = b"big-%d" % n
        if bucket_of(b"s" + k) == target:
            out.append(k)
        n += 1
    return out


BIG_KEYS = _keys_in_one_bucket(8)


def _executed_big(cfg, rid: int, upto: int):
    """Replica `rid` that executed one large put per slot up to `upto` (view 0)."""
    rep = make_replica(cfg, rid)
    for seq in range(1, upto + 1):
        req = sign_request("alice", op_put(BIG_KEYS[seq - 1], _big_value(seq)), seq)
        pp = sign_pre_prepare(seq, (req,))
        feed(rep, 0, pp)
        drive_to_execution(rep, seq, decoded(pp)[1].digest)
        if seq % cfg.checkpoint_interval == 0:
            for signer in [s for s in range(cfg.n) if s != rid][: cfg.quorum - 1]:
                feed(rep, signer, sign_checkpoint(signer, seq, rep.checkpoints.own[seq]))
    assert rep.last_executed == upto
    return rep


def test_a_leaf_of_several_pages_is_transferred_and_installed():
    """TOCS 2002 section 5.3.2 (OSDI'99 4.3 for the stable checkpoint): a replica that
    learns checkpoint 8 is stable without its state walks the donor's tree from the
    signed root and fetches the leaves that differ. One leaf holds 320 KiB (keys ground
    into one bucket, as Byzantine clients could), so it crosses in several pages from one
    source, checked when the last arrives; the state installed is the donor's.

    Kills: pages out of order accepted, a leaf checked before its last page, the page
    count of the first page not kept."""
    cfg = make_config()
    donor = _executed_big(cfg, 1, 8)
    digest = donor.checkpoints.own[8]
    bucket = bucket_of(b"s" + BIG_KEYS[0])
    assert len(pages(donor.store.bucket_at(8, bucket))) >= 5
    lag = make_replica(cfg, 3)
    for signer in (0, 1, 2):
        feed(lag, signer, sign_checkpoint(signer, 8, digest))
    assert lag.transfer is not None and lag.last_executed == 0

    def to_donor(actions):  # every FETCH-STATE goes to the donor, whoever it names
        return [a.data for a in actions if isinstance(a, Send) and isinstance(decoded(a.data)[1], FetchState)]

    out = []
    for _ in range(cfg.retransmit_ms // cfg.tick_ms + 1):
        out = lag.step(Tick())
        if to_donor(out):
            break
    rounds = pages_seen = 0
    while lag.last_executed != 8 and rounds < 400:
        rounds += 1
        asks = to_donor(out)
        if not asks:  # nothing asked: let the retransmission timer ask again
            out = lag.step(Tick())
            continue
        out = []
        for data in asks:
            for a in donor.step(Received(3, data)):
                if isinstance(a, Send) and a.to == 3:
                    sc = decoded(a.data)[1]
                    pages_seen += sc.level == 0 and sc.index == bucket
                    out += lag.step(Received(1, a.data))
    assert lag.last_executed == 8, f"state not installed; liars={lag.transfer and lag.transfer.liars}"
    assert pages_seen >= 5
    assert lag.state_digest() == digest == donor.state_digest()
    assert lag.service.snapshot() == donor.service.snapshot()
    assert lag.replies.records == donor.replies.records


# -- 2. No PRE-PREPARE for the pending view before its NEW-VIEW (OSDI'99 4.4) -------------


def test_a_backup_in_view_change_does_not_accept_a_pre_prepare_before_new_view():
    """OSDI'99 section 4.4: a backup that moved to view v+1 (view-change status) accepts
    messages of v+1 only once it has the NEW-VIEW; before that a PRE-PREPARE of the new
    primary is buffered, not accepted, and the backup sends no PREPARE for it.

    Kills: the `or self.status is ViewStatus.VIEW_CHANGE` part of the view guard in
    `Replica.on_pre_prepare` removed."""
    cfg = make_config()
    rep = make_replica(cfg, 2)
    rep.become_view_change(1)
    rep._out = []
    assert rep.view == 1 and rep.status is ViewStatus.VIEW_CHANGE
    req = sign_request("alice", op_put(b"k", b"v"), 1)
    pp = sign_pre_prepare(1, (req,), view=1)  # signed by replica 1, primary of view 1
    out = feed(rep, 1, pp)
    sent = [decoded(a.data)[1] for a in actions_of(out, Broadcast)]
    assert not [m for m in sent if isinstance(m, Prepare)], "prepared before the NEW-VIEW"
    slot = rep.log.get(1)
    assert slot is None or slot.pre_prepare is None
    assert ("prepare", 1, 1) not in rep.safety.signed


# -- 3. A forged second PRE-PREPARE is not equivocation evidence (OSDI'99 4.2) ------------


def test_a_forged_conflicting_pre_prepare_is_rejected_not_evidence():
    """OSDI'99 section 4.2 (a backup accepts a pre-prepare only if its signature is
    correct): a second PRE-PREPARE for the same (v, n) naming the primary but signed with
    another replica's key is a bad signature, not proof that the honest primary
    equivocated. A genuine second one is evidence.

    Kills: the `_verify` before `_evidence` in `on_pre_prepare`'s conflicting branch
    removed."""
    cfg = make_config()
    rep = make_replica(cfg, 1)
    first = sign_pre_prepare(1, (sign_request("alice", op_put(b"k", b"1"), 1),))
    feed(rep, 0, first)
    assert rep.log.get(1).pre_prepare is not None
    other = decoded(sign_pre_prepare(1, (sign_request("bob", op_put(b"k", b"2"), 1),)))[1]
    forged = forge(0, other, real_signer=3)
    out = feed(rep, 3, forged)
    assert not actions_of(out, Evidence), "a forgery counted as evidence against the primary"
    assert [r.reason for r in actions_of(out, Rejected)] == [Reason.BAD_SIGNATURE]
    genuine = sign_pre_prepare(1, (sign_request("bob", op_put(b"k", b"2"), 1),))
    ev = actions_of(feed(rep, 0, genuine), Evidence)
    assert len(ev) == 1 and ev[0].culprit == 0


# -- 4. The accepted PRE-PREPARE survives a restart (OSDI'99 4.2, TOCS 2002 5.3) ----------


def test_a_restarted_backup_still_sees_equivocation_on_a_pre_prepare_it_accepted():
    """OSDI'99 section 4.2 with TOCS 2002 recovery: the PRE-PREPARE a backup accepted is
    persisted with its vote, so after a restart (`recover` from the persisted records)
    a conflicting PRE-PREPARE for the same (v, n) still yields equivocation evidence
    carrying both signed messages.

    Kills: the `AcceptedPrePrepare(pp.view, pp.seq, data).to_persist()` in
    `on_pre_prepare` removed."""
    cfg = make_config()
    rep = make_replica(cfg, 1)
    store: dict = {}
    first = sign_pre_prepare(1, (sign_request("alice", op_put(b"k", b"1"), 1),))
    for a in feed(rep, 0, first):
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)
    again = make_replica(cfg, 1)
    again.recover(list(store.values()))
    second = sign_pre_prepare(1, (sign_request("bob", op_put(b"k", b"2"), 1),))
    ev = actions_of(feed(again, 0, second), Evidence)
    assert len(ev) == 1, "the restarted backup forgot the pre-prepare it accepted"
    assert ev[0].culprit == 0 and {ev[0].first, ev[0].second} == {first, second}


# -- 5. A checkpoint proof needs 2f+1 signers (OSDI'99 4.3) -------------------------------


@pytest.mark.parametrize("f", [1, 2])
def test_a_checkpoint_proof_needs_2f_plus_1_distinct_signers(f):
    """OSDI'99 section 4.3: a checkpoint is stable (and a proof of it valid, as carried
    in VIEW-CHANGE and NEW-VIEW, section 4.4) only with 2f+1 CHECKPOINT messages from
    distinct replicas; 2f or f+1 are not enough, and padding with copies does not help.

    Kills: the quorum in `viewchange.check_checkpoint_proof` lowered to 2f or f+1."""
    cfg = make_config(f=f)
    verifier = make_verifier(cfg)
    seq, digest = cfg.checkpoint_interval, b"\x17" * 32
    signed = [sign_checkpoint(s, seq, digest) for s in range(cfg.n)]
    assert check_checkpoint_proof(cfg, verifier, seq, tuple(signed[: 2 * f + 1])) == digest
    assert check_checkpoint_proof(cfg, verifier, seq, tuple(signed[f : 3 * f + 1])) == digest
    for count in (2 * f, f + 1):
        for start in (0, f):
            proof = tuple(signed[start : start + count])
            with pytest.raises(InvalidCertificate, match="signers"):
                check_checkpoint_proof(cfg, verifier, seq, proof)
        with pytest.raises(InvalidCertificate):  # copies of one signer's message do not count
            check_checkpoint_proof(cfg, verifier, seq, tuple(signed[:count]) + (signed[0],))
