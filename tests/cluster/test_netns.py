"""Opt-in: a replica group over network namespaces, through tools/netns_cluster.py.

Needs root and PBFT_NETNS=1 (it creates namespaces named `pbftt-*` and veths inside them
only). Each test runs the tool's `run` as a subprocess with a hard timeout; the tool tears
its group down in a `finally`, and this test runs `down` again in its own `finally` so
nothing is left behind even if the tool itself was killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("PBFT_NETNS") != "1" or not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="network namespaces: set PBFT_NETNS=1 and run as root",
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "netns_cluster.py")
PREFIX = "pbftt-"
RUN_TIMEOUT = 150


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def _run(tmp_path, *extra: str) -> dict:
    result = tmp_path / "result.json"
    try:
        done = subprocess.run(
            [sys.executable, TOOL, "run", "--prefix", PREFIX, "--clients", "2",
             "--json", str(result), *extra],
            capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=ROOT,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(result.read_text())
    finally:
        subprocess.run([sys.executable, TOOL, "down", "--prefix", PREFIX],
                       capture_output=True, timeout=60, cwd=ROOT)
        assert _namespaces() == []


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_run_small_workload_and_clean_up(tmp_path):
    r = _run(tmp_path, "--requests", "15")
    assert r["errors"] == 0
    assert r["ops"] == 2 * 15 * 2
    assert [row["reachable"] for row in r["final_status"]] == [True] * 4


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_primary_killed_mid_run_with_delay_and_loss(tmp_path):
    r = _run(tmp_path, "--requests", "60", "--delay-ms", "5", "--loss", "0.01",
             "--kill", "0", "--kill-after", "1.5")
    assert r["errors"] == 0
    assert r["ops"] == 2 * 60 * 2
    assert r["killed_after_s"] == 1.5, "the workload ended before the kill"
    answering = [row for row in r["final_status"] if row["reachable"]]
    assert [row["id"] for row in answering] == [1, 2, 3]
    assert {row["view"] for row in answering} != {0}, "no view change after the primary died"
