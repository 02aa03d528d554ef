"""`pbft demo` end to end: real processes, a primary crash, a Byzantine replica, exit 0;
every figure it prints agrees with the others (one measurement each)."""

from __future__ import annotations

import re
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
    assert "view change  primary 0 killed (SIGKILL)" in out
    assert "the first request answered in the new view" in out
    assert "byzantine    30 of 30 requests" in out
    assert "requests     120 sent, 120 completed " in out
    # The header announces what the phases send, in all: the same 120.
    header = re.search(r"pbft demo: .*, (\d+) requests \((\d+) workload, (\d+) while .*, (\d+) with", result.stderr)
    assert header, result.stderr[:2000]
    total, *phases = map(int, header.groups())
    assert total == sum(phases) == 120 and phases == [60, 30, 30]
    # The view change is timed once: one figure per event, all from the same instant (a
    # request commits in the new view only once a quorum has installed it).
    times = [int(m) for m in re.findall(r"^ +(\d+) ms ", out, re.M)]
    assert len(times) == 3 and times[0] <= times[1] <= times[2] + 20, out
    assert out.count("installed") == 1, out
    assert not re.search(r"\d+ ms", result.stderr), result.stderr[-2000:]
    assert "throughput" in out and "latency ms   p50" in out
    rows = [line.split() for line in out.splitlines() if line[:7].strip() in {"0", "1", "2", "3"}]
    assert len(rows) == 4, out
    # The survivors moved to view >= 1 (the restarted replica follows when it catches up).
    assert all(int(row[1]) >= 1 for row in rows if row[0] != "0"), out
    assert "check        every get returned the last value put: ok" in out
    assert "FAILED" not in out
