"""Checkpoints and garbage collection (OSDI'99 section 4.3): a checkpoint every K, 2f+1
matching ones make it stable, fewer or mismatching ones do not.

Init, act, check against one replica of a 4-replica f=1 cluster (tests/conftest.py, "one
replica under test").
"""

from __future__ import annotations

from conftest import (
    D_OTHER,
    actions_of,
    broadcast_messages,
    decoded,
    execute_batch,
    feed,
    make_config,
    make_replica,
    pre_prepare,
    put,
    rejections,
    seal_as,
    sign_checkpoint,
    sign_pre_prepare,
)

from pbft.protocol.events import (
    CheckpointStable,
    CheckpointTaken,
    Reason,
    Send,
)
from pbft.protocol.messages import (
    Checkpoint,
    Prepare,
    StableProof,
    Status,
)

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
    d = backup.checkpoints.own[4]
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
    d = backup.checkpoints.own[4]
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
    d = backup.checkpoints.own[4]
    feed(backup, 2, sign_checkpoint(2, 4, d))  # own + 1 = f+1
    feed(backup, 3, sign_checkpoint(3, 4, D_OTHER))
    feed(backup, 0, sign_checkpoint(0, 4, D_OTHER))
    assert backup.stable_seq == 0 and len(backup.log) == 4


def test_checkpoint_votes_before_our_own_count_when_we_catch_up(backup):
    execute_up_to(backup, 3)
    probe = make_replica(make_config(), 2)
    execute_up_to(probe, 4)
    d = probe.checkpoints.own[4]
    feed(backup, 2, sign_checkpoint(2, 4, d))
    feed(backup, 3, sign_checkpoint(3, 4, d))
    assert backup.stable_seq == 0
    actions = execute_up_to(backup, 4)
    assert actions_of(actions, CheckpointStable) == [CheckpointStable(4, d)]


def test_checkpoint_not_at_a_multiple_of_k_is_rejected(backup):
    assert rejections(feed(backup, 2, sign_checkpoint(2, 3, D_OTHER))) == [Reason.OUT_OF_WINDOW]
