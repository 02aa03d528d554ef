"""A sixth batch of gaps found by a sampled mutation run of the core (docs/mutation.md):
the two refusals of `Replica._serve_state` for a checkpoint the store does not keep
(TOCS 2002 5.3.2), mutants `_serve_state__mutmut_12` (an internal node) and
`_serve_state__mutmut_31` (a leaf).

No sequence of events reaches them: `chunks_served.ignore` lets through only a
(seq, digest) that `checkpoints.own` names, and every seq `own` names is one the store
keeps (the argument: build/survivors-f-notes.md). The first test pins that invariant
through stable checkpoints, a restart and a state transfer; the second reaches the two
defensive refusals the only way there is, with a store that lost a checkpoint behind the
replica's back (as test_sampled_survivors_e does to force a transfer), and asserts their
exact action. f = 1, n = 4, K = 4, L = 8 (make_config).
"""

from __future__ import annotations

from conftest import (
    actions_of,
    drive_to_execution,
    feed,
    make_config,
    make_replica,
    put,
    seal_as,
    sign_checkpoint,
    sign_pre_prepare,
)

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import CheckpointTaken, Persist, Reason, Rejected, Send, Truncate
from pbft.protocol.messages import FetchState
from pbft.protocol.partition import DEPTH
from pbft.protocol.replica import ALL_CHECKPOINTS
from pbft.sim.simulation import apply_durability

ROOT, LEAF = DEPTH, 0


def _keep(store: dict, actions) -> list:
    """Apply a step's durability actions to `store` as the simulator does; the actions."""
    for a in actions:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)
    return actions


def _own_is_kept(rep) -> None:
    assert set(rep.checkpoints.own) <= set(rep.store.kept)


def _replica_1_at(upto: int, store: dict) -> tuple:
    """Replica 1 that executed one put per slot up to `upto`, every checkpoint made
    stable by replicas 2 and 3 (its records in `store`); (it, seq -> its digest)."""
    cfg = make_config()
    rep = make_replica(cfg, 1)
    digests = {}
    for seq in range(1, upto + 1):
        batch = (put("alice", seq, b"k%d" % seq),)
        out = _keep(store, feed(rep, 0, sign_pre_prepare(seq, batch)))
        out += _keep(store, drive_to_execution(rep, seq, batch_digest(batch)))
        _own_is_kept(rep)
        for taken in actions_of(out, CheckpointTaken):
            digests[taken.seq] = taken.digest
            for signer in (2, 3):
                _keep(store, feed(rep, signer, sign_checkpoint(signer, taken.seq, taken.digest)))
                _own_is_kept(rep)
    assert rep.last_executed == upto
    return rep, digests


def _ask(rep, seq: int, digest: bytes, level: int) -> list:
    """Replica 3 asks `rep` for the root or leaf 0 of checkpoint `seq`: `rep`'s actions."""
    return feed(rep, 3, seal_as(3, FetchState(seq, digest, level, 0, 0)))


def _not_served(rep, seq: int, digest: bytes) -> None:
    """A FETCH-STATE for `seq` is ignored (counted STALE, nothing sent) at every level:
    the store is never asked."""
    for level in (ROOT, LEAF):
        before = rep.rejects[(3, Reason.STALE)]
        assert _ask(rep, seq, digest, level) == []
        assert rep.rejects[(3, Reason.STALE)] == before + 1


def test_every_checkpoint_served_is_one_the_store_keeps():
    """`own` names only checkpoints the store keeps: at a stable checkpoint the store
    releases what lies below the previous stable one and `own` drops what lies below
    the new one; a restart names only the checkpoint it rolled back to; a transfer
    clears both. A FETCH-STATE for a checkpoint no longer served is ignored before the
    store is asked (so `_serve_state` never finds one missing)."""
    store: dict = {}
    rep, digests = _replica_1_at(12, store)
    assert rep.log.low == 12 and set(rep.checkpoints.own) == {12} and rep.store.kept == [8, 12]
    _not_served(rep, 4, digests[4])  # released by the store too
    _not_served(rep, 8, digests[8])  # still kept (the previous stable one), not served
    for level in (ROOT, LEAF):
        assert len(actions_of(_ask(rep, 12, digests[12], level), Send)) == 1

    # A restart on the same store: back to stable checkpoint 12, and only it is named.
    again = make_replica(make_config(), 1, service=rep.service)
    again.recover(list(store.values()))
    assert set(again.checkpoints.own) == {12} and again.store.kept == [8, 12]
    _not_served(again, 8, digests[8])
    assert len(actions_of(_ask(again, 12, digests[12], LEAF), Send)) == 1

    # A restart on a store that lost its checkpoints: a transfer, and nothing is named.
    again.store.release(ALL_CHECKPOINTS)
    third = make_replica(make_config(), 1, service=again.service)
    third.recover(list(store.values()))
    assert third.transfer is not None and third.transfer.seq == 12
    assert third.checkpoints.own == {} and third.store.kept == []
    _not_served(third, 12, digests[12])


def test_a_checkpoint_the_store_lost_is_refused_as_stale_at_every_level():
    """Kills _serve_state__mutmut_12 (an internal node refused with no reason) and
    _serve_state__mutmut_31 (a leaf refused with the detail as its reason). Defensive:
    were the store to lose a checkpoint our record still names, a FETCH-STATE for it is
    refused, STALE, naming the checkpoint; nothing is sent or counted as served."""
    rep, digests = _replica_1_at(8, {})
    rep.store.release(ALL_CHECKPOINTS)  # behind the replica's back
    assert rep.checkpoints.own == {8: digests[8]} and rep.store.kept == []
    for level in (ROOT, 1, LEAF):
        out = _ask(rep, 8, digests[8], level)
        assert out == [Rejected(3, Reason.STALE, "checkpoint 8 not kept")]
    assert rep.rejects[(3, Reason.STALE)] == 3
    assert rep.chunks_served.sent == {}
