"""Real replica processes with `verify_threads = 2` serve requests, and do check
signatures on their worker threads (issue 20, item 2; pbft.node.preverify). Loopback only."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
import trio

from pbft.cluster.bench import _add_metrics
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster
from pbft.protocol import codec
from pbft.service.kv import op_get, op_put

CLIENTS = [f"c{i}" for i in range(16)]


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.timeout(90)
async def test_a_cluster_with_verify_threads_serves_requests(tmp_path):
    path = generate_cluster(os.path.join(tmp_path, "c"), f=1, clients=CLIENTS, ports=free_ports(4),
                            cluster_id="pool", checkpoint_interval=8)
    ports = _add_metrics(path, 4, verify_threads=2)
    config = load_cluster(path)
    assert [r.verify_threads for r in config.replicas] == [2, 2, 2, 2]
    cluster = LocalCluster(path, config, log_dir=str(tmp_path))
    try:
        cluster.start(timeout=20)
        with trio.fail_after(45):
            async def writes(name: str) -> None:
                async with open_client(path, name, timeout=20) as client:
                    for i in range(10):
                        await client.execute(op_put(f"{name}/k{i}".encode(), b"v%d" % i))
                    assert codec.decode(await client.execute(op_get(f"{name}/k9".encode()), read_only=True)) == b"v9"

            async with trio.open_nursery() as nursery:
                for name in CLIENTS:
                    nursery.start_soon(writes, name)
            statuses = [await trio.to_thread.run_sync(_status, p) for p in ports]
        assert all(s["verify_threads"] == 2 for s in statuses), statuses
        assert all(s["last_executed"] > 0 for s in statuses), statuses
        # 16 clients at once: groups of frames with enough signatures to go to the threads.
        assert sum(s["verified_on_threads"] for s in statuses) > 0, statuses
    finally:
        cluster.stop(grace=3)
