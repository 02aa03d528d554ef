"""The viewer's model of a trace (pbft.trace.model): pairing, lies, equivocations,
certificates, bands, the violation, and tolerance of what it does not know."""

from __future__ import annotations

import json

import pytest
import viewer_traces

from pbft.errors import UsageError
from pbft.trace.model import Fate, LaneKind, Lie, build, from_records

HEADER = {"type": "header", "version": 1, "scenario": "s", "seed": 1, "n": 4, "f": 1,
          "byzantine": [0], "clients": ["c0"], "mode": "sim"}


def send(t, src, dst, mid, kind="PREPARE", **kw):
    return {"t": t, "type": "send", "from": src, "to": dst, "kind": kind, "id": mid, "size": 100, **kw}


def deliver(t, src, dst, mid, kind="PREPARE"):
    return {"t": t, "type": "deliver", "from": src, "to": dst, "kind": kind, "id": mid}


def test_lanes_are_replicas_then_clients_with_the_byzantine_ones_marked():
    m = from_records([HEADER])
    assert [(lane.name, lane.kind, lane.byzantine) for lane in m.lanes] == [
        ("0", LaneKind.REPLICA, True), ("1", LaneKind.REPLICA, False), ("2", LaneKind.REPLICA, False),
        ("3", LaneKind.REPLICA, False), ("c0", LaneKind.CLIENT, False)]


def test_sends_pair_with_delivers_first_in_first_out_and_the_rest_are_lost():
    m = from_records([HEADER, send(1, 1, 2, "a"), send(2, 1, 2, "a"), send(2, 1, 3, "b"),
                      deliver(3, 1, 2, "a"), deliver(5, 1, 2, "a"), {"t": 9, "type": "end"}])
    assert [(a.t0, a.t1, a.fate) for a in m.arrows] == [
        (1, 3, Fate.DELIVERED), (2, 5, Fate.DELIVERED), (2, 9, Fate.LOST)]


def test_drops_duplicates_and_delays_end_or_extend_their_message():
    m = from_records([
        HEADER, send(1, 1, 2, "a"),
        {"t": 1, "type": "drop", "from": 1, "to": 2, "kind": "PREPARE", "id": "a", "reason": "partition", "fault": 0},
        send(2, 1, 3, "b"),
        {"t": 2, "type": "delay", "from": 1, "to": 3, "kind": "PREPARE", "id": "b", "ms": 7, "reordered": False,
         "faults": [0]},
        {"t": 2, "type": "duplicate", "from": 1, "to": 3, "kind": "PREPARE", "id": "b", "copies": 2, "arrive": [9, 11]},
        deliver(9, 1, 3, "b"), deliver(11, 1, 3, "b")])
    dropped, first, copy = m.arrows
    assert dropped.fate is Fate.DROPPED and dropped.extra["reason"] == "partition"
    assert (first.t1, first.copy, first.extra["delay_ms"]) == (9, 0, 7)
    assert (copy.t0, copy.t1, copy.copy, copy.fate) == (2, 11, 1, Fate.DELIVERED)


def test_a_mutated_message_names_the_honest_one_and_an_equivocation_groups_the_digests():
    m = from_records([
        HEADER,
        send(1, 0, 1, "h", "PRE-PREPARE", view=0, seq=1, digest="9055dfe4"),
        send(1, 0, 2, "m", "PRE-PREPARE", view=0, seq=1, digest="76be8b52", lie="mutated", honest="h",
             honest_digest="9055dfe4"),
        send(1, 0, 3, "m", "PRE-PREPARE", view=0, seq=1, digest="76be8b52", lie="mutated", honest="h",
             honest_digest="9055dfe4"),
        send(2, 0, 1, "f", "PREPARE", view=0, seq=2, digest="aa", lie="forged"),
        send(2, 1, 2, "x", "PREPARE", view=0, seq=1, digest="9055dfe4")])
    assert [a.lie for a in m.arrows] == [Lie.NONE, Lie.MUTATED, Lie.MUTATED, Lie.FORGED, Lie.NONE]
    assert (m.arrows[1].honest, m.arrows[1].honest_digest) == ("h", "9055dfe4")
    (eq,) = m.equivocations
    assert (eq.t, eq.lane, eq.kind, eq.view, eq.seq, eq.arrows) == (1, 0, "PRE-PREPARE", 0, 1, (0, 1, 2))
    assert eq.label == "equivocation: PRE-PREPARE v0 n1: 9055dfe4 \u2260 76be8b52"


def test_a_certificate_is_what_the_replica_had_received_and_sent_by_then():
    slot = {"view": 0, "seq": 1, "digest": "d1"}
    m = from_records([
        HEADER,
        send(1, 0, 3, "pp", "PRE-PREPARE", **slot), deliver(2, 0, 3, "pp", "PRE-PREPARE"),
        send(2, 3, 1, "p3", **slot),
        send(2, 1, 3, "p1", **slot), deliver(3, 1, 3, "p1"),
        send(2, 2, 3, "p2", **slot), deliver(3, 2, 3, "p2"),
        send(2, 2, 3, "p2x", view=0, seq=1, digest="other"), deliver(3, 2, 3, "p2x"),  # another digest
        {"t": 3, "type": "prepared", "replica": 3, **slot},
        send(3, 0, 3, "late", **slot), deliver(4, 0, 3, "late"),  # after the event
    ])
    (cert,) = m.certificates
    assert m.marks[cert.mark].type == "prepared"
    assert [m.arrows[i].id for i in cert.arrows] == ["pp", "p3", "p1", "p2"]
    assert cert.votes == 4  # the primary's pre-prepare, its own prepare, two received


def test_bands_for_view_changes_crashes_and_client_operations():
    m = from_records([
        HEADER,
        {"t": 1, "type": "submit", "client": "c0", "timestamp": 1, "op": "put k v", "read_only": False},
        {"t": 2, "type": "view-change-started", "replica": 2, "view": 1},
        {"t": 3, "type": "crash", "replica": 1},
        {"t": 5, "type": "view-installed", "replica": 2, "view": 1, "primary": 1},
        {"t": 6, "type": "complete", "client": "c0", "timestamp": 1, "result": "ok"},
        {"t": 7, "type": "view-change-started", "replica": 3, "view": 2},
        {"t": 9, "type": "end"}])
    bands = {(b.kind, b.lane, b.t0, b.t1, b.open) for b in m.bands}
    assert bands == {("op", 4, 1, 6, False), ("view-change", 2, 2, 5, False), ("down", 1, 3, 9, True),
                     ("view-change", 3, 7, 9, True)}
    assert next(b for b in m.bands if b.kind == "op").label == "put k v \u2192 ok"


def test_unknown_records_and_fields_are_ignored_and_a_real_trace_reads():
    header = {**HEADER, "mode": "real", "future": [1, 2]}
    m = from_records([header, {"t": 1700000000000.5, "type": "send", "from": 1, "to": 2, "kind": "PREPARE",
                               "id": "a", "replica": 1, "new-field": {"x": 1}},
                      {"t": 1700000000001, "type": "gossip", "what": "?"},
                      {"t": 1700000000002, "type": "deliver", "from": 1, "to": 2, "kind": "PREPARE", "id": "a",
                       "replica": 2},
                      {"t": 1700000000003, "type": "deliver", "from": 3, "to": 2, "kind": "COMMIT", "id": "b"},
                      {"type": "send"}, {"t": 5, "type": "send", "from": [1], "to": 2, "id": "z"}])
    assert m.ignored == 3
    assert m.t_start == 1700000000000.5
    a, unsent = m.arrows
    assert a.fate is Fate.DELIVERED and a.extra["new-field"] == {"x": 1}
    assert unsent.extra == {"unsent": True} and unsent.t0 == unsent.t1


def test_the_equivocation_scenario_gives_its_two_slots_lies_and_certificates():
    m = build(str(viewer_traces.equivocate()))
    assert [(e.kind, e.view, e.seq, e.lane) for e in m.equivocations] == [
        ("PRE-PREPARE", 0, 1, 0), ("PRE-PREPARE", 0, 2, 0)]
    assert all(a.fate is Fate.DELIVERED for a in m.arrows)
    mutated = [a for a in m.arrows if a.lie is Lie.MUTATED]
    assert mutated and all(a.src == 0 and a.honest for a in mutated)
    assert len(m.certificates) == sum(1 for x in m.marks if x.type in ("prepared", "committed"))
    # a correct replica's commits are backed by a quorum (2f+1 = 3) of distinct replicas
    committed = [c for c in m.certificates if m.marks[c.mark].type == "committed"
                 and not m.marks[c.mark].fields.get("faulty")]
    assert committed and all(c.votes >= 3 for c in committed)
    assert m.violations == [] and m.end and m.end["verdict"] == "PASS"


def test_the_broken_core_run_has_its_violation():
    m = build(str(viewer_traces.violation()))
    (v,) = m.violations
    assert (v.t, v.check) == (4, "prepared-uniqueness") and "prepared different digests" in v.detail
    assert any(x.type == "violation" and x.lane == -1 for x in m.marks)


@pytest.mark.parametrize("text", ["", "not json\n", json.dumps({"type": "send"}) + "\n",
                                  json.dumps({**HEADER, "version": 99}) + "\n"])
def test_a_file_that_is_not_a_trace_is_one_usage_error(tmp_path, text):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(UsageError) as info:
        build(str(p))
    assert "\n" not in str(info.value)
