"""One test per rule of OSDI'99 sections 4.1, 4.2, 4.3 and 5.1.3, against one Replica.

Each test: init (a replica of a 4-replica f=1 cluster, K=4, L=8), act (feed it crafted
messages signed by whoever the rule is about), check (its actions and state). Replica 0
is the primary of view 0; replica 1 is the backup under test unless said otherwise.
"""

from __future__ import annotations

import pytest
from conftest import (
    actions_of,
    broadcast_messages,
    decoded,
    drive_to_execution,
    feed,
    forge,
    make_config,
    make_replica,
    seal_as,
    sign_checkpoint,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.crypto import KeyPair, batch_digest, seal
from pbft.protocol.events import (
    Broadcast,
    CheckpointStable,
    CheckpointTaken,
    Committed,
    Evidence,
    Executed,
    Prepared,
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
    Held,
    NewView,
    Prepare,
    PrePrepare,
    QueryStatus,
    Reply,
    Request,
    StableProof,
    StateChunk,
    Status,
    ViewChange,
)
from pbft.protocol.viewchange import ViewStatus
from pbft.service.kv import KeyValueStore, decode_result, op_get, op_put

D_OTHER = b"\x99" * 32


def put(client: str, ts: int, key: bytes = b"k", value: bytes | None = None) -> bytes:
    """A signed put request: `client` sets `key` to `value` (default: client@ts)."""
    return sign_request(client, op_put(key, value or f"{client}@{ts}".encode()), ts)


@pytest.fixture
def cfg():
    return make_config()


@pytest.fixture
def backup(cfg):
    return make_replica(cfg, 1)


@pytest.fixture
def primary(cfg):
    return make_replica(cfg, 0)


def pre_prepare(backup, seq: int, batch: tuple[bytes, ...]) -> tuple[list, bytes]:
    """Feed `backup` a valid pre-prepare from the primary; return (actions, digest)."""
    return feed(backup, 0, sign_pre_prepare(seq, batch)), batch_digest(batch)


def rejections(actions) -> list[Reason]:
    return [a.reason for a in actions_of(actions, Rejected)]


def snapshot(rep) -> tuple:
    """Everything an input could change; equal before and after a dropped input."""
    return (
        rep.view,
        rep.last_executed,
        rep.next_seq,
        rep.log.low,
        len(rep.log),
        {
            s: (
                sl.view,
                sl.pre_prepare,
                dict(sl.prepares),
                dict(sl.commits),
                sl.prepared,
                sl.committed,
                sl.my_prepare,
                sl.my_commit,
            )
            for s, sl in rep.log.slots.items()
        },
        list(rep.batching.pending.items()),
        dict(rep.requests.waiting),
        rep.status is ViewStatus.NORMAL,
        dict(rep.view_changes.received),
        dict(rep.prepared_certs),
        {s: dict(c) for s, c in rep.checkpoints.claims.items()},
        rep.transfer,
        {c: (r.timestamp, r.result) for c, r in rep.replies.records.items()},
        {s: dict(v) for s, v in rep.checkpoints.votes.items()},
        dict(rep.checkpoints.own),
        rep.checkpoints.stable_digest,
        rep.checkpoints.stable_proof,
        dict(rep.service.data),
        dict(rep.safety.signed),
    )


def executed_seqs(actions) -> list[int]:
    return [a.seq for a in actions_of(actions, Executed)]


def replies(actions) -> list[Reply]:
    return [decoded(a.data)[1] for a in actions_of(actions, SendClient)]


# -- 4.2: accepting a pre-prepare ------------------------------------------------------------


def test_backup_accepts_valid_pre_prepare_and_broadcasts_prepare(backup):
    batch = (put("alice", 1),)
    actions, d = pre_prepare(backup, 1, batch)
    assert rejections(actions) == []
    [b] = actions_of(actions, Broadcast)
    env, msg = decoded(b.data)
    assert msg == Prepare(0, 1, d) and env.signer == 1
    slot = backup.log.get(1)
    assert slot.pre_prepare == PrePrepare(0, 1, d, batch)
    assert [r.client for r, _ in slot.requests] == ["alice"]
    assert not slot.prepared


def test_pre_prepare_not_signed_by_the_primary_is_rejected(backup):
    before = snapshot(backup)
    actions = feed(backup, 2, sign_pre_prepare(1, (put("alice", 1),), signer=2))
    assert rejections(actions) == [Reason.NOT_PRIMARY]
    assert actions_of(actions, Broadcast) == []
    assert snapshot(backup) == before


def test_pre_prepare_signed_by_a_client_is_rejected(backup):
    batch = (put("alice", 1),)
    data = seal_as("alice", PrePrepare(0, 1, batch_digest(batch), batch))
    before = snapshot(backup)
    assert rejections(feed(backup, "alice", data)) == [Reason.WRONG_ROLE]
    assert snapshot(backup) == before


def test_pre_prepare_naming_the_primary_but_signed_by_another_is_rejected(backup):
    batch = (put("alice", 1),)
    data = forge(0, PrePrepare(0, 1, batch_digest(batch), batch), real_signer=2)
    before = snapshot(backup)
    assert rejections(feed(backup, 0, data)) == [Reason.BAD_SIGNATURE]
    assert snapshot(backup) == before


def test_pre_prepare_for_another_view_is_not_accepted(cfg):
    backup = make_replica(cfg, 2)
    before = snapshot(backup)
    # Signed by replica 1, the primary of view 1, while the backup is in view 0: held
    # back for a view change to come, never accepted in view 0.
    actions = feed(backup, 1, sign_pre_prepare(1, (put("alice", 1),), view=1))
    assert actions_of(actions, Broadcast) == []
    assert snapshot(backup) == before
    actions = feed(backup, 1, sign_pre_prepare(1, (put("alice", 1),), view=100, signer=0))
    assert rejections(actions) == [Reason.OUT_OF_WINDOW]  # far-future view
    assert snapshot(backup) == before


@pytest.mark.parametrize("seq", [0, 9, 2**64 - 1])
def test_pre_prepare_outside_the_water_marks_is_rejected(backup, seq):
    before = snapshot(backup)
    actions = feed(backup, 0, sign_pre_prepare(seq, (put("alice", 1),)))
    assert rejections(actions) == [Reason.OUT_OF_WINDOW]
    assert snapshot(backup) == before


def test_pre_prepare_at_the_high_water_mark_is_accepted(backup):
    actions, d = pre_prepare(backup, 8, (put("alice", 1),))  # h + L = 0 + 8
    assert broadcast_messages(actions) == [Prepare(0, 8, d)]


def test_pre_prepare_whose_digest_does_not_match_its_batch_is_rejected(backup):
    before = snapshot(backup)
    actions = feed(backup, 0, sign_pre_prepare(1, (put("alice", 1),), digest=D_OTHER))
    assert rejections(actions) == [Reason.BAD_DIGEST]
    assert snapshot(backup) == before


def _bad_requests():
    good = Request(op_put(b"k", b"v"), 1, "alice")
    mallory = KeyPair.from_seed(b"mallory")
    forged = seal(KeyPair.from_seed(b"not alice"), "test-cluster", "alice", good).to_bytes()
    return {
        "badly signed": forged,
        "unregistered client": seal(
            mallory, "test-cluster", "mallory", Request(b"op", 1, "mallory")
        ).to_bytes(),
        "signed by another client": seal_as("bob", good),
        "signed by a replica": seal_as(2, good),
        "read-only in a batch": sign_request("alice", op_get(b"k"), 1, read_only=True),
        "not a request": sign_prepare(2, 1, D_OTHER),
        "garbage": b"\x00garbage",
    }


@pytest.mark.parametrize("bad", _bad_requests().values(), ids=_bad_requests().keys())
def test_pre_prepare_with_a_bad_request_inside_is_rejected(backup, bad):
    before = snapshot(backup)
    actions = feed(backup, 0, sign_pre_prepare(1, (put("bob", 1), bad)))
    assert rejections(actions) == [Reason.BAD_REQUEST]
    assert actions_of(actions, Broadcast) == []
    assert snapshot(backup) == before


def test_pre_prepare_larger_than_batch_max_is_rejected(cfg):
    backup = make_replica(make_config(batch_max=1), 1)
    before = snapshot(backup)
    actions = feed(backup, 0, sign_pre_prepare(1, (put("alice", 1), put("bob", 1))))
    assert rejections(actions) == [Reason.BATCH_TOO_LARGE]
    assert snapshot(backup) == before


def test_conflicting_pre_prepare_is_evidence(backup):
    first = sign_pre_prepare(1, (put("alice", 1),))
    second = sign_pre_prepare(1, (put("bob", 1),))
    feed(backup, 0, first)
    before = snapshot(backup)
    actions = feed(backup, 0, second)
    [ev] = actions_of(actions, Evidence)
    assert (ev.culprit, ev.first, ev.second) == (0, first, second)
    assert rejections(actions) == [Reason.CONFLICT]
    assert actions_of(actions, Broadcast) == []
    assert snapshot(backup) == before  # the first one stays accepted


def test_retransmitted_pre_prepare_is_ignored(backup):
    data = sign_pre_prepare(1, (put("alice", 1),))
    feed(backup, 0, data)
    before = snapshot(backup)
    assert feed(backup, 0, data) == []
    assert snapshot(backup) == before


# -- 4.2: prepared ---------------------------------------------------------------------------


def propose(primary, *requests: bytes) -> tuple[int, bytes]:
    """Hand requests to the primary; return the (seq, digest) of the pre-prepare it sent."""
    actions = []
    for r in requests:
        actions += feed(primary, r and decoded(r)[0].signer, r)
    [pp] = [m for m in broadcast_messages(actions) if isinstance(m, PrePrepare)]
    return pp.seq, pp.digest


def test_prepare_from_the_primary_never_counts(backup):
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    actions = feed(backup, 0, sign_prepare(0, 1, d))
    assert rejections(actions) == [Reason.WRONG_ROLE]
    assert not backup.log.get(1).prepared  # own prepare + the primary's would be 2f
    actions = feed(backup, 2, sign_prepare(2, 1, d))
    assert actions_of(actions, Prepared) == [Prepared(0, 1, d)]


def test_prepared_needs_2f_prepares_from_distinct_backups(primary):
    seq, d = propose(primary, put("alice", 1))
    # 2f - 1 = 1 prepare is not enough, nor is the same signer twice.
    assert actions_of(feed(primary, 1, sign_prepare(1, seq, d)), Prepared) == []
    assert feed(primary, 1, sign_prepare(1, seq, d)) == []
    assert actions_of(feed(primary, 3, sign_prepare(1, seq, d)), Prepared) == []
    assert not primary.log.get(seq).prepared
    actions = feed(primary, 2, sign_prepare(2, seq, d))
    assert actions_of(actions, Prepared) == [Prepared(0, seq, d)]
    assert Commit(0, seq, d) in broadcast_messages(actions)


def test_vote_is_counted_by_its_envelope_signer_not_the_channel_peer(primary):
    seq, d = propose(primary, put("alice", 1))
    data = sign_prepare(2, seq, d)
    feed(primary, 3, data)  # replica 2's prepare relayed by replica 3
    assert set(primary.log.get(seq).prepares) == {2}
    assert actions_of(feed(primary, 2, data), Prepared) == []  # same signer: counts once
    actions = feed(primary, 2, sign_prepare(3, seq, d))  # replica 3's, through 2
    assert actions_of(actions, Prepared) == [Prepared(0, seq, d)]
    assert set(primary.log.get(seq).prepares) == {2, 3}


def test_prepares_with_another_digest_do_not_count(primary):
    seq, d = propose(primary, put("alice", 1))
    feed(primary, 1, sign_prepare(1, seq, D_OTHER))
    feed(primary, 2, sign_prepare(2, seq, D_OTHER))
    assert not primary.log.get(seq).prepared
    assert actions_of(feed(primary, 3, sign_prepare(3, seq, d)), Prepared) == []
    assert primary.log.get(seq).prepares.count(primary.log.get(seq).digest) == 1


def test_second_prepare_with_another_digest_is_evidence(primary):
    seq, d = propose(primary, put("alice", 1))
    first = sign_prepare(1, seq, d)
    second = sign_prepare(1, seq, D_OTHER)
    feed(primary, 1, first)
    actions = feed(primary, 1, second)
    [ev] = actions_of(actions, Evidence)
    assert (ev.culprit, ev.first, ev.second) == (1, first, second)
    assert rejections(actions) == [Reason.CONFLICT]


def test_prepares_before_the_pre_prepare_count_once_it_arrives(backup):
    batch = (put("alice", 1),)
    d = batch_digest(batch)
    feed(backup, 2, sign_prepare(2, 1, d))
    feed(backup, 3, sign_prepare(3, 1, d))
    assert not backup.log.get(1).prepared
    actions, _ = pre_prepare(backup, 1, batch)
    assert actions_of(actions, Prepared) == [Prepared(0, 1, d)]
    # Both go out (the core happens to send the COMMIT first, which is harmless).
    assert sorted(map(repr, broadcast_messages(actions))) == sorted(
        map(repr, [Prepare(0, 1, d), Commit(0, 1, d)])
    )


def test_prepares_without_a_pre_prepare_do_not_prepare(backup):
    for r in (0, 2, 3):
        feed(backup, r, sign_prepare(r, 1, D_OTHER))
    slot = backup.log.get(1)
    assert not slot.prepared and not slot.my_commit


def test_commit_is_sent_only_once_prepared(backup):
    actions, d = pre_prepare(backup, 1, (put("alice", 1),))
    assert broadcast_messages(actions) == [Prepare(0, 1, d)]
    actions = feed(backup, 0, sign_commit(0, 1, d)) + feed(backup, 2, sign_commit(2, 1, d))
    assert actions_of(actions, Broadcast) == []
    actions = feed(backup, 2, sign_prepare(2, 1, d))
    assert broadcast_messages(actions) == [Commit(0, 1, d)]
    # Once: a further prepare does not resend it.
    assert actions_of(feed(backup, 3, sign_prepare(3, 1, d)), Broadcast) == []


# -- 4.2: committed-local and execution ------------------------------------------------------


def test_committed_local_needs_prepared_and_2f_plus_1_commits(backup):
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    actions = []
    for r in (0, 2, 3):  # 2f+1 commits, but the backup is not prepared
        actions += feed(backup, r, sign_commit(r, 1, d))
    assert actions_of(actions, Committed) == [] and executed_seqs(actions) == []
    assert backup.last_executed == 0 and backup.service.data == {}
    actions = feed(backup, 2, sign_prepare(2, 1, d))
    assert actions_of(actions, Committed) == [Committed(0, 1, d)]
    assert executed_seqs(actions) == [1]
    assert backup.service.data == {b"k": b"alice@1"}


def test_2f_commits_are_not_enough(backup):
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    feed(backup, 2, sign_prepare(2, 1, d))  # prepared: own commit counts
    actions = feed(backup, 2, sign_commit(2, 1, d))
    assert executed_seqs(actions) == []  # own + 1 = 2f
    actions = feed(backup, 3, sign_commit(3, 1, D_OTHER))
    assert executed_seqs(actions) == []  # a mismatching commit does not count
    actions = feed(backup, 0, sign_commit(0, 1, d))
    assert executed_seqs(actions) == [1]


def test_execution_is_in_sequence_order(backup):
    _, d1 = pre_prepare(backup, 1, (put("alice", 1, value=b"first"),))
    _, d2 = pre_prepare(backup, 2, (put("bob", 1, value=b"second"),))
    actions = drive_to_execution(backup, 2, d2)
    assert actions_of(actions, Committed) == [Committed(0, 2, d2)]
    assert executed_seqs(actions) == [] and backup.last_executed == 0
    actions = drive_to_execution(backup, 1, d1)
    assert executed_seqs(actions) == [1, 2]
    assert backup.service.data == {b"k": b"second"}
    assert [(r.client, r.timestamp) for r in replies(actions)] == [("alice", 1), ("bob", 1)]


def test_replies_carry_view_replica_and_result(backup):
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    actions = drive_to_execution(backup, 1, d)
    [sc] = actions_of(actions, SendClient)
    env, reply = decoded(sc.data)
    assert sc.client == "alice" and env.signer == 1
    assert reply == Reply(0, 1, "alice", 1, codec.encode(True))


# -- 4.2: the primary -------------------------------------------------------------------------


CLIENTS4 = ("alice", "bob", "carol", "dave")


def test_primary_assigns_increasing_sequence_numbers():
    primary = make_replica(make_config(batch_max=8), 0)  # a batch of one is worthwhile
    assert propose(primary, put("alice", 1))[0] == 1
    assert propose(primary, put("bob", 1))[0] == 2
    assert primary.next_seq == 3


def test_primary_keeps_at_most_pipeline_batches_in_flight():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=2, batch_max=1), 0)
    actions = []
    for c in CLIENTS4:
        actions += feed(primary, c, put(c, 1))
    pps = [m for m in broadcast_messages(actions) if isinstance(m, PrePrepare)]
    assert [p.seq for p in pps] == [1, 2]
    assert list(primary.batching.pending) == ["carol", "dave"]
    actions = drive_to_execution(primary, 1, pps[0].digest)
    assert executed_seqs(actions) == [1]
    [pp3] = [m for m in broadcast_messages(actions) if isinstance(m, PrePrepare)]
    assert pp3.seq == 3 and len(pp3.batch) == 1 and decoded(pp3.batch[0])[1].client == "carol"


def test_primary_batches_queued_requests_up_to_batch_max():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=1, batch_max=2), 0)
    actions = []
    for c in CLIENTS4:
        actions += feed(primary, c, put(c, 1))
    [pp1] = [m for m in broadcast_messages(actions) if isinstance(m, PrePrepare)]
    assert len(pp1.batch) == 1  # proposed as soon as it arrived
    actions = drive_to_execution(primary, 1, pp1.digest)
    [pp2] = [m for m in broadcast_messages(actions) if isinstance(m, PrePrepare)]
    assert pp2.seq == 2
    assert [decoded(r)[1].client for r in pp2.batch] == ["bob", "carol"]
    assert list(primary.batching.pending) == ["dave"]


def test_primary_waits_for_a_worthwhile_batch_while_one_is_in_flight():
    # batch_max 16: with a batch in flight, the next one goes out at 16 // 8 = 2 requests.
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    first = feed(primary, "alice", put("alice", 1))
    assert [len(p.batch) for p in broadcast_messages(first) if isinstance(p, PrePrepare)] == [1]
    alone = feed(primary, "bob", put("bob", 1))
    assert [m for m in broadcast_messages(alone) if isinstance(m, PrePrepare)] == []
    pair = feed(primary, "carol", put("carol", 1))
    [pp] = [m for m in broadcast_messages(pair) if isinstance(m, PrePrepare)]
    assert pp.seq == 2 and [decoded(r)[1].client for r in pp.batch] == ["bob", "carol"]


def test_primary_ignores_a_request_already_in_flight(primary):
    data = put("alice", 1)
    propose(primary, data)
    assert actions_of(feed(primary, "alice", data), Broadcast) == []
    assert not primary.batching.pending


def test_backup_relays_a_client_request_to_the_primary(backup):
    data = put("alice", 1)
    assert feed(backup, "alice", data) == [Send(0, data)]
    assert feed(backup, 2, data) == []  # relayed by a peer: not relayed again
    assert backup.log.get(1) is None and "alice" in backup.requests.waiting


# -- 4.1: exactly once ------------------------------------------------------------------------


class CountingKV(KeyValueStore):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def execute(self, operation, client):
        self.calls += 1
        return super().execute(operation, client)


@pytest.fixture
def counting_backup(cfg):
    rep = make_replica(cfg, 1)
    rep.service = CountingKV()
    return rep


def execute_batch(rep, seq, batch) -> list:
    _, d = pre_prepare(rep, seq, batch)
    return drive_to_execution(rep, seq, d)


def test_old_timestamp_is_not_executed_again(counting_backup):
    rep = counting_backup
    execute_batch(rep, 1, (put("alice", 1, value=b"one"),))
    execute_batch(rep, 2, (put("alice", 2, value=b"two"),))
    assert rep.service.calls == 2
    # Sent directly: refused as stale; no reply, only the timestamp we hold (held.py).
    actions = feed(rep, "alice", put("alice", 1, value=b"one"))
    assert rejections(actions) == [Reason.STALE]
    [told] = actions_of(actions, SendClient)
    assert decoded(told.data)[1] == Held(0, 1, "alice", 1, 2)
    # Ordered again by a faulty primary: a no-op.
    actions = execute_batch(rep, 3, (put("alice", 1, value=b"one"),))
    [ex] = actions_of(actions, Executed)
    assert [r.fresh for r in ex.requests] == [False]
    assert rep.service.calls == 2 and rep.service.data == {b"k": b"two"}
    assert rep.replies.records["alice"].timestamp == 2


def test_retransmission_of_the_latest_gets_the_cached_reply(counting_backup):
    rep = counting_backup
    first = execute_batch(rep, 1, (put("alice", 1),))
    [original] = replies(first)
    actions = feed(rep, "alice", put("alice", 1))
    assert replies(actions) == [original]
    assert rep.service.calls == 1
    assert actions_of(actions, Send) == []  # not relayed for ordering again


def test_duplicate_inside_a_batch_executes_once(counting_backup):
    rep = counting_backup
    data = put("alice", 1)
    actions = execute_batch(rep, 1, (data, data))
    [ex] = actions_of(actions, Executed)
    assert [r.fresh for r in ex.requests] == [True, False]
    assert rep.service.calls == 1
    assert {r.result for r in replies(actions)} == {codec.encode(True)}


# -- 5.1.3: read-only ------------------------------------------------------------------------


@pytest.mark.parametrize("who", [0, 1])
def test_read_only_is_answered_from_current_state_without_ordering(cfg, who):
    rep = make_replica(cfg, who)
    rep.service.data[b"k"] = b"v"
    before = snapshot(rep)
    actions = feed(rep, "alice", sign_request("alice", op_get(b"k"), 7, read_only=True))
    assert actions_of(actions, Broadcast) == [] and actions_of(actions, Send) == []
    [reply] = replies(actions)
    assert (reply.timestamp, reply.client, reply.replica) == (7, "alice", who)
    assert decode_result(reply.result) == b"v"
    assert snapshot(rep) == before


def test_read_only_that_is_not_a_query_is_rejected(backup):
    before = snapshot(backup)
    actions = feed(backup, "alice", sign_request("alice", op_put(b"k", b"v"), 1, read_only=True))
    assert rejections(actions) == [Reason.BAD_REQUEST]
    assert snapshot(backup) == before


# -- 4.3: checkpoints ------------------------------------------------------------------------


def execute_up_to(rep, last: int) -> list:
    actions = []
    for seq in range(rep.last_executed + 1, last + 1):
        actions += execute_batch(rep, seq, (put("alice", seq),))
    return actions


def test_checkpoint_is_broadcast_after_executing_a_multiple_of_k(backup):
    actions = execute_up_to(backup, 3)
    assert not any(isinstance(m, Checkpoint) for m in broadcast_messages(actions))
    actions = execute_up_to(backup, 4)
    d = backup.state_digest()
    assert actions_of(actions, CheckpointTaken) == [CheckpointTaken(4, d)]
    assert Checkpoint(4, d) in broadcast_messages(actions)
    assert backup.stable_seq == 0


def test_2f_plus_1_matching_checkpoints_make_it_stable(backup):
    execute_up_to(backup, 5)
    d = backup.checkpoints.own[4][0]
    assert len(backup.log) == 5
    assert actions_of(feed(backup, 2, sign_checkpoint(2, 4, d)), CheckpointStable) == []
    actions = feed(backup, 3, sign_checkpoint(3, 4, d))
    assert actions_of(actions, CheckpointStable) == [CheckpointStable(4, d)]
    assert backup.stable_seq == 4 and backup.log.low == 4 and backup.log.high == 12
    assert len(backup.log) == 1  # only seq 5 is left
    assert len(backup.checkpoints.stable_proof) == 3 and backup.checkpoints.stable_digest == d
    assert all(s[2] > 4 for s in backup.safety.signed)
    # The window moved: seq 4 is now below it, seq 12 inside it.
    assert rejections(feed(backup, 0, sign_pre_prepare(4, (put("bob", 1),)))) == [
        Reason.OUT_OF_WINDOW
    ]
    actions, d12 = pre_prepare(backup, 12, (put("bob", 1),))
    assert broadcast_messages(actions) == [Prepare(0, 12, d12)]


def test_status_behind_our_stable_checkpoint_gets_its_proof(backup):
    """A peer that executed up to our stable checkpoint but lost the CHECKPOINTs that make
    it stable (its STATUS says stable=0, executed=4) is sent the 2f+1 of the proof: the
    votes are never broadcast again, and without them it cannot truncate its log."""
    execute_up_to(backup, 4)
    d = backup.checkpoints.own[4][0]
    feed(backup, 2, sign_checkpoint(2, 4, d))
    feed(backup, 3, sign_checkpoint(3, 4, d))
    assert backup.stable_seq == 4
    actions = feed(backup, 2, seal_as(2, Status(0, 4, 0, 4)))
    sent = [(a.to, decoded(a.data)[1]) for a in actions if isinstance(a, Send)]
    proofs = [(to, m) for to, m in sent if isinstance(m, StableProof)]
    assert [(to, m.seq, len(m.proof)) for to, m in proofs] == [(2, 4, 3)]
    assert {decoded(e)[1] for e in proofs[0][1].proof} == {Checkpoint(4, d)}
    # A peer as far as we are gets nothing.
    actions = feed(backup, 3, seal_as(3, Status(0, 4, 4, 0)))
    assert not [a for a in actions if isinstance(a, Send) and isinstance(decoded(a.data)[1], StableProof)]


def test_f_plus_1_or_mismatching_checkpoints_are_not_stable(backup):
    execute_up_to(backup, 4)
    d = backup.checkpoints.own[4][0]
    feed(backup, 2, sign_checkpoint(2, 4, d))  # own + 1 = f+1
    feed(backup, 3, sign_checkpoint(3, 4, D_OTHER))
    feed(backup, 0, sign_checkpoint(0, 4, D_OTHER))
    assert backup.stable_seq == 0 and len(backup.log) == 4


def test_checkpoint_votes_before_our_own_count_when_we_catch_up(backup):
    execute_up_to(backup, 3)
    probe = make_replica(make_config(), 2)
    execute_up_to(probe, 4)
    d = probe.checkpoints.own[4][0]
    feed(backup, 2, sign_checkpoint(2, 4, d))
    feed(backup, 3, sign_checkpoint(3, 4, d))
    assert backup.stable_seq == 0
    actions = execute_up_to(backup, 4)
    assert actions_of(actions, CheckpointStable) == [CheckpointStable(4, d)]


def test_checkpoint_not_at_a_multiple_of_k_is_rejected(backup):
    assert rejections(feed(backup, 2, sign_checkpoint(2, 3, D_OTHER))) == [Reason.OUT_OF_WINDOW]


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
        "fetch-state for a state we lack": (seal_as(2, FetchState(4, D_OTHER, 0)), None),
        "state chunk nobody asked for": (seal_as(2, StateChunk(4, D_OTHER, 0, 1, b"", ())), None),
        "bad signature pre-prepare": (forge(0, PrePrepare(0, 2, batch_digest(()), ()), real_signer=3), Reason.BAD_SIGNATURE),
        "bad signature request": (forge("alice", Request(op_put(b"k", b"v"), 9, "alice"), real_signer="bob"), Reason.BAD_REQUEST),
        "bad signature query-status": (forge("alice", QueryStatus(1), real_signer="bob"), Reason.BAD_SIGNATURE),
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


# -- retransmission on Tick ------------------------------------------------------------------


def test_tick_retransmits_own_votes_for_unexecuted_slots(backup):
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    ticks = backup.config.retransmit_ms // backup.config.tick_ms
    for _ in range(ticks - 1):
        assert not backup.step(Tick())
    resent = broadcast_messages(backup.step(Tick()))
    assert Prepare(0, 1, d) in resent
    assert not backup.step(Tick())  # then waits another period


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
        st.builds(FetchState, u, dg, u),
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


# -- 4.2 / TOCS 5.1.4: batches under a closed loop ---------------------------------------


def proposed(actions) -> list[PrePrepare]:
    return [m for m in broadcast_messages(actions) if isinstance(m, PrePrepare)]


def test_primary_waits_for_the_clients_of_the_batch_it_executed_before_proposing():
    """alice and bob's batch executes while carol waits: the primary expects alice and
    bob's next requests (one outstanding each) and proposes all three together, instead of
    carol alone now and alice and bob in the next batch (two groups that would alternate
    for ever, each batch half full)."""
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    feed(primary, "dave", put("dave", 1))  # seq 1, proposed at once, alone
    feed(primary, "alice", put("alice", 1))
    [pp2] = proposed(feed(primary, "bob", put("bob", 1)))  # worthwhile (2): seq 2
    drive_to_execution(primary, 1, primary.log.get(1).digest)
    feed(primary, "carol", put("carol", 1))
    assert proposed(drive_to_execution(primary, 2, pp2.digest)) == []  # dave is not back
    assert proposed(feed(primary, "alice", put("alice", 2))) == []
    [pp3] = proposed(feed(primary, "bob", put("bob", 2)))
    assert sorted(decoded(r)[1].client for r in pp3.batch) == ["alice", "bob", "carol"]


def hold_for_dave(primary) -> PrePrepare:
    """Execute dave's batch, then alice and bob's, with carol waiting: the primary now
    waits for alice and bob to send their next requests. Returns their pre-prepare."""
    feed(primary, "dave", put("dave", 1))
    feed(primary, "alice", put("alice", 1))
    [pp2] = proposed(feed(primary, "bob", put("bob", 1)))
    drive_to_execution(primary, 1, primary.log.get(1).digest)
    drive_to_execution(primary, 2, pp2.digest)
    assert proposed(feed(primary, "carol", put("carol", 1))) == []
    return pp2


def test_hold_ticks_end_the_wait_for_returning_clients():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    hold_for_dave(primary)
    assert primary.batching.hold.ticks == 4  # 40 ms of 10 ms ticks
    for _ in range(primary.batching.hold.ticks - 1):  # a burst of ticks does not end it
        assert proposed(primary.step(Tick())) == []
    [pp3] = proposed(primary.step(Tick()))
    assert [decoded(r)[1].client for r in pp3.batch] == ["carol"]


def test_a_batch_of_one_adds_no_wait():
    """An idle cluster or a lone client: the next request goes out as it arrives."""
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    [pp1] = proposed(feed(primary, "alice", put("alice", 1)))
    drive_to_execution(primary, 1, pp1.digest)
    [pp2] = proposed(feed(primary, "bob", put("bob", 1)))
    assert [decoded(r)[1].client for r in pp2.batch] == ["bob"]


def test_one_client_that_does_not_come_back_delays_nobody():
    clients = tuple(f"c{i}" for i in range(10))
    primary = make_replica(make_config(clients=clients, pipeline=1, batch_max=256), 0)
    [pp1] = proposed(feed(primary, "c9", put("c9", 1)))
    for c in clients[:8]:
        feed(primary, c, put(c, 1))
    [pp2] = proposed(drive_to_execution(primary, 1, pp1.digest))
    assert len(pp2.batch) == 8
    drive_to_execution(primary, 2, pp2.digest)
    for c in clients[:6]:
        assert proposed(feed(primary, c, put(c, 2))) == []
    # 7 of 8 back (c7 never comes): at most 1/8 missing, proposed without a tick.
    [pp3] = proposed(feed(primary, "c6", put("c6", 2)))
    assert len(pp3.batch) == 7


def test_a_wait_that_a_tick_ended_pauses_waiting():
    """Clients that do not come straight back (think time, or a faulty client holding
    back) cost at most one tick per HOLD_PAUSE batches, not one tick per batch."""
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    hold_for_dave(primary)
    for _ in range(primary.batching.hold.ticks - 1):
        primary.step(Tick())
    [pp3] = proposed(primary.step(Tick()))  # alice and bob did not come back in time
    assert [decoded(r)[1].client for r in pp3.batch] == ["carol"]
    feed(primary, "alice", put("alice", 2))
    [pp4] = proposed(feed(primary, "bob", put("bob", 2)))  # worthwhile: 2 waiting
    drive_to_execution(primary, 3, pp3.digest)
    feed(primary, "dave", put("dave", 2))
    # alice and bob's batch executes: no waiting for them this time, dave goes at once.
    [pp5] = proposed(drive_to_execution(primary, 4, pp4.digest))
    assert [decoded(r)[1].client for r in pp5.batch] == ["dave"]


def test_a_full_batch_ends_the_wait():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=1, batch_max=2), 0)
    feed(primary, "dave", put("dave", 1))  # seq 1, alone
    feed(primary, "alice", put("alice", 1))
    feed(primary, "bob", put("bob", 1))
    [pp2] = proposed(drive_to_execution(primary, 1, primary.log.get(1).digest))
    feed(primary, "carol", put("carol", 1))
    feed(primary, "dave", put("dave", 2))
    # alice and bob are not back, but two requests fill a batch: no reason to wait.
    [pp3] = proposed(drive_to_execution(primary, 2, pp2.digest))
    assert sorted(decoded(r)[1].client for r in pp3.batch) == ["carol", "dave"]


def test_a_view_change_forgets_the_wait():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    hold_for_dave(primary)
    assert primary.batching.returning == {"alice", "bob"}
    primary.become_view_change(1)
    assert primary.batching.returning == set()


def test_the_wait_is_bounded_in_milliseconds_and_by_the_view_change_timeout():
    assert make_replica(make_config(tick_ms=10), 0).batching.hold.ticks == 4  # 40 ms
    assert make_replica(make_config(tick_ms=100), 0).batching.hold.ticks == 1  # at least one tick
    short = make_config(tick_ms=1, view_change_timeout_ms=80)
    assert make_replica(short, 0).batching.hold.ticks == 10  # an eighth of the 80-tick timeout
