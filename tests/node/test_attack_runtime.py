"""What a replica process says about the attack it runs: a deliberately broken core
(`--broken NAME`) in its start-up line and status, and a behaviour whose hook raises as the
attacker's failure, logged with the file and line while the replica keeps serving."""

from __future__ import annotations

import logging
import os
import textwrap

import pytest
import trio

from pbft.adversary.broken import WeakPrepareQuorum
from pbft.adversary.catalogue import BehaviourSpec
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.errors import UsageError
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import build_node


@pytest.fixture
def cluster(tmp_path):
    path = generate_cluster(os.path.join(tmp_path, "k"), f=1, clients=["alice"], ports=free_ports(4),
                            cluster_id="atk", checkpoint_interval=4, log_window=8)
    return path, load_cluster(path)


async def serve(path, config, nodes, requests: int = 3, until=None):
    """Run the nodes through `requests` puts and a status; then, with `until`, keep them
    running until it holds (the client completes with any 2f+1 replicas, so what one
    replica does may still be on its way)."""
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            async with open_client(path, "alice", timeout=30) as client:
                for i in range(requests):
                    await client.put(b"k", b"v%d" % i)
                statuses = await client.status(timeout=3)
            while until is not None and not until():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    return statuses


async def test_a_broken_core_says_so(cluster, caplog):
    path, config = cluster
    caplog.set_level(logging.INFO, logger="pbft")
    nodes = [build_node(config, load_identity(config, i), i, broken="weak-prepare-quorum" if i == 1 else None)
             for i in config.replica_ids()]
    assert type(nodes[1].replica) is WeakPrepareQuorum
    statuses = await serve(path, config, nodes)
    assert statuses[1].behaviour == "broken:weak-prepare-quorum" and not statuses[2].behaviour
    started = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "replica-started"]
    assert any("BROKEN CORE: it runs weak-prepare-quorum" in t for t in started)
    with pytest.raises(UsageError, match="did you mean 'weak-prepare-quorum'"):
        build_node(config, load_identity(config, 1), 1, broken="weak-prepare-quorm")


async def test_a_raising_hook_is_logged_as_the_attackers_failure(cluster, caplog, tmp_path):
    path, config = cluster
    attack = tmp_path / "oops.py"
    attack.write_text(textwrap.dedent("""
        from pbft.adversary import Behaviour

        class Oops(Behaviour):
            def on_send(self, out):
                if out.kind == "COMMIT":
                    raise RuntimeError("my bug")
    """))
    caplog.set_level(logging.INFO, logger="pbft")
    spec = BehaviourSpec(f"{attack}:Oops")
    nodes = [build_node(config, load_identity(config, i), i, behaviour=spec if i == 2 else None)
             for i in config.replica_ids()]
    await serve(path, config, nodes,
                until=lambda: any("the attacker failed" in r.getMessage() for r in caplog.records))
    failed = [r.getMessage() for r in caplog.records if "the attacker failed" in r.getMessage()]
    assert failed and all(r.levelno == logging.ERROR for r in caplog.records if "the attacker failed" in r.getMessage())
    assert "behaviour Oops raised RuntimeError: my bug in on_send" in failed[0] and "oops.py line 7" in failed[0]
