"""The owner of view-change bookkeeping (viewchange.ViewChanges), rule by rule: what a
replica resends of its VIEW-CHANGE and to whom (retransmission, section 4.5.2's liveness
needs it), and how the wait before joining a replica alone in the next view grows.

Written from mutmut's survivors over viewchange.py (docs/mutation.md): each test fails
on the mutant named in its docstring.
"""

from __future__ import annotations

import pytest
from conftest import make_config

from pbft.protocol.events import Reason
from pbft.protocol.messages import ViewChange
from pbft.protocol.viewchange import LONE_FACTOR, CheckedViewChange, ViewChanges

pytestmark = pytest.mark.timeout(30)

PERIOD, TIMEOUT = 10, 100


def owner() -> ViewChanges:
    return ViewChanges(make_config(), PERIOD, TIMEOUT)  # f = 1, n = 4


def checked(signer: int, new_view: int) -> CheckedViewChange:
    msg = ViewChange(new_view, 0, (), ())
    return CheckedViewChange(signer, msg, b"vc %d %d" % (signer, new_view), b"", {})


def test_only_our_view_change_for_the_view_we_wait_in_is_retransmitted():
    """`retransmission`: `... == view) or True` resent another view's (or raised)."""
    vcs = owner()
    assert vcs.retransmission(0, 1) is None  # we sent none
    vcs.add(checked(0, 1), view=0, now=0)
    assert vcs.retransmission(0, 1) == b"vc 0 1"
    assert vcs.retransmission(0, 2) is None  # we wait in view 2 now: view 1's is stale


def test_a_peer_in_the_very_view_of_our_view_change_still_gets_it_resent():
    """`ignore_resend`: `peer_view > view` made `>=`: a replica that says it is in view
    v (its STATUS) and lacks our VIEW-CHANGE for v would never get it."""
    vcs = owner()
    vcs.own[2] = b"ours for 2"
    vcs.saw(1, 2)
    assert vcs.ignore_resend(1, 2, now=0) is None
    vcs.saw(1, 3)  # it has moved past: a replay, or an old copy
    assert vcs.ignore_resend(1, 2, now=0) == (Reason.STALE, None)


def test_a_resend_is_allowed_again_exactly_one_period_later():
    """`ignore_resend`: `now - last < period` made `<=` held it a tick too long."""
    vcs = owner()
    vcs.own[1] = b"ours for 1"
    assert vcs.resend(1, 1, now=50) == b"ours for 1"
    assert vcs.ignore_resend(1, 1, now=50 + PERIOD - 1) == (Reason.DUPLICATE, None)
    assert vcs.ignore_resend(1, 1, now=50 + PERIOD) is None
    assert vcs.ignore_resend(1, 2, now=51) is None  # another view's budget is its own


def test_the_wait_to_join_a_lone_replica_doubles_with_each_join_of_it():
    """`joined_lone`: counting from 1, adding 2, or counting under another key all give
    a faulty replica that forces view changes this way more joins than log2."""
    vcs = owner()
    base = LONE_FACTOR * TIMEOUT
    vcs.add(checked(3, 1), view=0, now=0)
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base)]
    vcs.joined_lone(3)
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base << 1)]
    vcs.joined_lone(3)
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base << 2)]
    vcs.joined_lone(2)  # another replica's joins are counted apart
    assert vcs.lone_deadlines(0, now=0) == [(3, 1, base << 2)]
