"""The view-change timers of a backup, one rule per test (OSDI'99 4.4, 4.5.2, plus the
ordering timer): each test fails if its rule is taken out of pbft/protocol/replica.py.

make_config: view_change_timeout_ms 1000, tick_ms 10 -> the execution timer is 100
ticks, the ordering timer 50, its reminder 25.
"""

from __future__ import annotations

from conftest import (
    actions_of,
    decoded,
    feed,
    make_config,
    make_replica,
    seal_as,
    sign_checkpoint,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
)

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Broadcast, Note, Send, Tick, ViewChangeStarted
from pbft.protocol.messages import NewView, PrePrepare, Status, ViewChange
from pbft.protocol.viewchange import ViewStatus
from pbft.service.kv import op_put

D_OTHER = b"\x99" * 32


def ticks(replica, n: int) -> list:
    out = []
    for _ in range(n):
        out += replica.step(Tick())
    return out


def test_an_unordered_request_is_first_re_sent_to_the_primary_then_the_view_changes():
    backup = make_replica(make_config(), 1)
    data = sign_request("alice", op_put(b"k", b"v"), 1)
    feed(backup, "alice", data)  # the client's broadcast: the backup relays and waits
    early = ticks(backup, 24)
    assert not [a for a in actions_of(early, Send) if a.data == data]
    reminder = ticks(backup, 1)
    assert [a.to for a in actions_of(reminder, Send) if a.data == data] == [0]
    assert any(isinstance(decoded(b.data)[1], Status) for b in actions_of(reminder, Broadcast))
    assert actions_of(ticks(backup, 24), ViewChangeStarted) == []
    assert actions_of(ticks(backup, 1), ViewChangeStarted) == [ViewChangeStarted(1)]


def test_a_request_that_arrives_just_after_a_reminder_gets_a_reminder_of_its_own():
    """A request that began waiting in the tick of another's reminder, after it, was not
    re-sent with it: once it is the oldest unordered request, it gets its own reminder
    half-way through its ordering timer, before the view changes (timeouts.py)."""
    backup = make_replica(make_config(), 1)
    a = sign_request("alice", op_put(b"k", b"v"), 1)
    feed(backup, "alice", a)
    assert [s.to for s in actions_of(ticks(backup, 25), Send) if s.data == a] == [0]  # its reminder
    b = sign_request("bob", op_put(b"j", b"w"), 1)
    feed(backup, "bob", b)  # in the same tick, after the reminder
    feed(backup, 0, sign_pre_prepare(1, (a,)))  # the primary orders alice's only
    assert not [s for s in actions_of(ticks(backup, 24), Send) if s.data == b]
    assert [s.to for s in actions_of(ticks(backup, 1), Send) if s.data == b] == [0]
    assert actions_of(ticks(backup, 24), ViewChangeStarted) == []
    assert actions_of(ticks(backup, 1), ViewChangeStarted) == [ViewChangeStarted(1)]  # still unordered


def test_a_backup_fetching_state_does_not_time_out_the_primary():
    # It is behind: the request it waits for may long be executed by the others.
    backup = make_replica(make_config(), 1)
    for r in (0, 2, 3):  # 2f+1 CHECKPOINTs beyond its window (L = 8) start a transfer
        feed(backup, r, sign_checkpoint(r, 12, D_OTHER))
    assert backup.transfer is not None
    feed(backup, "alice", sign_request("alice", op_put(b"k", b"v"), 1))
    assert actions_of(ticks(backup, 150), ViewChangeStarted) == []
    assert backup.view == 0 and backup.status is ViewStatus.NORMAL


def test_a_restarted_new_primary_never_re_issues_a_conflicting_new_view():
    # Replica 1, primary of view 1, signed a NEW-VIEW pre-prepare for (1, 1) before a
    # restart; rebuilt from other view-changes the slot would get another digest.
    primary1 = make_replica(make_config(), 1)
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    feed(primary1, 0, sign_pre_prepare(1, batch))
    for r in (2, 3):
        feed(primary1, r, sign_prepare(r, 1, batch_digest(batch)))
    assert primary1.log.get(1).prepared
    primary1.safety.sign_vote(PrePrepare(1, 1, D_OTHER, ()))  # what it signed before
    primary1.become_view_change(1)
    out = []
    for r in (2, 3):
        out += feed(primary1, r, seal_as(r, ViewChange(1, 0, (), ())))
    assert not [b for b in actions_of(out, Broadcast) if isinstance(decoded(b.data)[1], NewView)]
    assert any("would conflict" in n.text for n in actions_of(out, Note))
    assert primary1.status is ViewStatus.VIEW_CHANGE  # the view-change timer will move everyone on


def test_a_request_gets_a_fresh_timer_once_state_transfer_completes():
    # A backup waits for alice's request while it fetches state for 150 ticks (longer
    # than the execution timer). The state it installs does not include the request, so
    # it keeps waiting, but it judges the primary from the moment it caught up: no view
    # change right after the transfer, one only after a full fresh timer.
    from pbft.protocol.events import StateInstalled
    from pbft.protocol.messages import StateChunk
    from pbft.protocol.partition import DEPTH

    cfg = make_config()
    donor = make_replica(cfg, 2)  # an empty state stands for the checkpoint's
    root = donor.state_digest()
    top = b"".join(donor.store.tree_now().children(DEPTH, 0))
    backup = make_replica(cfg, 1)
    for r in (0, 2, 3):  # 2f+1 CHECKPOINTs beyond its window start a transfer
        feed(backup, r, sign_checkpoint(r, 12, root))
    assert backup.transfer is not None
    feed(backup, "alice", sign_request("alice", op_put(b"k", b"v"), 1))
    assert actions_of(ticks(backup, 150), ViewChangeStarted) == []
    # The root's children are all the backup lacks (its own leaves are the same).
    out = feed(backup, 2, seal_as(2, StateChunk(12, root, DEPTH, 0, 0, 1, top)))
    assert actions_of(out, StateInstalled) == [StateInstalled(12, root)]
    assert "alice" in backup.requests.waiting  # not in the installed state: still waiting
    # The ordering timer (50 ticks) runs from the install, not from tick 0; its reminder
    # comes first, at 25.
    assert actions_of(ticks(backup, 49), ViewChangeStarted) == []
    assert actions_of(ticks(backup, 1), ViewChangeStarted) == [ViewChangeStarted(1)]
