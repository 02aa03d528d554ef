"""Simulator speed: fuzz runs per second of CPU time over a fixed seed set, in one process.

    python tools/bench_sim.py --f 1 --seeds 300              # the default mix, seeds 0-299
    python tools/bench_sim.py --f 2 --seeds 100 --mode mutation
    python tools/bench_sim.py --f 1 --seeds 100 --profile out.prof   # cProfile the runs too

CPU time (`time.process_time`), not wall time: the machine is shared, and a run is pure
computation in this one process. Prints one JSON line: runs, CPU seconds, runs/s and the
seeds' violations (so two builds compared on one seed set are seen to agree). Compare two
trees by running this script with PYTHONPATH pointing at each, alternately.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import sys
import time

from pbft.sim.fuzz import scenario_of
from pbft.sim.simulation import run_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=300)
    ap.add_argument("--mode", default="random", choices=("random", "mutation"))
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the runs to FILE")
    a = ap.parse_args()
    scenarios = [scenario_of(seed, a.f, a.mode) for seed in range(a.start, a.start + a.seeds)]
    prof = cProfile.Profile() if a.profile else None
    digest = hashlib.sha256()
    failed = 0
    cpu = 0.0
    for s in scenarios:
        t0 = time.process_time()
        if prof is not None:
            prof.enable()
        r = run_scenario(s)
        if prof is not None:
            prof.disable()
        cpu += time.process_time() - t0
        failed += bool(r.violations)
        digest.update(r.trace_digest.encode())
    if prof is not None:
        prof.dump_stats(a.profile)
    print(json.dumps({
        "f": a.f, "mode": a.mode, "seeds": f"{a.start}-{a.start + a.seeds - 1}", "runs": len(scenarios),
        "cpu_s": round(cpu, 2), "runs_per_cpu_s": round(len(scenarios) / cpu, 2), "violations": failed,
        "digest": digest.hexdigest()[:16],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
