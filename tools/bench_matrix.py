"""Run `pbft bench` configurations several times and print medians (tools only).

    .venv/bin/python tools/bench_matrix.py [--repeat 3] [--duration 10] [--json FILE]
        [--config NAME:f:clients[:workers][:setting=value...]]...  (fsync=off|batch|always too)

Default configurations: f=1 saturating (32 clients), f=1 with one client (latency) and
f=2 saturating. Every run is a fresh cluster (pbft.cluster.bench.run_once); the crypto
floor is timed once per run too, so `ratio` is per run. The table quotes the median of
each figure over the repeats, and the cores other processes used during the runs (a
shared machine makes absolute figures move; `ratio` and `other` say how much to trust
them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

DEFAULT = ["f1-saturate:1:32", "f1-one-client:1:1", "f2-saturate:2:32"]


def main() -> int:
    from pbft.cluster.bench import ceiling_rps, measure_crypto, run_once

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--config", action="append", default=None,
                   help="NAME:f:clients[:workers][:setting=value...], repeatable")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    rows: dict[str, list[dict]] = {}
    for spec in args.config or DEFAULT:
        name, f, clients, *rest = spec.split(":")
        settings = dict(kv.split("=") for kv in rest if "=" in kv)
        fsync = settings.pop("fsync", None)
        rest = [x for x in rest if "=" not in x]
        workers = int(rest[0]) if rest and rest[0] else None
        for r in range(args.repeat):
            cost = measure_crypto()
            run = run_once(int(f), int(clients), args.duration, workers=workers,
                           label=f"{name} #{r + 1}",
                           settings={k: int(v) for k, v in settings.items()}, fsync=fsync)
            ceiling = ceiling_rps(cost, run.n, cores)
            row = {
                "rps": run.throughput_rps,
                "p50": run.latency_ms["p50"],
                "p90": run.latency_ms["p90"],
                "p99": run.latency_ms["p99"],
                "ceiling": ceiling,
                "ratio": run.throughput_rps / ceiling,
                "verify_us": cost.t_verify * 1e6,
                "sign_us": cost.t_sign * 1e6,
                "replica_cpu": sum(run.cpu.get("replicas", [])),
                "client_cpu": run.cpu.get("workers", 0.0),
                "other_cpu": run.cpu.get("other", 0.0),
                "cpu_us_req": 1e6 * (sum(run.cpu.get("replicas", [])) + run.cpu.get("workers", 0.0))
                / max(run.throughput_rps, 1e-9),
                "workers": run.workers,
            }
            rows.setdefault(name, []).append(row)
            print(f"{name:16} #{r + 1}  " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()),
                  file=sys.stderr, flush=True)
    keys = ["rps", "p50", "p90", "p99", "ceiling", "ratio", "replica_cpu", "client_cpu", "other_cpu",
            "cpu_us_req"]
    print(f"{'config':16} {'runs':>4} " + " ".join(f"{k:>11}" for k in keys))
    medians = {}
    for name, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in keys}
        medians[name] = med
        print(f"{name:16} {len(runs):>4} " + " ".join(f"{med[k]:>11.4g}" for k in keys))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"cores": cores, "runs": rows, "medians": medians}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
