"""Issue 13: holes found by attacking pbft on purpose, each pinned by a test that fails
without its fix. Unit level (one core, messages fed by hand) where the timing matters;
the simulator scenarios for the same classes live in tests/scenarios/."""

from __future__ import annotations

import pytest
from conftest import (
    actions_of,
    decoded,
    feed,
    make_config,
    make_replica,
    sign_checkpoint,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
)

from pbft.protocol.events import Persist, Reason, Rejected, Truncate
from pbft.protocol.messages import ViewChange
from pbft.protocol.viewchange import check_view_change
from pbft.service.kv import op_put
from pbft.sim.simulation import apply_durability

pytestmark = pytest.mark.timeout(60)

FAR = b"\x42" * 32  # a state digest this replica does not hold


def _durable(rep, actions, store):
    for a in actions:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)


def _jump_and_prepare_above(cfg, rid=3):
    """Replica `rid` learns that checkpoint 8 is stable (2f+1 CHECKPOINTs) without its
    state, jumps its window to (8, 16], and prepares n=10 in view 0."""
    rep = make_replica(cfg, rid)
    store: dict = {}
    for signer in (0, 1, 2):
        _durable(rep, feed(rep, signer, sign_checkpoint(signer, 8, FAR)), store)
    assert rep.log.low == 8 and rep.transfer is not None
    req = sign_request("alice", op_put(b"k", b"v"), 1)
    pp = sign_pre_prepare(10, (req,))
    _durable(rep, feed(rep, 0, pp), store)
    digest = decoded(pp)[1].digest
    for signer in (1, 2):
        _durable(rep, feed(rep, signer, sign_prepare(signer, 10, digest)), store)
    assert 10 in rep.prepared_certs
    return rep, store


def test_a_window_jump_survives_a_restart_and_the_view_change_after_it():
    """Item 1: the jump is durable, so a restarted replica is back in the window its
    votes and certificates belong to, fetches the state again, and its VIEW-CHANGE
    checks (before: the window went back to 0 and building the VIEW-CHANGE raised
    InvalidCertificate out of step)."""
    cfg = make_config()
    _, store = _jump_and_prepare_above(cfg)
    again = make_replica(cfg, 3)
    again.recover(list(store.values()))
    assert again.log.low == 8 and again.transfer is not None and again.transfer.seq == 8
    assert 10 in again.prepared_certs
    again._out = []
    again.become_view_change(1)
    out, again._out = again._out, []
    vc_data = next(a.data for a in out if type(a).__name__ == "Broadcast")
    env, vc = decoded(vc_data)
    assert isinstance(vc, ViewChange) and vc.stable_seq == 8 and len(vc.prepared) == 1
    check_view_change(cfg, again.verifier, 3, vc, vc_data)  # what every peer runs
    # The transfer resumes at the first retransmission.
    for _ in range(cfg.retransmit_ms // cfg.tick_ms + 1):
        out = again.step(__import__("pbft.protocol.events", fromlist=["Tick"]).Tick())
        if any(type(decoded(a.data)[1]).__name__ == "FetchState" for a in out if hasattr(a, "to")):
            break
    else:
        pytest.fail("the restarted replica never asked for the state again")


def test_a_restarted_primary_never_signs_a_second_pre_prepare_for_a_used_number():
    """Item 1, primary side: whatever its records say, a restarted primary reinstates
    a PRE-PREPARE it signed instead of asking the safety rules for a second one (which
    raised SafetyViolation out of step on every restart)."""
    cfg = make_config()
    rep = make_replica(cfg, 0)
    store: dict = {}
    r1 = sign_request("alice", op_put(b"a", b"1"), 1)
    _durable(rep, feed(rep, "alice", r1), store)
    assert ("pre-prepare", 0, 1) in rep.safety.signed
    # A store that kept the vote but lost the log slot around it (the shape a window
    # that went back used to produce): the PRE-PREPARE record alone.
    again = make_replica(cfg, 0)
    again.recover([r for r in store.values() if r.tag == "pre-prepare"])
    again.log.slots.clear()
    again.next_seq = 1
    out = feed(again, "bob", sign_request("bob", op_put(b"b", b"2"), 1))
    pps = [decoded(a.data)[1] for a in out if type(a).__name__ == "Broadcast"]
    assert [(p.seq, p.digest) for p in pps if type(p).__name__ == "PrePrepare"][0] == (
        1,
        rep.safety.signed[("pre-prepare", 0, 1)][0],
    )
    assert again.next_seq == 2 and 1 in again.log.slots  # n=1 is ours again, bob waits for n=2


def test_a_store_that_cannot_go_back_to_the_signed_checkpoint_fetches_it():
    """Item 3 (core side), with the state in a store of its own (TOCS 5.3): recovery goes
    back to the stable checkpoint only if the store still holds it with the digest 2f+1
    replicas signed; a store that does not (lost, damaged, another one) is never run on:
    the replica fetches that state instead. A proof that does not hold is refused."""
    from conftest import drive_to_execution

    cfg = make_config()
    rep = make_replica(cfg, 1)
    store: dict = {}
    for seq in range(1, 7):
        req = sign_request("alice", op_put(b"k%d" % seq, b"v"), seq)
        pp = sign_pre_prepare(seq, (req,))
        _durable(rep, feed(rep, 0, pp), store)
        _durable(rep, drive_to_execution(rep, seq, decoded(pp)[1].digest), store)
        if seq == 4:
            digest = rep.checkpoints.own[4]
            for signer in (0, 2):
                _durable(rep, feed(rep, signer, sign_checkpoint(signer, 4, digest)), store)
    assert rep.log.low == 4 and rep.last_executed == 6
    records = list(store.values())
    before = rep.state_digest()
    # The same store: back to 4 (undoing 5 and 6), then 5 and 6 replayed.
    again = make_replica(cfg, 1, service=rep.service)
    again.recover(records)
    assert again.last_executed == 6 and again.transfer is None
    assert again.state_digest() == before
    # Another store (empty): never run on; the state at 4 is fetched.
    fresh = make_replica(cfg, 1)
    fresh.recover(records)
    assert fresh.last_executed == 0 and fresh.log.low == 4
    assert fresh.transfer is not None and (fresh.transfer.seq, fresh.transfer.digest) == (4, digest)
    # A store whose checkpoint 4 is not the signed one: the same.
    damaged = make_replica(cfg, 1, service=rep.service)
    damaged.store.trees[4].levels[0][0] = b"\1" * 32
    damaged.store.trees[4].rebuild()
    damaged.recover(records)
    assert damaged.transfer is not None and damaged.last_executed == 0
    from pbft.protocol import codec

    ck = next(r for r in records if r.record.value == "checkpoint")
    seq, d, proof = codec.decode(ck.value)
    short = Persist(ck.record, ck.seq, ck.view, ck.tag, codec.encode([seq, d, proof[:2]]))
    with pytest.raises(ValueError):
        make_replica(cfg, 1).recover([short if r is ck else r for r in records])


_ = (actions_of, sign_commit)


def _executed_replica(cfg, rid: int, upto: int):
    """Replica `rid` that executed one put per slot up to `upto` (view 0)."""
    from conftest import drive_to_execution

    rep = make_replica(cfg, rid)
    for seq in range(1, upto + 1):
        req = sign_request("alice", op_put(b"k%d" % seq, b"v%d" % seq), seq)
        pp = sign_pre_prepare(seq, (req,))
        if rid != 0:
            feed(rep, 0, pp)
        else:
            rep.step(__import__("pbft.protocol.events", fromlist=["Received"]).Received("alice", req))
        drive_to_execution(rep, seq, decoded(pp)[1].digest)
        if seq % cfg.checkpoint_interval == 0:  # the others agree: the window moves on
            for signer in [s for s in range(cfg.n) if s != rid][: cfg.quorum - 1]:
                feed(rep, signer, sign_checkpoint(signer, seq, rep.checkpoints.own[seq]))
    assert rep.last_executed == upto
    return rep


def _route(src, dst_id, actions):
    """`src`'s sends to replica `dst_id`; for dst_id 1 (the donor) every FETCH-STATE,
    whoever it was addressed to (the donor answers for all of them)."""
    from pbft.protocol.events import Send
    from pbft.protocol.messages import FetchState

    return [
        a.data
        for a in actions
        if isinstance(a, Send)
        and (a.to == dst_id or (dst_id == 1 and isinstance(decoded(a.data)[1], FetchState)))
    ]


def test_a_read_waits_for_a_state_transfer_instead_of_answering_from_old_state():
    """Item 4: a replica that learnt checkpoint 8 is stable but still holds the state of
    n=0 must not answer a read from it (with one Byzantine replica echoing that stale
    answer, a client would accept it). It answers once the state is installed."""
    from pbft.protocol.events import Received, SendClient, Tick
    from pbft.protocol.messages import Reply
    from pbft.service.kv import op_get

    cfg = make_config()
    donor = _executed_replica(cfg, 1, 8)
    digest = donor.checkpoints.own[8]
    lag = make_replica(cfg, 3)
    for signer in (0, 1, 2):
        feed(lag, signer, sign_checkpoint(signer, 8, digest))
    assert lag.transfer is not None and lag.last_executed == 0
    read = sign_request("bob", op_get(b"k3"), 1, read_only=True)
    out = feed(lag, "bob", read)
    assert not actions_of(out, SendClient), "answered a read from the state before the transfer"
    # Serve the transfer from the donor until the state is installed.
    for _ in range(cfg.retransmit_ms // cfg.tick_ms + 1):
        out = lag.step(Tick())
        if _route(lag, 1, out):
            break
    answers = []
    for _ in range(50):
        asks = _route(lag, 1, out)
        if not asks:
            break
        out = []
        for data in asks:
            for chunk in _route(donor, 3, donor.step(Received(3, data))):
                got = lag.step(Received(1, chunk))
                answers += actions_of(got, SendClient)
                out += got
    assert lag.last_executed == 8
    replies = [decoded(a.data)[1] for a in answers]
    assert [r.timestamp for r in replies if isinstance(r, Reply) and r.client == "bob"] == [1]


def _proof_for(cfg, seq: int, upto_signers=(0, 1, 2)):
    donor = _executed_replica(cfg, 1, seq)
    digest = donor.checkpoints.own[seq]
    return digest, tuple(sign_checkpoint(s, seq, digest) for s in upto_signers)


def test_a_stable_proof_is_accepted_as_a_unit_despite_far_future_claims():
    """Item 5: Byzantine replica 0 fills its claim slots with far-future CHECKPOINTs, which
    pushed its own genuine signature of checkpoint 16 out of the laggard's claims; the
    proof {0, 1, 2} a correct peer sends must still move the laggard."""
    from conftest import CLUSTER_ID, replica_key

    from pbft.protocol.crypto import seal
    from pbft.protocol.messages import StableProof

    cfg = make_config()
    digest, proof = _proof_for(cfg, 16)
    lag = make_replica(cfg, 3)
    feed(lag, 0, proof[0])  # the genuine claim of replica 0 (beyond the window)
    for far in (400, 800, 1200):
        feed(lag, 0, sign_checkpoint(0, far, FAR))
    for data in proof[1:]:
        feed(lag, 1, data)
    assert lag.log.low == 0  # the old path: replica 0's genuine claim was pushed out
    unit = seal(replica_key(1), CLUSTER_ID, 1, StableProof(16, proof)).to_bytes()
    feed(lag, 1, unit)
    assert lag.log.low == 16 and lag.transfer is not None and lag.transfer.digest == digest


def test_a_stable_proof_inside_the_window_beats_a_conflicting_earlier_vote():
    """Item 5, inside the window: replica 0 first sent the laggard a CHECKPOINT with a
    wrong digest, so its genuine one in the proof looked like a second vote; as a unit,
    2f+1 valid signatures for one digest make it stable."""
    from conftest import CLUSTER_ID, replica_key

    from pbft.protocol.crypto import seal
    from pbft.protocol.messages import StableProof

    cfg = make_config()
    digest, proof = _proof_for(cfg, 8)
    lag = make_replica(cfg, 3)
    feed(lag, 0, sign_checkpoint(0, 8, FAR))
    for data in proof:
        feed(lag, 1, data)
    assert lag.log.low == 0
    feed(lag, 1, seal(replica_key(1), CLUSTER_ID, 1, StableProof(8, proof)).to_bytes())
    assert lag.log.low == 8


def test_a_stable_proof_that_does_not_check_is_rejected_and_moves_nothing():
    from conftest import CLUSTER_ID, replica_key

    from pbft.protocol.crypto import seal
    from pbft.protocol.events import Rejected
    from pbft.protocol.messages import StableProof

    cfg = make_config()
    digest, proof = _proof_for(cfg, 8)
    lag = make_replica(cfg, 3)
    for bad in (proof[:2], proof[:2] + proof[:1], proof[:2] + (sign_checkpoint(2, 8, FAR),)):
        out = feed(lag, 1, seal(replica_key(1), CLUSTER_ID, 1, StableProof(8, bad)).to_bytes())
        assert [r.reason.name for r in actions_of(out, Rejected)] == ["BAD_CERTIFICATE"]
    assert lag.log.low == 0 and lag.transfer is None


def _big_pre_prepare(
    signer: int, view: int, seq: int, size: int, real_signer: int | None = None, tag: int = 0
) -> bytes:
    """A PRE-PREPARE for a future view whose batch is `size` bytes of garbage (its
    requests are only checked once the view is installed; its digest before it is kept);
    `tag` makes each one distinct."""
    from conftest import forge

    from pbft.protocol.crypto import batch_digest
    from pbft.protocol.messages import PrePrepare

    batch = (tag.to_bytes(8, "big") + b"\x01" * size,)
    pp = PrePrepare(view, seq, batch_digest(batch), batch)
    return forge(signer, pp, real_signer)


def test_a_future_view_pre_prepare_whose_batch_is_not_its_digest_is_not_kept():
    """The signature covers (v, n, d) only: copies of a genuine future-view PRE-PREPARE
    with other batches attached would each pass the signature check and fill the
    primary's budget (review of the batches-by-digest change, finding 5)."""
    from pbft.protocol.messages import Envelope, envelope_from_bytes

    cfg = make_config()
    rep = make_replica(cfg, 2)
    genuine = _big_pre_prepare(1, 1, 1, 1024)
    env = envelope_from_bytes(genuine)
    for i in range(20):
        swapped = Envelope(env.body, env.signer, env.signature, (bytes([i]) * 1024,)).to_bytes()
        assert [r.reason for r in actions_of(feed(rep, 0, swapped), Rejected)] == [Reason.BAD_DIGEST]
    assert not rep.future.messages
    feed(rep, 1, genuine)
    assert len(rep.future.messages) == 1


def test_the_future_view_buffer_is_bounded_in_bytes_per_signer_whatever_the_channel():
    """Item 6: one Byzantine replica (1, primary of view 1) sends 1 MiB PRE-PREPAREs for
    view 1 over its own channel and over client channels. What a correct replica keeps is
    bounded by FUTURE_SIGNER_BYTES, not by a count per channel (which let every client
    identity add a budget of its own: 784 x 16 MiB = 11.9 GiB on real processes)."""
    from pbft.protocol.events import Rejected
    from pbft.protocol.future import FUTURE_SIGNER_BYTES

    cfg = make_config()
    rep = make_replica(cfg, 2)
    mib = 1024 * 1024
    overload = 0
    for i, channel in enumerate([1] * 30 + ["alice"] * 30 + ["bob"] * 30 + [None] * 30):
        out = feed(rep, channel, _big_pre_prepare(1, 1, 1 + i % 8, mib, tag=i))
        overload += sum(1 for r in actions_of(out, Rejected) if r.reason.name == "OVERLOAD")
    held = sum(len(d) for _, d in rep.future.messages)
    assert held <= FUTURE_SIGNER_BYTES and overload >= 100
    # A forgery in another replica's name is never kept (nobody fills 3's budget).
    out = feed(rep, 1, _big_pre_prepare(3, 3, 1, 1024, real_signer=1))
    assert [r.reason.name for r in actions_of(out, Rejected)] == ["BAD_SIGNATURE"]
    assert all(decoded(d)[0].signer == 1 for _, d in rep.future.messages)
    # The correct replica 3 still has its own budget for view 3.
    feed(rep, 3, _big_pre_prepare(3, 3, 1, 1024))
    assert any(decoded(d)[0].signer == 3 for _, d in rep.future.messages)
    # Copies of one genuine message do not fill a budget (a replayed PREPARE of replica 3
    # would otherwise crowd out its real COMMIT).
    held = len(rep.future.messages)
    for _ in range(40):
        feed(rep, 0, _big_pre_prepare(3, 3, 2, 1024))
    assert len(rep.future.messages) == held + 1


def test_status_answers_are_limited_per_replica_and_period():
    """Item 7: ten signed STATUS per tick from a replica that claims to be far behind
    cost a correct replica one answer per retransmission period, not ten per tick."""
    from conftest import seal_as

    from pbft.protocol.events import Send, Tick
    from pbft.protocol.messages import Status

    cfg = make_config()
    rep = _executed_replica(cfg, 1, 8)
    sent = 0
    ticks = 4 * (cfg.retransmit_ms // cfg.tick_ms)
    for _ in range(ticks):
        rep.step(Tick())
        for _ in range(10):
            sent += len(actions_of(feed(rep, 3, seal_as(3, Status(0, 0, 0, 0))), Send))
    periods = ticks // (cfg.retransmit_ms // cfg.tick_ms)
    per_answer = 2  # the STABLE-PROOF (the peer is below our stable checkpoint) and our STATUS
    assert 0 < sent <= (periods + 1) * per_answer, sent


def test_a_relayed_or_repeated_fetch_state_gets_no_chunk():
    """Item 7: a FETCH-STATE signed by replica 3 and replayed by replica 0 (or by anyone)
    made us send the chunk to 3 again and again; chunks go to the signer only over its own
    channel, once per chunk and retransmission period."""
    from conftest import seal_as

    from pbft.protocol.events import Rejected, Send
    from pbft.protocol.messages import FetchState

    cfg = make_config()
    rep = _executed_replica(cfg, 1, 8)
    fs = seal_as(3, FetchState(8, rep.checkpoints.own[8], 2, 0, 0))
    assert len(actions_of(feed(rep, 3, fs), Send)) == 1
    assert not actions_of(feed(rep, 3, fs), Send)  # the same chunk again, at once
    out = feed(rep, 0, fs)
    assert not actions_of(out, Send)
    assert [r.reason.name for r in actions_of(out, Rejected)] == ["WRONG_ROLE"]


def test_a_replayed_request_gets_its_cached_reply_once_per_period():
    """Item 7: a Byzantine replica relaying a client's executed request makes every correct
    replica resend the (up to 1 MiB) cached reply; once per half of a client's first
    retransmission timeout (so the client's own retransmission is always answered)."""
    from pbft.protocol.events import SendClient, Tick
    from pbft.protocol.held import client_retransmit_ticks

    cfg = make_config()
    rep = _executed_replica(cfg, 1, 4)
    req4 = sign_request("alice", op_put(b"k4", b"v4"), 4)
    replies = sum(len(actions_of(feed(rep, 0, req4), SendClient)) for _ in range(20))
    assert replies == 1
    for _ in range(client_retransmit_ticks(cfg) // 2):
        rep.step(Tick())
    assert len(actions_of(feed(rep, "alice", req4), SendClient)) == 1


def test_a_restarted_replica_does_not_change_view_before_it_knows_it_is_behind():
    """Item 2: replica 3 restarts having executed n=2 while the others went on to n=6.
    Clients resend it requests that were ordered while it was down; judging the primary
    by them sent it alone into a view change the others never followed (on real
    processes it stayed alone in view 17 through two restarts). Until 2f others told it
    where they are it does not time the primary out; once f+1 say they executed past it,
    it gets one fresh timeout to catch up in."""
    from conftest import seal_as

    from pbft.protocol.events import Tick
    from pbft.protocol.messages import Status

    cfg = make_config()
    rep = _executed_replica(cfg, 3, 2)
    store: dict = {}
    # Records as the runtime would hold them: replay the same history into a store.
    donor = make_replica(cfg, 3)
    from conftest import drive_to_execution

    for seq in range(1, 3):
        req = sign_request("alice", op_put(b"k%d" % seq, b"v%d" % seq), seq)
        pp = sign_pre_prepare(seq, (req,))
        _durable(donor, feed(donor, 0, pp), store)
        _durable(donor, drive_to_execution(donor, seq, decoded(pp)[1].digest), store)
    again = make_replica(cfg, 3)
    again.recover(list(store.values()))
    assert again.last_executed == 2 and rep.last_executed == 2
    # bob's request was ordered at n=5 while replica 3 was down; bob retransmits it.
    feed(again, "bob", sign_request("bob", op_put(b"b", b"1"), 1))
    vc_ticks = cfg.view_change_timeout_ms // cfg.tick_ms
    for _ in range(vc_ticks):
        again.step(Tick())
    assert again.view_changes.started == 0, "judged the primary before knowing where the others are"
    for peer in (0, 1):
        feed(again, peer, seal_as(peer, Status(0, 6, 4, 2)))
    assert again.catch_up.located and again.catch_up.behind(again.view, again.last_executed)
    # Catching up gets one fresh timeout (bob's request is unordered here: half the
    # view-change timeout)...
    for _ in range(vc_ticks // 2 - 1):
        again.step(Tick())
    assert again.view_changes.started == 0, "suspected the primary while catching up"
    # ...but never more: a primary that kept it a little behind could otherwise hold its
    # timers back for ever (review of issue 13).
    for _ in range(2 * vc_ticks):
        again.step(Tick())
    assert again.view_changes.started == 1


def test_a_restarted_primary_whose_log_kept_its_pre_prepare_goes_on_after_it():
    """The other side of the test above: when the log does hold the PRE-PREPARE the
    primary signed for next_seq (in this view), the primary moves past it, neither
    accepting it a second time nor sending it again with the next request. Mutants of
    pbft.protocol.log.xǁMessageLogǁpre_prepared (mutmut _1, _2, _3, _8, _9: the slot
    looked up as absent, or its test negated; found by `make mutate`, docs/mutation.md)."""
    cfg = make_config()
    rep = make_replica(cfg, 0)
    store: dict = {}
    _durable(rep, feed(rep, "alice", sign_request("alice", op_put(b"a", b"1"), 1)), store)
    again = make_replica(cfg, 0)
    again.recover(list(store.values()))
    assert again.log.pre_prepared(1, 0) is not None
    again.next_seq = 1  # as if it had not been worked out from the log
    out = feed(again, "bob", sign_request("bob", op_put(b"b", b"2"), 1))
    pps = [decoded(a.data)[1] for a in out if type(a).__name__ == "Broadcast"]
    assert 1 not in [p.seq for p in pps if type(p).__name__ == "PrePrepare"]
    assert again.next_seq >= 2
