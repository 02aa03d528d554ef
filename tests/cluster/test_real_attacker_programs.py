"""`pbft scenario run --real` with a user's attacker that misbehaves as a PROGRAM (ends its
process, hangs, raises in setup, switches logging off, prints): the attacker's failure
(ATTACKER-FAILED, or one sentence and exit status 2 before anything starts), never a FAIL
blaming pbft, never a hang, never a process left behind. The first tests judge the
runner's bookkeeping without processes; the last few are real runs, kept short."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from pbft.cluster.realscenario import RealRun
from pbft.sim.scenario import load_scenario

pytestmark = pytest.mark.timeout(120)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def scenario(tmp_path, extra: str = "", expect: str = ""):
    write(tmp_path, "evil.py", """
        from pbft.adversary import Behaviour


        class Nothing(Behaviour):
            pass
        """)
    return load_scenario(str(write(tmp_path, "s.toml", f"""
        name = "s"
        f = 1
        [workload]
        clients = 2
        requests = 5
        [[byzantine]]
        replica = 2
        behaviour = "evil.py:Nothing"
        {extra}
        [expect]
        max_view_changes = 0
        {expect}
        """)))


# -- the runner's bookkeeping ---------------------------------------------------------


def status(view: int = 0, executed: int = 5, stable: int = 0):
    return SimpleNamespace(view=view, last_executed=executed, stable_seq=stable)


def test_a_replica_that_did_not_answer_is_not_4294967295_view_changes(tmp_path):
    # F4: replica 3 crashed for good (no until_ms): unknown, not view -1.
    run = RealRun(scenario(tmp_path, "[[network]]\ncrash = 3\nat_ms = 100"), None)
    run.down = {3}
    r = run.result({0: status(), 1: status(), 2: status()}, time.monotonic(), [])
    assert r.view_changes == 0 and r.violations == [] and r.verdict == "PASS"
    assert not r.replicas[3].reachable
    assert any("replica 3 was down at the end" in line for line in r.applied)


def test_an_unreachable_live_correct_replica_is_said_and_fails_only_catch_up(tmp_path):
    run = RealRun(scenario(tmp_path), None)
    r = run.result({0: status(view=1), 1: status(view=1), 2: status()}, time.monotonic(), [])
    assert r.view_changes == 1 and [v.check for v in r.violations] == ["liveness"]  # max 0, one seen
    assert any("replica 3 did not answer the final status query" in line for line in r.applied)
    run = RealRun(scenario(tmp_path, expect="catch_up = true"), None)
    r = run.result({0: status(), 1: status(), 2: status()}, time.monotonic(), [])
    assert [v.check for v in r.violations] == ["liveness"]
    assert "replica 3 did not answer the final status query" in r.violations[0].detail


def test_a_faulty_replica_whose_script_ends_its_process_is_the_attackers_failure(tmp_path):
    # F2: not `exception`; a correct replica that exits still is.
    run = RealRun(scenario(tmp_path), None)
    run.cluster = SimpleNamespace(stderr_tail=lambda key: "the tail")
    run.exited(2, 7)
    assert run.violations == []
    assert run.attacker_failure_count == 1
    assert run.attacker_failures == [
        "replica 2 (running evil.py:Nothing) exited with status 7 (its behaviour ended the process)"
    ]
    run.exited(1, 1)
    assert [v.check for v in run.violations] == ["exception"]


def test_attacker_failures_are_counted_over_restarts(tmp_path):
    # F9: each process counts from 1; the last line of each is its total.
    log = tmp_path / "replica-2.log"
    line = "ERROR pbft.node: replica 2: the attacker failed ({} so far): behaviour X raised E in on_tick (x.py line 3)\n"
    first = [line.format(i) for i in range(1, 21)] + [line.format(100), line.format(137)]
    second = [line.format(i) for i in range(1, 4)] + ["INFO replica 2 stopped\n"]
    log.write_text("".join(first + second))
    run = RealRun(scenario(tmp_path), None)
    run.cluster = SimpleNamespace(keys=[0, 1, 2, 3], log_path=lambda key: str(tmp_path / f"replica-{key}.log"))
    run.note_attacker_failures()
    assert run.attacker_failure_count == 137 + 3
    assert len(run.attacker_failures) == 20


def test_a_replica_logs_its_exact_attacker_failure_count_when_it_stops(caplog):
    # F9, the replica's side: the first 20 word for word, then the total at the stop.
    from pbft.node.node import ReplicaNode

    failure = SimpleNamespace(sentence=lambda: "behaviour X raised E in on_tick (x.py line 3)")
    node = SimpleNamespace(id=2, replica=SimpleNamespace(failure_count=0, failures=[failure] * 20),
                           _attacker_failures_seen=0, _attacker_failures_logged=0,
                           _attacker_logged_at=time.monotonic())
    with caplog.at_level(logging.ERROR, logger="pbft.node"):
        node.replica.failure_count = 61
        ReplicaNode._note_attacker_failures(node)
        ReplicaNode._note_attacker_failures(node, final=True)
        ReplicaNode._note_attacker_failures(node, final=True)  # said once
    counts = [int(r.getMessage().split("(")[1].split()[0]) for r in caplog.records]
    assert counts == [*range(1, 21), 61]


# -- real runs ------------------------------------------------------------------------

EVIL = """
    import logging
    import os
    import time

    from pbft.adversary import Behaviour, ClientBehaviour

    logging.disable(logging.WARNING)  # a user quiets noisy libraries
    print("loaded")                    # a debugging print


    class OsExit(Behaviour):
        def on_send(self, out):
            if out.kind == "COMMIT" and (out.seq or 0) >= 3:
                os._exit(7)


    class SetupRaises(Behaviour):
        def setup(self):
            raise RuntimeError("boom in setup")


    class CExit(ClientBehaviour):
        k = 0

        def on_tick(self):
            self.k += 1
            if self.k > 10:
                os._exit(9)
            return []


    class CSleep(ClientBehaviour):
        # At its first tick: later, a loaded machine may end the run first (then the
        # hook never blocked, and rightly no failure is said).
        def on_tick(self):
            time.sleep(10_000)
            return []


    class CPrint(ClientBehaviour):
        def on_output(self, actions):
            print("client sends", len(actions))
            return actions
    """


def real(tmp_path, body: str, *args: str, env: dict[str, str] | None = None, timeout: float = 90):
    write(tmp_path, "evil.py", EVIL)
    toml = write(tmp_path, "real.toml", body)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(toml), "--real", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env={**os.environ, **(env or {})},
    )
    return proc, time.monotonic() - start


def leftovers(tmp_path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if str(tmp_path) in ln and "pbft" in ln]


@pytest.mark.timeout(150)
def test_real_client_attackers_that_exit_or_hang_are_the_attackers_failure(tmp_path):
    # F1: one client's hook ends its process (os._exit), another's sleeps for ever; the
    # runner is neither killed nor hung, the correct client completes, nothing is left.
    proc, took = real(tmp_path, """
        name = "client programs"
        f = 1
        seed = 4
        [workload]
        clients = 3
        requests = 15
        [[byzantine]]
        client = 1
        behaviour = "evil.py:CExit"
        [[byzantine]]
        client = 2
        behaviour = "evil.py:CSleep"
        [expect]
        max_view_changes = 0
        """, "--json", env={"PBFT_HOOK_TIMEOUT": "0.5"})
    (r,) = json.loads(proc.stdout)  # the user's print went elsewhere
    assert r["verdict"] == "ATTACKER-FAILED", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert r["violations"] == [] and r["requests_completed"] == r["requests_total"] == 15
    failures = "\n".join(r["attacker_failures"])
    assert "client c1: behaviour" in failures and "os._exit(9) in on_tick" in failures and "evil.py line" in failures
    assert "client c2: behaviour" in failures and "evil.py line" in failures
    assert took < 60
    time.sleep(0.5)
    assert leftovers(tmp_path) == []


@pytest.mark.timeout(150)
def test_real_faulty_replica_that_ends_its_process_is_attacker_failed(tmp_path):
    # F2 (and F3's logging.disable at import: the replica is still seen to start).
    proc, _ = real(tmp_path, """
        name = "replica exits"
        f = 1
        seed = 3
        [workload]
        clients = 2
        requests = 15
        [[byzantine]]
        replica = 2
        behaviour = "evil.py:OsExit"
        [expect]
        max_view_changes = 0
        """, "--json")
    (r,) = json.loads(proc.stdout)
    assert r["verdict"] == "ATTACKER-FAILED", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert r["violations"] == []
    assert r["attacker_failures"] == [
        "replica 2 (running evil.py:OsExit) exited with status 7 (its behaviour ended the process)"
    ]


@pytest.mark.timeout(60)
def test_real_replica_behaviours_are_checked_before_anything_starts(tmp_path):
    # F3: one sentence, exit status 2, as in the simulator.
    body = """
        name = "setup raises"
        f = 1
        [workload]
        clients = 1
        requests = 5
        [[byzantine]]
        replica = 2
        behaviour = "evil.py:SetupRaises"
        """
    proc, _ = real(tmp_path, body)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("pbft:")]
    assert "replica 2: behaviour evil.py:SetupRaises raised RuntimeError: boom in setup" in line
    assert "evil.py line 20) while being built." in line
    sim = subprocess.run([sys.executable, "-m", "pbft", "scenario", "run", "real.toml"],
                         capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert sim.returncode == 2 and line.split("real.toml: ", 1)[1] in sim.stderr  # the same sentence
    assert leftovers(tmp_path) == []
