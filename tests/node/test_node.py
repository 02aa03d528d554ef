"""The Trio runtime on real loopback TLS: four ReplicaNodes and a Client in one process.

Every wait is bounded by trio.fail_after; ports are found by binding port 0.
"""

from __future__ import annotations

import os
import ssl

import pytest
import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node import tls
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import ReplicaNode, build_node
from pbft.node.transport import Outbox
from pbft.protocol import codec
from pbft.protocol.crypto import seal
from pbft.protocol.events import Reason
from pbft.protocol.messages import QueryStatus

SETTINGS = dict(checkpoint_interval=4, log_window=8, view_change_timeout_ms=300)


def make_cluster(tmp_path, name="rt") -> str:
    return generate_cluster(
        os.path.join(tmp_path, name),
        f=1,
        clients=["alice", "bob"],
        ports=free_ports(4),
        cluster_id=name,
        **SETTINGS,
    )


@pytest.fixture
def cluster_path(tmp_path):
    return make_cluster(str(tmp_path))


async def start_nodes(nursery, path) -> list[ReplicaNode]:
    config = load_cluster(path)
    nodes = []
    for i in config.replica_ids():
        node = build_node(config, load_identity(config, i), i)
        await nursery.start(node.run)
        nodes.append(node)
    return nodes


async def tls_connect(path, client_id, port) -> trio.SSLStream:
    """A raw mutual-TLS connection to a replica as `client_id` of the cluster at `path`."""
    config = load_cluster(path)
    identity = load_identity(config, client_id)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, tls.client_context(identity), server_hostname="127.0.0.1")
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


async def read_until_closed(stream: trio.SSLStream) -> None:
    """Read until the peer closes the connection (EOF or a broken TLS stream)."""
    try:
        while await stream.receive_some(65536):
            pass
    except (trio.BrokenResourceError, ssl.SSLError):
        pass


async def test_client_operations_and_bad_input(cluster_path, tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes = await start_nodes(nursery, cluster_path)
            async with open_client(cluster_path, "alice", timeout=20) as client:
                await client.put(b"colour", b"blue")
                assert await client.get(b"colour") == b"blue"
                assert await client.get(b"missing") is None
                assert await client.execute(codec.encode(["get", b"colour"])) == codec.encode(
                    b"blue"
                )
                assert await client.delete(b"colour") is True
                assert await client.delete(b"colour") is False
                assert await client.get(b"colour") is None

                target = nodes[1]
                # Garbage frames over an authenticated connection: counted, not fatal.
                bob = await tls_connect(cluster_path, "bob", target.port)
                await bob.send_all(codec.frame(b"\xff\x00garbage") + codec.frame(b""))
                # A signed query over that connection still gets a signed answer.
                key = load_identity(load_cluster(cluster_path), "bob").key
                query = seal(key, "rt", "bob", QueryStatus(1)).to_bytes()
                await bob.send_all(codec.frame(query))
                reader = codec.FrameReader()
                frames: list[bytes] = []
                while not frames:
                    frames = reader.feed(await bob.receive_some(65536))
                assert target.rejected[("bob", Reason.MALFORMED.value)] == 2

                # An oversize length prefix: that connection alone is closed.
                await bob.send_all(b"\xff\xff\xff\xff")
                await read_until_closed(bob)
                await bob.aclose()
                assert target.transport.counters["oversize-frame"] == 1

                # Plain-TCP garbage: the TLS handshake fails and the connection is closed.
                raw = await trio.open_tcp_stream("127.0.0.1", target.port)
                await raw.send_all(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(64))
                await read_until_closed(raw)
                await raw.aclose()

                # A certificate from another cluster's CA is refused.
                other = make_cluster(str(tmp_path), "other")
                failures = target.transport.counters["tls-failure"]
                try:
                    stranger = await tls_connect(other, "alice", target.port)
                    await stranger.send_all(codec.frame(query))
                    await read_until_closed(stranger)
                    await trio.aclose_forcefully(stranger)
                except (trio.BrokenResourceError, ssl.SSLError):
                    pass
                while target.transport.counters["tls-failure"] == failures:
                    await trio.sleep(0.01)

                # The client still gets answers.
                await client.put(b"after", b"attack")
                assert await client.get(b"after") == b"attack"
                statuses = await client.status(timeout=5)
                assert sorted(statuses) == [0, 1, 2, 3]
                assert all(s.last_executed >= 4 for s in statuses.values())
            nursery.cancel_scope.cancel()


async def test_calls_complete_with_one_replica_stopped(cluster_path):
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nodes = await start_nodes(nursery, cluster_path)
            async with open_client(cluster_path, "alice", timeout=30) as client:
                await client.put(b"k", b"v0")
                nodes[3].stop()
                for i in range(1, 12):  # past a checkpoint (K = 4) with one replica down
                    await client.put(b"k", b"v%d" % i)
                assert await client.get(b"k") == b"v11"
                statuses = await client.status(timeout=1)
                assert 3 not in statuses
                assert sorted(statuses) == [0, 1, 2]
                assert all(s.stable_seq >= 8 for s in statuses.values())
            nursery.cancel_scope.cancel()


async def test_client_timeout_raises_timeouterror(cluster_path):
    # No replica is running: with a timeout the call raises TimeoutError, and the client
    # is usable for the next call.
    with trio.fail_after(10):
        async with open_client(cluster_path, "alice", timeout=0.3) as client:
            with pytest.raises(TimeoutError):
                await client.put(b"k", b"v")
            with pytest.raises(TimeoutError):
                await client.get(b"k")
            assert await client.status(timeout=0.2) == {}


async def test_port_in_use_is_a_usage_error(cluster_path):
    from pbft.errors import UsageError
    from pbft.node.node import run_replica

    config = load_cluster(cluster_path)
    with trio.fail_after(10):
        blocker = await trio.open_tcp_listeners(config.replicas[0].port, host="127.0.0.1")
        try:
            with pytest.raises(UsageError, match="already in use"):
                await run_replica(cluster_path, 0)
        finally:
            for listener in blocker:
                await listener.aclose()


async def test_unknown_behaviour_is_a_usage_error(cluster_path):
    from pbft.errors import UsageError
    from pbft.node.node import run_replica

    with trio.fail_after(10), pytest.raises(UsageError, match="unknown behaviour no-such"):
        await run_replica(cluster_path, 0, behaviour="no-such")


async def test_outbox_bounds_and_coalesces():
    box = Outbox(max_frames=3, max_bytes=100)
    assert box.put(b"a") and box.put(b"bb") and box.put(b"c")
    assert not box.put(b"d")  # full: dropped
    with trio.fail_after(1):
        assert await box.take() == b"abbc"
    assert len(box) == 0
    assert not box.put(b"x" * 101)


def test_free_ports_are_distinct():
    ports = free_ports(8)
    assert len(set(ports)) == 8



async def test_calls_complete_after_the_primary_stops(cluster_path):
    # The client's retransmissions reach the backups, whose timers expire and move the
    # cluster to view 1 (OSDI'99 4.4); the call returns once the new primary orders it.
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nodes = await start_nodes(nursery, cluster_path)
            async with open_client(cluster_path, "alice", timeout=30) as client:
                await client.put(b"k", b"before")
                nodes[0].stop()
                await client.put(b"k", b"after")
                assert await client.get(b"k") == b"after"
                statuses = await client.status(timeout=1)
                assert sorted(statuses) == [1, 2, 3]
                assert all(s.view >= 1 for s in statuses.values())
            nursery.cancel_scope.cancel()


async def test_links_reconnect_to_a_restarted_replica(cluster_path):
    # Replica 3 goes away and comes back empty on the same port (no storage yet); the
    # others redial it (backoff), it catches up by state transfer, and once replica 2 is
    # stopped the cluster needs replica 3 for every quorum.
    config = load_cluster(cluster_path)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nodes = await start_nodes(nursery, cluster_path)
            async with open_client(cluster_path, "alice", timeout=30) as client:
                await client.put(b"k", b"v0")
                nodes[3].stop()
                for i in range(1, 10):
                    await client.put(b"k", b"v%d" % i)
                fresh = build_node(config, load_identity(config, 3), 3)
                await nursery.start(fresh.run)
                # Let it catch up before it is needed for every quorum.
                i = 10
                while fresh.replica.last_executed < nodes[0].replica.last_executed:
                    await client.put(b"k", b"v%d" % i)
                    i += 1
                nodes[2].stop()
                for j in range(i, i + 10):
                    await client.put(b"k", b"v%d" % j)
                assert await client.get(b"k") == b"v%d" % j
                assert fresh.replica.last_executed == nodes[0].replica.last_executed
            nursery.cancel_scope.cancel()
