"""CPU per frame of the runtime transport alone (tools only, not part of `pbft`).

    .venv/bin/python tools/bench_transport.py [--rounds 3000] [--window 32] [--size 300]
        [--repeat 3]

Four replica `Transport`s (f=1) on loopback mutual TLS, in one process and one Trio loop,
so the process's CPU time is the cost of the transport (TLS, sockets, Trio scheduling)
with no signatures, no core and no storage. A round mimics one agreement: replica 0
broadcasts a frame of `--size` bytes, every other replica answers it with a broadcast of
its own (like a PREPARE), so a round delivers 3 + 3 * 3 = 12 frames. Replica 0 keeps
`--window` rounds outstanding (like a primary with that many clients); window 1 measures
the latency-bound case, where every frame costs its own wake-ups. Each receiver drains its
inbox like `ReplicaNode._step_loop` (one awaited receive, then what is already queued)
before it performs its sends, then calls `Transport.flush()` as the node does
(`--autoflush`: every queued frame wakes its link's writer task instead).

Prints, per repetition and as the median, CPU microseconds per round and per frame.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time

import trio


async def one_run(
    path: str, rounds: int, window: int, size: int, autoflush: bool = False
) -> tuple[float, float]:
    from pbft.node import tls
    from pbft.node.clusterfile import load_cluster, load_identity
    from pbft.node.transport import Transport

    config = load_cluster(path)
    ids = [r.id for r in config.replicas]
    inboxes = {}
    transports: dict[int, Transport] = {}
    for i in ids:
        ident = load_identity(config, i)
        send, recv = trio.open_memory_channel(4096)
        inboxes[i] = recv
        transports[i] = Transport(
            config, i,
            server_context=tls.server_context(ident),
            client_context=tls.client_context(ident),
            identify=functools.partial(tls.peer_id, config),
            inbox=send,
            autoflush=autoflush,
        )
    done = trio.Event()
    acks: dict[int, int] = {}
    finished = 0
    started = 0

    def propose() -> None:
        nonlocal started
        body = started.to_bytes(8, "big") + bytes(size - 8)
        transports[0].broadcast(b"P" + body)
        started += 1

    async def primary() -> None:
        nonlocal finished
        recv = inboxes[0]
        async for ev in recv:
            batch = [ev]
            while True:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            for e in batch:
                k = int.from_bytes(e.data[1:9], "big")
                acks[k] = acks.get(k, 0) + 1
                if acks[k] == len(ids) - 1:
                    del acks[k]
                    finished += 1
                    if started < rounds:
                        propose()
            transports[0].flush()
            if finished >= rounds:
                done.set()

    async def backup(i: int) -> None:
        recv = inboxes[i]
        t = transports[i]
        async for ev in recv:
            batch = [ev]
            while True:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            for e in batch:
                if e.data[:1] == b"P":
                    t.broadcast(b"A" + e.data[1:])
            t.flush()

    async with trio.open_nursery() as nursery:
        for i in ids:
            listeners = await transports[i].bind()
            await nursery.start(transports[i].run, listeners)
        while any(len(t.connected) < len(ids) - 1 for t in transports.values()):
            await trio.sleep(0.01)
        nursery.start_soon(primary)
        for i in ids[1:]:
            nursery.start_soon(backup, i)
        await trio.sleep(0.1)
        cpu0, wall0 = time.process_time(), time.monotonic()
        for _ in range(min(window, rounds)):
            propose()
        transports[0].flush()
        await done.wait()
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        nursery.cancel_scope.cancel()
    return cpu, wall


def main() -> int:
    from pbft.cluster.keygen import generate_cluster
    from pbft.cluster.launcher import free_ports

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3000)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--size", type=int, default=300)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--autoflush", action="store_true",
                   help="every queued frame wakes its writer task (the default before "
                        "Transport.flush); without it the senders flush once per batch, as "
                        "ReplicaNode does")
    args = p.parse_args()
    per_round = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            path = generate_cluster(f"{tmp}/c{r}", f=1, clients=["c"], ports=free_ports(4),
                                    cluster_id="tb", force=True)
            cpu, wall = trio.run(one_run, path, args.rounds, args.window, args.size,
                                 args.autoflush)
            us = 1e6 * cpu / args.rounds
            per_round.append(us)
            print(f"#{r + 1}: {us:.1f} us CPU/round, {us / 12:.1f} us/frame, "
                  f"{args.rounds / wall:.0f} rounds/s", file=sys.stderr)
    med = statistics.median(per_round)
    print(f"window {args.window} size {args.size}: median {med:.1f} us CPU/round, "
          f"{med / 12:.1f} us/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
