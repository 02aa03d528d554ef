"""Connection attacks on one replica's listener (tools only, not part of `pbft`).

    .venv/bin/python tools/attack_connections.py [--only a,b,c] [--unauth 1100]
        [--held 1024] [--partial 16] [--json FILE]

Starts a listener in a child process (replica 0's `Transport` of a fresh f=1 cluster on
127.0.0.1, echoing every frame back to its sender; the other replicas are not running)
and attacks it from this process:

(a) `--unauth` plain TCP connections that never start the TLS handshake, each reopened
    as soon as the listener closes it; meanwhile a valid client (alice) connects, sends a
    frame and waits for its echo, retrying like a real client. Reports how long it took.
(b) one valid client (alice) opens `--held` mutual-TLS connections and keeps them; then
    another (bob) and alice herself each try to get a frame echoed.
(c) `--partial` connections, each from its own client identity, each sending the length
    prefix and all but the last KiB of a 16 MiB frame and holding it; then the same from
    the three other replicas' identities, two connections each. Reports the listener's
    VmRSS before, while held, and after every attacker has disconnected.

Works against any revision of `pbft.node.transport` whose `Transport` takes the same
constructor arguments (run it with PYTHONPATH pointing at another checkout to compare).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node import tls
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.protocol import codec

MiB = 1024 * 1024


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- the listener (child process) --------------------------------------------------------


async def listen(path: str, status: str) -> None:
    from pbft.node.transport import Transport

    config = load_cluster(path)
    ident = load_identity(config, 0)
    send, recv = trio.open_memory_channel(1024)
    t = Transport(
        config, 0,
        server_context=tls.server_context(ident),
        client_context=tls.client_context(ident),
        identify=functools.partial(tls.peer_id, config),
        inbox=send,
    )
    listeners = await t.bind()

    async def report() -> None:
        while True:
            tmp = status + ".tmp"
            with open(tmp, "w", encoding="ascii") as fh:
                json.dump({"port": t.listen_port, "counters": dict(t.counters)}, fh)
            os.replace(tmp, status)
            await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, listeners)
        nursery.start_soon(report)
        async for ev in recv:
            if isinstance(ev.peer, str):
                t.send_client(ev.peer, ev.data)


# -- the attacker ------------------------------------------------------------------------


class Target:
    def __init__(self, path: str, status: str, proc: subprocess.Popen):
        self.path = path
        self.config = load_cluster(path)
        self.status = status
        self.proc = proc
        self.port = self.read()["port"]
        self._ctx: dict[object, object] = {}

    def read(self) -> dict:
        with open(self.status, encoding="ascii") as fh:
            return json.load(fh)

    def context(self, who):
        if who not in self._ctx:
            self._ctx[who] = tls.client_context(load_identity(self.config, who))
        return self._ctx[who]

    async def tls(self, who) -> trio.SSLStream:
        tcp = await trio.open_tcp_stream("127.0.0.1", self.port)
        s = trio.SSLStream(tcp, self.context(who), server_hostname="127.0.0.1")
        try:
            await s.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return s

    def rss(self) -> float:
        return rss_mib(self.proc.pid)


async def echo_once(target: Target, who: str, timeout: float) -> dict:
    """Connect as `who`, send a frame and wait for its echo, retrying (backoff 0.05 s
    doubling to 2 s, as the client transport does) until `timeout`."""
    start = time.monotonic()
    attempts = 0
    errors: list[str] = []
    delay = 0.05
    with trio.move_on_after(timeout):
        while True:
            attempts += 1
            try:
                with trio.fail_after(5):
                    t0 = time.monotonic()
                    s = await target.tls(who)
                    handshake = time.monotonic() - t0
                    try:
                        await s.send_all(codec.frame(b"ping"))
                        reader = codec.FrameReader()
                        frames: list[bytes] = []
                        while not frames:
                            data = await s.receive_some(65536)
                            if not data:
                                raise trio.BrokenResourceError("closed")
                            frames = reader.feed(data)
                    finally:
                        await trio.aclose_forcefully(s)
                return {"ok": True, "seconds": round(time.monotonic() - start, 3), "attempts": attempts,
                        "last_connect_and_handshake_seconds": round(handshake, 3),
                        "failed_attempts": errors[:5]}
            except Exception as exc:
                errors.append(f"{time.monotonic() - start:.2f}s {type(exc).__name__}: {exc}"[:120])
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)
    return {"ok": False, "seconds": round(time.monotonic() - start, 3), "attempts": attempts,
            "failed_attempts": errors[:5]}


async def scenario_a(target: Target, unauth: int) -> dict:
    opened = [0]
    live = [0]

    async def hold_forever() -> None:
        while True:
            try:
                tcp = await trio.open_tcp_stream("127.0.0.1", target.port)
            except OSError:
                await trio.sleep(0.01)
                continue
            opened[0] += 1
            live[0] += 1
            try:
                while await tcp.receive_some(4096):
                    pass
            except (OSError, trio.BrokenResourceError):
                pass
            finally:
                live[0] -= 1
                await trio.aclose_forcefully(tcp)

    async with trio.open_nursery() as nursery:
        for _ in range(unauth):
            nursery.start_soon(hold_forever)
        while opened[0] < unauth:
            await trio.sleep(0.05)
        await trio.sleep(0.5)
        result = await echo_once(target, "alice", 30)
        result.update(unauth_open_now=live[0], unauth_opened_total=opened[0])
        nursery.cancel_scope.cancel()
    return result


async def scenario_b(target: Target, held: int) -> dict:
    streams: list[trio.SSLStream] = []
    failed = 0
    for _ in range(held):
        try:
            with trio.fail_after(5):
                streams.append(await target.tls("alice"))
        except Exception:
            failed += 1
    await trio.sleep(0.5)
    bob = await echo_once(target, "bob", 15)
    alice = await echo_once(target, "alice", 15)

    async def still_open(s: trio.SSLStream) -> bool:
        with trio.move_on_after(0.01):
            try:
                return bool(await s.receive_some(1)) or False
            except Exception:
                return False
        return True

    alive = 0
    for s in streams:
        alive += await still_open(s)
    for s in streams:
        await trio.aclose_forcefully(s)
    return {"alice_opened": len(streams), "alice_failed": failed, "alice_still_open": alive,
            "bob": bob, "alice_new": alice}


async def hold_partials(target: Target, who: list, size: int) -> list[trio.SSLStream]:
    out = []
    body = bytes(size - 1024)
    for w in who:
        try:
            with trio.fail_after(10):
                s = await target.tls(w)
                out.append(s)
                with trio.move_on_after(3):  # a listener that stops reading: stop writing
                    await s.send_all(size.to_bytes(4, "big") + body)
        except Exception:
            pass
    return out


async def scenario_c(target: Target, partial: int) -> dict:
    size = 16 * MiB
    res: dict = {"rss_start_mib": round(target.rss(), 1)}
    for label, who in (("clients", [f"c{i}" for i in range(partial)]),
                       ("replicas", [1, 1, 2, 2, 3, 3])):
        before = target.rss()
        streams = await hold_partials(target, who, size)
        await trio.sleep(1.5)
        held = target.rss()
        counters = target.read()["counters"]
        for s in streams:
            await trio.aclose_forcefully(s)
        await trio.sleep(2.0)
        after = target.rss()
        res[label] = {
            "connections": len(who),
            "rss_before_mib": round(before, 1),
            "rss_held_mib": round(held, 1),
            "per_connection_mb": round((held - before) * MiB / 1e6 / len(who), 2),
            "rss_after_close_mib": round(after, 1),
            "counters_while_held": counters,
        }
    return res


async def attack(args, target: Target) -> dict:
    out: dict = {"rss_idle_mib": round(target.rss(), 1)}
    only = set(args.only.split(","))
    if "a" in only:
        out["a"] = await scenario_a(target, args.unauth)
        await trio.sleep(2)
        out["a"]["rss_after_mib"] = round(target.rss(), 1)
    if "b" in only:
        out["b"] = await scenario_b(target, args.held)
        await trio.sleep(2)
        out["b"]["rss_after_mib"] = round(target.rss(), 1)
    if "c" in only:
        out["c"] = await scenario_c(target, args.partial)
    out["counters"] = target.read()["counters"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="a,b,c")
    p.add_argument("--unauth", type=int, default=1100)
    p.add_argument("--held", type=int, default=1024)
    p.add_argument("--partial", type=int, default=16)
    p.add_argument("--json")
    p.add_argument("--listen", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.listen:
        trio.run(listen, *args.listen)
        return
    with tempfile.TemporaryDirectory() as tmp:
        clients = ["alice", "bob"] + [f"c{i}" for i in range(args.partial)]
        path = generate_cluster(os.path.join(tmp, "c"), f=1, clients=clients,
                                ports=free_ports(4), cluster_id="attack")
        status = os.path.join(tmp, "status.json")
        proc = subprocess.Popen([sys.executable, __file__, "--listen", path, status])
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(status):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the listener did not start")
                time.sleep(0.05)
            out = trio.run(attack, args, Target(path, status, proc))
        finally:
            proc.terminate()
            proc.wait()
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="ascii") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
