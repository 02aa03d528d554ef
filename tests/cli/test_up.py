"""`pbft up` as an operator meets it, and what a replica says at the default log level.

Real processes on loopback. Every wait has a deadline, every `pbft up` runs in a session
of its own and its whole process group is killed in `finally`, so a failed run leaks no
replica.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from test_cli_e2e import TIMEOUT, free_base_port, keygen, pbft

from pbft.cluster.launcher import GiveUp, LocalCluster, Supervisor, describe_exit
from pbft.node.clusterfile import load_cluster


class Up:
    """A `pbft up` process whose stdout lines are collected by a thread."""

    def __init__(self, *args: str, ignore_sigint: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pbft", "up", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            # A shell's background job without job control inherits SIGINT ignored.
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                m = re.search(pattern, line)
                if m:
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.5)))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(
                        f"pbft up exited {self.proc.returncode} before {pattern!r}: "
                        f"{self.seen} {self.proc.stderr.read()}"
                    ) from None

    def pids(self) -> dict[int, int]:
        self.expect("press Ctrl-C to stop")
        return {
            int(m.group(1)): int(m.group(2))
            for m in (re.match(r"replica (\d+) listening on .* \(pid (\d+),", s) for s in self.seen)
            if m
        }

    def interrupt(self, timeout: float = 15) -> int:
        """SIGINT; its exit status, which must come within `timeout` seconds."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(timeout=timeout)
        assert time.monotonic() - started < timeout
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(60)
def test_up_refuses_a_port_held_by_another_process(tmp_path):
    path = keygen(str(tmp_path / "keys"))
    r1 = load_cluster(path).replicas[1]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((r1.host, r1.port))
        squatter.listen()
        result = pbft("up", "--config", path)
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"port {r1.host}:{r1.port} of replica 1 is already in use by pid {os.getpid()}" in err, err
    assert "listening" not in result.stdout
    assert not os.path.exists(tmp_path / "keys" / "data"), "no replica was started"


@pytest.mark.timeout(90)
def test_up_restarts_a_replica_killed_with_sigkill_and_keeps_the_others(tmp_path):
    path = keygen(str(tmp_path / "keys"))
    up = Up("--config", path)
    try:
        pids = up.pids()
        assert sorted(pids) == [0, 1, 2, 3]
        os.kill(pids[2], signal.SIGKILL)
        up.expect(r"^replica 2 exited with signal 9 \(SIGKILL\): restarting in 1 s$")
        new_pid = int(up.expect(r"^replica 2 restarted \(pid (\d+)\)$").group(1))
        assert new_pid != pids[2] and _running(new_pid)
        assert all(_running(pids[i]) for i in (0, 1, 3)), "the others keep running"
        assert up.proc.poll() is None
        put = pbft("client", "--config", path, "--id", "alice", "put", "k", "v")
        assert put.returncode == 0, put.stderr
        assert up.interrupt() == 0
        assert not any(_running(p) for p in (*pids.values(), new_pid))
    finally:
        up.close()


@pytest.mark.timeout(90)
def test_up_log_dir_is_used_and_reused_and_sigint_stops_it_even_if_ignored(tmp_path):
    path = keygen(str(tmp_path / "keys"))
    logs = tmp_path / "logs"
    for run in (1, 2):
        up = Up("--config", path, "--log-dir", str(logs), ignore_sigint=True)
        try:
            up.pids()
            assert f"log: {logs / 'replica-3.log'}," in up.seen[3]
            assert up.interrupt() == 0, "SIGINT stops pbft up even when it was started ignoring it"
        finally:
            up.close()
        for i in range(4):
            text = (logs / f"replica-{i}.log").read_text()
            assert text.count(f"replica {i} listening on") == run, text
            assert text.count(f"replica {i} stopped: SIGTERM received") == run, text
    assert sorted(os.listdir(logs)) == [f"replica-{i}.log" for i in range(4)]
    # Without --log-dir: <cluster dir>/logs, not a new directory each run.
    config = load_cluster(path)
    assert LocalCluster(path, config).log_dir == os.path.join(config.base_dir, "logs")


@pytest.mark.timeout(60)
def test_replica_says_it_started_and_stopped_and_loudly_that_it_is_byzantine(tmp_path):
    path = keygen(str(tmp_path / "keys"))
    metrics_port = free_base_port(1)
    procs = {}
    errs = {i: tmp_path / f"replica-{i}.err" for i in (0, 1)}
    try:
        for i, extra in ((0, []), (1, ["--behaviour", "wrong-digest-vote",
                                       "--metrics", f"127.0.0.1:{metrics_port}"])):
            with open(errs[i], "wb") as err:
                procs[i] = subprocess.Popen(
                    [sys.executable, "-m", "pbft", "replica", "--config", path, "--id", str(i), *extra],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                )
        deadline = time.monotonic() + TIMEOUT
        while not all("listening on" in errs[i].read_text() for i in (0, 1)):
            assert all(p.poll() is None for p in procs.values()), [e.read_text() for e in errs.values()]
            assert time.monotonic() < deadline, [e.read_text() for e in errs.values()]
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'pbft_byzantine_behaviour{name="wrong-digest-vote"} 1.0' in text
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=TIMEOUT) for p in procs.values()] == [0, 0]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    config = load_cluster(path)
    honest = errs[0].read_text().splitlines()
    assert len(honest) == 2, honest
    assert re.search(
        rf"INFO pbft\.replica: replica 0 listening on 127\.0\.0\.1:{config.replicas[0].port} "
        rf"\(view 0, last executed 0, data .*replica-0\)$", honest[0]), honest
    assert "BYZANTINE" not in honest[0]
    assert re.search(r"INFO pbft\.replica: replica 0 stopped: SIGTERM received \(view 0, last executed 0\)$",
                     honest[1]), honest
    byzantine = errs[1].read_text().splitlines()
    assert len(byzantine) == 2, byzantine
    assert "WARNING pbft.replica: replica 1 listening on" in byzantine[0], byzantine
    assert "BYZANTINE: it runs the behaviour wrong-digest-vote" in byzantine[0], byzantine
    assert "replica 1 stopped: SIGTERM received" in byzantine[1], byzantine


def test_honest_metrics_say_no_behaviour():
    from pbft.node.metrics import NodeMetrics

    text = NodeMetrics(0).text().decode()
    assert 'pbft_byzantine_behaviour{name=""} 0.0' in text


# -- Supervisor, on a fake cluster and a fake clock ----------------------------------------


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9

    def wait(self) -> int | None:
        return self.returncode


class _Cluster:
    def __init__(self) -> None:
        self.ids = [0, 1]
        self.pids = iter(range(100, 200))
        self.procs = {i: _Proc(next(self.pids)) for i in self.ids}
        self.up: set[int] = set()

    def spawn(self, i: int) -> None:
        self.procs[i] = _Proc(next(self.pids))

    def ready(self, i: int) -> bool:
        return i in self.up

    def stderr_tail(self, i: int) -> str:
        return "some line\npbft: replica 1 cannot listen on 127.0.0.1:7001: the port is already in use."


def test_supervisor_backs_off_says_why_and_gives_up_after_short_runs():
    now = [0.0]
    said: list[str] = []
    cluster = _Cluster()
    sup = Supervisor(cluster, said.append, first=1, most=4, stable=60, limit=3, start_timeout=20,
                     clock=lambda: now[0])

    def at(t: float) -> None:
        now[0] = t
        sup.poll()

    at(100)
    assert said == []
    cluster.procs[0].returncode = -9  # after a long run: 1 s
    at(101)
    assert said == ["replica 0 exited with signal 9 (SIGKILL): restarting in 1 s"]
    at(101.5)
    assert cluster.procs[0].pid == 100, "not before its delay"
    at(102)
    assert cluster.procs[0].pid == 102
    cluster.up.add(0)
    at(102.2)
    assert said[-1] == "replica 0 restarted (pid 102)"
    # Replica 1 fails to start again and again: 1, 2, 4, 4 s... then gives up.
    cluster.procs[1].returncode = 2
    at(103)
    assert said[-1] == ("replica 1 exited with status 2 (pbft: replica 1 cannot listen on "
                        "127.0.0.1:7001: the port is already in use.): restarting in 1 s")
    delays = []
    with pytest.raises(GiveUp, match=r"replica 1 exited 4 times in a row within 60 s of starting, "
                                     r"the last time with status 1 "):
        t = 103.0
        for _ in range(10):
            t += 5
            at(t)  # the restart
            cluster.procs[1].returncode = 1
            t += 1
            at(t)  # its exit
            delays.append(said[-1].rsplit(" in ", 1)[1])
    assert delays == ["2 s", "4 s"]
    assert _Proc(0).pid == 0 and describe_exit(-15) == "signal 15 (SIGTERM)" and describe_exit(1) == "status 1"
