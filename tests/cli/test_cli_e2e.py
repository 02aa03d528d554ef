"""End to end through the `pbft` command with real processes on loopback.

Every subprocess has a timeout and every replica process is stopped in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from pbft.cluster.launcher import LocalCluster
from pbft.node.clusterfile import load_cluster

TIMEOUT = 30


def pbft(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def free_base_port(count: int = 4) -> int:
    """A base port with `count` consecutive free ports (for `pbft keygen --base-port`)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65536:
            continue
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports found")


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def keygen(directory: str) -> str:
    result = pbft("keygen", "--dir", directory, "--base-port", str(free_base_port()))
    assert result.returncode == 0, result.stderr
    return os.path.join(directory, "cluster.toml")


@pytest.fixture
def cluster(tmp_path):
    path = keygen(str(tmp_path / "keys"))
    local = LocalCluster(path, load_cluster(path), log_dir=str(tmp_path))
    try:
        local.start(timeout=20)
        yield path, local
    finally:
        local.stop()


def test_put_get_status_and_clean_shutdown(cluster):
    path, local = cluster
    put = pbft("client", "--config", path, "--id", "alice", "put", "colour", "blue")
    assert put.returncode == 0, put.stderr
    assert put.stdout == "ok\n"
    get = pbft("client", "--config", path, "--id", "bob", "get", "colour")
    assert get.returncode == 0, get.stderr
    assert get.stdout == "blue\n"
    missing = pbft("client", "--config", path, "--id", "alice", "get", "shape")
    assert (missing.returncode, missing.stdout) == (1, "(not found)\n")

    status = pbft("status", "--config", path)
    assert status.returncode == 0, status.stderr
    rows = status.stdout.strip().splitlines()
    assert len(rows) == 6 and "unreachable" not in status.stdout
    assert rows[-1].startswith("healthy (view 0, primary 0)"), status.stdout
    as_json = pbft("status", "--config", path, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["verdict"] == "healthy"
    replicas = json.loads(as_json.stdout)["replicas"]
    assert [r["id"] for r in replicas] == [0, 1, 2, 3]
    assert all(r["reachable"] and r["last_executed"] >= 1 for r in replicas)

    # SIGTERM: every replica exits cleanly.
    local.stop()
    assert [p.returncode for p in local.procs.values()] == [0, 0, 0, 0]


def test_operator_mistakes_exit_2_with_one_line(cluster, tmp_path):
    path, _ = cluster
    # Port already in use: replica 0 is running.
    assert_one_line_error(
        pbft("replica", "--config", path, "--id", "0"), "replica 0", "already in use"
    )
    # A bad cluster file.
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\nid = 1\n")
    assert_one_line_error(
        pbft("client", "--config", str(bad), "--id", "alice", "get", "k"), "not valid TOML"
    )
    assert_one_line_error(pbft("replica", "--config", str(bad), "--id", "0"))
    assert_one_line_error(pbft("status", "--config", str(tmp_path / "nowhere.toml")))
    # A missing private key (in a copy, so the running cluster is untouched).
    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(path), copy)
    os.remove(copy / "client-alice.key")
    os.remove(copy / "replica-1.key")
    copied = str(copy / "cluster.toml")
    assert_one_line_error(
        pbft("client", "--config", copied, "--id", "alice", "get", "k"), "private key"
    )
    assert_one_line_error(pbft("replica", "--config", copied, "--id", "1"), "private key")
    # An unknown client and an unknown replica id.
    assert_one_line_error(pbft("client", "--config", path, "--id", "mallory", "get", "k"))
    assert_one_line_error(pbft("replica", "--config", path, "--id", "9"))


def test_up_runs_the_cluster_until_interrupted(tmp_path):
    path = keygen(str(tmp_path / "up"))
    config = load_cluster(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbft", "up", "--config", path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its replicas share its group: a failed run leaks none
    )
    try:
        deadline = time.monotonic() + 20
        for r in config.replicas:
            while True:
                try:
                    socket.create_connection((r.host, r.port), timeout=0.5).close()
                    break
                except OSError:
                    assert proc.poll() is None, proc.stderr.read()
                    assert time.monotonic() < deadline, "pbft up did not start its replicas"
                    time.sleep(0.05)
        put = pbft("client", "--config", path, "--id", "alice", "put", "k", "v")
        assert put.returncode == 0, put.stderr
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0
        assert "replica 3 listening" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # replicas left by a run that failed
    # Every replica process is gone: the ports are free again.
    for r in config.replicas:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((r.host, r.port))


def test_launcher_names_a_replica_that_dies_at_start(tmp_path):
    from pbft.cluster.launcher import LaunchError

    path = keygen(str(tmp_path / "dies"))
    os.remove(tmp_path / "dies" / "replica-2.key")
    local = LocalCluster(path, load_cluster(path), log_dir=str(tmp_path))
    try:
        with pytest.raises(LaunchError, match=r"replica 2 exited with status 2.*private key"):
            local.start(timeout=20)
    finally:
        local.stop()
    assert local.alive() == []
