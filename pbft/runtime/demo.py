"""`pbft demo`: the embedded default, with no setup.

Theory of operation. A throwaway cluster is made in a temporary directory (keys,
certificates and a cluster file on free loopback ports, with a small checkpoint interval
so checkpoints happen), its 4 replicas are started as real processes, and this process
runs the demo's phases against it with real async clients over mutual TLS. Each phase is
an async function taking the shared `Demo` state and appending what went wrong to
`demo.failures`; phases run in order (`PHASES`), so a primary crash or a Byzantine replica
is one more function in the list. A summary goes to stdout, progress to stderr. The
processes are always stopped and the directory always removed. Exit 0 when every check
held, 1 otherwise.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import trio

from ..cli import UsageError
from ..protocol.config import ClusterConfig

CHECKPOINT_INTERVAL = 32
"""Small, so a few hundred requests cross several checkpoints."""
CALL_TIMEOUT = 30.0
"""Seconds one client call may take before the demo counts it as failed."""
KEYS_PER_CLIENT = 8
MAX_CLIENTS = 64


@dataclass
class Demo:
    cluster_path: str
    config: ClusterConfig
    cluster: object  # launcher.LocalCluster
    client_names: list[str]
    requests: int
    clients: list = field(default_factory=list)
    """runtime.client.Client, one per name, open while the phases run."""
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    """Summary lines, printed after the phases in order."""


Phase = Callable[[Demo], Awaitable[None]]


class Progress:
    """A plain-text progress bar on stderr: `[#####.....] 150/300`."""

    WIDTH = 30

    def __init__(self, total: int, label: str) -> None:
        self.total = max(1, total)
        self.label = label
        self.done = 0
        self._last = -1.0

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.done == self.total or now - self._last >= 0.1:
            self._last = now
            self.draw()

    def draw(self) -> None:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
        sys.stderr.flush()

    def finish(self) -> None:
        self.draw()
        sys.stderr.write("\n")
        sys.stderr.flush()


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# -- phases -----------------------------------------------------------------------------


async def phase_workload(demo: Demo) -> None:
    """Concurrent clients doing signed puts and gets; every get must see the last put.

    Each client writes only its own keys, so the value the last put of a key wrote is
    exactly what a later get of it must return (puts and gets are linearizable)."""
    from ..runtime.client import ClientError

    n = len(demo.clients)
    shares = [demo.requests // n + (1 if i < demo.requests % n else 0) for i in range(n)]
    latencies: list[float] = []
    counts = {"put": 0, "get": 0}
    progress = Progress(demo.requests, "workload")
    progress.draw()

    async def run_one(index: int, client, share: int) -> None:
        expected: dict[bytes, bytes | None] = {}
        for j in range(share):
            key = b"%s/k%d" % (client.id.encode(), j % KEYS_PER_CLIENT)
            is_get = j % 3 == 2
            start = trio.current_time()
            try:
                if is_get:
                    got = await client.get(key)
                    if got != expected.get(key):
                        demo.failures.append(
                            f"{client.id}: get {key!r} returned {got!r}, expected {expected.get(key)!r}"
                        )
                else:
                    value = b"v%d-%d" % (index, j)
                    await client.put(key, value)
                    expected[key] = value
            except (TimeoutError, ClientError) as exc:
                demo.failures.append(f"{client.id}: request {j} failed: {exc}")
                return
            latencies.append(trio.current_time() - start)
            counts["get" if is_get else "put"] += 1
            progress.advance()

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i, (client, share) in enumerate(zip(demo.clients, shares, strict=True)):
            nursery.start_soon(run_one, i, client, share)
    elapsed = trio.current_time() - started
    progress.finish()

    lat = sorted(x * 1000 for x in latencies)
    done = len(lat)
    demo.lines += [
        f"requests     {done} of {demo.requests} ({counts['put']} puts, {counts['get']} gets) "
        f"from {n} clients",
        f"elapsed      {elapsed:.2f} s",
        f"throughput   {done / elapsed if elapsed > 0 else 0.0:.1f} req/s",
        f"latency ms   p50 {_percentile(lat, 50):.1f}  p90 {_percentile(lat, 90):.1f}  "
        f"p99 {_percentile(lat, 99):.1f}",
    ]
    if done != demo.requests:
        demo.failures.append(f"only {done} of {demo.requests} requests completed")


async def phase_status(demo: Demo) -> None:
    """Each replica's view, last executed sequence number and stable checkpoint."""
    statuses = await demo.clients[0].status(timeout=5.0)
    demo.lines.append(f"{'replica':>7}  {'view':>5}  {'executed':>8}  {'stable':>8}")
    for i in demo.config.replica_ids():
        s = statuses.get(i)
        if s is None:
            demo.lines.append(f"{i:>7}  unreachable")
        else:
            demo.lines.append(f"{i:>7}  {s.view:>5}  {s.last_executed:>8}  {s.stable_seq:>8}")
    if len(statuses) < demo.config.quorum:
        demo.failures.append(f"only {len(statuses)} replicas answered the status query")


PHASES: list[Phase] = [phase_workload, phase_status]


# -- driver -----------------------------------------------------------------------------


async def run_phases(demo: Demo, phases: list[Phase]) -> None:
    from .client import open_client

    async with AsyncExitStack() as stack:
        for name in demo.client_names:
            client = await stack.enter_async_context(
                open_client(demo.cluster_path, name, timeout=CALL_TIMEOUT)
            )
            demo.clients.append(client)
        for phase in phases:
            await phase(demo)


def cmd_demo(args) -> int:
    from .clusterfile import load_cluster
    from .commands import run_trio, setup_logging
    from .keygen import generate_cluster
    from .launcher import LaunchError, LocalCluster, free_ports

    setup_logging(args)
    requests = getattr(args, "requests", 300)
    nclients = getattr(args, "clients", 4)
    if requests < 1:
        raise UsageError("--requests must be at least 1.")
    if not 1 <= nclients <= MAX_CLIENTS:
        raise UsageError(f"--clients must be between 1 and {MAX_CLIENTS}.")

    workdir = tempfile.mkdtemp(prefix="pbft-demo-")
    cluster = None
    try:
        names = [f"client{i}" for i in range(nclients)]
        path = generate_cluster(
            workdir,
            f=1,
            clients=names,
            ports=free_ports(4),
            cluster_id="demo",
            force=True,
            checkpoint_interval=CHECKPOINT_INTERVAL,
        )
        config = load_cluster(path)
        cluster = LocalCluster(path, config, log_dir=workdir, log_level="warning")
        print(
            f"pbft demo: {config.n} replicas (f={config.f}) on loopback, "
            f"{nclients} clients, {requests} requests",
            file=sys.stderr,
        )
        try:
            cluster.start()
        except LaunchError as exc:
            print(f"pbft: {exc}", file=sys.stderr)
            return 1
        demo = Demo(path, config, cluster, names, requests)
        run_trio(run_phases, demo, PHASES)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    for line in demo.lines:
        print(line)
    if demo.failures:
        for failure in demo.failures[:20]:
            print(f"FAILED: {failure}")
        return 1
    print("check        every get returned the last value put: ok")
    return 0
