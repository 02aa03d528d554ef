"""The hook watchdog in wall-clock time (red team, real processes, F5 and F12): a hook that
blocks without computing (a sleep) is stopped in the simulator too, a replica's hook is
bounded in wall-clock time, one that swallows the timeout ends its process with the
documented status, and a user's module that blocks or calls os._exit while it loads is one
sentence, not a runner that hangs or vanishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pbft.adversary.base import RUNNING, HookTimeout
from pbft.sim import watchdog
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


SLEEPY = """
    import time
    from pbft.adversary import Behaviour, Outgoing

    class SleepSend(Behaviour):
        def on_send(self, out: Outgoing) -> None:
            if out.kind == "COMMIT":
                time.sleep(10_000)
"""


def scenario(tmp_path, behaviour: str) -> str:
    return write(tmp_path / "s.toml", f"""
        name = "sleepy"
        f = 1
        seed = 5
        [workload]
        clients = 2
        requests = 3
        [[byzantine]]
        replica = 2
        behaviour = "{behaviour}"
    """)


@pytest.mark.timeout(60)
def test_a_hook_that_sleeps_is_stopped_in_the_simulator(tmp_path, monkeypatch):
    monkeypatch.setenv("PBFT_HOOK_TIMEOUT", "0.3")
    write(tmp_path / "sleepy.py", SLEEPY)
    started = time.monotonic()
    result = Simulation(load_scenario(scenario(tmp_path, "sleepy.py:SleepSend")), None).run()
    assert time.monotonic() - started < 20
    assert result.verdict == "ATTACKER-FAILED"
    first = result.attacker_failures[0]
    assert "HookTimeout: hook on_send ran for more than 0.9 s of wall-clock time" in first, first
    assert "sleepy.py line 8" in first
    assert result.requests_completed == result.requests_total
    assert signal.getsignal(signal.SIGVTALRM) in (signal.SIG_DFL, None)


@pytest.mark.timeout(30)
def test_wall_watchdog_stops_a_busy_or_blocked_hook_and_leaves_the_signal_as_found(monkeypatch):
    monkeypatch.setenv("PBFT_HOOK_TIMEOUT", "0.3")

    def spin():
        while True:
            pass

    for body in (spin, lambda: time.sleep(100)):
        started = time.monotonic()
        with watchdog.wall_watchdog(), pytest.raises(HookTimeout, match="ran for more than 0.3 s of wall-clock time"):
            RUNNING.enter("on_tick")
            try:
                body()
            finally:
                RUNNING.hook = None
        assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGVTALRM) in (signal.SIG_DFL, None)


STALLED = """
    import os, time
    os.environ["PBFT_HOOK_TIMEOUT"] = "0.3"
    from pbft.adversary.base import RUNNING, HookTimeout
    from pbft.sim import watchdog
    with watchdog.wall_watchdog(watchdog.stalled_exit):
        RUNNING.enter("on_send")
        while True:
            try:
                time.sleep(100)
            except HookTimeout:
                pass  # an attacker that swallows the timeout
"""


@pytest.mark.timeout(30)
def test_a_replica_hook_that_swallows_the_timeout_ends_the_process_with_the_documented_status(tmp_path):
    proc = subprocess.run([PY, "-c", textwrap.dedent(STALLED)], capture_output=True, text=True, timeout=20, cwd=ROOT)
    assert proc.returncode == watchdog.HOOK_STALLED_EXIT == 88
    assert "pbft: the attacker failed: hook on_send of this process's behaviour did not return" in proc.stderr


def test_loading_user_modules_refuses_os_exit_and_restores_it():
    real = os._exit
    with watchdog.loading_user_modules(), pytest.raises(watchdog.ExitCalled, match=r"os\._exit\(5\)"):
        os._exit(5)
    assert os._exit is real
    assert RUNNING.hook is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("body, flags, said", [
    ("import time\ntime.sleep(10_000)\n", (), "loading it raised HookTimeout: the module did not finish loading within 0.5 s"),
    ("import os\nos._exit(5)\n", (), "loading it raised ExitCalled: it called os._exit(5)"),
    ("import os\nos._exit(5)\n", ("--real",), "loading it raised ExitCalled: it called os._exit(5)"),
])
def test_a_module_that_blocks_or_exits_at_import_is_one_sentence(tmp_path, body, flags, said):
    (tmp_path / "bad.py").write_text(body + "from pbft.adversary import Behaviour\nclass S(Behaviour):\n    pass\n")
    path = scenario(tmp_path, "bad.py:S")
    env = dict(os.environ, PBFT_HOOK_TIMEOUT="0.5")
    proc = subprocess.run([PY, "-m", "pbft", "scenario", "run", path, *flags], capture_output=True, text=True,
                          timeout=40, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
