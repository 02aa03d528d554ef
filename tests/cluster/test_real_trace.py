"""Traces of real processes: `pbft scenario run --real --trace` (one merged trace of every
replica process and the driver) and `pbft trace merge` of the per-replica files of a
LocalCluster (`pbft replica --trace`), a Byzantine primary equivocating in both."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio

from pbft.cli.main import main
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster
from pbft.sim.trace import read_trace

SCENARIOS = Path(__file__).parents[1] / "scenarios"
HARD_TIMEOUT_S = 60


def equivocations(recs: list[dict]) -> dict[tuple[int, int], set[str]]:
    """(view, seq) -> the digests replica 0 sent PRE-PREPAREs with, where more than one."""
    slots: dict[tuple[int, int], set[str]] = {}
    for r in recs:
        if r["type"] == "send" and r["kind"] == "PRE-PREPARE" and r["from"] == 0:
            slots.setdefault((r["view"], r["seq"]), set()).add(r["digest"])
    return {k: v for k, v in slots.items() if len(v) > 1}


@pytest.mark.timeout(HARD_TIMEOUT_S + 10)
def test_real_scenario_run_writes_one_merged_trace(tmp_path):
    out = tmp_path / "real.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(SCENARIOS / "real-equivocate-long-window.toml"),
         "--real", "--trace", str(out)],
        capture_output=True, text=True, timeout=HARD_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"trace: {out}" in proc.stdout
    recs = list(read_trace(str(out)))
    head = recs[0]
    assert head["mode"] == "real" and head["n"] == 4 and head["byzantine"] == [0] and head["seed"] == 1
    assert {"c0", "c1", "c2"} <= set(head["clients"])
    assert {o["source"] for o in head["clock_offsets"]} == {"driver.jsonl", *(f"replica-{i}.jsonl" for i in range(4))}
    assert head["clamped"] == 0
    types = Counter(r["type"] for r in recs)
    assert types["submit"] == types["complete"] == 60
    assert types["start"] == 4 and types["executed"] > 0 and types["view-installed"] > 0
    # Every replica's messages, sent and delivered, and the clients'.
    assert {r["from"] for r in recs if r["type"] == "send"} >= {0, 1, 2, 3, "c0", "c1", "c2"}
    assert {r["to"] for r in recs if r["type"] == "deliver"} >= {0, 1, 2, 3, "c0", "c1", "c2"}
    # The primary's equivocating PRE-PREPAREs are marked as lies, and the equivocation
    # (two digests for one slot from one sender) reads from the trace.
    lies = [r for r in recs if r["type"] == "send" and r.get("lie")]
    assert lies and all(r["from"] == 0 and r["kind"] == "PRE-PREPARE" and r["lie"] == "mutated" for r in lies)
    split = equivocations(recs)
    assert split
    assert any((r["view"], r["seq"]) in split for r in lies)
    end = recs[-1]
    assert end["type"] == "end" and end["verdict"] == "PASS" and end["requests_completed"] == 60
    assert end["delivered"] == types["deliver"]
    times = [r["t"] for r in recs[1:]]
    assert times == sorted(times)


@pytest.mark.timeout(HARD_TIMEOUT_S)
def test_replica_processes_trace_and_merge(tmp_path):
    path = generate_cluster(str(tmp_path / "c"), f=1, clients=["alice"], ports=free_ports(4), cluster_id="rt",
                            checkpoint_interval=50, log_window=100, view_change_timeout_ms=500)
    config = load_cluster(path)
    traces = tmp_path / "traces"
    traces.mkdir()
    cluster = LocalCluster(path, config, behaviours={0: "equivocate"}, log_dir=str(tmp_path / "logs"),
                           trace_dir=str(traces))

    async def work(n: int) -> None:
        async with open_client(path, "alice", timeout=20) as client:
            for k in range(n):
                await client.put(b"k%d" % k, b"v")

    try:
        cluster.start()
        trio.run(work, 8)
        cluster.stop_replica(2)  # SIGTERM: it flushes its trace and says it stopped
        cluster.spawn(2)
        cluster.wait_ready([2])
        trio.run(work, 2)
    finally:
        cluster.stop()
    files = sorted(str(p) for p in traces.iterdir())
    assert [Path(f).name for f in files] == [f"replica-{i}.jsonl" for i in range(4)]
    two = list(read_trace(files[2]))
    assert sum(r["type"] == "start" for r in two) == 2  # the restart appended
    out = tmp_path / "merged.jsonl"
    assert main(["trace", "merge", *files, "-o", str(out)]) == 0
    recs = list(read_trace(str(out)))
    assert recs[0]["byzantine"] == [0] and recs[0]["clamped"] == 0
    assert {r["from"] for r in recs if r["type"] == "send"} >= {0, 1, 2, 3}
    assert any(r.get("lie") == "mutated" and r["kind"] == "PRE-PREPARE" for r in recs)
    assert equivocations(recs)
