"""What a replica's listener lets peers hold (transport module docstring, "Connections"),
on real loopback mutual TLS with small limits: connections that never finish a handshake,
one identity's many connections, frames left unfinished and frames beyond the buffer
budget each cost bounded resources, are closed and counted, and never lock a valid
client out."""

from __future__ import annotations

import functools
import os
import random
import socket

import pytest
import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node import tls
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.transport import (
    BufferBudget,
    FrameAssembler,
    FrameRefused,
    Limits,
    Transport,
    _Inbound,
)
from pbft.protocol import codec


@pytest.fixture
def cfg(tmp_path):
    path = generate_cluster(
        os.path.join(str(tmp_path), "tl"), f=1, clients=["alice", "bob", "carol"],
        ports=free_ports(4), cluster_id="tl",
    )
    return load_cluster(path)


async def listen(nursery, cfg, limits: Limits) -> tuple[Transport, trio.MemoryReceiveChannel]:
    ident = load_identity(cfg, 0)
    send, recv = trio.open_memory_channel(64)
    t = Transport(
        cfg, 0,
        server_context=tls.server_context(ident),
        client_context=tls.client_context(ident),
        identify=functools.partial(tls.peer_id, cfg),
        inbox=send,
        limits=limits,
    )
    await nursery.start(t.run, await t.bind())
    return t, recv


async def connect(cfg, who, port) -> trio.SSLStream:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    s = trio.SSLStream(tcp, tls.client_context(load_identity(cfg, who)), server_hostname="127.0.0.1")
    await s.do_handshake()
    return s


async def closed_by_peer(stream) -> bool:
    """True once the other end has closed `stream` (reads end or fail)."""
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return True
    except (trio.BrokenResourceError, OSError):
        return True


async def wait_for(predicate, step=0.01) -> None:
    while not predicate():
        await trio.sleep(step)


async def test_unauthenticated_storm_does_not_lock_out_a_client(cfg):
    """Five times the handshake cap in silent connections, each reopened as soon as it
    is closed, with a handshake timeout longer than the test: new ones push out the
    oldest silent ones, so the cap holds and a real client's connection (which speaks
    at once) is accepted, handshakes and gets its frame through on its first try."""
    limits = Limits(max_unauthenticated=8, handshake_timeout=60)
    opened = [0]

    async def silent_forever(port):
        while True:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            opened[0] += 1
            try:
                await closed_by_peer(tcp)
            finally:
                await trio.aclose_forcefully(tcp)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            t, recv = await listen(nursery, cfg, limits)
            for _ in range(40):
                nursery.start_soon(silent_forever, t.listen_port)
            await wait_for(lambda: t.counters["handshake-evicted"] >= 200)
            assert len(t._handshaking) <= 8
            for who in ("alice", "bob", "carol"):
                s = await connect(cfg, who, t.listen_port)
                await s.send_all(codec.frame(b"through"))
                ev = await recv.receive()
                assert (ev.peer, ev.data) == (who, b"through")
                await trio.aclose_forcefully(s)
            assert len(t._handshaking) <= 8
            assert t.counters["handshake-timeout"] == 0 and opened[0] > 200
            nursery.cancel_scope.cancel()


async def test_a_full_handshake_stage_closes_the_oldest_silent_connection_first(cfg):
    """A real peer speaks first in TLS (its ClientHello), so at the cap the oldest
    connection with nothing received goes before older ones that have begun."""
    t = Transport(
        cfg, 0, server_context=None,
        client_context=tls.client_context(load_identity(cfg, 0)),
        identify=functools.partial(tls.peer_id, cfg), inbox=None,
        limits=Limits(max_unauthenticated=3),
    )
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        conns = [_Inbound(a.fileno()) for a, _ in pairs]
        for c in conns:
            t._handshaking[c] = None
        pairs[0][1].send(b"\x16\x03\x01")  # the oldest has begun its handshake
        t._evict_handshaking()
        assert list(t._handshaking) == [conns[0], conns[2]]
        assert conns[1].scope.cancel_called and not conns[0].scope.cancel_called
        pairs[2][1].send(b"\x16")  # all have spoken: the oldest goes
        t._evict_handshaking()
        assert list(t._handshaking) == [conns[2]] and conns[0].scope.cancel_called
        assert t.counters["handshake-evicted"] == 2
    finally:
        for a, b in pairs:
            a.close()
            b.close()


async def test_handshake_timeout_closes_and_counts(cfg):
    limits = Limits(handshake_timeout=0.3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            t, _ = await listen(nursery, cfg, limits)
            raw = await trio.open_tcp_stream("127.0.0.1", t.listen_port)
            await raw.send_all(b"\x16\x03\x01")  # a handshake begun, never finished
            assert await closed_by_peer(raw)
            assert t.counters["handshake-timeout"] == 1
            assert not t._handshaking
            nursery.cancel_scope.cancel()


async def test_one_client_identity_cannot_hold_many_connections(cfg):
    """alice opens many connections: she keeps only her newest few (the oldest are
    closed and counted), her next connection is not locked out by her own stale ones,
    and bob is not locked out by hers."""
    limits = Limits(max_client_links=3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            t, recv = await listen(nursery, cfg, limits)
            held = [await connect(cfg, "alice", t.listen_port) for _ in range(10)]
            await wait_for(lambda: t.counters["identity-link-limit"] == 7)
            assert len(t.inbound["alice"]) == 3
            for s in held[:7]:
                assert await closed_by_peer(s)
            for who in ("alice", "bob"):
                s = await connect(cfg, who, t.listen_port)
                await s.send_all(codec.frame(who.encode()))
                ev = await recv.receive()
                assert (ev.peer, ev.data) == (who, who.encode())
                held.append(s)
            assert len(t.inbound["alice"]) == 3 and len(t.inbound["bob"]) == 1
            # The replica answers over the connections alice still has.
            assert len(t.client_links["alice"]) == 3
            for s in held:
                await trio.aclose_forcefully(s)
            nursery.cancel_scope.cancel()


async def test_total_inbound_limit_closes_the_largest_holders_oldest(cfg):
    limits = Limits(max_client_links=10, max_inbound=4)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            t, recv = await listen(nursery, cfg, limits)
            held = [await connect(cfg, "alice", t.listen_port) for _ in range(4)]
            await wait_for(lambda: len(t.inbound.get("alice", ())) == 4)
            bob = await connect(cfg, "bob", t.listen_port)
            await bob.send_all(codec.frame(b"bob"))
            ev = await recv.receive()
            assert (ev.peer, ev.data) == ("bob", b"bob")
            assert t.counters["inbound-limit"] == 1
            assert t._inbound == 4 and len(t.inbound["alice"]) == 3
            assert await closed_by_peer(held[0])
            for s in held + [bob]:
                await trio.aclose_forcefully(s)
            nursery.cancel_scope.cancel()


async def test_unfinished_frame_is_closed_after_the_read_timeout(cfg):
    """A frame begun and left unfinished is closed after its deadline and counted, and
    its budget released; an idle connection (nothing in flight) stays open for longer
    than that and still delivers later."""
    limits = Limits(read_timeout=0.5, min_read_rate=1e12)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            t, recv = await listen(nursery, cfg, limits)
            idle = await connect(cfg, "bob", t.listen_port)
            alice = await connect(cfg, "alice", t.listen_port)
            await alice.send_all((300_000).to_bytes(4, "big") + bytes(200_000))
            await wait_for(lambda: t.budget.used == 300_000)
            start = trio.current_time()
            assert await closed_by_peer(alice)
            assert 0.4 < trio.current_time() - start < 3
            assert t.counters["read-timeout"] == 1
            assert t.budget.used == 0 and not t.budget.held
            # Also a length prefix cut short.
            carol = await connect(cfg, "carol", t.listen_port)
            await carol.send_all(b"\x00\x00")
            assert await closed_by_peer(carol)
            assert t.counters["read-timeout"] == 2
            await trio.sleep(0.3)  # bob, idle all along, is still connected
            await idle.send_all(codec.frame(b"still here"))
            ev = await recv.receive()
            assert (ev.peer, ev.data) == ("bob", b"still here")
            for s in (idle, alice, carol):
                await trio.aclose_forcefully(s)
            nursery.cancel_scope.cancel()


async def test_truncated_frame_at_close_is_counted(cfg):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            t, _ = await listen(nursery, cfg, Limits())
            alice = await connect(cfg, "alice", t.listen_port)
            await alice.send_all((1000).to_bytes(4, "big") + bytes(10))
            await alice.aclose()
            await wait_for(lambda: t.counters["truncated-frame"] == 1)
            assert t.budget.used == 0
            nursery.cancel_scope.cancel()


async def test_partial_frames_are_bounded_by_the_budget(cfg):
    """Unfinished frames reserve their declared size from one budget: a frame above an
    identity's budget is refused at its length prefix; once the budget is taken a
    client's further frame is refused and a replica's waits unbuffered, is closed if
    its deadline passes first, and is taken in when budget is released."""
    limits = Limits(
        buffer_budget=300_000, client_buffer_budget=300_000, client_frame_budget=200_000,
        read_timeout=1.0, min_read_rate=50_000,  # 150 kB: 4 s, 50 kB: 2 s
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            t, recv = await listen(nursery, cfg, limits)
            # Above alice's own budget: refused at the prefix, nothing buffered.
            over = await connect(cfg, "alice", t.listen_port)
            await over.send_all((250_000).to_bytes(4, "big") + bytes(1000))
            assert await closed_by_peer(over)
            assert t.counters["over-identity-budget"] == 1
            # Two unfinished frames of 150 kB take the whole budget.
            held = {}
            for who in ("alice", "bob"):
                held[who] = s = await connect(cfg, who, t.listen_port)
                await s.send_all((150_000).to_bytes(4, "big") + bytes(140_000))
                await wait_for(lambda w=who: t.budget.held.get(w) == 150_000)
            # A client's further unfinished frame is refused at once.
            carol = await connect(cfg, "carol", t.listen_port)
            await carol.send_all((50_000).to_bytes(4, "big") + bytes(40_000))
            assert await closed_by_peer(carol)
            assert t.counters["budget-exhausted"] == 1
            # A replica's waits, holding no budget, until its deadline closes it.
            r1 = await connect(cfg, 1, t.listen_port)
            await r1.send_all((50_000).to_bytes(4, "big") + bytes(40_000))
            await trio.sleep(0.2)
            assert t.budget.used == 300_000 and 1 not in t.budget.held
            assert await closed_by_peer(r1)
            assert t.counters["budget-timeout"] == 1
            # Another waits until alice's frame completes and frees its budget.
            r2 = await connect(cfg, 2, t.listen_port)
            await r2.send_all((50_000).to_bytes(4, "big") + bytes(40_000))
            await trio.sleep(0.2)
            assert 2 not in t.budget.held
            await held["alice"].send_all(bytes(10_000))
            ev = await recv.receive()
            assert (ev.peer, len(ev.data)) == ("alice", 150_000)
            await wait_for(lambda: t.budget.held.get(2) == 50_000)
            await r2.send_all(bytes(10_000))
            ev = await recv.receive()
            assert (ev.peer, len(ev.data)) == (2, 50_000)
            # bob never finishes: his deadline closes him; everything is released.
            assert await closed_by_peer(held["bob"])
            assert t.counters["read-timeout"] == 1
            assert t.budget.used == 0 and not t.budget.held
            for s in (over, carol, r1, r2, *held.values()):
                await trio.aclose_forcefully(s)
            nursery.cancel_scope.cancel()


def test_assembler_splits_frames_at_any_boundary_and_holds_only_what_arrived():
    budget = BufferBudget(Limits(), codec.MAX_FRAME)
    rng = random.Random(7)
    bodies = [os.urandom(n) for n in (0, 1, 3, 4, 5, 300, 70_000, 300_000, 2)]
    stream = b"".join(codec.frame(b) for b in bodies)
    for _ in range(20):
        asm = FrameAssembler("alice", budget)
        got, pos = [], 0
        while pos < len(stream):
            n = rng.choice([1, 2, 3, 5, 100, 17_000, 300_000])
            got += asm.feed(stream[pos : pos + n])
            pos += n
        assert got == bodies
        assert not asm.in_frame and budget.used == 0
    # A large declared size reserves budget but holds only the bytes that came.
    asm = FrameAssembler(1, budget)
    assert asm.feed((10_000_000).to_bytes(4, "big") + b"x" * 10) == []
    assert asm.held == 10 and budget.used == 10_000_000 and asm.in_frame
    asm.close()
    assert budget.used == 0 and not budget.held
    with pytest.raises(FrameRefused) as err:
        FrameAssembler(1, budget).feed((codec.MAX_FRAME + 1).to_bytes(4, "big"))
    assert err.value.reason == "oversize-frame"
    with pytest.raises(FrameRefused) as err:
        FrameAssembler("bob", budget).feed((2_000_000).to_bytes(4, "big"))
    assert err.value.reason == "over-identity-budget"
