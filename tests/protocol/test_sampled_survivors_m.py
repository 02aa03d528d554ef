"""Rules of one place each, found by the third mutation sample (docs/mutation.md, "A third
sample"): each test was checked against the mutant it was written for."""

from __future__ import annotations

from conftest import feed, make_config, make_replica, seal_as

from pbft.protocol.crypto import NULL_DIGEST
from pbft.protocol.epochs import first_view
from pbft.protocol.events import Reason, Send
from pbft.protocol.messages import FetchBatch, StableProof, ViewChange


def test_the_null_batch_is_never_sent_in_answer_to_a_fetch():
    """Every replica knows the null request's batch (it is empty), so a FETCH-BATCH for
    it is not ours to answer: counted as stale against the asker, nothing sent.
    pbft.protocol.replica.xǁReplicaǁon_fetch_batch__mutmut_27 (`or` made `and`) sent an
    empty BATCH."""
    rep = make_replica(make_config(), 1)
    out = feed(rep, 2, seal_as(2, FetchBatch(1, NULL_DIGEST)))
    assert not [a for a in out if isinstance(a, Send)]
    assert rep.rejects[(2, Reason.STALE)] == 1


def test_a_stable_proof_at_or_below_our_checkpoint_is_stale_against_its_sender():
    """pbft.protocol.replica.xǁReplicaǁon_stable_proof__mutmut_6 counted it against no one."""
    rep = make_replica(make_config(), 1)
    assert feed(rep, 2, seal_as(2, StableProof(0, ()))) == []
    assert rep.rejects[(2, Reason.STALE)] == 1
    assert rep.rejects[(None, Reason.STALE)] == 0


def test_a_view_change_for_a_view_we_are_past_counts_once():
    """pbft.protocol.replica.xǁReplicaǁon_view_change__mutmut_51 counted it twice."""
    rep = make_replica(make_config(), 1)
    assert feed(rep, 2, seal_as(2, ViewChange(0, 0, (), ()))) == []
    assert rep.rejects[(2, Reason.STALE)] == 1
    # A view of another configuration epoch is not ours to count either: once.
    feed(rep, 3, seal_as(3, ViewChange(first_view(1) + 1, 0, (), ())))
    assert rep.rejects[(3, Reason.STALE)] == 1
