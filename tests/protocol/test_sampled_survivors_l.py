"""A twelfth batch of gaps found by a sampled mutation run of the core (docs/mutation.md):
a primary putting back a PRE-PREPARE it signed without its batch
(Replica._reinstate_own_pre_prepare), and a backup refusing a pre-prepare that conflicts
with a PREPARE it signed before losing its log (Replica.on_pre_prepare).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise. Notes: build/survivors-l-notes.md.
"""

from __future__ import annotations

from conftest import actions_of, decoded, feed, make_config, make_replica, put, sign_pre_prepare

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Broadcast, Reason, Rejected, Tick
from pbft.protocol.messages import Prepare, PrePrepare, attached

BATCH = (put("alice", 1),)
D = batch_digest(BATCH)
OTHER = (put("bob", 1),)


# -- a primary's own batchless PRE-PREPARE, put back with the batch it holds ----------------


def test_a_primary_puts_back_its_own_batchless_pre_prepare_with_the_batch_it_holds():
    """The safety rules of a primary may remember a PRE-PREPARE it signed without its batch
    (a NEW-VIEW's re-issued pre-prepares name batches by digest only, 4.4) for a slot its
    log lost (a restart). `_reinstate_own_pre_prepare` puts it back into the log instead
    of proposing a second one for that number; if the primary holds the batch with that
    digest (`_known_batch`), the pre-prepare goes back WITH the batch, and out again, so
    the backups can prepare it. Here replica 0, primary of view 0, has signed n=1 with
    digest D and no batch, and holds D's batch; any step makes it propose. Found by
    mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁ_reinstate_own_pre_prepare__mutmut_25 (the digest not
    passed to `_known_batch`: a TypeError out of step)."""
    rep = make_replica(make_config(), 0)
    env = rep.safety.sign_vote(PrePrepare(0, 1, D, None))
    rep.held_batches.keep(1, D, BATCH)
    assert rep.log.pre_prepared(1, 0) is None
    out = list(rep.step(Tick()))
    slot = rep.log.pre_prepared(1, 0)
    assert slot is not None
    assert slot.pre_prepare == PrePrepare(0, 1, D, BATCH)
    assert [req for _, req in slot.requests] == list(BATCH)
    whole = attached(env.to_bytes(), BATCH)
    assert slot.pre_prepare_env == whole
    assert Broadcast(whole) in actions_of(out, Broadcast)
    assert decoded(whole)[1] == PrePrepare(0, 1, D, BATCH)
    assert rep.next_seq == 2  # n=1 is taken: the next proposal gets n=2


def test_a_primary_puts_back_its_own_batchless_pre_prepare_without_a_batch_it_lacks():
    """The same without the batch held: the pre-prepare goes back into the log batchless
    (the batch is fetched) and is not broadcast, of no use to anyone without it. Same
    path as above, and the counterpart that shows the batch above came from
    `_known_batch` (mutant _25 raises here too)."""
    rep = make_replica(make_config(), 0)
    env = rep.safety.sign_vote(PrePrepare(0, 1, D, None))
    out = list(rep.step(Tick()))
    slot = rep.log.pre_prepared(1, 0)
    assert slot is not None and slot.pre_prepare == PrePrepare(0, 1, D, None)
    assert slot.pre_prepare_env == env.to_bytes()
    assert all(decoded(b.data)[1] != PrePrepare(0, 1, D, None) for b in actions_of(out, Broadcast))
    assert rep.next_seq == 2


# -- a backup's PREPARE signed before its log was lost (Replica.on_pre_prepare) --------------


def test_a_backup_refuses_a_pre_prepare_conflicting_with_a_prepare_it_signed_before():
    """A backup that signed a PREPARE for (v, n) with one digest, and whose log lost the
    pre-prepare it answered (a restart), is sent a PRE-PREPARE for (v, n) with another
    digest: it refuses it as a CONFLICT with our prepare, counts the refusal, keeps the
    slot empty, and signs nothing (rather than the safety rules raising out of step).
    Here replica 1 signed PREPARE(0, 1, D) and receives the primary's pre-prepare of
    another batch for n=1. Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁon_pre_prepare__mutmut_138 (the signed PREPARE looked
    up under another key, never found: the SafetyViolation escapes)."""
    rep = make_replica(make_config(), 1)
    rep.safety.sign_vote(Prepare(0, 1, D))
    out = feed(rep, 0, sign_pre_prepare(1, OTHER))
    assert out == [Rejected(0, Reason.CONFLICT, "pre-prepare n=1 conflicts with our prepare")]
    assert rep.rejects[(0, Reason.CONFLICT)] == 1
    assert rep.log.pre_prepared(1, 0) is None
    assert rep.safety.signed[("prepare", 0, 1)][0] == D


def test_a_backup_answers_the_same_pre_prepare_with_the_prepare_it_signed_before():
    """The counterpart: the pre-prepare for the digest it prepared is accepted, and the
    PREPARE sent is the one signed before (same bytes, no second signature)."""
    rep = make_replica(make_config(), 1)
    env = rep.safety.sign_vote(Prepare(0, 1, D))
    out = feed(rep, 0, sign_pre_prepare(1, BATCH))
    assert not actions_of(out, Rejected)
    slot = rep.log.pre_prepared(1, 0)
    assert slot is not None and slot.my_prepare == env.to_bytes()
    assert Broadcast(env.to_bytes()) in actions_of(out, Broadcast)
