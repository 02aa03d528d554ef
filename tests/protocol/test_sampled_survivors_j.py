"""A tenth batch of gaps found by a sampled mutation run of the core (docs/mutation.md):
where a STATUS says its sender is (Replica.on_status) and the VIEW-CHANGE a replica resends
to a peer still waiting in a view it has left (Replica._resend_own_view_change).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config).
Notes: build/survivors-j-notes.md.
"""

from __future__ import annotations

import pytest
from conftest import actions_of, feed, make_config, make_replica, seal_as

from pbft.protocol.events import Broadcast, Reason, Rejected, Send
from pbft.protocol.messages import Status
from pbft.protocol.viewchange import ViewStatus

A, B = 1, 2


def _view_change_of(cfg, i: int, view: int) -> bytes:
    """Replica `i`'s signed VIEW-CHANGE for `view` (a fresh replica that timed view 0 out)."""
    rep = make_replica(cfg, i)
    rep._out = []
    rep.become_view_change(view)
    out, rep._out = rep._out, []
    return next(a.data for a in out if isinstance(a, Broadcast))


def _moved_on():
    """Replica A (1) timed out view 1 too and now waits in a view change to view 2; it
    keeps its own VIEW-CHANGE for view 1 to resend. (A, the bytes of B's VIEW-CHANGE for
    view 1, an old copy.)"""
    cfg = make_config()
    a = make_replica(cfg, A)
    a.become_view_change(1)
    a.become_view_change(2)
    a._out = []
    assert a.view == 2 and a.status is ViewStatus.VIEW_CHANGE
    assert 1 in a.view_changes.own
    return a, _view_change_of(cfg, B, 1)


def _own_view_change_to(actions, to: int, a) -> list:
    return [s for s in actions_of(actions, Send) if s.to == to and s.data == a.view_changes.own[1]]


def test_a_view_change_for_a_view_we_left_is_answered_with_ours_for_it():
    """Control: B's VIEW-CHANGE for view 1, which A has left, says B still waits there;
    A has not heard B is anywhere later, so it resends its own VIEW-CHANGE for view 1 to
    B (issue 13, item 2), and counts nothing against B."""
    a, old = _moved_on()
    out = feed(a, B, old)
    assert len(_own_view_change_to(out, B, a)) == 1
    assert actions_of(out, Rejected) == []
    assert a.rejects[(B, Reason.STALE)] == 0


@pytest.mark.parametrize("later", [2, 3])
def test_a_view_change_from_a_replica_whose_status_said_a_later_view_gets_no_resend(later):
    """B told A by a signed STATUS that it is in view `later` (> 1); then B's VIEW-CHANGE
    for view 1 reaches A: an old copy or a replay, since B has moved on. A must not resend
    its own VIEW-CHANGE for view 1 to B (two replicas answering each other's old
    VIEW-CHANGEs would never stop): the copy is refused as STALE, silently, counted once
    against B and against nobody else. Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁon_status__mutmut_26 (`view_changes.saw(None, ...)`:
    the view B reported was filed under no replica, and A resent)."""
    a, old = _moved_on()
    status_out = feed(a, B, seal_as(B, Status(later, 0, 0, 0)))
    assert actions_of(status_out, Rejected) == []
    out = feed(a, B, old)
    assert _own_view_change_to(out, B, a) == []
    assert out == []
    assert a.rejects[(B, Reason.STALE)] == 1
    assert a.rejects[(None, Reason.STALE)] == 0
    assert a.view_changes.peer_view.get(B) == later


def test_a_status_of_the_view_itself_does_not_stop_the_resend():
    """The bound is strict: B's STATUS saying it is in view 1 (the view of its VIEW-CHANGE)
    means it still waits there, so A resends its VIEW-CHANGE for view 1 to B."""
    a, old = _moved_on()
    feed(a, B, seal_as(B, Status(1, 0, 0, 0)))
    out = feed(a, B, old)
    assert len(_own_view_change_to(out, B, a)) == 1
    assert a.rejects[(B, Reason.STALE)] == 0
