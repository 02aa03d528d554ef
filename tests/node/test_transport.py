"""The transport on real loopback mutual TLS: frames of every size arrive whole and in
order, a burst is coalesced, a full outbox drops and counts, and a TLS peer built on
trio.SSLStream (a different TLS driver) talks to it both ways."""

from __future__ import annotations

import functools
import os

import pytest
import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node import tls
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.transport import Outbox, Transport
from pbft.protocol import codec


@pytest.fixture
def config(tmp_path):
    path = generate_cluster(
        os.path.join(str(tmp_path), "tt"), f=1, clients=["alice"], ports=free_ports(4),
        cluster_id="tt",
    )
    return path, load_cluster(path)


def make_transport(config, me, autoflush=True) -> tuple[Transport, trio.MemoryReceiveChannel]:
    ident = load_identity(config, me)
    send, recv = trio.open_memory_channel(64)
    t = Transport(
        config, me,
        server_context=tls.server_context(ident) if isinstance(me, int) else None,
        client_context=tls.client_context(ident),
        identify=functools.partial(tls.peer_id, config),
        inbox=send,
        autoflush=autoflush,
    )
    return t, recv


async def start(nursery, config, ids, autoflush=True):
    out = {}
    for i in ids:
        t, recv = make_transport(config, i, autoflush)
        await nursery.start(t.run, await t.bind())
        out[i] = (t, recv)
    return out


async def test_frames_arrive_whole_and_in_order(config):
    _, cfg = config
    sizes = [0, 1, 300, 16 * 1024 - 4, 16 * 1024 + 7, 200_000, 1_000_000] + [50] * 500
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes = await start(nursery, cfg, [0, 1])
            t0, _ = nodes[0]
            _, recv1 = nodes[1]
            bodies = [i.to_bytes(4, "big") + os.urandom(max(0, n - 4))[: max(0, n - 4)]
                      for i, n in enumerate(sizes)]
            # Queued before the link is up and while it is busy: all arrive, in order.
            for b in bodies:
                assert t0.send(1, b)
            got = []
            while len(got) < len(bodies):
                ev = await recv1.receive()
                assert ev.peer == 0
                got.append(ev.data)
            assert got == bodies
            nursery.cancel_scope.cancel()


async def test_broadcast_reaches_every_replica_and_client_answers(config):
    path, cfg = config
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes = await start(nursery, cfg, [0, 1, 2, 3])
            client, crecv = make_transport(cfg, "alice")
            await nursery.start(client.run)
            for k in range(100):
                nodes[0][0].broadcast(b"hello %d" % k)
            for i in (1, 2, 3):
                for k in range(100):
                    ev = await nodes[i][1].receive()
                    assert (ev.peer, ev.data) == (0, b"hello %d" % k)
            # A client is answered over its own inbound connection.
            assert client.send(2, b"request")
            ev = await nodes[2][1].receive()
            assert (ev.peer, ev.data) == ("alice", b"request")
            assert nodes[2][0].send_client("alice", b"reply")
            ev = await crecv.receive()
            assert (ev.peer, ev.data) == (2, b"reply")
            nursery.cancel_scope.cancel()


async def test_sslstream_peer_interoperates(config):
    """A peer using trio.SSLStream (as the tests' raw connections do) reads our frames
    and its frames reach us, both across many TLS records."""
    path, cfg = config
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes = await start(nursery, cfg, [0])
            t0, recv0 = nodes[0]
            ident = load_identity(cfg, "alice")
            tcp = await trio.open_tcp_stream("127.0.0.1", t0.listen_port)
            stream = trio.SSLStream(tcp, tls.client_context(ident), server_hostname="127.0.0.1")
            await stream.do_handshake()
            big = os.urandom(300_000)
            await stream.send_all(codec.frame(b"small") + codec.frame(big))
            assert (await recv0.receive()).data == b"small"
            assert (await recv0.receive()).data == big
            assert t0.send_client("alice", big)
            reader = codec.FrameReader()
            frames: list[bytes] = []
            while not frames:
                frames = reader.feed(await stream.receive_some(65536))
            assert frames == [big]
            await stream.aclose()
            nursery.cancel_scope.cancel()


def test_outbox_is_bounded_and_drains_whole():
    box = Outbox(max_frames=3, max_bytes=100)
    assert box.put(b"a" * 10) and box.put(b"b" * 10)
    assert not box.put(b"c" * 90)  # bytes bound
    assert box.put(b"d")
    assert not box.put(b"e")  # frames bound
    assert len(box) == 3

    async def drain():
        return await box.take()

    assert trio.run(drain) == b"a" * 10 + b"b" * 10 + b"d"
    assert len(box) == 0 and box.put(b"c" * 90)


async def test_flushed_writes_survive_a_full_socket_in_order(config):
    """Without autoflush, `flush()` writes from the caller's task; when the socket cannot
    take a batch (megabytes queued at once) the rest goes to the writer task, and frames
    queued meanwhile still arrive after it, whole and in order, to replicas and clients."""
    _, cfg = config
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start(nursery, cfg, [0, 1], autoflush=False)
            t0, _ = nodes[0]
            _, recv1 = nodes[1]
            client, crecv = make_transport(cfg, "alice", autoflush=False)
            await nursery.start(client.run)
            assert client.send(0, b"hello")
            client.flush()
            assert (await nodes[0][1].receive()).data == b"hello"  # links are up now
            while 1 not in t0.connected:
                await trio.sleep(0.01)
            bodies = [k.to_bytes(4, "big") + os.urandom(100_000) for k in range(120)]
            for start_at in range(0, len(bodies), 10):
                for b in bodies[start_at:start_at + 10]:
                    assert t0.send(1, b)
                    assert t0.send_client("alice", b)
                t0.flush()  # 2 MB per flush: more than a loopback socket takes at once
            got, replies = [], []
            while len(got) < len(bodies):
                got.append((await recv1.receive()).data)
            while len(replies) < len(bodies):
                replies.append((await crecv.receive()).data)
            assert got == bodies and replies == bodies
            nursery.cancel_scope.cancel()


def test_a_configuration_adopted_before_running_keeps_no_outbox_for_who_left(config):
    """A restart that comes back in a later epoch than its cluster file adopts that epoch
    before the transport runs (ReplicaNode.recover): no dialer yet, and the outboxes of the
    replicas that left must go all the same, or broadcasts fill them for nobody."""
    from dataclasses import replace

    _, cfg = config
    t, _ = make_transport(cfg, 0)
    assert sorted(t.outboxes) == [1, 2, 3]
    t.reconfigure(replace(cfg, replicas=cfg.replicas[:3]))
    assert sorted(t.outboxes) == [1, 2]
