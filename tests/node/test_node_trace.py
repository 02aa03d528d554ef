"""`pbft replica --trace`: four ReplicaNodes and a client in one process, each writing its
trace (pbft.node.tracing), replica 0 equivocating; then the files merged (pbft.trace.merge).
"""

from __future__ import annotations

import json
import os

import pytest
import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.errors import UsageError
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import build_node
from pbft.node.tracing import open_trace
from pbft.sim.trace import read_trace
from pbft.trace.merge import merge_files

SETTINGS = dict(checkpoint_interval=4, log_window=8, view_change_timeout_ms=300)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


async def _run(path: str, traces: dict, ops: int, behaviour: dict | None = None) -> None:
    config = load_cluster(path)
    writers = {i: open_trace(traces[i], i, config.n, config.f, [], ["alice"]) for i in config.replica_ids()}
    driver = open_trace(traces["driver"], "driver", config.n, config.f, [], ["alice"])
    try:
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                for i in config.replica_ids():
                    node = build_node(config, load_identity(config, i), i, (behaviour or {}).get(i), tracer=writers[i])
                    await nursery.start(node.run)
                async with open_client(path, "alice", timeout=20, tracer=driver) as client:
                    for k in range(ops):
                        await client.put(b"k%d" % k, b"v%d" % k)
                nursery.cancel_scope.cancel()
    finally:
        for w in [*writers.values(), driver]:
            w.close()


@pytest.mark.timeout(90)
async def test_replicas_trace_messages_events_and_lies_and_merge(tmp_path):
    path = generate_cluster(str(tmp_path / "c"), f=1, clients=["alice"], ports=free_ports(4),
                            cluster_id="tr", **SETTINGS)
    traces = {i: str(tmp_path / f"replica-{i}.jsonl") for i in range(4)} | {"driver": str(tmp_path / "driver.jsonl")}
    await _run(path, traces, 6, {0: "equivocate"})

    head = _lines(traces[1])[0]
    assert head["type"] == "header" and head["mode"] == "real" and head["node"] == 1 and head["n"] == 4
    assert isinstance(head["origin"], float)
    one = _lines(traces[1])
    types = {r["type"] for r in one}
    assert {"start", "send", "deliver", "prepared", "committed", "executed"} <= types
    sends = [r for r in one if r["type"] == "send"]
    assert all(r["from"] == 1 and "id" in r and r["size"] > 0 for r in sends)
    # A broadcast is one send per other replica; replies go to the client by name.
    assert {r["to"] for r in sends} >= {0, 2, 3, "alice"}

    byz = _lines(traces[0])
    lies = [r for r in byz if r["type"] == "send" and r.get("lie")]
    assert lies and all(r["kind"] == "PRE-PREPARE" for r in lies)
    assert all(r["lie"] == "mutated" and r["honest_digest"] != r["digest"] for r in lies)
    # What the honest core reported is marked as a faulty replica's.
    assert all(r.get("faulty") for r in byz if r["type"] in ("prepared", "committed", "executed"))

    # A restarted replica appends to its file: one header, a second start record.
    await _run(path, traces, 1)
    again = _lines(traces[1])
    assert sum(r["type"] == "header" for r in again) == 1
    assert sum(r["type"] == "start" for r in again) == 2

    out = str(tmp_path / "merged.jsonl")
    merged = merge_files(list(traces.values()), out)
    recs = list(read_trace(out))
    assert recs[0]["mode"] == "real" and recs[0]["clock_reference"] == "replica-0.jsonl"
    assert all(o["estimated"] for o in recs[0]["clock_offsets"])
    # One host, one clock: the estimates are within their bounds of 0.
    assert all(abs(o["offset_ms"]) <= o["bound_ms"] for o in recs[0]["clock_offsets"])
    assert merged.clamped == 0
    times = [r["t"] for r in recs[1:]]
    assert times == sorted(times) and times[0] == 0
    first_send: dict = {}
    for r in recs[1:]:
        key = (r.get("id"), str(r.get("from")), str(r.get("to")))
        if r["type"] == "send":
            first_send.setdefault(key, r["t"])
        elif r["type"] == "deliver" and key in first_send:
            assert r["t"] >= first_send[key]
    # The equivocation reads from the merged trace: two digests for one slot from replica 0.
    slots: dict = {}
    for r in recs:
        if r["type"] == "send" and r["kind"] == "PRE-PREPARE" and r["from"] == 0:
            slots.setdefault((r["view"], r["seq"]), set()).add(r["digest"])
    assert any(len(d) > 1 for d in slots.values())
    # The client's requests and replies are in the driver's file.
    assert any(r["type"] == "send" and r["from"] == "alice" and r["kind"] == "REQUEST" for r in recs)
    assert any(r["type"] == "deliver" and r["to"] == "alice" and r["kind"] == "REPLY" for r in recs)


def test_open_trace_refuses_another_replicas_file(tmp_path):
    path = str(tmp_path / "t.jsonl")
    open_trace(path, 1, 4, 1, [], []).close()
    with pytest.raises(UsageError, match="holds the trace of 1, not of 2"):
        open_trace(path, 2, 4, 1, [], [])
    other = tmp_path / "x.jsonl"
    other.write_text("hello\n")
    with pytest.raises(UsageError, match="not a real process's trace"):
        open_trace(str(other), 1, 4, 1, [], [])
    with pytest.raises(UsageError, match="cannot write"):
        open_trace(str(tmp_path / "no" / "t.jsonl"), 1, 4, 1, [], [])
    assert os.path.getsize(path) > 0


def test_a_restart_cuts_half_a_record_before_appending(tmp_path):
    path = tmp_path / "t.jsonl"
    open_trace(str(path), 1, 4, 1, [], []).close()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"t": 1.5, "type": "send", "fr')  # killed in the middle of a flush
    w = open_trace(str(path), 1, 4, 1, [], [])
    w.start(2.0, 1, 99, 0, 0)
    w.close()
    recs = list(read_trace(str(path)))
    assert [r["type"] for r in recs] == ["header", "start"]
