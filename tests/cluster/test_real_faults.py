"""`pbft scenario run FILE --real` applies the whole scenario to real processes: link
faults (partition, filtered drop, delay, reorder, duplicate, one-way) through the
link-fault layer of every sender (pbft.node.linkfaults), a twin as a second process with
the same identity, a Byzantine client as a real client over TLS; and what it cannot apply
makes the verdict INCOMPLETE (exit 1), never PASS.

Each run is a subprocess of the CLI with a hard timeout; the scenarios are small so that
each takes a few seconds. Nothing here asserts timings: only verdicts, views and counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pbft.cluster.realscenario import unapplied
from pbft.sim.result import RunResult
from pbft.sim.scenario import load_scenario, parse_scenario

SCENARIOS = Path(__file__).parents[1] / "scenarios"
HARD_TIMEOUT_S = 60
"""Each run takes a few seconds; this only stops a hung one."""

PARTITION_PRIMARY = """
name = "real: the primary cut off from every backup for 1.5 s"
f = 1
seed = 7
[workload]
clients = 2
requests = 20
[[network]]
at_ms = 0
until_ms = 1500
partition = [[0], [1, 2, 3]]
[expect]
safety = true
all_requests_complete = true
max_view_changes = 3
"""

LINK_FAULTS = """
name = "real: COMMITs 2 -> 1 dropped for seqs 5..20; delay, reorder, duplicate, one-way"
f = 1
seed = 3
[workload]
clients = 2
requests = 20
[[network]]
drop = 1.0
kinds = ["COMMIT"]
from = [2]
to = [1]
seqs = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
[[network]]
delay_ms = 5
jitter_ms = 10
until_ms = 1500
[[network]]
reorder = 0.3
reorder_ms = 30
[[network]]
duplicate = 0.3
[[network]]
one_way = [0, 3]
until_ms = 1000
[expect]
safety = true
all_requests_complete = true
max_view_changes = 0
"""

TWIN_CRASH = """
name = "a twin that is also crashed: not applicable to real processes"
f = 1
seed = 2
[workload]
clients = 1
requests = 4
[[network]]
twin = 3
[[network]]
crash = 3
at_ms = 100
until_ms = 300
[expect]
safety = true
all_requests_complete = true
"""


def pbft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True, timeout=HARD_TIMEOUT_S
    )


def run(path: Path, real: bool = True) -> tuple[int, dict]:
    proc = pbft("scenario", "run", str(path), "--json", *(["--real"] if real else []))
    assert proc.stdout.strip(), proc.stderr[-3000:]
    (result,) = json.loads(proc.stdout)
    return proc.returncode, result


def passes(path: Path) -> dict:
    code, r = run(path)
    assert code == 0 and r["verdict"] == "PASS", json.dumps(r, indent=1)[-4000:]
    assert r["requests_completed"] == r["requests_total"] > 0
    # The same scenario in the simulator: the same verdict.
    sim_code, sim = run(path, real=False)
    assert sim_code == 0 and sim["verdict"] == "PASS", sim["violations"]
    return r


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_partition_isolating_the_primary_changes_the_view_on_real_processes(tmp_path):
    r = passes(write(tmp_path, PARTITION_PRIMARY))
    assert r["view_changes"] >= 1
    assert all(rep["view"] >= 1 for rep in r["replicas"] if rep["reachable"])
    lf = r["link_faults"]
    assert lf["dropped"] > 0 and lf["entries"][0]["messages"] == lf["dropped"]
    assert lf["entries"][0]["fault"] == "partition 0 | 1,2,3 from 0 ms until 1500 ms"


def test_filtered_drop_delay_reorder_duplicate_and_one_way_apply(tmp_path):
    r = passes(write(tmp_path, LINK_FAULTS))
    lf = r["link_faults"]
    assert lf["dropped"] > 0 and lf["delayed"] > 0 and lf["reordered"] > 0 and lf["duplicated"] > 0
    # Every entry acted on some messages: the filtered COMMIT drop, the delay, the
    # reordering, the duplication and the one-way cut.
    assert [e["messages"] > 0 for e in lf["entries"]] == [True] * 5, lf["entries"]
    assert lf["entries"][0]["fault"] == "drop 1.0 (filtered) from 0 ms"
    assert r["view_changes"] == 0


def test_twin_runs_as_a_second_real_process():
    r = passes(SCENARIOS / "twin-backup.toml")
    (line,) = r["applied"]
    assert line.startswith("replica 3's twin ran as a second process on 127.0.0.1:")
    executed = int(line.rsplit("last executed ", 1)[1].rstrip(")"))
    assert executed > 0  # the twin got the others' messages and executed
    first = next(rep for rep in r["replicas"] if rep["id"] == 3)
    assert first["byzantine"] and first["last_executed"] > 0  # and so did the first process


def test_byzantine_client_runs_on_a_real_client():
    r = passes(SCENARIOS / "byz-client-replay.toml")
    (line,) = r["applied"]
    assert line.startswith("client c1 ran client-replay on a real client: ")
    assert int(line.split(": ", 1)[1].split()[0]) > 0  # frames it sent over TLS
    # Only the two correct clients' operations are counted and checked.
    assert r["requests_total"] == 2 * 20


def test_what_cannot_be_applied_is_incomplete_never_pass(tmp_path):
    path = write(tmp_path, TWIN_CRASH)
    assert unapplied(load_scenario(str(path))) == [
        "[[network]] crash of replica 3 at 100 ms until 300 ms: not applied on real processes "
        "(replica 3 has a twin)"
    ]
    proc = pbft("scenario", "run", str(path), "--real")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("INCOMPLETE: [[network]] crash of replica 3"), proc.stdout
    assert any(line.startswith("INCOMPLETE a twin that is also crashed") for line in lines), proc.stdout
    code, r = run(path)
    assert code == 1 and r["verdict"] == "INCOMPLETE" and not r["passed"]
    assert r["incomplete"] == unapplied(load_scenario(str(path)))


def test_unapplied_planning():
    def scenario(network: list[dict], byzantine: list[dict] | None = None):
        return parse_scenario({"network": network, "byzantine": byzantine or []})

    # Everything else is applied: link faults with filters and windows, crashes (timed
    # and triggered), twins, replica and client behaviours.
    assert unapplied(scenario(
        [
            {"partition": [[0], [1, 2, 3, "c0"]], "at_ms": 10, "until_ms": 20},
            {"drop": 0.5, "kinds": ["COMMIT"], "from": [2], "to": [1], "views": [0], "seqs": [5]},
            {"delay_ms": 5, "jitter_ms": 2}, {"reorder": 0.1}, {"duplicate": 0.1},
            {"one_way": [0, "c1"]}, {"twin": 2}, {"crash": 1, "at_ms": 5, "until_ms": 9},
            {"crash": 3, "at_ms": 5, "on": "checkpoint", "down_ms": 5},
        ],
        [{"client": 0, "behaviour": "client-replay"}, {"replica": 0, "behaviour": "silent"}],
    )) == []
    assert unapplied(scenario([{"twin": 2}, {"crash": 2, "at_ms": 5, "on": "view-change"}])) == [
        "[[network]] crash of replica 2 on view-change from 5 ms: not applied on real processes "
        "(replica 2 has a twin)"
    ]


@pytest.mark.parametrize(
    ("violations", "incomplete", "exceeds", "verdict"),
    [
        (False, False, False, "PASS"),
        (False, True, False, "INCOMPLETE"),
        (True, True, False, "FAIL"),
        (False, True, True, "INCOMPLETE"),
        (True, False, True, "EXCEEDS"),
    ],
)
def test_verdicts(violations, incomplete, exceeds, verdict):
    from pbft.sim.oracle import Violation

    r = RunResult(
        "x", 0, [Violation("liveness", "d")] if violations else [], 0, 0, 0, [], exceeds,
        real=True, incomplete=["e"] if incomplete else [],
    )
    assert r.verdict == verdict
    assert r.passed == (verdict == "PASS")
