"""Process hygiene of real clusters (red team, real processes, F5 to F8): what a replica's
behaviour forks is ended with it, a second interrupt while stopping cannot leave a
replica behind, a user's `random.py` in the working directory does not break the
replicas, a replica's hook that blocks is the attacker's failure, and SIGTERM to
`pbft scenario run --real` leaves neither processes nor the cluster's temporary directory.

Real processes on 127.0.0.1; every wait has a deadline; whatever a test started is
SIGKILLed in `finally` (found by pid, or by an environment marker only its processes
carry)."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pbft.cluster import launcher
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.clusterfile import load_cluster

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def make_cluster(tmp_path, **kwargs) -> LocalCluster:
    path = generate_cluster(str(tmp_path / "c"), f=1, clients=["alice"], ports=free_ports(4),
                            cluster_id="hygiene", force=True)
    return LocalCluster(path, load_cluster(path), log_dir=str(tmp_path / "logs"), **kwargs)


FORKER = """
    import os, signal, time
    from pbft.adversary import Behaviour

    class Forker(Behaviour):
        done = False

        def on_tick(self):
            if not self.done:
                self.done = True
                pid = os.fork()
                if pid == 0:
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    with open({where!r} + ".tmp", "w") as fh:
                        fh.write(str(os.getpid()))
                    os.rename({where!r} + ".tmp", {where!r})
                    time.sleep(120)
                    os._exit(0)
"""


@pytest.mark.timeout(90)
def test_what_a_behaviour_forks_is_ended_with_its_replica(tmp_path):
    where = str(tmp_path / "child.pid")
    (tmp_path / "forker.py").write_text(textwrap.dedent(FORKER.format(where=where)))
    cluster = make_cluster(tmp_path, behaviours={2: f"{tmp_path / 'forker.py'}:Forker"})
    child = None
    try:
        cluster.start()
        assert wait_for(lambda: os.path.exists(where)), "the behaviour forked no child"
        child = int(open(where).read())
        assert alive(child)
        cluster.stop(grace=3)
        assert wait_for(lambda: not alive(child), 5), "the forked child outlived its replica"
        assert cluster.stragglers == {2}
        assert not cluster.alive()
    finally:
        cluster.stop(grace=0)
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(90)
def test_a_users_random_py_in_the_working_directory_does_not_break_the_replicas(tmp_path, monkeypatch):
    cwd = tmp_path / "work"
    cwd.mkdir()
    for name in ("random", "json", "signal"):
        (cwd / f"{name}.py").write_text("raise ImportError('the user\\'s own file, not the standard module')\n")
    monkeypatch.chdir(cwd)
    cluster = make_cluster(tmp_path)
    try:
        cluster.start(timeout=30)
        assert sorted(cluster.alive()) == [0, 1, 2, 3]
    finally:
        cluster.stop(grace=3)


SPINNER = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.01)
"""


@pytest.mark.timeout(60)
def test_an_interrupt_while_stopping_kills_every_group_before_it_is_raised():
    procs = [subprocess.Popen([PY, "-c", SPINNER], stdout=subprocess.PIPE, start_new_session=True) for _ in range(2)]
    try:
        for p in procs:
            launcher._GROUPS[p.pid] = p
            assert p.stdout.readline().strip() == b"ready"
        timer = threading.Timer(0.5, _thread.interrupt_main)  # a second Ctrl-C, 0.5 s in
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            launcher._terminate(procs, grace=30)
        assert time.monotonic() - started < 10
        assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
        assert not any(p.pid in launcher._GROUPS for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            launcher._GROUPS.pop(p.pid, None)


# -- pbft scenario run --real ---------------------------------------------------------


LONG = """
    name = "long honest"
    f = 1
    seed = 3
    [workload]
    clients = 2
    requests = 3000
"""

SLEEPY = """
    import time
    from pbft.adversary import Behaviour, Outgoing

    class SleepSend(Behaviour):
        def on_send(self, out: Outgoing) -> None:
            if out.kind == "COMMIT" and (out.seq or 0) >= 3:
                time.sleep(10_000)
"""


class Driver:
    """`pbft scenario run FILE --real` in a session of its own, with TMPDIR its own and an
    environment marker its replicas inherit (so a leftover is found, and only ours)."""

    def __init__(self, tmp_path, scenario: str, **env: str) -> None:
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        self.mark = f"PBFT_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"
        key, value = self.mark.split("=")
        self.proc = subprocess.Popen(
            [PY, "-m", "pbft", "scenario", "run", scenario, "--real"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env=dict(os.environ, TMPDIR=str(self.tmp), **{key: value}, **env), cwd=ROOT,
        )

    def ours(self) -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if self.mark.encode() in fh.read().split(b"\0") and alive(int(pid)):
                        found.append(int(pid))
            except OSError:
                continue
        return found

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.ours():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(120)
def test_sigterm_to_a_real_run_leaves_no_replica_and_no_temporary_directory(tmp_path):
    (tmp_path / "long.toml").write_text(textwrap.dedent(LONG))
    driver = Driver(tmp_path, str(tmp_path / "long.toml"))
    try:
        assert wait_for(lambda: len(driver.ours()) >= 5, 30), "the replicas never started"
        time.sleep(1)
        driver.proc.send_signal(signal.SIGTERM)  # to the runner only, as `kill PID` does
        out, _ = driver.proc.communicate(timeout=30)
        assert driver.proc.returncode == 130, out
        assert wait_for(lambda: not driver.ours(), 5), "replicas outlived the runner"
        assert os.listdir(driver.tmp) == [], "the cluster's temporary directory (its keys) was left behind"
    finally:
        driver.close()


@pytest.mark.timeout(120)
def test_a_replica_hook_that_blocks_is_the_attackers_failure_on_real_processes(tmp_path):
    (tmp_path / "sleepy.py").write_text(textwrap.dedent(SLEEPY))
    (tmp_path / "s.toml").write_text(textwrap.dedent("""
        name = "sleepy backup"
        f = 1
        seed = 3
        [workload]
        clients = 2
        requests = 15
        [[byzantine]]
        replica = 2
        behaviour = "sleepy.py:SleepSend"
    """))
    driver = Driver(tmp_path, str(tmp_path / "s.toml"), PBFT_HOOK_TIMEOUT="1")
    try:
        out, _ = driver.proc.communicate(timeout=90)
        assert any(line.startswith("ATTACKER-FAILED sleepy backup") for line in out.splitlines()), out
        assert "HookTimeout: hook on_send ran for more than 1 s of wall-clock time" in out, out
        assert "sleepy.py line 8" in out
    finally:
        driver.close()
