"""The durable-store comparison on real processes: a broken core that makes correct
replicas execute different batches at one seq, while every client still sees its own
writes, is caught only by reading what the replicas agreed (pbft.cluster.realcheck).

byz-bad-new-view-replace: slot 1 commits at replica 3 only, the next primary re-issues it
as a null request in its NEW-VIEW; the `new-view-not-recomputed` core installs that
NEW-VIEW, so replicas 0 and 2 execute the null request at seq 1 where replica 3 executed
the batch. The run is short (no checkpoint), so seq 1 is still in every store's window."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parents[1] / "scenarios" / "byz-bad-new-view-replace.toml"
HARD_TIMEOUT_S = 60


def run_real(*extra: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(SCENARIO), "--real", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=HARD_TIMEOUT_S,
    )
    (result,) = json.loads(proc.stdout)
    return proc.returncode, result


@pytest.mark.timeout(2 * HARD_TIMEOUT_S)
def test_new_view_not_recomputed_is_caught_by_the_durable_stores():
    code, result = run_real("--broken", "new-view-not-recomputed")
    assert result["verdict"] == "FAIL" and code != 0, result["violations"]
    checks = {v["check"] for v in result["violations"]}
    assert checks & {"agreement", "checkpoint-digests"}, result["violations"]
    detail = next(v["detail"] for v in result["violations"] if v["check"] == "agreement")
    assert "executed different batches at seq" in detail


@pytest.mark.timeout(2 * HARD_TIMEOUT_S)
def test_the_same_scenario_with_the_honest_core_passes():
    code, result = run_real()
    assert code == 0 and result["verdict"] == "PASS", result["violations"]
