"""`pbft admin change --rotate-client NAME` on real processes (walkthrough finding 1): the
new key is written, the change is ordered, the new epoch is recorded, the client writes
with its new key, and its old key is refused from the new epoch on."""

from __future__ import annotations

import os
import shutil

import pytest
import trio

from pbft.cli import main as cli
from pbft.cluster.configcheck import check_cluster_file
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster

pytestmark = pytest.mark.timeout(180)


def test_a_rotated_client_writes_with_its_new_key_and_its_old_one_is_refused(tmp_path, capsys):
    tmp = str(tmp_path)
    path = generate_cluster(os.path.join(tmp, "c"), f=1, clients=["alice", "bob"], ports=free_ports(4),
                            cluster_id="rotate", checkpoint_interval=16)
    old = os.path.join(tmp, "old")  # bob's host, still holding the old key and file
    shutil.copytree(os.path.dirname(path), old)
    group = LocalCluster(path, load_cluster(path), log_dir=os.path.join(tmp, "logs"))
    try:
        group.start(timeout=30)

        async def write(cluster_file: str, key: bytes, timeout: float = 30) -> None:
            async with open_client(cluster_file, "bob", timeout=timeout) as client:
                await client.put(key, b"v")

        trio.run(write, path, b"before")
        assert cli.main(["admin", "change", "--config", path, "--rotate-client", "bob"]) == 0
        out = capsys.readouterr().out
        assert "epoch 1 begins after checkpoint" in out
        assert load_cluster(path).epoch == 1
        assert check_cluster_file(path).errors == []
        trio.run(write, path, b"after")  # the new key, from the operator's directory
        # bob's old key and epoch-0 file: the replicas no longer know that certificate.
        with pytest.raises(TimeoutError, match="do not know client bob's certificate"):
            trio.run(write, os.path.join(old, "cluster.toml"), b"old-key", 3)

        async def read() -> bytes | None:
            async with open_client(path, "alice", timeout=30) as client:
                return await client.get(b"old-key")

        assert trio.run(read) is None
    finally:
        group.stop(grace=3)
