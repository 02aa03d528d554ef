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

from pbft.cluster.launcher import RESTART_LIMIT, LocalCluster, Supervisor, describe_exit
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
            # SIGTERM first: the replicas run in process groups of their own, which only
            # `pbft up` itself stops.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
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
    # Replica 1 fails after a long run, then to start again and again: 1, 2, 4 s, then
    # after `limit` (3) short runs in a row it is given up on; replica 0 keeps running.
    cluster.procs[1].returncode = 1
    at(103)
    assert said[-1] == ("replica 1 exited with status 1 (pbft: replica 1 cannot listen on "
                        "127.0.0.1:7001: the port is already in use.): restarting in 1 s")
    delays = []
    t = 103.0
    for _ in range(10):
        t += 5
        at(t)  # the restart, if any
        cluster.procs[1].returncode = 1
        t += 1
        at(t)  # its exit
        if 1 in sup.down:
            break
        delays.append(said[-1].rsplit(" in ", 1)[1])
    assert delays == ["2 s", "4 s"]
    assert said[-1] == ("replica 1 exited 3 times in a row within 60 s of starting, the last time "
                        "with status 1 (pbft: replica 1 cannot listen on 127.0.0.1:7001: the port is "
                        "already in use.): giving up on it; the other replicas keep running")
    assert sup.down == {1: "it exited 3 times in a row within 60 s of starting, the last time with "
                           "status 1 (pbft: replica 1 cannot listen on 127.0.0.1:7001: the port is "
                           "already in use.)"}
    spawned = cluster.procs[1].pid
    for t in range(200, 400, 5):
        at(t)
    assert cluster.procs[1].pid == spawned, "never restarted again"
    assert sup.running == [0] and cluster.procs[0].poll() is None
    assert _Proc(0).pid == 0 and describe_exit(-15) == "signal 15 (SIGTERM)" and describe_exit(1) == "status 1"


def _supervised(tail: str) -> tuple[_Cluster, Supervisor, list[str], list[float]]:
    cluster = _Cluster()
    cluster.stderr_tail = lambda i: tail  # type: ignore[method-assign]
    said: list[str] = []
    now = [0.0]
    sup = Supervisor(cluster, said.append, clock=lambda: now[0])
    return cluster, sup, said, now


def test_supervisor_does_not_restart_a_replica_that_exited_0_and_says_so_once():
    # What a replica a change left out says last (pbft.node.node lifecycle), in the text format.
    cluster, sup, said, now = _supervised(
        "2026-01-05 10:00:00,123 INFO pbft.replica: replica 1 stopped: replica 1 is not a member "
        "of epoch 1: retired (view 4294967296, last executed 128)")
    now[0] = 500
    sup.poll()
    cluster.procs[1].returncode = 0
    for t in range(501, 700, 2):
        now[0] = t
        sup.poll()
    assert said == ["replica 1 exited with status 0 (replica 1 stopped: replica 1 is not a member of "
                    "epoch 1: retired (view 4294967296, last executed 128)): it stopped on purpose, "
                    "so it is not restarted"]
    assert cluster.procs[1].pid == 101, "not restarted"
    assert sup.running == [0] and 1 in sup.stopped and sup.down == {}


def test_supervisor_does_not_retry_an_operator_mistake():
    cluster, sup, said, now = _supervised(
        "pbft: the private key in /k/replica-1.key does not match replica 1's public_key in the "
        "cluster file.")
    cluster.procs[1].returncode = 2  # even right after starting: not a short run to retry
    for t in range(1, 200, 2):
        now[0] = t
        sup.poll()
    assert said == ["replica 1 exited with status 2 (pbft: the private key in /k/replica-1.key does not "
                    "match replica 1's public_key in the cluster file.): an operator mistake, so it is "
                    "not restarted; the other replicas keep running"]
    assert cluster.procs[1].pid == 101
    assert sup.down == {1: "it exited with status 2 (pbft: the private key in /k/replica-1.key does not "
                           "match replica 1's public_key in the cluster file.), an operator mistake"}
    assert sup.running == [0]


def test_supervisor_gives_up_after_exactly_the_limit_of_short_runs():
    """README, "Running a cluster": "after five such runs in a row"; the message agrees."""
    assert RESTART_LIMIT == 5
    cluster, sup, said, now = _supervised("pbft: replica 1 stopped: its storage failed.")
    exits = 0
    t = 0.0
    while 1 not in sup.down and exits < 20:
        cluster.procs[1].returncode = 1
        t += 1
        now[0] = t
        sup.poll()  # the exit (each within a minute of starting: a short run)
        exits += 1
        t += 40
        now[0] = t
        sup.poll()  # the restart
    assert exits == 5
    assert said[-1].startswith("replica 1 exited 5 times in a row within 60 s of starting, the last "
                               "time with status 1 (pbft: replica 1 stopped: its storage failed.)")
    assert [s.rsplit(" in ", 1)[1] for s in said[:-1]] == ["1 s", "2 s", "4 s", "8 s"]


# -- where `pbft up` starts a replica from after `pbft admin replace` ---------------------


def _replaced(tmp_path, out_dir: str | None = None) -> tuple[str, str]:
    """A cluster file whose replica 3 `pbft admin replace` gave a new key in epoch 1 (the
    entry recorded as `apply` records it, without running replicas), and the directory
    the admin tool wrote for the new replica 3."""
    from pbft.cluster import admin, keygen

    path = keygen.generate_cluster(str(tmp_path / "keys"), ports=[7100, 7101, 7102, 7103])
    plan = admin.plan(path, replace={3: "127.0.0.1:7104"}, out_dir=out_dir)
    text = admin._with_entry(path, plan.epoch, 16, plan.command)
    keygen._write_atomic(path, text)
    d = plan.new_replicas[3]
    keygen._write_atomic(os.path.join(d, "cluster.toml"), admin._node_text(text))
    return path, d


def test_up_sources_start_a_replaced_replica_from_its_new_directory_not_the_stale_files(tmp_path):
    from pbft.cluster.launcher import up_sources

    path, d = _replaced(tmp_path)
    config = load_cluster(path)
    assert config.epoch == 1
    assert d == os.path.join(config.base_dir, "epoch-1", "replica-3")
    # replica-3.key/.pem beside the cluster file are still the replaced key's.
    paths, data, skipped = up_sources(path, config, range(4))
    assert paths == {3: os.path.join(d, "cluster.toml")}
    assert data == {3: os.path.join(d, "data")}, "the data directory `pbft admin` printed"
    assert skipped == {}
    cluster = LocalCluster(path, config, config_paths=paths, data_dirs=data)
    cmd = cluster.command(3)
    assert cmd[cmd.index("--config") + 1] == os.path.join(d, "cluster.toml")
    assert cmd[cmd.index("--data") + 1] == os.path.join(d, "data")
    cmd = cluster.command(2)
    assert cmd[cmd.index("--config") + 1] == path
    assert cmd[cmd.index("--data") + 1] == os.path.join(config.base_dir, "data", "replica-2")
    # --data ROOT: under ROOT, apart from the old replica 3's (bound to the old key).
    root = str(tmp_path / "root")
    assert up_sources(path, config, range(4), root)[1] == {3: os.path.join(root, "epoch-1", "replica-3")}


def test_up_sources_never_start_a_replaced_replica_from_the_old_key(tmp_path):
    import shutil

    from pbft.cluster.launcher import up_sources

    path, d = _replaced(tmp_path, out_dir=str(tmp_path / "elsewhere"))  # --out: not beside
    config = load_cluster(path)
    base = config.base_dir
    paths, data, skipped = up_sources(path, config, range(4))
    assert paths == {} and data == {}
    assert list(skipped) == [3]
    assert "epoch 1 gave it a new key" in skipped[3] and "start it from where `pbft admin`" in skipped[3]
    # The files beside the cluster file replaced by the new key's: started from there, on
    # a data directory of its own.
    for suffix in (".key", ".pem"):
        shutil.copy(os.path.join(d, f"replica-3{suffix}"), os.path.join(base, f"replica-3{suffix}"))
    paths, data, skipped = up_sources(path, config, range(4))
    assert paths == {} and skipped == {}
    assert data == {3: os.path.join(base, "data", "epoch-1", "replica-3")}


def test_up_sources_leave_a_group_without_epochs_alone(tmp_path):
    from pbft.cluster import keygen
    from pbft.cluster.launcher import up_sources

    path = keygen.generate_cluster(str(tmp_path / "keys"), ports=[7100, 7101, 7102, 7103])
    assert up_sources(path, load_cluster(path), range(4)) == ({}, {}, {})


@pytest.mark.timeout(120)
def test_up_keeps_the_others_when_a_replica_cannot_restart_and_exits_1(tmp_path):
    """A replica that exits 2 (an operator mistake) is said once and not retried; the
    others keep serving; Ctrl-C still stops everything, and the exit status says a
    replica was down."""
    path = keygen(str(tmp_path / "keys"))
    keys = tmp_path / "keys"
    up = Up("--config", path)
    try:
        pids = up.pids()
        (keys / "replica-1.key").write_bytes((keys / "client-alice.key").read_bytes())
        os.kill(pids[1], signal.SIGKILL)
        up.expect(r"^replica 1 exited with status 2 \(pbft: the private key in .*replica-1\.key does "
                  r"not match replica 1's public_key in the cluster file\.\): an operator mistake, so "
                  r"it is not restarted; the other replicas keep running$")
        time.sleep(3)
        assert up.proc.poll() is None
        assert all(_running(pids[i]) for i in (0, 2, 3)), "the others keep running"
        put = pbft("client", "--config", path, "--id", "alice", "put", "k", "v")
        assert put.returncode == 0, put.stderr
        assert up.interrupt() == 1
        assert not any(_running(p) for p in pids.values())
        err = up.proc.stderr.read()
        assert re.search(r"^pbft: replica 1 is down: it exited with status 2 \(pbft: the private key .* "
                         r"does not match .*\), an operator mistake\.$", err, re.M), err
        assert sum("replica 1 exited" in s for s in up.seen) == 2, up.seen  # the kill, the mistake
    finally:
        up.close()


@pytest.mark.timeout(180)
def test_up_lets_a_replica_retire_after_admin_replace_and_keeps_the_others(tmp_path):
    """README "Deploying", step 7, on a group run by `pbft up`: the old replica 3 retires
    (exit 0) and is not started again; the other three keep running."""
    from pbft.cluster.launcher import free_ports

    path = keygen(str(tmp_path / "keys"))
    up = Up("--config", path)
    try:
        pids = up.pids()
        new_port = free_ports(1)[0]
        replace = pbft("admin", "replace", "3", f"127.0.0.1:{new_port}", "--config", path, timeout=90)
        assert replace.returncode == 0, replace.stderr
        up.expect(r"^replica 3 exited with status 0 \(replica 3 stopped: replica 3 is not a member of "
                  r"epoch 1: retired .*\): it stopped on purpose, so it is not restarted$", timeout=60)
        time.sleep(4)  # longer than any restart delay would have been
        assert not [s for s in up.seen if "restart" in s and "replica 3" in s and "not restarted" not in s], up.seen
        assert up.proc.poll() is None
        assert all(_running(pids[i]) for i in (0, 1, 2)), "the others keep running"
        assert up.interrupt() == 0, "a replica that retired is not a failure"
        assert not any(_running(p) for p in pids.values())
    finally:
        up.close()
