"""Tests that kill mutants of protocol rules that survived the whole suite under `make
mutate` (mutmut; docs/mutation.md, "Gaps found").

Each test names the rule it pins and the mutant it was checked against: mutmut's name and
the one-line change. The mutant was applied to a copy of the tree: the test fails with it
and passes without it.
"""

from __future__ import annotations

from conftest import execute_batch, feed, put, sign_checkpoint

from pbft.protocol.events import CheckpointStable, Reason


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
    use: ignored as stale, neither counted nor kept as a claim beyond the window.
    Mutant pbft.protocol.checkpoints.xǁCheckpointsǁignore__mutmut_1: `seq <= low` ->
    `seq < low` (the late vote for h was verified and kept as a far-future claim)."""
    d = stable_at_4(backup)
    feed(backup, 3, sign_checkpoint(3, 4, d))
    assert backup.rejects[(3, Reason.STALE)] == 1
    assert backup.checkpoints.claims == {} and 4 not in backup.checkpoints.votes
