"""CPU cost of the pure protocol core per request, without sockets or TLS (tools only).

    .venv/bin/python tools/bench_core.py [--f 1] [--clients 32] [--requests 3000]
        [--batch-max 256] [--pipeline 8] [--profile]

n `Replica` cores and C `ClientCore`s in one process, messages delivered FIFO, each
replica with its own `Verifier` (no memo: every receiver verifies, as on real replicas).
Clients are closed-loop: a client submits its next put as soon as one completes. Prints
CPU microseconds per request for the whole cluster, split into replicas and clients, next
to the Ed25519 floor (n * t_verify + t_sign), and with --profile the top functions by
cProfile. What `pbft bench` measures on top of this is the runtime: Trio, TLS, sockets.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import deque

from pbft.cluster.bench import VALUE_SIZE, measure_crypto
from pbft.protocol.client import ClientCore
from pbft.protocol.config import ClientInfo, ClusterConfig, ReplicaInfo
from pbft.protocol.crypto import KeyPair, Verifier
from pbft.protocol.events import Broadcast, Completed, Received, Send, SendClient, Tick
from pbft.protocol.replica import Replica
from pbft.service.kv import KeyValueStore, op_put


def make_store(sqlite_dir: str | None, i: int, keys: int, value_size: int):
    """Replica i's store: in memory, or a DurableStore in `sqlite_dir` (as a replica
    process keeps it), filled with `keys` keys directly (not through the protocol)."""
    from pbft.protocol.service import SERVICE_PREFIX
    from pbft.protocol.store import MemoryStore

    if sqlite_dir is None:
        store = MemoryStore()
    else:
        import os

        from pbft.node.statestore import DurableStore

        path = os.path.join(sqlite_dir, f"r{i}.sqlite3")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        store = DurableStore(path)
    value = b"p" * value_size
    for k in range(keys):
        store.put(SERVICE_PREFIX + b"pre/%09d" % k, value)
    return store


def build(f: int, clients: int, batch_max: int, pipeline: int, state_keys: int = 0,
          value_size: int = 100, sqlite_dir: str | None = None):
    n = 3 * f + 1
    rkeys = [KeyPair.from_seed(b"r%d" % i) for i in range(n)]
    names = [f"c{i}" for i in range(clients)]
    ckeys = {c: KeyPair.from_seed(c.encode()) for c in names}
    config = ClusterConfig(
        "bench",
        f,
        tuple(ReplicaInfo(i, "127.0.0.1", 7000 + i, rkeys[i].public) for i in range(n)),
        tuple(ClientInfo(c, ckeys[c].public) for c in names),
        batch_max=batch_max,
        pipeline=pipeline,
    )
    replicas = [
        Replica(config, i, rkeys[i], KeyValueStore(make_store(sqlite_dir, i, state_keys, value_size)),
                Verifier("bench", config.member_keys()))
        for i in range(n)
    ]
    cores = {c: ClientCore(config, c, ckeys[c]) for c in names}
    return config, replicas, cores


class Counts:
    """Signatures made and checked during the run (counted around the core, not in it)."""

    verifies = 0
    signs = 0

    @classmethod
    def install(cls) -> None:
        verify, sign = Verifier.verify, KeyPair.sign

        def counted_verify(self, env):
            cls.verifies += 1
            return verify(self, env)

        def counted_sign(self, payload):
            cls.signs += 1
            return sign(self, payload)

        Verifier.verify = counted_verify  # type: ignore[method-assign]
        KeyPair.sign = counted_sign  # type: ignore[method-assign]


def run(config, replicas, cores, requests: int) -> dict[str, float]:
    queue: deque = deque()
    cpu = {"replicas": 0.0, "clients": 0.0}
    done = 0
    issued = 0
    value = b"v" * VALUE_SIZE

    def perform(src, actions) -> None:
        nonlocal done
        for a in actions:
            match a:
                case Send(to, data):
                    queue.append((src, to, data))
                case Broadcast(data):
                    for r in config.replica_ids():
                        if r != src:
                            queue.append((src, r, data))
                case SendClient(c, data):
                    queue.append((src, c, data))
                case Completed():
                    done += 1
                    submit(src)

    def submit(c: str) -> None:
        nonlocal issued
        if issued >= requests:
            return
        issued += 1
        t0 = time.process_time()
        acts = cores[c].submit(op_put(b"%s/k%d" % (c.encode(), issued % 8), value))
        cpu["clients"] += time.process_time() - t0
        perform(c, acts)

    for c in cores:
        submit(c)
    while queue:
        src, dst, data = queue.popleft()
        t0 = time.process_time()
        if isinstance(dst, int):
            acts = replicas[dst].step(Received(src, data))
            cpu["replicas"] += time.process_time() - t0
        else:
            acts = cores[dst].step(Received(src, data))
            cpu["clients"] += time.process_time() - t0
        perform(dst, acts)
        quiet = 0
        while not queue and done < issued and quiet < 1000:
            # Quiet with requests outstanding: time passes until something happens (the
            # primary proposes a batch it held for returning clients). Not counted as
            # request work.
            quiet += 1
            for r, rep in enumerate(replicas):
                perform(r, rep.step(Tick()))
    cpu["requests"] = done
    return cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--f", type=int, default=1)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--batch-max", type=int, default=256)
    p.add_argument("--pipeline", type=int, default=8)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--state-keys", type=int, default=0, help="preload each replica's state with N keys")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--sqlite", metavar="DIR", help="each replica's state in SQLite (DurableStore) in DIR")
    args = p.parse_args()
    Counts.install()
    config, replicas, cores = build(args.f, args.clients, args.batch_max, args.pipeline,
                                    args.state_keys, args.value_size, args.sqlite)
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    cpu = run(config, replicas, cores, args.requests)
    if prof:
        prof.disable()
    cost = measure_crypto()
    n = config.n
    per = {k: cpu[k] / cpu["requests"] * 1e6 for k in ("replicas", "clients")}
    floor = (n * cost.t_verify + cost.t_sign) * 1e6
    batches = replicas[0].last_executed
    print(f"n={n} clients={args.clients} requests={cpu['requests']} batches={batches} "
          f"(mean batch {cpu['requests'] / max(1, batches):.1f})")
    print(f"cpu per request: replicas {per['replicas']:.0f} us, clients {per['clients']:.0f} us, "
          f"total {per['replicas'] + per['clients']:.0f} us; crypto floor {floor:.0f} us "
          f"(sign {cost.t_sign * 1e6:.1f}, verify {cost.t_verify * 1e6:.1f})")
    print(f"core-only ceiling on 1 core: {1e6 / (per['replicas'] + per['clients']):.0f} req/s")
    # What the run's own signatures cost at this machine's rates, and what is left: the
    # Python around the crypto (decode, checks, bookkeeping, encode).
    v, s = Counts.verifies / cpu["requests"], Counts.signs / cpu["requests"]
    crypto = (v * cost.t_verify + s * cost.t_sign) * 1e6
    print(f"per request: {v:.2f} verifies, {s:.2f} signs = {crypto:.0f} us of Ed25519; "
          f"non-crypto {per['replicas'] + per['clients'] - crypto:.0f} us")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
