"""A service named in the cluster file runs on real replica processes (issue 18, item 1):
the account ledger, with concurrent transfers from every client and the total checked
after; and a user's own service file given by path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster
from pbft.protocol import codec

ROOT = Path(__file__).resolve().parent.parent.parent
CLIENTS = ["c0", "c1", "c2"]


def cluster_with(tmp_path, service_table: str) -> tuple[str, LocalCluster]:
    path = generate_cluster(os.path.join(tmp_path, "c"), f=1, clients=CLIENTS, ports=free_ports(4),
                            cluster_id="svc", checkpoint_interval=8)
    with open(path, "a") as fh:
        fh.write("\n" + service_table)
    return path, LocalCluster(path, load_cluster(path), log_dir=str(tmp_path))


@pytest.mark.timeout(90)
async def test_the_ledger_on_real_processes(tmp_path):
    path, cluster = cluster_with(str(tmp_path), '[service]\nclass = "pbft.service.ledger:Ledger"\naccounts = 3\nbalance = 100\n')
    try:
        cluster.start(timeout=20)
        with trio.fail_after(40):
            async def transfers(name: str) -> None:
                async with open_client(path, name, timeout=20) as client:
                    for i in range(12):
                        to = CLIENTS[(CLIENTS.index(name) + 1 + i % 2) % 3]
                        out = codec.decode(await client.execute(codec.encode(["transfer", to, 7 + i])))
                        assert out[0] in ("ok", "refused"), out

            async with trio.open_nursery() as nursery:
                for name in CLIENTS:
                    nursery.start_soon(transfers, name)
            async with open_client(path, "c0", timeout=20) as client:
                assert codec.decode(await client.execute(codec.encode(["total"]), read_only=True)) == 300
                assert codec.decode(await client.execute(codec.encode(["total"]))) == 300  # ordered too
    finally:
        cluster.stop(grace=3)


@pytest.mark.timeout(90)
async def test_a_users_service_file_on_real_processes(tmp_path):
    counters = ROOT / "examples" / "services" / "counters.py"
    path, cluster = cluster_with(str(tmp_path), f'[service]\nclass = "{counters}:Counters"\n')
    try:
        cluster.start(timeout=20)
        with trio.fail_after(30):
            async with open_client(path, "c1", timeout=20) as client:
                import cbor2

                assert cbor2.loads(await client.execute(cbor2.dumps(["add", "apples", 3]))) == 3
                assert cbor2.loads(await client.execute(cbor2.dumps(["add", "apples", 4]))) == 7
                assert cbor2.loads(await client.execute(cbor2.dumps(["get", "apples"]), read_only=True)) == 7
                too_big = codec.decode(await client.execute(cbor2.dumps(["add", "apples", 10**6])))
                assert too_big["error"].startswith("ValueError: add takes an integer")
    finally:
        cluster.stop(grace=3)
