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
from pbft.protocol.statetransfer import (
    CHUNK_SIZE,
    chunk_proof,
    split,
    state_root,
    verify_chunk,
)
from pbft.protocol.viewchange import InvalidCertificate, ViewStatus, check_checkpoint_proof
from pbft.service.kv import op_put
from pbft.sim.simulation import apply_durability

pytestmark = pytest.mark.timeout(120)


# -- 1. Merkle proofs of state chunks (TOCS 2002 section 5.3) -----------------------------


def _state(n_chunks: int, tail: int, seed: int) -> bytes:
    """A state of `n_chunks` chunks (the last one `tail` bytes short, at least 1 byte),
    with chunks that differ from each other."""
    size = max(1, n_chunks * CHUNK_SIZE - tail)
    block = hashlib.sha256(b"state-%d" % seed).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(block + counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:size])


states = st.builds(
    _state,
    n_chunks=st.integers(1, 9),
    tail=st.integers(0, CHUNK_SIZE - 1),
    seed=st.integers(0, 1 << 16),
)


@settings(max_examples=40, deadline=None)
@given(state=states, data=st.data())
def test_every_chunk_proof_verifies_and_every_tampering_fails(state, data):
    """TOCS 2002 section 5.3: a fetched chunk is checked against the checkpoint digest
    2f+1 replicas signed (the Merkle root over the chunks) with its proof. Every chunk
    with its own proof verifies, for 1-9 chunks; a changed chunk byte, a changed proof
    element or a wrong index fails.

    Kills: sibling order swapped in `verify_chunk` (`node + s` <-> `s + node`), which no
    single-chunk state (an empty proof) ever exercised."""
    chunks = split(state)
    total = len(chunks)
    assert 1 <= total <= 9
    root = state_root(chunks)
    for i, chunk in enumerate(chunks):
        assert verify_chunk(root, total, i, chunk, chunk_proof(chunks, i)), f"chunk {i}/{total}"
    i = data.draw(st.integers(0, total - 1), label="index")
    chunk, proof = chunks[i], chunk_proof(chunks, i)
    # A changed chunk byte.
    pos = data.draw(st.integers(0, len(chunk) - 1), label="byte")
    bad = bytearray(chunk)
    bad[pos] ^= data.draw(st.integers(1, 255), label="flip")
    assert not verify_chunk(root, total, i, bytes(bad), proof)
    # A changed proof element.
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        elem = bytearray(proof[k])
        elem[data.draw(st.integers(0, len(elem) - 1), label="elem-byte")] ^= 1
        assert not verify_chunk(root, total, i, chunk, proof[:k] + (bytes(elem),) + proof[k + 1 :])
        # Proof elements out of order (when they differ) fail too.
        if len(proof) > 1 and len(set(proof)) > 1:
            assert not verify_chunk(root, total, i, chunk, tuple(reversed(proof)))
    # A wrong index (the chunks all differ, so no other position holds this one).
    if total > 1:
        j = data.draw(st.integers(0, total - 1).filter(lambda j: j != i), label="wrong")
        assert not verify_chunk(root, total, j, chunk, proof)
        assert not verify_chunk(root, total, j, chunk, chunk_proof(chunks, j))
    # A wrong chunk count, or a proof of another chunk.
    assert not verify_chunk(root, total + 1, i, chunk, proof)
    if total > 1:
        assert not verify_chunk(root, total, i, chunk, chunk_proof(chunks, (i + 1) % total))


VALUE = 40 * 1024  # 8 puts of 40 KiB: a state of about 320 KiB, 5+ chunks


def _big_value(seq: int) -> bytes:
    return b"".join(hashlib.sha256(b"v%d-%d" % (seq, k)).digest() for k in range(VALUE // 32))


def _executed_big(cfg, rid: int, upto: int):
    """Replica `rid` that executed one large put per slot up to `upto` (view 0)."""
    rep = make_replica(cfg, rid)
    for seq in range(1, upto + 1):
        req = sign_request("alice", op_put(b"k%d" % seq, _big_value(seq)), seq)
        pp = sign_pre_prepare(seq, (req,))
        feed(rep, 0, pp)
        drive_to_execution(rep, seq, decoded(pp)[1].digest)
        if seq % cfg.checkpoint_interval == 0:
            for signer in [s for s in range(cfg.n) if s != rid][: cfg.quorum - 1]:
                feed(rep, signer, sign_checkpoint(signer, seq, rep.checkpoints.own[seq][0]))
    assert rep.last_executed == upto
    return rep


def test_a_multi_chunk_state_transfer_installs_a_state_over_200_kib():
    """TOCS 2002 section 5.3 (OSDI'99 4.3 for the stable checkpoint): a replica that
    learns checkpoint 8 is stable without its state fetches it chunk by chunk, checking
    each against the signed Merkle root, and installs it. The state is over 200 KiB, so
    several chunks with non-empty proofs cross the wire between two Replica cores.

    Kills: sibling order swapped in `verify_chunk` (every chunk is refused as a lie)."""
    cfg = make_config()
    donor = _executed_big(cfg, 1, 8)
    state = donor.checkpoint_state()
    assert len(state) > 200 * 1024 and len(split(state)) >= 4
    digest = donor.checkpoints.own[8][0]
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
    rounds = 0
    while lag.last_executed != 8 and rounds < 200:
        rounds += 1
        asks = to_donor(out)
        if not asks:  # nothing asked: let the retransmission timer ask again
            out = lag.step(Tick())
            continue
        out = []
        for data in asks:
            for a in donor.step(Received(3, data)):
                if isinstance(a, Send) and a.to == 3:
                    out += lag.step(Received(1, a.data))
    assert lag.last_executed == 8, f"state not installed; liars={lag.transfer and lag.transfer.liars}"
    assert lag.checkpoint_state() == state
    assert lag.state_digest() == digest


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
