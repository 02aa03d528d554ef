"""`pbft demo` end to end: real processes, a primary crash, a Byzantine replica, exit 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_every_phase_and_exits_0():
    result = subprocess.run(
        [sys.executable, "-m", "pbft", "demo", "--requests", "60", "--clients", "3"],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, (out, result.stderr[-2000:])
    assert "workload     60 of 60 requests" in out
    assert "crash        30 of 30 requests" in out
    assert "view change  primary 0 stopped at t=" in out
    assert "first request committed after" in out
    assert "byzantine    30 of 30 requests" in out
    assert "requests     120 " in out
    assert "throughput" in out and "latency ms   p50" in out
    rows = [line.split() for line in out.splitlines() if line[:7].strip() in {"0", "1", "2", "3"}]
    assert len(rows) == 4, out
    # The survivors moved to view >= 1 (the restarted replica follows when it catches up).
    assert all(int(row[1]) >= 1 for row in rows if row[0] != "0"), out
    assert "check        every get returned the last value put: ok" in out
    assert "FAILED" not in out
