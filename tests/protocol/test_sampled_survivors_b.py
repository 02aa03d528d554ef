"""More gaps found by a sampled mutation run of the core (docs/mutation.md).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise: the view-change timeout is 100 ticks.
"""

from __future__ import annotations

from conftest import (
    actions_of,
    feed,
    make_config,
    make_replica,
    seal_as,
    sign_checkpoint,
    sign_pre_prepare,
    sign_prepare,
)
from test_4_4_batches_by_digest import BIG, CLIENTS, D, fetches, new_view

from pbft.protocol import partition as p
from pbft.protocol.epochs import first_view
from pbft.protocol.events import (
    CheckpointStable,
    Persist,
    Reason,
    Send,
    StateTransferStarted,
    Tick,
    Truncate,
    ViewChangeStarted,
)
from pbft.protocol.messages import Batch, FetchBatch, ViewChange, decode_envelope
from pbft.protocol.viewchange import ViewStatus
from pbft.sim.simulation import apply_durability


def _tick(rep, times: int) -> list:
    out: list = []
    for _ in range(times):
        out += rep.step(Tick())
    return out


# -- OSDI'99 4.5.2: the new-view timer backs off ---------------------------------------------


def test_the_new_view_timer_doubles_with_each_view_change_without_progress():
    """The timer a replica starts once 2f+1 VIEW-CHANGEs for its view v are in lasts the
    view-change timeout times 2**k, k the view changes in a row without progress (OSDI'99
    4.5.2; TOCS 2002 4.5.2: "waits ... twice as long" for each next view), so that a
    correct new primary eventually gets enough time. Replica 3 timed view 0 out (k = 1:
    200 ticks in view 1), then view 1 (k = 2: 400 ticks in view 2). Mutant
    pbft.protocol.replica.xǁReplicaǁ_after_view_change_input__mutmut_13 (started without
    a duration: it kept the first, 100 ticks, every time)."""
    rep = make_replica(make_config(), 3)
    timeout = rep._vc_timeout_ticks
    rep.become_view_change(1)
    for r in (0, 2):  # not 1, view 1's primary: no NEW-VIEW comes
        feed(rep, r, seal_as(r, ViewChange(1, 0, (), ())))
    assert rep.new_view_timeout.running and rep.new_view_timeout.deadline == rep.ticks + 2 * timeout
    assert actions_of(_tick(rep, 2 * timeout - 1), ViewChangeStarted) == []
    assert rep.view == 1
    assert actions_of(_tick(rep, 1), ViewChangeStarted) == [ViewChangeStarted(2)]
    for r in (0, 1):  # not 2, view 2's primary
        feed(rep, r, seal_as(r, ViewChange(2, 0, (), ())))
    assert rep.new_view_timeout.deadline == rep.ticks + 4 * timeout
    assert actions_of(_tick(rep, 4 * timeout - 1), ViewChangeStarted) == []
    assert actions_of(_tick(rep, 1), ViewChangeStarted) == [ViewChangeStarted(3)]


# -- OSDI'99 4.4: a batch held in our own prepared certificate ------------------------------


def test_a_restarted_replica_takes_a_re_issued_batch_from_its_own_prepared_certificate():
    """Replica 2 prepared n=1 in view 0, started the view change to view 1 and restarted:
    its log slot of view 0 is gone, its prepared certificate (with the batch, recorded
    for a restart: OSDI'99 4.4, certificates survive) is back. View 1's NEW-VIEW names the
    batch by digest only; the replica takes it from the certificate, fetches nothing, and
    serves it to a replica that asks. Mutant
    pbft.protocol.replica.xǁReplicaǁ_known_batch__mutmut_19 (the certificate not looked
    at: the batch was fetched, and a FETCH-BATCH went unanswered)."""
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 2)
    out = feed(rep, 0, sign_pre_prepare(1, BIG))
    out += feed(rep, 1, sign_prepare(1, 1, D))
    assert rep.log.get(1).prepared
    rep.become_view_change(1)
    out += rep._out
    store: dict = {}
    for a in out:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)
    again = make_replica(cfg, 2, service=rep.service)
    again.recover(list(store.values()))
    assert (again.view, again.status) == (1, ViewStatus.VIEW_CHANGE)
    assert again.log.get(1) is None and 1 in again.prepared_certs
    [send] = actions_of(feed(again, 3, seal_as(3, FetchBatch(1, D))), Send)
    assert send.to == 3 and decode_envelope(send.data)[1] == Batch(1, D, BIG)
    out = feed(again, 1, new_view())
    assert again.status is ViewStatus.NORMAL and again.view == 1
    assert fetches(out) == []
    assert again.log.get(1).pre_prepare.batch == BIG


# -- OSDI'99 4.4: the new primary and the checkpoint at min-s -------------------------------


def test_a_new_primary_behind_min_s_fetches_the_checkpoint_its_new_view_names():
    """The NEW-VIEW's min-s is the latest stable checkpoint among the 2f+1 VIEW-CHANGEs;
    a new primary whose own is older makes that one stable, with the digest its proof
    signs, and fetches the state it lacks (OSDI'99 4.4: "adds the proof of stability
    for the checkpoint with sequence number min-s"; TOCS 2002 5.3.2). Replica 1, primary
    of view 1, executed nothing; replicas 0 and 2 hold checkpoint 4 stable. Mutant
    pbft.protocol.replica.xǁReplicaǁ_send_new_view__mutmut_44 (the stable digest lost on
    the way: a checkpoint with no digest, and no transfer)."""
    state = b"\x42" * 32
    proof = tuple(sign_checkpoint(r, 4, state) for r in (0, 2, 3))
    rep = make_replica(make_config(), 1)
    rep.become_view_change(1)
    out: list = []
    for r in (0, 2):
        out += feed(rep, r, seal_as(r, ViewChange(1, 4, proof, ())))
    assert rep.status is ViewStatus.NORMAL and rep.view == 1 and rep.is_primary
    assert actions_of(out, CheckpointStable) == [CheckpointStable(4, state, proof)]
    assert actions_of(out, StateTransferStarted) == [StateTransferStarted(4, state)]
    assert rep.log.low == 4 and rep.checkpoints.stable_digest == state
    assert rep.transfer is not None and (rep.transfer.seq, rep.transfer.digest) == (4, state)


# -- configuration epochs: VIEW-CHANGEs of another epoch are counted, not used --------------


def test_every_view_change_of_another_epoch_is_counted_once_as_stale():
    """A VIEW-CHANGE for a view of another configuration epoch is not ours to count
    (epochs.py): each one is dropped quietly and counted once as STALE against the peer
    that sent it, so `rejects` says how many there were. Mutant
    pbft.protocol.replica.xǁReplicaǁon_view_change__mutmut_10 (the count set to 1)."""
    rep = make_replica(make_config(), 2)
    vc = seal_as(1, ViewChange(first_view(1), 0, (), ()))
    for times in (1, 2, 3):
        assert feed(rep, 1, vc) == []
        assert rep.rejects[(1, Reason.STALE)] == times
    assert rep.view == 0 and rep.status is ViewStatus.NORMAL and 1 not in rep.view_changes.received


# -- TOCS 2002 5.3.2: the partition tree's checks -------------------------------------------


def test_a_node_of_the_wrong_shape_is_refused_even_when_it_hashes_to_the_digest():
    """A fetcher checks each node it receives against its parent's digest (TOCS 2002
    5.3.2). The tree's shape is fixed (FANOUT children of 32-byte digests,
    partition.py), so children of any other shape are refused before hashing, even a
    list that hashes to the expected digest: a shorter list of good digests, or a list
    of FANOUT with one short digest. Mutant pbft.protocol.partition.x_check_children__mutmut_1
    (`and`: a list of the wrong length of good digests was hashed and accepted)."""
    top = p.PartitionTree().children(p.DEPTH, 0)
    assert p.check_children(p.root_digest(top), p.DEPTH, top)
    short = top[:-1]
    assert not p.check_children(p.root_digest(short), p.DEPTH, short)
    assert not p.check_children(p.node_digest(1, short), 1, short)
    odd = top[:-1] + (bytes(31),)
    assert not p.check_children(p.root_digest(odd), p.DEPTH, odd)
