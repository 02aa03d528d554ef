"""The owners of catching up (TOCS 2002 5.3): catchup.CatchUp (STATUS bookkeeping),
statetransfer.Transfer (what to fetch) and ChunkBudget (what to serve), and a damaged
durable record refusing recovery with one sentence (records.DamagedRecord)."""

from __future__ import annotations

import pytest
from conftest import make_config, make_replica

from pbft.protocol.catchup import CatchUp
from pbft.protocol.events import Persist, Reason, Record
from pbft.protocol.records import DamagedRecord
from pbft.protocol.statetransfer import CHUNKS_PER_PERIOD, IN_FLIGHT, ChunkBudget, Transfer


def test_behind_needs_f_plus_one_replicas_past_us_in_our_view():
    c = CatchUp(make_config(), period=10)  # f = 1
    c.report(0, 0, 30, now=0)
    assert not c.behind(0, 20)  # one replica alone may lie
    c.report(1, 1, 30, now=0)
    assert not c.behind(0, 20)  # another view does not count
    c.report(2, 0, 25, now=0)
    assert c.behind(0, 20) and not c.behind(0, 25)


def test_a_restarted_replica_is_located_by_2f_reports_and_answers_once_per_period():
    c = CatchUp(make_config(), period=10)
    c.restarted(by=100)
    assert not c.located and c.located_by == 100
    assert not c.report(0, 0, 5, now=1)
    assert c.report(1, 0, 5, now=2)  # 2f = 2 replicas heard
    c.locate()
    assert c.located and not c.heard
    assert c.too_soon(1, now=11) and not c.too_soon(1, now=12) and not c.too_soon(3, now=0)
    c.invariants()


def test_a_transfer_keeps_in_flight_requests_and_forgives_liars_when_all_lied():
    t = Transfer(8, b"d", (), sources=[1, 2])
    t.total = 3 * IN_FLIGHT
    asks, exhausted = t.next_requests()
    assert len(asks) == IN_FLIGHT and not exhausted and {s for _, s in asks} == {1, 2}
    assert t.next_requests() == ([], False)
    t.lied(1)
    t.lied(2)
    assert not t.asked
    asks, exhausted = t.next_requests()
    assert asks == [] and exhausted and not t.liars
    t.received(0, 3 * IN_FLIGHT, b"x")
    assert t.chunks == {0: b"x"} and 0 not in t.missing()


def test_chunks_are_served_once_per_period_each_and_rationed_per_asker():
    b = ChunkBudget(period=10, replicas=4)
    chunks = [b"a", b"b"]
    own = {8: (b"d", b"ab")}
    sc = b.serve((1, 8, 0), chunks, b"d", now=0)
    assert (sc.seq, sc.index, sc.total, sc.data) == (8, 0, 2, b"a")
    assert b.ignore(None, (1, 8, 0), b"d", own, now=5) == (Reason.DUPLICATE, None)
    assert b.ignore(None, (1, 8, 0), b"d", own, now=10) is None
    for i in range(1, CHUNKS_PER_PERIOD):
        b.serve((1, 8, i), chunks * CHUNKS_PER_PERIOD, b"d", now=1)
    assert b.ignore(None, (1, 8, 999), b"d", own, now=2)[0] is Reason.OVERLOAD
    assert b.ignore(None, (2, 8, 999), b"d", own, now=2) is None  # another asker has its own budget
    assert b.ignore(None, (1, 8, 999), b"d", own, now=11) is None  # a new period
    assert b.ignore(None, (1, 9, 0), b"d", own, now=11) == (Reason.STALE, None)  # not held
    assert b.ignore(3, (1, 8, 0), b"d", own, now=30)[0] is Reason.WRONG_ROLE  # relayed
    b.invariants()


@pytest.mark.parametrize(
    "record",
    [
        Persist(Record.CHECKPOINT, 0, 0, "", b"\x01"),
        Persist(Record.VIEW, 0, 0, "", b"\x83\x00\x00\x00"),
        Persist(Record.VOTE, 1, 0, "no-such-phase", b""),
    ],
)
def test_a_damaged_record_refuses_recovery_with_one_sentence(record):
    rep = make_replica(make_config(), 1)
    with pytest.raises(DamagedRecord, match="is damaged|not canonical") as exc:
        rep.recover([record])
    assert isinstance(exc.value, ValueError) and "\n" not in str(exc.value)
