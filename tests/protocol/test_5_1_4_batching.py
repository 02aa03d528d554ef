"""Batching under a closed loop (TOCS 2002 section 5.1.4; the primary's policy in
protocol/batching.py): the primary waits briefly for the clients of the batch it just
executed, and the wait is bounded.

Init, act, check against one replica of a 4-replica f=1 cluster (tests/conftest.py, "one
replica under test").
"""

from __future__ import annotations

from conftest import (
    CLIENTS4,
    broadcast_messages,
    decoded,
    drive_to_execution,
    feed,
    make_config,
    make_replica,
    put,
)

from pbft.protocol.events import (
    Load,
    Tick,
)
from pbft.protocol.messages import (
    PrePrepare,
)

# -- 4.2 / TOCS 5.1.4: batches under a closed loop ---------------------------------------


def proposed(actions) -> list[PrePrepare]:
    return [m for m in broadcast_messages(actions) if isinstance(m, PrePrepare)]


def test_primary_waits_for_the_clients_of_the_batch_it_executed_before_proposing():
    """alice and bob's batch executes while carol waits: the primary expects alice and
    bob's next requests (one outstanding each) and proposes all three together, instead of
    carol alone now and alice and bob in the next batch (two groups that would alternate
    for ever, each batch half full)."""
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    feed(primary, "dave", put("dave", 1))  # seq 1, proposed at once, alone
    feed(primary, "alice", put("alice", 1))
    [pp2] = proposed(feed(primary, "bob", put("bob", 1)))  # worthwhile (2): seq 2
    drive_to_execution(primary, 1, primary.log.get(1).digest)
    feed(primary, "carol", put("carol", 1))
    assert proposed(drive_to_execution(primary, 2, pp2.digest)) == []  # dave is not back
    assert proposed(feed(primary, "alice", put("alice", 2))) == []
    [pp3] = proposed(feed(primary, "bob", put("bob", 2)))
    assert sorted(decoded(r)[1].client for r in pp3.batch) == ["alice", "bob", "carol"]


def hold_for_dave(primary) -> PrePrepare:
    """Execute dave's batch, then alice and bob's, with carol waiting: the primary now
    waits for alice and bob to send their next requests. Returns their pre-prepare."""
    feed(primary, "dave", put("dave", 1))
    feed(primary, "alice", put("alice", 1))
    [pp2] = proposed(feed(primary, "bob", put("bob", 1)))
    drive_to_execution(primary, 1, primary.log.get(1).digest)
    drive_to_execution(primary, 2, pp2.digest)
    assert proposed(feed(primary, "carol", put("carol", 1))) == []
    return pp2


def test_hold_ticks_end_the_wait_for_returning_clients():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    hold_for_dave(primary)
    assert primary.batching.hold.ticks == 4  # 40 ms of 10 ms ticks
    for _ in range(primary.batching.hold.ticks - 1):  # a burst of ticks does not end it
        assert proposed(primary.step(Tick())) == []
    [pp3] = proposed(primary.step(Tick()))
    assert [decoded(r)[1].client for r in pp3.batch] == ["carol"]


def test_a_batch_of_one_adds_no_wait():
    """An idle cluster or a lone client: the next request goes out as it arrives."""
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    [pp1] = proposed(feed(primary, "alice", put("alice", 1)))
    drive_to_execution(primary, 1, pp1.digest)
    [pp2] = proposed(feed(primary, "bob", put("bob", 1)))
    assert [decoded(r)[1].client for r in pp2.batch] == ["bob"]


def test_one_client_that_does_not_come_back_delays_nobody():
    clients = tuple(f"c{i}" for i in range(10))
    primary = make_replica(make_config(clients=clients, pipeline=1, batch_max=256), 0)
    [pp1] = proposed(feed(primary, "c9", put("c9", 1)))
    for c in clients[:8]:
        feed(primary, c, put(c, 1))
    [pp2] = proposed(drive_to_execution(primary, 1, pp1.digest))
    assert len(pp2.batch) == 8
    drive_to_execution(primary, 2, pp2.digest)
    for c in clients[:6]:
        assert proposed(feed(primary, c, put(c, 2))) == []
    # 7 of 8 back (c7 never comes): at most 1/8 missing, proposed without a tick.
    [pp3] = proposed(feed(primary, "c6", put("c6", 2)))
    assert len(pp3.batch) == 7


def test_a_wait_that_a_tick_ended_pauses_waiting():
    """Clients that do not come straight back (think time, or a faulty client holding
    back) cost at most one tick per HOLD_PAUSE batches, not one tick per batch."""
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    hold_for_dave(primary)
    for _ in range(primary.batching.hold.ticks - 1):
        primary.step(Tick())
    [pp3] = proposed(primary.step(Tick()))  # alice and bob did not come back in time
    assert [decoded(r)[1].client for r in pp3.batch] == ["carol"]
    feed(primary, "alice", put("alice", 2))
    [pp4] = proposed(feed(primary, "bob", put("bob", 2)))  # worthwhile: 2 waiting
    drive_to_execution(primary, 3, pp3.digest)
    feed(primary, "dave", put("dave", 2))
    # alice and bob's batch executes: no waiting for them this time, dave goes at once.
    [pp5] = proposed(drive_to_execution(primary, 4, pp4.digest))
    assert [decoded(r)[1].client for r in pp5.batch] == ["dave"]


def test_a_full_batch_ends_the_wait():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=1, batch_max=2), 0)
    feed(primary, "dave", put("dave", 1))  # seq 1, alone
    feed(primary, "alice", put("alice", 1))
    feed(primary, "bob", put("bob", 1))
    [pp2] = proposed(drive_to_execution(primary, 1, primary.log.get(1).digest))
    feed(primary, "carol", put("carol", 1))
    feed(primary, "dave", put("dave", 2))
    # alice and bob are not back, but two requests fill a batch: no reason to wait.
    [pp3] = proposed(drive_to_execution(primary, 2, pp2.digest))
    assert sorted(decoded(r)[1].client for r in pp3.batch) == ["carol", "dave"]


def test_a_view_change_forgets_the_wait():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    hold_for_dave(primary)
    assert primary.batching.returning == {"alice", "bob"}
    primary.become_view_change(1)
    assert primary.batching.returning == set()


def test_the_wait_is_bounded_in_milliseconds_and_by_the_view_change_timeout():
    assert make_replica(make_config(tick_ms=10), 0).batching.hold.ticks == 4  # 40 ms
    assert make_replica(make_config(tick_ms=100), 0).batching.hold.ticks == 1  # at least one tick
    short = make_config(tick_ms=1, view_change_timeout_ms=80)
    assert make_replica(short, 0).batching.hold.ticks == 10  # an eighth of the 80-tick timeout


# -- the runtime's load (events.Load): batch for throughput, or propose at once ---------


def test_an_idle_primary_proposes_while_a_batch_is_in_flight():
    """Busy, a request that arrives while a batch is in flight waits for a worthwhile
    batch (batch_max // 8 = 2 here); told it is idle, the primary proposes it at once."""
    for busy, expected in ((True, 0), (False, 1)):
        primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
        primary.step(Load(busy=busy))
        [_] = proposed(feed(primary, "dave", put("dave", 1)))  # nothing in flight: at once
        assert len(proposed(feed(primary, "alice", put("alice", 1)))) == expected


def test_an_idle_primary_goes_past_its_pipeline_up_to_the_log_window():
    """`pipeline` bounds the batches in flight of a busy primary only; an idle one is
    bounded by the log window (and the clients)."""
    cfg = make_config(clients=CLIENTS4, pipeline=1, batch_max=16, checkpoint_interval=2, log_window=2)
    primary = make_replica(cfg, 0)
    primary.step(Load(busy=False))
    assert len(proposed(feed(primary, "dave", put("dave", 1)))) == 1
    assert len(proposed(feed(primary, "alice", put("alice", 1)))) == 1  # past pipeline 1
    assert proposed(feed(primary, "bob", put("bob", 1))) == []  # seq 3: out of the window


def test_an_idle_primary_waits_for_no_returning_client():
    """The wait of hold_for_dave ends when the primary learns it is idle, and no new
    one starts."""
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    hold_for_dave(primary)
    [pp3] = proposed(primary.step(Load(busy=False)))
    assert [decoded(r)[1].client for r in pp3.batch] == ["carol"]
    assert not primary.batching.hold.running
    drive_to_execution(primary, 3, pp3.digest)
    assert not primary.batching.hold.running
    [_] = proposed(feed(primary, "alice", put("alice", 2)))


def test_busy_again_the_primary_batches_again():
    primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
    primary.step(Load(busy=False))
    primary.step(Load(busy=True))
    [_] = proposed(feed(primary, "dave", put("dave", 1)))
    assert proposed(feed(primary, "alice", put("alice", 1))) == []


def test_an_idle_primary_does_not_wait_after_a_batch_of_several_clients():
    """alice and bob's batch (proposed while busy) executes; busy, the primary would wait
    for them before proposing carol (test_primary_waits_for_...); idle, carol goes at
    once."""
    for busy, expected in ((True, 0), (False, 1)):
        primary = make_replica(make_config(clients=CLIENTS4, pipeline=4, batch_max=16), 0)
        [pp1] = proposed(feed(primary, "dave", put("dave", 1)))
        feed(primary, "alice", put("alice", 1))
        [pp2] = proposed(feed(primary, "bob", put("bob", 1)))  # worthwhile (2)
        assert len(pp2.batch) == 2
        primary.step(Load(busy=busy))
        drive_to_execution(primary, 1, pp1.digest)
        drive_to_execution(primary, 2, pp2.digest)
        assert primary.batching.hold.running == busy  # idle: no wait, so no timer either
        assert len(proposed(feed(primary, "carol", put("carol", 1)))) == expected
