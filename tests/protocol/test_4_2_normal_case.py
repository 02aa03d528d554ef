"""The normal case of OSDI'99 section 4.2, one test per rule, against one Replica: accepting a
pre-prepare, prepared, committed-local and execution, the primary's numbering and pipeline,
and retransmission of a replica's own votes.

Init, act, check against one replica of a 4-replica f=1 cluster (tests/conftest.py, "one
replica under test").
"""

from __future__ import annotations

import pytest
from conftest import (
    CLIENTS4,
    D_OTHER,
    actions_of,
    broadcast_messages,
    decoded,
    drive_to_execution,
    executed_seqs,
    feed,
    forge,
    make_config,
    make_replica,
    pre_prepare,
    put,
    rejections,
    replies,
    seal_as,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
    snapshot,
)

from pbft.protocol import codec
from pbft.protocol.crypto import KeyPair, batch_digest, seal
from pbft.protocol.events import (
    Broadcast,
    Committed,
    Evidence,
    Prepared,
    Reason,
    Send,
    SendClient,
    Tick,
)
from pbft.protocol.messages import (
    Commit,
    Prepare,
    PrePrepare,
    Reply,
    Request,
)
from pbft.service.kv import op_get, op_put

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


def test_backup_relays_the_clients_retransmission_again_and_only_the_newest_request(backup):
    """4.1: a client that gets no reply sends its request to every replica again, and the
    backups relay it to the primary again (the primary may have lost it); a request older
    than one the backup already waits for from that client is superseded, not relayed."""
    data = put("alice", 2)
    assert feed(backup, "alice", data) == [Send(0, data)]
    assert feed(backup, "alice", data) == [Send(0, data)]
    assert backup.requests.waiting["alice"][0] == 2
    assert actions_of(feed(backup, "alice", put("alice", 1)), Send) == []
    assert backup.requests.waiting["alice"][0] == 2


# -- retransmission on Tick ------------------------------------------------------------------


def test_tick_retransmits_own_votes_for_unexecuted_slots(backup):
    _, d = pre_prepare(backup, 1, (put("alice", 1),))
    ticks = backup.config.retransmit_ms // backup.config.tick_ms
    for _ in range(ticks - 1):
        assert not backup.step(Tick())
    resent = broadcast_messages(backup.step(Tick()))
    assert Prepare(0, 1, d) in resent
    assert not backup.step(Tick())  # then waits another period


def test_tick_retransmits_own_votes_up_to_the_top_of_the_window():
    """Every slot of the window, the last ones included (h + L - 1 and h + L = H), has
    its votes resent: a replica whose PREPAREs for them were lost must not be left
    waiting at the window's top (mutmut's own_messages mutant 8 stopped two short)."""
    backup = make_replica(make_config(clients=("alice", "bob", "carol"), checkpoint_interval=2, log_window=4), 1)
    clients = {1: "alice", 3: "bob", 4: "carol"}
    digests = {seq: pre_prepare(backup, seq, (put(c, 1),))[1] for seq, c in clients.items()}
    assert all(backup.log.get(seq).my_prepare for seq in clients)
    assert backup.log.high == 4
    ticks = backup.config.retransmit_ms // backup.config.tick_ms
    for _ in range(ticks - 1):
        backup.step(Tick())
    resent = broadcast_messages(backup.step(Tick()))
    assert [Prepare(0, seq, d) in resent for seq, d in digests.items()] == [True, True, True]
