"""Trace digest of every fuzz seed in a range, for checking that a refactor keeps behaviour.

    python tools/fuzz_digests.py --f 1 --start 0 --seeds 2000 > f1.json

Each line of the output is `{"seed", "passed", "check", "trace_digest"}`; two builds that
behave the same give identical files (the simulator is deterministic per seed).
"""

from __future__ import annotations

import argparse
import json
import sys

from pbft.sim.fuzz import random_scenario
from pbft.sim.simulation import run_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seeds", type=int, required=True)
    a = ap.parse_args()
    for seed in range(a.start, a.start + a.seeds):
        r = run_scenario(random_scenario(seed, a.f))
        check = r.violations[0].check if r.violations else None
        print(json.dumps({"seed": seed, "passed": not r.violations, "check": check,
                          "trace_digest": r.trace_digest}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
