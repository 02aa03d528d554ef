"""Crash recovery with real replica processes on loopback (docs/architecture.md).

Replicas are `pbft replica` processes with their own data directories; a crash is
SIGKILL (nothing flushed, no shutdown code runs) and a restart is a new process on the
same data directory. Every wait is bounded by trio.fail_after; every process is killed
in `finally`.
"""

from __future__ import annotations

import os

import pytest
import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster
from pbft.node.storage import Storage
from pbft.protocol.events import Record
from pbft.protocol.messages import PrePrepare, envelope_from_bytes, from_body

CLIENTS = ["alice", "bob", "carol"]


def make_cluster(tmp_path, name: str, fsync: str, **settings) -> tuple[str, LocalCluster]:
    kw = dict(checkpoint_interval=8, log_window=16, view_change_timeout_ms=500)
    kw.update(settings)
    path = generate_cluster(
        os.path.join(tmp_path, name), f=1, clients=CLIENTS, ports=free_ports(4),
        cluster_id=name, **kw,
    )
    with open(path, "a") as fh:
        fh.write(f'\n[storage]\nfsync = "{fsync}"\n')
    cluster = LocalCluster(
        path, load_cluster(path), log_dir=str(tmp_path), log_level="info",
        data_root=os.path.join(tmp_path, "data"),
    )
    return path, cluster


async def caught_up(path: str, replica: int) -> dict[int, int]:
    """Poll STATUS until `replica` has executed as far as every other replica."""
    async with open_client(path, "carol") as client:
        while True:
            statuses = await client.status(timeout=1)
            done = {i: s.last_executed for i, s in statuses.items()}
            if replica in done and len(done) == 4 and done[replica] == max(done.values()):
                return done
            await trio.sleep(0.2)


async def has_executed(path: str, replica: int) -> int:
    """Poll STATUS until `replica` has executed something; its last executed."""
    async with open_client(path, "carol") as client:
        while True:
            statuses = await client.status(timeout=1)
            if replica in statuses and statuses[replica].last_executed > 0:
                return statuses[replica].last_executed
            await trio.sleep(0.1)


async def put_loop(path: str, name: str, count: int, acked: dict[bytes, bytes], progress) -> None:
    """Closed-loop puts; a put counts as acknowledged once the call returned."""
    async with open_client(path, name, timeout=25) as client:
        for j in range(count):
            key, value = f"{name}-{j}".encode(), f"v{j}".encode()
            await client.put(key, value)
            acked[key] = value
            progress()


def signed_pre_prepares(data_dir: str, config, replica_id: int) -> dict[tuple[int, int], bytes]:
    """(view, seq) -> the PRE-PREPARE envelope a replica's data directory says it signed."""
    with Storage.open(data_dir, config, replica_id) as s:
        out = {}
        for r in s.load():
            if r.record is Record.VOTE and r.tag == "pre-prepare":
                assert isinstance(from_body(envelope_from_bytes(r.value).body), PrePrepare)
                out[(r.view, r.seq)] = r.value
        return out


def log_text(cluster: LocalCluster, i: int) -> str:
    with open(cluster.log_path(i), encoding="utf-8", errors="replace") as fh:
        return fh.read()


async def test_a_killed_backup_restarts_from_its_data_and_catches_up(tmp_path):
    path, cluster = make_cluster(str(tmp_path), "crash-one", fsync="batch")
    acked: dict[bytes, bytes] = {}
    try:
        cluster.start(timeout=20)
        with trio.fail_after(30):
            done = 0
            halfway = trio.Event()

            def progress() -> None:
                nonlocal done
                done += 1
                if done == 30:
                    halfway.set()

            async with trio.open_nursery() as nursery:
                for name in ("alice", "bob"):
                    nursery.start_soon(put_loop, path, name, 40, acked, progress)
                await halfway.wait()
                # On a loaded machine the other three can run 30 requests before replica
                # 3 has executed any (a quorum does not wait for it): it must have
                # something in its data directory for this test to be about recovery.
                await has_executed(path, 3)
                cluster.kill(3)
                await trio.sleep(0.3)
                await trio.to_thread.run_sync(cluster.restart, 3)
            assert len(acked) == 80  # the workload completed
            await caught_up(path, 3)
        log = log_text(cluster, 3)
        assert "recovered" in log and "Traceback" not in log
    finally:
        cluster.stop(grace=3)


async def test_every_acknowledged_write_survives_killing_every_replica(tmp_path):
    path, cluster = make_cluster(str(tmp_path), "crash-all", fsync="always")
    acked: dict[bytes, bytes] = {}
    try:
        cluster.start(timeout=20)
        with trio.fail_after(30):
            done = 0
            enough = trio.Event()

            def progress() -> None:
                nonlocal done
                done += 1
                if done == 40:
                    enough.set()

            async with trio.open_nursery() as nursery:
                for name in CLIENTS:
                    nursery.start_soon(put_loop, path, name, 1000, acked, progress)
                await enough.wait()
                for i in range(4):  # each must have something to recover (as above)
                    await has_executed(path, i)
                for i in range(4):  # mid-workload: requests are in flight
                    cluster.kill(i)
                nursery.cancel_scope.cancel()
            assert len(acked) >= 40
            await trio.to_thread.run_sync(cluster.start)
            async with open_client(path, "alice", timeout=20) as client:
                for key, value in sorted(acked.items()):
                    assert await client.get(key) == value, key
                await client.put(b"after", b"restart")  # and the cluster still orders writes
                assert await client.get(b"after") == b"restart"
        for i in range(4):
            log = log_text(cluster, i)
            assert "recovered" in log and "Traceback" not in log
    finally:
        cluster.stop(grace=3)


async def test_a_restarted_primary_never_signs_a_conflicting_pre_prepare(tmp_path):
    # The primary of view 0 is killed after ordering some writes and restarted from its
    # data directory. What it signed before the crash is still on disk unchanged, what
    # it signs afterwards is numbered after it, and no backup holds evidence against it.
    path, cluster = make_cluster(
        str(tmp_path), "crash-primary", fsync="always", view_change_timeout_ms=5000
    )
    config = load_cluster(path)
    try:
        cluster.start(timeout=20)
        with trio.fail_after(30):
            async with open_client(path, "alice", timeout=25) as client:
                for j in range(6):
                    await client.put(b"k%d" % j, b"before")
            cluster.kill(0)
            before = signed_pre_prepares(cluster.data_dir(0), config, 0)
            assert before and {v for v, _ in before} == {0}
            await trio.to_thread.run_sync(cluster.restart, 0)
            async with open_client(path, "bob", timeout=25) as client:
                for j in range(6):
                    await client.put(b"k%d" % j, b"after")
                assert await client.get(b"k5") == b"after"
            await caught_up(path, 0)
        cluster.stop(grace=3)
        after = signed_pre_prepares(cluster.data_dir(0), config, 0)
        last_before = max(seq for _, seq in before)
        for key, value in before.items():
            if key in after:
                assert after[key] == value, f"pre-prepare {key} changed across the restart"
        new = {k for k in after if k not in before}
        assert new, "the restarted primary signed nothing new"
        assert all(seq > last_before for view, seq in new if view == 0)
        for i in range(1, 4):
            assert "evidence that replica 0" not in log_text(cluster, i)
    finally:
        cluster.stop(grace=3)


@pytest.mark.parametrize("mistake", ["other-replica", "corrupt"])
async def test_a_replica_refuses_a_data_directory_that_is_not_its_own(tmp_path, mistake):
    import subprocess
    import sys

    path, cluster = make_cluster(str(tmp_path), "refuse", fsync="off")
    config = load_cluster(path)
    Storage.open(cluster.data_dir(1), config, 1).close()
    target = cluster.data_dir(1)
    if mistake == "corrupt":
        with open(os.path.join(target, "pbft.sqlite3"), "r+b") as fh:
            fh.write(b"garbage" * 20)
    result = subprocess.run(
        [sys.executable, "-m", "pbft", "replica", "--config", path, "--id", "2", "--data", target]
        if mistake == "other-replica"
        else [sys.executable, "-m", "pbft", "replica", "--config", path, "--id", "1", "--data", target],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert ("belongs to replica 1, not replica 2" if mistake == "other-replica" else "corrupt") in err
