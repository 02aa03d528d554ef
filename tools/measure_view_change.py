"""How long a crashed primary stalls a real cluster: kill -> first request committed in the
new view.

Usage: .venv/bin/python tools/measure_view_change.py [--runs 5] [--timeout-ms 500]
           [--clients 2] [--client-retransmit-ms MS] [--json]

Each run makes a fresh 4-replica cluster (keys, TLS, separate processes on loopback) with
`view_change_timeout_ms` = --timeout-ms, runs closed-loop writers for a warm-up second,
SIGKILLs the primary (replica 0) and records, against the kill time:

* client  first put that completes after the kill (it may still be a view-0 request the
          backups finish without the primary)
* client  first put that completes in view >= 1 (the client learnt the view from f+1
          replies): the figure this tool is about
* logs    each surviving replica's "view change to view 1 started" and "view 1 installed"
          (JSON log lines, wall-clock timestamps; the earliest and latest replica)

What to expect (OSDI'99 4.4 plus the ordering timer): a client sends a request to the
primary only and retransmits to every replica after view_change_timeout_ms / 4
(ClientCore, doubling afterwards); a backup that hears of a request expects it in a
pre-prepare within T / 2 (reminding the primary half-way) and executed within T. So a
request submitted just after the kill commits after roughly T/4 (client) + T/2 (ordering
timer) + the view change itself; a request submitted shortly before the kill, less.
`--client-retransmit-ms` overrides the
client's first retransmission timeout to show how much of the stall is the client's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pbft.cluster.keygen import generate_cluster  # noqa: E402
from pbft.cluster.launcher import LocalCluster, free_ports  # noqa: E402
from pbft.node.client import open_client  # noqa: E402
from pbft.node.clusterfile import load_cluster  # noqa: E402

WARMUP_S = 1.0
AFTER_S = 0.3
"""Keep the workload going this long after the first view-1 commit (logs settle)."""
RUN_LIMIT_S = 60.0


async def workload(path: str, clients: list[str], kill, retransmit_ms: int | None, tick_ms: int):
    """Closed-loop puts; kill the primary after WARMUP_S; return the timings (wall clock)."""
    t: dict[str, float | None] = {"kill": None, "first_after": None, "first_new_view": None}
    stop = trio.Event()

    async def writer(name: str) -> None:
        async with open_client(path, name, timeout=RUN_LIMIT_S) as client:
            if retransmit_ms is not None:
                client.core.retransmit_ticks = max(1, retransmit_ms // tick_ms)
            j = 0
            while not stop.is_set():
                await client.put(name.encode(), b"%d" % j)
                j += 1
                now = time.time()
                if t["kill"] is not None and now > t["kill"]:
                    if t["first_after"] is None:
                        t["first_after"] = now
                    if client.core.view >= 1 and t["first_new_view"] is None:
                        t["first_new_view"] = now
                        await trio.sleep(AFTER_S)
                        stop.set()

    async def killer() -> None:
        await trio.sleep(WARMUP_S)
        t["kill"] = time.time()
        kill()

    with trio.fail_after(RUN_LIMIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(killer)
            for name in clients:
                nursery.start_soon(writer, name)
    return t


def log_times(log_path: str, needle: str) -> float | None:
    """Wall-clock time of the first JSON log line whose message contains `needle`."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if needle in line:
                    try:
                        return float(json.loads(line)["ts"])
                    except (ValueError, KeyError):
                        continue
    except OSError:
        pass
    return None


def one_run(timeout_ms: int, nclients: int, retransmit_ms: int | None) -> dict:
    workdir = tempfile.mkdtemp(prefix="pbft-vc-")
    cluster = None
    try:
        names = [f"c{i}" for i in range(nclients)]
        path = generate_cluster(
            os.path.join(workdir, "keys"),
            f=1,
            clients=names,
            ports=free_ports(4),
            cluster_id="vcmeasure",
            view_change_timeout_ms=timeout_ms,
        )
        config = load_cluster(path)
        cluster = LocalCluster(
            path, config, log_dir=workdir, log_level="info", extra_args=["--log-format", "json"]
        )
        cluster.start()
        t = trio.run(workload, path, names, lambda: cluster.kill(0), retransmit_ms, config.tick_ms)
        kill = t["kill"]
        assert kill is not None

        def ms(x: float | None) -> float | None:
            return None if x is None else round((x - kill) * 1000, 1)

        started = [log_times(cluster.log_path(i), "view change to view 1 started") for i in (1, 2, 3)]
        installed = [log_times(cluster.log_path(i), "view 1 installed") for i in (1, 2, 3)]
        started = [x for x in started if x is not None]
        installed = [x for x in installed if x is not None]
        return {
            "first_commit_after_kill_ms": ms(t["first_after"]),
            "first_commit_new_view_ms": ms(t["first_new_view"]),
            "first_view_change_started_ms": ms(min(started)) if started else None,
            "last_view_change_started_ms": ms(max(started)) if started else None,
            "first_view_installed_ms": ms(min(installed)) if installed else None,
            "last_view_installed_ms": ms(max(installed)) if installed else None,
        }
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        values = sorted(r[key] for r in runs if r[key] is not None)
        if values:
            out[key] = {
                "median": round(statistics.median(values), 1),
                "min": values[0],
                "max": values[-1],
                "n": len(values),
            }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--timeout-ms", type=int, default=500, help="view_change_timeout_ms")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--client-retransmit-ms", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run(args.timeout_ms, args.clients, args.client_retransmit_ms)
        runs.append(r)
        print(f"run {i + 1}: {r}", file=sys.stderr)
    summary = summarise(runs)
    client_rt = args.client_retransmit_ms or args.timeout_ms // 4
    if args.json:
        print(json.dumps({"view_change_timeout_ms": args.timeout_ms,
                          "client_first_retransmit_ms": client_rt,
                          "runs": runs, "summary": summary}))
        return 0
    print(
        f"view_change_timeout_ms {args.timeout_ms}, client first retransmission after "
        f"{client_rt} ms, {args.clients} clients, {args.runs} runs (ms after the kill)"
    )
    for key, s in summary.items():
        print(f"  {key:<30} median {s['median']:>8.1f}  min {s['min']:>8.1f}  max {s['max']:>8.1f}  (n={s['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
