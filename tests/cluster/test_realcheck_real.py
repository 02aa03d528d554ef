"""The durable-store comparison on real processes (pbft.cluster.realcheck): broken cores
that make correct replicas disagree are caught by reading what the replicas agreed,
also when every client still sees its own writes.

- byz-bad-new-view-replace + new-view-not-recomputed: slot 1 commits at replica 3 only,
  the next primary re-issues it as a null request in its NEW-VIEW, which the broken core
  installs, so replicas 0 and 2 execute the null request at seq 1 where replica 3
  executed the batch (`agreement`; the run is short, seq 1 is still in every window).
  Without the store comparison this run PASSes.
- byz-bad-digest-swap + no-digest-check: backups 2 and 3 execute another batch under the
  honest digest, so the executed digests agree but the state digests of checkpoint 8 do
  not (`checkpoint-digests`; clients see it only in some runs).
- real-equivocate-long-window + weak-prepare-quorum: backups prepare on their own vote
  for different halves' PRE-PREPAREs at seq 1; with a checkpoint interval longer than the
  run nothing truncates their prepared certificates (`prepared-uniqueness`). With the
  default interval a checkpoint deletes the evidence before the end and the run passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).parents[1] / "scenarios"
HARD_TIMEOUT_S = 60

CAUGHT = [
    ("byz-bad-new-view-replace", "new-view-not-recomputed", "agreement"),
    ("byz-bad-digest-swap", "no-digest-check", "checkpoint-digests"),
    ("real-equivocate-long-window", "weak-prepare-quorum", "prepared-uniqueness"),
]


def run_real(name: str, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(SCENARIOS / f"{name}.toml"), "--real", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=HARD_TIMEOUT_S,
    )
    (result,) = json.loads(proc.stdout)
    return proc.returncode, result


@pytest.mark.timeout(2 * HARD_TIMEOUT_S)
@pytest.mark.parametrize(("name", "broken", "check"), CAUGHT)
def test_a_broken_core_is_caught_by_the_durable_stores(name, broken, check):
    code, result = run_real(name, "--broken", broken)
    assert result["verdict"] == "FAIL" and code != 0, result["violations"]
    found = [v for v in result["violations"] if v["check"] == check]
    assert found, result["violations"]
    assert "durable stores" in found[0]["detail"]


@pytest.mark.timeout(2 * HARD_TIMEOUT_S)
@pytest.mark.parametrize("name", sorted({name for name, _, _ in CAUGHT}))
def test_the_same_scenario_with_the_honest_core_passes(name):
    code, result = run_real(name)
    assert code == 0 and result["verdict"] == "PASS", result["violations"]
