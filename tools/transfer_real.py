"""A replica that missed W writes catches up on real processes: what it moved (issue 18).

A 4-replica cluster on loopback (one process each, state in SQLite) is filled with N keys
through the protocol (`pbft bench`'s preload), replica 3 is killed, W single puts are
made (each its own batch, so that the others move several checkpoints past it), and
replica 3 is restarted on its data directory. It rolls its store back to its stable
checkpoint, learns the others are beyond its window, and fetches the stable state,
walking the partition tree. Reported: the state's bytes, the STATE-CHUNK bytes replica 3
received (its `pbft_received_bytes_total{type="state-chunk"}`), their share, and how long
the catch-up took.

    python tools/transfer_real.py [--keys 1000000] [--missed 1000] [--value-size 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request

import trio

from pbft.cluster.bench import _add_metrics, _preload
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster
from pbft.protocol import codec

CLIENTS = ["bench0", "bench1", "bench2", "bench3", "bench4", "bench5", "bench6", "bench7"]


def metric(port: int, name: str, label: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = rf"^{name}{re.escape(label)} ([0-9.e+-]+)$" if label else rf"^{name} ([0-9.e+-]+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


async def writes(path: str, count: int, value_size: int) -> None:
    async with open_client(path, "bench0", timeout=60) as client:
        for i in range(count):
            await client.execute(codec.encode(["put", b"missed/%06d" % i, b"m" * value_size]))


async def caught_up(path: str, replica: int, timeout: float) -> float:
    started = time.monotonic()
    async with open_client(path, "bench1", timeout=10) as client:
        with trio.fail_after(timeout):
            while True:
                statuses = await client.status(timeout=2)
                done = {i: s.last_executed for i, s in statuses.items()}
                if replica in done and len(done) == 4 and done[replica] == max(done.values()):
                    return time.monotonic() - started
                await trio.sleep(0.25)


def run(keys: int, missed: int, value_size: int) -> dict:
    work = tempfile.mkdtemp(prefix="pbft-transfer-")
    try:
        path = generate_cluster(os.path.join(work, "c"), f=1, clients=CLIENTS, ports=free_ports(4),
                                cluster_id="transfer-real")
        ports = _add_metrics(path, 4)
        config = load_cluster(path)
        cluster = LocalCluster(path, config, log_dir=work, data_root=os.path.join(work, "data"))
        cluster.start(timeout=30)
        try:
            preload_s = _preload(path, CLIENTS, keys, value_size, "transfer")
            # Replica 3 may have fallen behind under the preload (four replicas on this
            # machine's cores): it must hold the state before it misses the writes.
            trio.run(caught_up, path, 3, 900)
            trio.run(writes, path, 300, value_size)  # past a checkpoint it took itself
            cluster.kill(3)
            t0 = time.monotonic()
            trio.run(writes, path, missed, value_size)
            writes_s = time.monotonic() - t0
            cluster.restart(3)  # a new process: its counters start at 0
            catch_up_s = trio.run(caught_up, path, 3, 600)
            moved = metric(ports[3], "pbft_received_bytes_total", '{type="state-chunk"}')
            answers = metric(ports[3], "pbft_messages_in_total", '{type="state-chunk"}')
            transfers = metric(ports[3], "pbft_state_transfer")
        finally:
            cluster.stop()
        state_bytes = keys * (len(b"pre/%09d" % 0) + 1 + value_size) + missed * (len(b"missed/000000") + 1 + value_size)
        return {
            "keys": keys, "missed_writes": missed, "value_size": value_size, "state_bytes": state_bytes,
            "moved_bytes": int(moved), "moved_share": round(moved / state_bytes, 5), "answers": int(answers),
            "transfer_running_at_end": int(transfers), "preload_s": round(preload_s, 1),
            "writes_s": round(writes_s, 1), "catch_up_s": round(catch_up_s, 1),
        }
    finally:
        if os.environ.get("PBFT_TRANSFER_KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--missed", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = run(a.keys, a.missed, a.value_size)
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"state      {r['keys']} keys of {r['value_size']} B + {r['missed_writes']} missed writes: "
              f"{r['state_bytes'] / 1e6:.1f} MB (preloaded in {r['preload_s']} s)")
        print(f"moved      {r['moved_bytes'] / 1e6:.2f} MB in {r['answers']} STATE-CHUNKs to replica 3 "
              f"({100 * r['moved_share']:.2f}% of the state)")
        print(f"catch-up   {r['catch_up_s']} s after its restart (the missed writes took {r['writes_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
