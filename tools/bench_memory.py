"""Resident memory of every replica over a long bench run (tools only, not part of `pbft`).

    .venv/bin/python tools/bench_memory.py [--clients 8] [--duration 600] [--every 30]
        [--f 1] [--json FILE]

Runs `pbft.cluster.bench.run_once` (real processes, TLS, storage) and, once the window
opens, reads each replica's VmRSS from /proc every `--every` seconds. Prints one row per
sample and, per replica, the growth after the warm-up (the first sample at or after
`--every` seconds, when the caches have filled) as MiB per minute, fitted by least
squares over the remaining samples: "memory flat" (issue 7) means that slope stays near
zero over ten minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_mib_per_min(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) points, in MiB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mx) * (v - my) for t, v in points)
    return cov / var * 60 / 1024


def main() -> int:
    from pbft.cluster.bench import run_once

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--f", type=int, default=1)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--every", type=float, default=30.0)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    samples: dict[int, list[tuple[float, int]]] = {}
    stop = threading.Event()

    def attach(cluster):
        pids = {i: proc.pid for i, proc in cluster.procs.items()}
        t0 = time.monotonic()

        def sample() -> None:
            while True:
                now = time.monotonic() - t0
                row = []
                for i, pid in sorted(pids.items()):
                    kib = rss_kib(pid)
                    if kib is not None:
                        samples.setdefault(i, []).append((now, kib))
                        row.append(f"r{i} {kib / 1024:6.1f}")
                print(f"{now:7.1f} s  " + "  ".join(row) + "  MiB", file=sys.stderr, flush=True)
                if stop.wait(args.every):
                    return

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()

        def done() -> None:
            stop.set()
            thread.join()

        return done

    run = run_once(args.f, args.clients, args.duration, profile=attach)
    print(f"throughput {run.throughput_rps:.1f} req/s over {args.duration:g} s, "
          f"{run.requests} requests, {run.errors} errors, p50 {run.latency_ms['p50']:.2f} ms")
    report = {"throughput_rps": run.throughput_rps, "requests": run.requests, "replicas": {}}
    for i, pts in sorted(samples.items()):
        warm = [pt for pt in pts if pt[0] >= args.every - 1]
        s = slope_mib_per_min(warm)
        first, last = pts[0][1] / 1024, pts[-1][1] / 1024
        print(f"replica {i}: {first:.1f} -> {last:.1f} MiB; after warm-up {s:+.3f} MiB/min")
        report["replicas"][i] = {"rss_mib": [round(v / 1024, 2) for _, v in pts],
                                 "slope_mib_per_min": round(s, 4)}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
