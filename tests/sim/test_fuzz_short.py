"""A short fuzz campaign, judged by the oracle alone: the fuzzer's verdict on a mutant of
the core in `make mutate` (docs/mutation.md), and a cheap test of seeds the other fuzz
tests do not run.

Unlike `pbft fuzz`, it stops at the first failing seed and does not shrink it: a mutant
needs one violation to be killed, and shrinking would only spend its time budget. The
seed counts can be raised for a longer campaign (`PBFT_SHORT_FUZZ_RANDOM`,
`PBFT_SHORT_FUZZ_MUTATION`; defaults below); the seeds are fixed, so a run is the same
run every time.
"""

from __future__ import annotations

import os

import pytest

from pbft.sim.fuzz import describe, scenario_of
from pbft.sim.simulation import run_scenario

# Seeds of each mode, and where they start: the random mode's CI seeds (tests/sim/
# test_fuzz.py) are 0-59, so these come after them.
CAMPAIGNS = {
    "random": (int(os.environ.get("PBFT_SHORT_FUZZ_RANDOM", "24")), 100),
    "mutation": (int(os.environ.get("PBFT_SHORT_FUZZ_MUTATION", "24")), 0),
}


@pytest.mark.parametrize("mode", sorted(CAMPAIGNS))
def test_short_fuzz_campaign_finds_no_violation(mode):
    seeds, start = CAMPAIGNS[mode]
    for seed in range(start, start + seeds):
        s = scenario_of(seed, 1, mode)
        r = run_scenario(s)
        assert not r.violations, (
            f"{mode} seed {seed} ({describe(s)}): "
            + "; ".join(f"{v.check}: {v.detail}" for v in r.violations[:3])
        )
