"""Changing a running group on real processes (issue 19, "Done when"): under a client
workload, replica 3 is replaced by a new node (new key, new port), the group grows to 7
and shrinks back to 4, and a client added by the last change writes at once. No replica
of the group is restarted; no acknowledged write is lost; the replaced and removed
replicas retire; the new replica 3's /readyz turns ready.

The stall each change causes is printed (`-s`), not asserted: timings on a shared
machine are measurements, not tests. The client writes new keys as fast as it can
(hundreds a second on a quiet machine), so a checkpoint becomes stable every few tens of
milliseconds (K = 16) while the new replica catches up: its walk restarts toward each
newer one and must reuse the internal nodes it verified (statetransfer.Transfer.known)."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest
import trio

from pbft.cluster import admin
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster

pytestmark = pytest.mark.timeout(240)


def node(plan: admin.Plan, rid: int, tmp: str, extra: list[str] | None = None) -> LocalCluster:
    path = os.path.join(plan.new_replicas[rid], "cluster.toml")
    return LocalCluster(
        path, load_cluster(path), ids=[rid], log_dir=os.path.join(tmp, f"logs-epoch{plan.epoch}"),
        data_root=os.path.join(plan.new_replicas[rid], "data"), per_replica_args={rid: extra or []},
    )


async def wait_exit(proc, within: float) -> int:
    with trio.fail_after(within):
        while proc.poll() is None:
            await trio.sleep(0.1)
    return proc.returncode


async def caught_up(node: LocalCluster, within: float) -> None:
    """Until the one replica of `node` has installed a state transfer (it joined by one)."""
    rid = node.ids[0]
    with trio.fail_after(within):
        while True:
            with open(node.log_path(rid)) as fh:
                if "done" in fh.read():
                    return
            await trio.sleep(0.2)


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status
    except OSError as exc:
        return getattr(exc, "code", 0) or 0


async def test_replace_grow_shrink_and_a_new_client_on_real_processes(tmp_path):
    tmp = str(tmp_path)
    ports = free_ports(9)
    path = generate_cluster(os.path.join(tmp, "c"), f=1, clients=["c0", "c1"], ports=ports[:4],
                            cluster_id="recon", checkpoint_interval=16)
    group = LocalCluster(path, load_cluster(path), log_dir=os.path.join(tmp, "logs"))
    started: list[LocalCluster] = [group]
    acked: dict[bytes, bytes] = {}
    done: list[float] = []
    stop = trio.Event()

    async def workload() -> None:
        async with open_client(path, "c0", timeout=60) as client:
            i = 0
            while not stop.is_set():
                key, value = b"w%d" % i, b"v%d" % i
                await client.put(key, value)
                acked[key] = value
                done.append(time.monotonic())
                i += 1

    def gap_since(t0: float) -> float:
        """The longest time without a completed write since `t0`."""
        times = [t0] + [t for t in done if t > t0] + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    try:
        group.start(timeout=30)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(workload)
            await trio.sleep(1.0)
            stalls = {}

            # 1. Replace replica 3: a new node, a new key, a new port.
            p1 = admin.plan(path, replace={3: f"127.0.0.1:{ports[4]}"}, out_dir=os.path.join(tmp, "e1"))
            metrics_port = free_ports(1)[0]
            new3 = node(p1, 3, tmp, ["--metrics", f"127.0.0.1:{metrics_port}"])
            new3.start(timeout=30)
            started.append(new3)
            t0 = time.monotonic()
            assert await admin.apply(p1) == {"epoch": 1, "after": admin_after(path, 1)}
            assert await wait_exit(group.procs[3], 30) == 0  # the old replica 3 retires
            with open(group.log_path(3)) as fh:
                assert "not a member of epoch 1: retired" in fh.read()
            with trio.fail_after(60):
                while readyz(metrics_port) != 200:  # the new replica catches up, then is ready
                    await trio.sleep(0.2)
            await trio.sleep(1.0)
            stalls["replace"] = gap_since(t0)

            # 2. Grow to 7 (f = 2): plan, start the new nodes, apply.
            p2 = admin.plan(path, f=2, add={4: f"127.0.0.1:{ports[5]}", 5: f"127.0.0.1:{ports[6]}",
                                            6: f"127.0.0.1:{ports[7]}"}, out_dir=os.path.join(tmp, "e2"))
            grown = [node(p2, i, tmp) for i in (4, 5, 6)]
            for g in grown:
                g.start(timeout=30)
                started.append(g)
            t0 = time.monotonic()
            assert (await admin.apply(p2))["epoch"] == 2
            for g in grown:  # caught up before the next change, as an operator would wait
                await caught_up(g, 60)
            await trio.sleep(1.0)
            stalls["grow"] = gap_since(t0)
            assert load_cluster(path).n == 7

            # 3. Shrink back to 4 and add a client, who writes at once.
            t0 = time.monotonic()
            p3 = admin.plan(path, f=1, add_clients=["c9"])
            assert (await admin.apply(p3))["epoch"] == 3
            for g in grown:
                assert await wait_exit(g.procs[g.ids[0]], 30) == 0
            async with open_client(path, "c9", timeout=30) as c9:
                await c9.put(b"from-c9", b"hello")
            await trio.sleep(1.0)
            stalls["shrink"] = gap_since(t0)
            stop.set()
        # No acknowledged write lost.
        async with open_client(path, "c1", timeout=30) as reader:
            for key, value in acked.items():
                assert await reader.get(key) == value, key
            assert await reader.get(b"from-c9") == b"hello"
        config = load_cluster(path)
        assert (config.epoch, config.n, "c9" in config.client_index) == (3, 4, True)
        print(json.dumps({"writes": len(acked), "stall_s": {k: round(v, 3) for k, v in stalls.items()},
                          "view_change_timeout_s": config.view_change_timeout_ms / 1000}))
        assert len(acked) > 50
    finally:
        for c in started:
            c.stop(grace=3)


def admin_after(path: str, epoch: int) -> int:
    """The boundary the cluster file records for `epoch` (what `apply` returned)."""
    return next(after for e, after, _ in load_cluster(path).commands if e == epoch)


def test_a_reconfiguration_scenario_runs_on_real_processes():
    """The simulator's rehearsal, on processes (`pbft scenario run --real`): the same
    [[reconfigure]] steps, made with `pbft admin`, the new nodes started first."""
    from pathlib import Path

    from pbft.cluster.realscenario import run_real
    from pbft.sim.scenario import load_scenario

    path = Path(__file__).parents[1] / "scenarios" / "reconfigure-replace-grow-shrink.toml"
    r = run_real(load_scenario(str(path)))
    assert r.passed, [f"{v.check}: {v.detail}" for v in r.violations] + r.trace_tail
    assert r.requests_completed == r.requests_total


async def test_a_member_restarted_with_its_old_cluster_file_comes_back_in_its_stores_epoch(tmp_path):
    """An operator restarts a replica with the cluster file it was first given, from
    before a change: its store records the later epoch, so the node must take that
    epoch's members (replica 3's new key and port) from the core's recovery
    (`ReplicaNode.recover`, the `EpochStarted` among its notes), not from the file. With
    replica 1 stopped, a write needs replicas 0, 2 and the new 3 together."""
    import shutil

    tmp = str(tmp_path)
    ports = free_ports(5)
    path = generate_cluster(os.path.join(tmp, "c"), f=1, clients=["c0"], ports=ports[:4],
                            cluster_id="recon-restart", checkpoint_interval=16)
    # The file as replica 0's host was first given it, in a directory of its own: the
    # operator's directory has the superseded replica-3.pem moved aside by the change.
    old_dir = os.path.join(tmp, "host-0")
    shutil.copytree(os.path.dirname(path), old_dir)
    old_path = os.path.join(old_dir, "cluster.toml")
    group = LocalCluster(path, load_cluster(path), log_dir=os.path.join(tmp, "logs"))
    started: list[LocalCluster] = [group]
    try:
        group.start(timeout=30)
        async with open_client(path, "c0", timeout=30) as client:
            for i in range(20):
                await client.put(b"before-%d" % i, b"%d" % i)
        p1 = admin.plan(path, replace={3: f"127.0.0.1:{ports[4]}"}, out_dir=os.path.join(tmp, "e1"))
        new3 = node(p1, 3, tmp)
        new3.start(timeout=30)
        started.append(new3)
        assert (await admin.apply(p1))["epoch"] == 1
        assert await wait_exit(group.procs[3], 30) == 0
        await caught_up(new3, 60)

        group.stop_replica(0)
        again = LocalCluster(old_path, load_cluster(old_path), ids=[0], data_root=group.data_root,
                             log_dir=os.path.join(tmp, "logs-restarted"))
        assert load_cluster(old_path).epoch == 0
        again.start(timeout=30)
        started.append(again)
        with open(again.log_path(0)) as fh:
            assert "replica 0: epoch 1 began" in fh.read()
        group.stop_replica(1)
        async with open_client(path, "c0", timeout=60) as client:
            await client.put(b"after", b"restart")
            assert await client.get(b"after") == b"restart"
            assert await client.get(b"before-7") == b"7"
    finally:
        for c in started:
            c.stop(grace=3)
