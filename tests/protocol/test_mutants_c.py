"""Tests that kill mutants of protocol rules that survived the whole suite under `make
mutate` (mutmut; docs/mutation.md, "Gaps found").

Each test names the rule it pins and the mutant it was checked against: mutmut's name and
the one-line change. The mutant was applied to a copy of the tree: the test fails with it
and passes without it.
"""

from __future__ import annotations

from conftest import (
    actions_of,
    execute_batch,
    feed,
    make_config,
    put,
    rejections,
    sign_checkpoint,
)

from pbft.protocol.checkpoints import CHECKPOINT_BYTES, CLAIMS_PER_REPLICA, Checkpoints
from pbft.protocol.events import CheckpointStable, Evidence, Reason


def stable_at_4(rep):
    """`rep` executed 1-5 and holds a stable checkpoint at 4 (its own vote, 0's and 2's)."""
    for seq in range(1, 6):
        execute_batch(rep, seq, (put("alice", seq),))
    d = rep.checkpoints.own[4]
    feed(rep, 0, sign_checkpoint(0, 4, d))
    assert [a for a in feed(rep, 2, sign_checkpoint(2, 4, d)) if isinstance(a, CheckpointStable)]
    assert rep.log.low == 4
    return d


# -- 4.3: a checkpoint already stable ---------------------------------------------------------


def test_a_late_vote_for_the_stable_checkpoint_is_stale_and_kept_nowhere(backup):
    """OSDI'99 4.3: once the checkpoint at h is stable, later CHECKPOINTs for h are of no
    use: ignored as stale, neither counted nor kept as a claim beyond the window; and
    the votes for h went with the garbage collected at h. Mutants
    pbft.protocol.checkpoints.xǁCheckpointsǁignore__mutmut_1: `seq <= low` -> `seq < low`
    (the late vote for h was verified and kept as a far-future claim), and
    xǁCheckpointsǁcollect__mutmut_6: votes kept for `s >= seq` (h's votes stayed; the
    whole suite passed with it)."""
    d = stable_at_4(backup)
    feed(backup, 3, sign_checkpoint(3, 4, d))
    assert backup.rejects[(3, Reason.STALE)] == 1
    assert backup.checkpoints.claims == {} and 4 not in backup.checkpoints.votes


# -- 4.3 and the one-vote rule: a replica that signs two states for one checkpoint -----------


def test_two_checkpoint_digests_from_one_replica_are_evidence_and_the_second_is_not_counted(backup):
    """One vote per signer and phase (quorum.py): a second CHECKPOINT of replica 2 for
    seq 4 with another digest is a signed contradiction, reported as evidence, and does
    not replace its first vote. Mutants pbft.protocol.checkpoints.xǁCheckpointsǁprior__mutmut_1,
    _2, _4 and _6 (`prior` always None: the second vote was verified and dropped in silence)."""
    for seq in range(1, 4):
        execute_batch(backup, seq, (put("alice", seq),))
    first, second = sign_checkpoint(2, 4, b"\x01" * 32), sign_checkpoint(2, 4, b"\x02" * 32)
    feed(backup, 2, first)
    actions = feed(backup, 2, second)
    assert [(e.culprit, e.kind, e.first, e.second) for e in actions_of(actions, Evidence)] == [
        (2, "double-checkpoint", first, second)
    ]
    assert Reason.CONFLICT in rejections(actions)
    assert backup.checkpoints.votes[4][2] == (b"\x01" * 32, first)


# -- named bounds (docs/architecture.md "Who owns what"; docs/formats.md) ------------------------


def test_the_checkpoint_bounds_are_named_and_sized_as_documented():
    """Checkpoints.bounds(): L // K + 2 checkpoints held (those in the window, the stable
    one, one above), n votes of at most CHECKPOINT_BYTES each, CLAIMS_PER_REPLICA claims
    per replica; the names are what the simulator's resource report and the soak keys on.
    Mutants pbft.protocol.checkpoints.xǁCheckpointsǁbounds__mutmut_4 (`//` -> `/`), _5
    (`+ 2` -> `+ 3`), _22 and _29 (`*` -> `/` in a limit), and _14 to _28 (a name
    changed)."""
    cfg = make_config(checkpoint_interval=4, log_window=10)  # L // K = 2, L / K = 2.5
    held = 10 // 4 + 2
    assert Checkpoints(cfg).bounds() == [
        ("checkpoint_votes", 0, held),
        ("checkpoint_votes (votes)", 0, held * 4),
        ("checkpoint_votes (bytes)", 0, held * 4 * CHECKPOINT_BYTES),
        ("own_checkpoints", 0, held),
        ("claims", 0, 4),
        ("claims (checkpoints)", 0, CLAIMS_PER_REPLICA * 4),
        ("claims (bytes)", 0, CLAIMS_PER_REPLICA * 4 * CHECKPOINT_BYTES),
    ]


# -- 4.3 / TOCS 5.3: checkpoints beyond the window prove a state only when 2f+1 agree ---------


def test_claims_beyond_the_window_count_only_for_one_seq_and_one_digest(backup):
    """A replica that sees CHECKPOINTs beyond its window may be behind: 2f+1 matching ones
    (same seq, same digest, distinct replicas) prove that state stable and start a
    transfer. Claims of one seq with different digests, or of one digest at different
    seqs, prove nothing: a faulty replica must not complete another's claim with its own
    digest. Mutant pbft.protocol.checkpoints.xǁCheckpointsǁclaim__mutmut_9 (`s == seq and
    dg == digest` -> `or`: three claims for seq 12 with two digests moved the window)."""
    a, b = b"\x0a" * 32, b"\x0b" * 32
    far = backup.log.high + 4  # 12: beyond h + L = 8, a multiple of K
    feed(backup, 2, sign_checkpoint(2, far, a))
    feed(backup, 3, sign_checkpoint(3, far, a))
    feed(backup, 0, sign_checkpoint(0, far, b))
    assert backup.log.low == 0 and backup.transfer is None
    feed(backup, 0, sign_checkpoint(0, far + 4, a))  # a's digest at another seq
    assert backup.log.low == 0 and backup.transfer is None
    # Replica 0 now claims a at seq 12 too (its claim replaces its own b): three
    # replicas agree, the state is proven, the window jumps and the transfer starts.
    feed(backup, 0, sign_checkpoint(0, far, a))
    assert backup.log.low == far and backup.transfer is not None


def test_a_slot_of_an_earlier_view_is_neither_pre_prepared_in_the_new_one_nor_kept_by_reopen():
    """`MessageLog.pre_prepared(seq, view)` holds only for a slot with a PRE-PREPARE of
    that view, and `reopen(seq, view)` drops a slot of another view there (its votes
    were for that view's pre-prepare and must not count in the new one, 4.4). The path
    that relies on both is a restarted primary putting back a PRE-PREPARE its safety
    rules remember (`Replica._reinstate_own_pre_prepare`). Mutants of
    pbft.protocol.log.xǁMessageLogǁpre_prepared (_4: any slot at that seq counts) and
    xǁMessageLogǁreopen (_1, _2, _5, _7: the earlier view's slot kept), left open in
    docs/mutation.md; checked here against hand-applied copies of those changes."""
    from conftest import sign_pre_prepare, sign_prepare

    from pbft.protocol.log import MessageLog
    from pbft.protocol.messages import PrePrepare

    log = MessageLog(8)
    old = log.slot(3, 0)
    assert log.pre_prepared(3, 0) is None  # no pre-prepare yet
    pp0 = PrePrepare(0, 3, b"\x01" * 32, ())
    old.pre_prepare, old.pre_prepare_env = pp0, sign_pre_prepare(3, ())
    old.prepares[2] = (pp0.digest, sign_prepare(2, 3, pp0.digest))
    assert log.pre_prepared(3, 0) is old
    assert log.pre_prepared(3, 1) is None  # a pre-prepare of another view
    assert log.pre_prepared(4, 0) is None  # no slot
    new = log.reopen(3, 1)
    assert new is not old and log.get(3) is new
    assert new.view == 1 and new.pre_prepare is None and 2 not in new.prepares
    assert log.reopen(3, 1) is new  # the same view: the slot is kept
