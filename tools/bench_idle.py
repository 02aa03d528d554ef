"""CPU an idle cluster spends (ticks, retransmission timers, STATUS) (tools only).

    .venv/bin/python tools/bench_idle.py [--f 1] [--seconds 10] [--settle 2]
        [--fsync always|batch|off]

Starts a throwaway local cluster (real processes, TLS, storage), lets it settle (links
up), then reads each replica's user+system CPU over the window and prints the cores each
one used: the cost of a replica with nothing to do.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time


def main() -> int:
    from pbft.cluster.bench import _proc_cpu_seconds
    from pbft.cluster.keygen import generate_cluster
    from pbft.cluster.launcher import LocalCluster, free_ports
    from pbft.node.clusterfile import load_cluster

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--f", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--fsync", default=None)
    args = p.parse_args()
    n = 3 * args.f + 1
    workdir = tempfile.mkdtemp(prefix="pbft-idle-")
    cluster = None
    try:
        path = generate_cluster(workdir, f=args.f, clients=["c0"], ports=free_ports(n),
                                cluster_id="idle", force=True)
        if args.fsync is not None:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f'\n[storage]\nfsync = "{args.fsync}"\n')
        cluster = LocalCluster(path, load_cluster(path))
        cluster.start()
        time.sleep(args.settle)
        before = {i: _proc_cpu_seconds(p.pid) or 0.0 for i, p in cluster.procs.items()}
        time.sleep(args.seconds)
        cores = {i: ((_proc_cpu_seconds(p.pid) or 0.0) - before[i]) / args.seconds
                 for i, p in cluster.procs.items()}
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"cores_per_replica": cores, "mean": sum(cores.values()) / len(cores)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
