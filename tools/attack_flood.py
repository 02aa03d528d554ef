"""One valid client floods a real cluster: what happens to the other clients.

Usage: .venv/bin/python tools/attack_flood.py [--runs 2] [--duration 20] [--honest 4]
           [--rate 2000] [--target primary|all|none] [--json]

Each run makes a fresh 4-replica cluster (keys, TLS, separate processes on loopback, as
`pbft bench` does) with K honest closed-loop clients (one put outstanding each, in one
worker process: `pbft.cluster.bench._worker_main`) and one flooding client in a process
of its own. The flooder is a valid member: it signs write requests with increasing
timestamps and sends them open-loop (never waiting for a reply) at --rate per second, to
the primary of view 0 only (`--target primary`) or to every replica (`--target all`);
`--target none` is the baseline without a flood.

Reported for the honest clients: completed requests, latency p50/p99/max (requests still
outstanding when the window closes are not counted, but `stuck` says how many clients
had one); for the cluster: view changes started (distinct views named by "view change to
view N started" in the replicas' logs) and the final view of each replica; for the
flooder: requests sent and accepted (f+1 matching replies) per second. The last line of
each run is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pbft.cluster.bench import _worker_main, percentile  # noqa: E402
from pbft.cluster.keygen import generate_cluster  # noqa: E402
from pbft.cluster.launcher import LocalCluster, free_ports  # noqa: E402
from pbft.node.clusterfile import load_cluster  # noqa: E402

FLOODER = "flood0"
WARMUP_S = 1.0
"""The flooder connects and waits this long before the window opens."""


def _flood_main(conn, cluster_path: str, rate: float, target: str) -> None:
    import trio

    try:
        conn.send(("done", trio.run(_flood, conn, cluster_path, rate, target)))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


async def _flood(conn, cluster_path: str, rate: float, target: str):
    import functools

    import trio

    from pbft.node import tls
    from pbft.node.clusterfile import load_identity
    from pbft.node.transport import Transport
    from pbft.protocol.crypto import seal
    from pbft.protocol.messages import Reply, Request, decode_envelope
    from pbft.service.kv import op_put

    config = load_cluster(cluster_path)
    identity = load_identity(config, FLOODER)
    replies: dict[int, set[int]] = {}
    accepted = [0]

    class Counting:
        def send_nowait(self, event) -> None:
            try:
                _, msg = decode_envelope(event.data)
            except Exception:
                return
            if isinstance(msg, Reply):
                got = replies.setdefault(msg.timestamp, set())
                got.add(msg.replica)
                if len(got) == config.f + 1:
                    accepted[0] += 1

        async def send(self, event) -> None:
            self.send_nowait(event)

    transport = Transport(
        config, FLOODER, server_context=None, client_context=tls.client_context(identity),
        identify=functools.partial(tls.peer_id, config), inbox=Counting(), autoflush=False,
    )
    ts = time.time_ns() // 1000
    op = op_put(b"flood/k", b"v" * 64)
    sent = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        conn.send(("ready",))
        _, start, end = await trio.to_thread.run_sync(conn.recv)
        await trio.sleep(max(0.0, start - time.monotonic()))
        accepted0 = accepted[0]
        step = 0.005
        t0 = time.monotonic()
        while target != "none" and time.monotonic() < end:
            due = int((time.monotonic() - t0) * rate) - sent
            for _ in range(max(0, due)):
                ts += 1
                data = seal(identity.key, config.cluster_id, FLOODER, Request(op, ts, FLOODER, False)).to_bytes()
                if target == "all":
                    for r in config.replica_ids():
                        transport.send(r, data)
                else:
                    transport.send(0, data)
                sent += 1
            transport.flush()
            await trio.sleep(step)
        await trio.sleep(max(0.0, end - time.monotonic()))
        nursery.cancel_scope.cancel()
    return {"sent": sent, "accepted": accepted[0] - accepted0,
            "dropped": transport.counters["dropped-queue-full"]}


def _views_started(path: str) -> set[int]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return set()
    return {int(v) for v in re.findall(r"view change to view (\d+) started", text)}


def run_once(honest: int, duration: float, rate: float, target: str, profile: str | None = None) -> dict:
    names = [f"bench{i}" for i in range(honest)]
    workdir = tempfile.mkdtemp(prefix="pbft-flood-")
    ctx = multiprocessing.get_context("spawn")
    procs, conns = [], []
    cluster = None
    try:
        path = generate_cluster(workdir, f=1, clients=[*names, FLOODER], ports=free_ports(4),
                                cluster_id="flood", force=True, checkpoint_interval=128)
        config = load_cluster(path)
        cluster = LocalCluster(path, config, log_dir=workdir, log_level="info")
        cluster.start()
        for target_fn, args in ((_worker_main, (path, names, 0.0)), (_flood_main, (path, rate, target))):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=target_fn, args=(child, *args), daemon=True)
            p.start()
            child.close()
            procs.append(p)
            conns.append(parent)
        for c in conns:
            while (msg := c.recv())[0] == "progress":
                pass
            if msg[0] != "ready":
                raise RuntimeError(f"a worker failed: {msg}")
        time.sleep(WARMUP_S)
        start = time.monotonic() + 0.2
        end = start + duration
        for c in conns:
            c.send(("go", start, end))
        spy = None
        if profile:  # py-spy on the primary for the middle of the window
            import subprocess

            time.sleep(min(3.0, duration / 4))
            spy = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--nonblocking",
                 "-f", "raw", "-d", str(int(duration / 2)), "-o", profile, "-p", str(cluster.procs[0].pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        results = []
        for c in conns:
            while True:
                msg = c.recv()
                if msg[0] == "progress":
                    continue
                if msg[0] != "done":
                    raise RuntimeError(f"a worker failed: {msg}")
                results.append(msg[1])
                break
        if spy is not None:
            spy.wait()
        views = sorted(set().union(*(_views_started(cluster.log_path(i)) for i in range(4))))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    honest_res, flood_res = results
    lat = sorted(x * 1000 for x in honest_res["latencies"])
    return {
        "target": target,
        "rate": rate,
        "honest_clients": honest,
        "duration_s": duration,
        "completed": len(lat),
        "honest_rps": round(len(lat) / duration, 1),
        "latency_ms": {
            "p50": round(percentile(lat, 50), 1),
            "p99": round(percentile(lat, 99), 1),
            "max": round(lat[-1], 1) if lat else None,
        },
        "errors": honest_res["errors"],
        "view_changes": len(views),
        "views_started": views,
        "flood_sent_rps": round(flood_res["sent"] / duration, 1),
        "flood_accepted_rps": round(flood_res["accepted"] / duration, 1),
        "flood_dropped_frames": flood_res["dropped"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--honest", type=int, default=4)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--target", choices=("primary", "all", "none"), default="all")
    p.add_argument("--json", action="store_true", help="print only the JSON lines")
    p.add_argument("--profile", help="py-spy the primary into this file (raw/collapsed format)")
    args = p.parse_args()
    maxes = []
    for i in range(args.runs):
        r = run_once(args.honest, args.duration, args.rate, args.target, args.profile)
        maxes.append(r["latency_ms"]["max"] or 0)
        if not args.json:
            lm = r["latency_ms"]
            print(
                f"run {i + 1}: flood {r['target']} {r['flood_sent_rps']:.0f} req/s sent, "
                f"{r['flood_accepted_rps']:.0f} accepted | honest {r['completed']} done "
                f"({r['honest_rps']}/s) p50 {lm['p50']} p99 {lm['p99']} max {lm['max']} ms | "
                f"view changes {r['view_changes']}",
                file=sys.stderr,
            )
        print(json.dumps(r), flush=True)
    if args.runs > 1 and not args.json:
        print(f"median of max latency: {statistics.median(maxes):.1f} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
