"""`pbft bench`: throughput and latency of a real local cluster (docs/formats.md, "The bench report").

Theory of operation. One invocation is one or two *runs*. A run makes a throwaway
cluster (keys, certificates and a cluster file on free loopback ports in a temporary
directory), starts its n = 3f+1 replicas as real processes with the launcher (TLS,
signatures, everything as in production), and drives it with C closed-loop clients: each
client has one signed put outstanding and sends the next as soon as the previous one is
accepted. Clients run in `workers` separate processes (each with its own Trio loop and
async `Client`s), because one Python process cannot drive many clients and the cluster
at once: the clients' own signing and reply handling is real CPU work. Workers connect,
warm up (a few untimed puts per client, so every TLS link is up), report ready, and all
start measuring at one shared monotonic instant (CLOCK_MONOTONIC is system-wide), so the
window is the same for every client. A call still outstanding at the end of the window is
cancelled and not counted.

Before the first run the cryptographic floor is timed in this process: Ed25519 sign and
verify over the signing payload of a typical put request, in every library pbft can use
(libsodium via PyNaCl, OpenSSL via cryptography), keeping the fastest: the ceiling is
what the best arithmetic on this machine allows, whichever the replicas use. Every request costs at least
one client signature and n verifications (every replica verifies every request), so
`ceiling_rps = cores / (n * t_verify + t_sign)`, and `ratio = throughput / ceiling` is the
machine-independent figure we compare over time.

With `--behaviour NAME` a fault-free run comes first, then a run in which replica 0 (the
primary of view 0, so primary attacks bite) runs the behaviour; the report adds the attack
run and `relative_throughput = attack / fault-free`. The top-level keys always describe
the fault-free run, so `ratio` means the same thing in every report.

Progress goes to stderr, the summary to stdout, `--json FILE` gets every figure. Replica
and worker processes are always stopped and the directory removed, also on Ctrl-C.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait

from ..protocol.messages import MAX_OPERATION

MAX_CLIENTS = 512
"""Clients one bench may start (each is a key, a certificate and n TLS links)."""
MAX_DURATION = 3600.0
WARMUP_PUTS = 3
"""Untimed puts per client before the window opens (TLS links up, caches warm)."""
KEYS_PER_CLIENT = 8
"""Each client cycles over its own keys, so the store stays small."""
VALUE_SIZE = 64
"""Bytes per put value: a small record, like most key-value traffic."""
CRYPTO_SECONDS = 0.25
"""Time spent timing each of sign and verify."""
READY_TIMEOUT = 60.0
"""Seconds the workers get to connect and warm up."""
STOP_GRACE = 5.0
"""Seconds a worker gets to hand in its results after the window closes."""
PROGRESS_EVERY = 0.2
"""Seconds between progress messages from a worker and redraws of the bar."""
CLIENTS_PER_WORKER = 8
"""Default client processes: one per this many clients, at most `cores` of them."""
NOISY = 0.1
"""Share of the machine other processes may use before the summary warns."""
CHECKPOINT_INTERVAL = 128
"""The keygen default: a bench measures the configuration operators run."""


# -- figures ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CryptoCost:
    t_sign: float
    """Seconds per Ed25519 signature over a typical request (the fastest library found)."""
    t_verify: float
    """Seconds per Ed25519 verification of the same."""
    payload_bytes: int
    library: str = ""
    """The library those figures are of: the fastest on this machine, which is what the
    ceiling assumes whatever the replicas use."""
    measured: tuple[tuple[str, float, float], ...] = ()
    """(library, t_sign, t_verify) of every library measured."""


@dataclass
class RunResult:
    n: int
    f: int
    clients: int
    workers: int
    duration_s: float
    requests: int
    throughput_rps: float
    latency_ms: dict[str, float]
    errors: int
    behaviour: str | None = None
    fsync: str | None = None
    """The replicas' `[storage] fsync` policy (None: this build has no storage)."""
    verify_threads: int = 0
    """The replicas' `verify_threads` (pbft.node.preverify)."""
    cpu: dict[str, object] = field(default_factory=dict)
    """Fraction of one core each replica process and all workers used in the window."""
    signatures: dict[str, int] = field(default_factory=dict)
    """Ed25519 signatures the replicas made (`sign`) and verified (`verify`) in the
    window, all replicas together (their metrics); {} when they could not be read."""
    state: dict[str, object] = field(default_factory=dict)
    """The state's figures: with --state-keys the preload (keys, value_size, preload_s);
    always each replica's RSS at the end of the window (rss_mb), the checkpoints taken in
    the window (all replicas) and, per checkpoint, its CPU time (checkpoint_cpu_ms) and
    the bytes the state store wrote (checkpoint_bytes), medians over the replicas."""
    samples: list[tuple[float, float]] = field(default_factory=list, repr=False)
    """(completed at, s into the window; latency, s) per counted request: `--plot`'s
    curves (not in the JSON report)."""


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, -(-len(sorted_values) * p // 100) - 1))
    return sorted_values[int(k)]


def typical_request(client: str = "bench0") -> bytes:
    """The signing payload of a put such as the bench sends (what sign/verify cover)."""
    from ..protocol.crypto import signing_payload
    from ..protocol.messages import Request, to_body
    from ..service.kv import op_put

    op = op_put(b"%s/k0" % client.encode(), b"v" * VALUE_SIZE)
    body = to_body(Request(op, time.time_ns() // 1000, client, False))
    return signing_payload("bench", body)


def measure_crypto(seconds: float = CRYPTO_SECONDS) -> CryptoCost:
    """Median per-call time of Ed25519 sign and verify in each library pbft can use (the
    raw library calls, no pbft checks), and the fastest of them: the honest ceiling is set
    by the best arithmetic on the machine, not by the one the replicas happen to use."""
    from ..protocol.crypto import Ed25519

    payload = typical_request()
    costs = []
    for impl in Ed25519:
        sign, verify = _library_calls(impl, payload)
        costs.append((impl.library, _per_call(sign, seconds / 4), _per_call(verify, seconds / 4)))
    n = 4  # the ranking hardly depends on n: both calls are faster in the faster library
    best = min(costs, key=lambda c: n * c[2] + c[1])
    return CryptoCost(best[1], best[2], len(payload), best[0], tuple(costs))


def _library_calls(impl, payload: bytes):
    """(sign(), verify()) closures calling the library of `impl` directly."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..protocol.crypto import Ed25519

    key = Ed25519PrivateKey.generate()
    if impl is Ed25519.OPENSSL:
        public = key.public_key()
        signature = key.sign(payload)
        return (lambda: key.sign(payload)), (lambda: public.verify(signature, payload))
    import nacl.bindings as sodium

    pk, sk = sodium.crypto_sign_seed_keypair(key.private_bytes_raw())
    signed = sodium.crypto_sign(payload, sk)
    return (lambda: sodium.crypto_sign(payload, sk)), (lambda: sodium.crypto_sign_open(signed, pk))


def _per_call(fn, seconds: float) -> float:
    """Median seconds per call of `fn` over batches for about `seconds`."""
    samples: list[float] = []
    batch = 50
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    return statistics.median(samples)


def ceiling_rps(cost: CryptoCost, n: int, cores: int) -> float:
    """cores / (n * t_verify + t_sign) (docs/formats.md, "The bench report")."""
    return cores / (n * cost.t_verify + cost.t_sign)


# -- the client worker (a separate process) ------------------------------------------------


def _worker_main(conn: Connection, cluster_path: str, names: list[str], read_fraction: float) -> None:
    """Entry point of a client process: run `names` closed-loop, report over `conn`."""
    import trio

    try:
        result = trio.run(_worker, conn, cluster_path, names, read_fraction)
        conn.send(("done", result))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # the parent prints it; a worker never dies silently
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        conn.close()


async def _worker(conn: Connection, cluster_path: str, names: list[str], read_fraction: float):
    import random
    from contextlib import AsyncExitStack

    import trio

    from ..node.client import ClientError, open_client

    latencies: list[float] = []
    completed: list[float] = []  # when each counted request completed, s into the window
    errors = [0]
    value = b"v" * VALUE_SIZE
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(open_client(cluster_path, name)) for name in names]

        async def warm(client) -> None:
            for j in range(WARMUP_PUTS):
                await client.put(b"%s/k%d" % (client.id.encode(), j % KEYS_PER_CLIENT), value)

        with trio.fail_after(READY_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for c in clients:
                    nursery.start_soon(warm, c)
        conn.send(("ready",))
        _, start, end = await trio.to_thread.run_sync(conn.recv)

        async def loop(index: int, client) -> None:
            rng = random.Random(index)
            j = 0
            while True:
                key = b"%s/k%d" % (client.id.encode(), j % KEYS_PER_CLIENT)
                j += 1
                t0 = time.monotonic()
                try:
                    if read_fraction and rng.random() < read_fraction:
                        await client.get(key)
                    else:
                        await client.put(key, value)
                except ClientError:
                    errors[0] += 1
                    continue
                t1 = time.monotonic()
                if t1 <= end:
                    latencies.append(t1 - t0)
                    completed.append(t1 - start)

        async def report() -> None:
            while True:
                await trio.sleep(PROGRESS_EVERY)
                conn.send(("progress", len(latencies)))

        await trio.sleep(max(0.0, start - time.monotonic()))
        cpu_start = time.process_time()
        with trio.move_on_after(max(0.0, end - time.monotonic())):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(report)
                for i, c in enumerate(clients):
                    nursery.start_soon(loop, i, c)
        cpu = time.process_time() - cpu_start
    return {"latencies": latencies, "completed": completed, "errors": errors[0], "cpu": cpu}


# -- the parent: cluster, workers, window --------------------------------------------------


class Progress:
    """`bench [#######.......] 4.2/10.0 s  3120 requests  742 req/s` on stderr."""

    WIDTH = 30

    def __init__(self, label: str, duration: float) -> None:
        self.label = label
        self.duration = duration
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def draw(self, elapsed: float, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (now - self._last < PROGRESS_EVERY or not self._tty):
            return
        self._last = now
        elapsed = min(max(elapsed, 0.0), self.duration)
        filled = int(self.WIDTH * elapsed / self.duration) if self.duration else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"{self.label} [{bar}] {elapsed:.1f}/{self.duration:.1f} s  {done} requests  {rate:.0f} req/s"
        sys.stderr.write(("\r" if self._tty else "") + line + ("\n" if final or not self._tty else ""))
        sys.stderr.flush()


MAX_STATE_KEYS = 10_000_000
MAX_STATE_VALUE = 60 * 1024


PRELOAD_KEYS = 256
"""Keys per preload request: as many as an mput allows (256) and its 64 KiB operation
holds. A view change during the preload once could not end (its VIEW-CHANGEs carried the
window's batches whole, over the frame limit), so this was 16 for a while; certificates
now carry digests only (docs/protocol.md, "View change")."""


def _preload(path: str, names: list[str], keys: int, value_size: int, label: str) -> float:
    """Fill the state with `keys` keys of `value_size` bytes through the protocol, an
    atomic multi-key write (`mput`) per request, every client at once, then two
    checkpoint intervals of single writes (so the measured window's checkpoints cost what
    its own writes cost); the seconds it took."""
    import trio

    from ..node.client import open_client
    from ..node.clusterfile import load_cluster
    from ..protocol import codec

    per = max(1, min(PRELOAD_KEYS, (MAX_OPERATION - 1024) // (value_size + 24)))
    batches = [(i, min(keys, i + per)) for i in range(0, keys, per)]
    value = b"p" * value_size
    started = time.monotonic()

    async def one(name: str, mine: list[tuple[int, int]]) -> None:
        async with open_client(path, name, timeout=60) as client:
            for lo, hi in mine:
                op = codec.encode(["mput", [[b"pre/%09d" % k, value] for k in range(lo, hi)]])
                await client.execute(op)

    async def settle(name: str, count: int) -> None:
        # One request at a time, so each is a batch of its own: `count` sequence numbers,
        # two checkpoint intervals, and the window's checkpoints cover none of the preload.
        async with open_client(path, name, timeout=60) as client:
            for k in range(count):
                await client.execute(codec.encode(["put", b"settle", b"%d" % k]))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(names[:8]):
                nursery.start_soon(one, name, batches[i :: min(8, len(names))])
        await settle(names[0], 2 * load_cluster(path).checkpoint_interval)

    print(f"{label}: preloading {keys} keys of {value_size} bytes ({len(batches)} requests)", file=sys.stderr)
    trio.run(main)
    return time.monotonic() - started


def _add_metrics(path: str, n: int, verify_threads: int | None = None) -> list[int]:
    """Give each replica of the throwaway cluster file a metrics address on loopback (the
    bench reads their signature counts there), and `verify_threads` if given; the ports."""
    from .launcher import free_ports

    ports = free_ports(n)
    lines, out, rid = open(path, encoding="utf-8").read().splitlines(), [], -1
    for line in lines:
        out.append(line)
        if line.startswith("[[replica]]"):
            rid += 1
            out.append(f'metrics = "127.0.0.1:{ports[rid]}"')
            if verify_threads is not None:
                out.append(f"verify_threads = {verify_threads}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")
    return ports


def _scrape(ports: list[int]) -> list[str] | None:
    """Every replica's metrics page (None if one did not answer)."""
    import urllib.request

    pages = []
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                pages.append(resp.read().decode())
        except OSError:
            return None
    return pages


def _signatures(pages: list[str] | None) -> dict[str, int]:
    """Signatures made and verified so far by all replicas ({} without their metrics)."""
    import re

    if pages is None:
        return {}
    total = {"sign": 0, "verify": 0}
    for text in pages:
        for op, value in re.findall(r'^pbft_signatures_total\{op="(sign|verify)"\} ([0-9.e+]+)$', text, re.M):
            total[op] += int(float(value))
    return total


STATE_COUNTERS = ("pbft_state_checkpoints_total", "pbft_state_checkpoint_seconds_total",
                  "pbft_state_written_bytes_total", "pbft_state_commit_seconds_total")


def _state_counters(pages: list[str] | None) -> list[tuple[float, ...]]:
    """Per replica: (checkpoints, CPU seconds in checkpoints, bytes written) so far."""
    import re

    out = []
    for text in pages or []:
        values = []
        for name in STATE_COUNTERS:
            m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
            values.append(float(m.group(1)) if m else 0.0)
        out.append(tuple(values))
    return out


def _checkpoint_figures(before: list[tuple[float, ...]], after: list[tuple[float, ...]]) -> dict[str, object]:
    """Per checkpoint taken in the window, the median over replicas of its CPU time (ms)
    and of the bytes the state store wrote (between two checkpoints: the writes of the
    interval, the copies on write and the digests)."""
    cpu, written, commit, count = [], [], [], []
    for b, a in zip(before, after, strict=False):
        n = a[0] - b[0]
        count.append(int(n))
        if n > 0:
            cpu.append((a[1] - b[1]) / n * 1000)
            written.append((a[2] - b[2]) / n)
            commit.append((a[3] - b[3]) / n * 1000)
    if not cpu:
        return {"checkpoints": sum(count)}
    return {"checkpoints": sum(count), "checkpoint_cpu_ms": round(statistics.median(cpu), 3),
            "checkpoint_bytes": int(statistics.median(written)),
            "commit_cpu_ms": round(statistics.median(commit), 3)}


def _proc_rss_mb(pid: int) -> float | None:
    """Resident memory of a live process in MB (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _proc_cpu_seconds(pid: int, main_thread: bool = False) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), None elsewhere; with
    `main_thread`, of its main thread alone (a replica's event loop)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", "rb") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def default_workers(clients: int, cores: int) -> int:
    return max(1, min(cores, -(-clients // CLIENTS_PER_WORKER)))


def run_once(
    f: int,
    clients: int,
    duration: float,
    *,
    behaviour: str | None = None,
    workers: int | None = None,
    read_fraction: float = 0.0,
    label: str = "bench",
    profile: object = None,
    settings: dict[str, int] | None = None,
    fsync: str | None = None,
    state_keys: int = 0,
    value_size: int = VALUE_SIZE,
    verify_threads: int | None = None,
) -> RunResult:
    """One throwaway cluster, C closed-loop clients for `duration` seconds.

    `profile(cluster)` (tools only) is called once the window opens, with the running
    LocalCluster, and may return a cleanup callable run when the window closes.
    `settings` overrides [cluster] settings of the throwaway cluster and `fsync` sets its
    `[storage] fsync` policy (tools only; the default is the operators' default);
    `verify_threads` is every replica's `verify_threads` (None: the default)."""
    from ..node.clusterfile import load_cluster
    from .keygen import generate_cluster
    from .launcher import LaunchError, LocalCluster, free_ports

    n = 3 * f + 1
    cores = os.cpu_count() or 1
    workers = max(1, min(clients, workers or default_workers(clients, cores)))
    names = [f"bench{i}" for i in range(clients)]
    workdir = tempfile.mkdtemp(prefix="pbft-bench-")
    cluster = None
    procs: list[multiprocessing.process.BaseProcess] = []
    conns: list[Connection] = []
    try:
        path = generate_cluster(
            workdir,
            f=f,
            clients=names,
            ports=free_ports(n),
            cluster_id="bench",
            force=True,
            **{"checkpoint_interval": CHECKPOINT_INTERVAL, **(settings or {})},
        )
        if fsync is not None:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f'\n[storage]\nfsync = "{fsync}"\n')
        metrics_ports = _add_metrics(path, n, verify_threads)
        config = load_cluster(path)
        policy = config.fsync
        threads = config.replicas[0].verify_threads
        cluster = LocalCluster(
            path,
            config,
            behaviours={0: behaviour} if behaviour else None,
            log_dir=workdir,
            log_level="warning",
        )
        try:
            cluster.start()
        except LaunchError as exc:
            raise BenchError(str(exc)) from None
        preload_s = _preload(path, names, state_keys, value_size, label) if state_keys else 0.0

        ctx = multiprocessing.get_context("spawn")
        for w in range(workers):
            parent, child = ctx.Pipe()
            share = names[w::workers]
            p = ctx.Process(
                target=_worker_main, args=(child, path, share, read_fraction), daemon=True
            )
            p.start()
            child.close()
            procs.append(p)
            conns.append(parent)

        _await_all(conns, procs, "ready", READY_TIMEOUT, cluster)
        start = time.monotonic() + 0.2
        end = start + duration
        for c in conns:
            c.send(("go", start, end))
        cpu0 = {i: _proc_cpu_seconds(p.pid) for i, p in cluster.procs.items()}
        loop0 = {i: _proc_cpu_seconds(p.pid, main_thread=True) for i, p in cluster.procs.items()}
        pages0 = _scrape(metrics_ports)
        sig0, st0 = _signatures(pages0), _state_counters(pages0)
        busy0, mine0 = _machine_busy_seconds(), time.process_time()
        cleanup = profile(cluster) if profile is not None else None
        results = _collect(conns, procs, start, end, Progress(label, duration))
        if cleanup is not None:
            cleanup()
        cpu1 = {i: _proc_cpu_seconds(p.pid) for i, p in cluster.procs.items()}
        loop1 = {i: _proc_cpu_seconds(p.pid, main_thread=True) for i, p in cluster.procs.items()}
        pages1 = _scrape(metrics_ports)
        sig1, st1 = _signatures(pages1), _state_counters(pages1)
        busy1, mine1 = _machine_busy_seconds(), time.process_time()
        rss = [_proc_rss_mb(cluster.procs[i].pid) for i in sorted(cluster.procs)]
        cluster.stop()
        state = _checkpoint_figures(st0, st1)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=STOP_GRACE)
            if p.is_alive():
                p.kill()
                p.join()
        for c in conns:
            c.close()
        if cluster is not None:
            cluster.stop()
        if not os.environ.get("PBFT_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)

    lat = sorted(x * 1000 for r in results for x in r["latencies"])
    cpu: dict[str, object] = {
        "replicas": [
            round((cpu1[i] - cpu0[i]) / duration, 3)
            for i in sorted(cpu0)
            if cpu0[i] is not None and cpu1.get(i) is not None
        ],
        "workers": round(sum(r["cpu"] for r in results) / duration, 3),
        # Each replica's main thread alone: its event loop, which the core runs on (the
        # rest is the commit thread and, with verify_threads, the verifying threads).
        "loops": [
            round((loop1[i] - loop0[i]) / duration, 3)
            for i in sorted(loop0)
            if loop0[i] is not None and loop1.get(i) is not None
        ],
    }
    if busy0 is not None and busy1 is not None:
        ours = sum(cpu["replicas"]) + cpu["workers"] + (mine1 - mine0) / duration
        # Cores busy with processes outside this bench: a noisy neighbour makes the
        # figures of this run worth less, and the report says so.
        cpu["other"] = round(max(0.0, (busy1 - busy0) / duration - ours), 3)
    return RunResult(
        n=n,
        f=f,
        clients=clients,
        workers=workers,
        duration_s=duration,
        requests=len(lat),
        throughput_rps=len(lat) / duration,
        latency_ms={p: round(percentile(lat, q), 3) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        errors=sum(r["errors"] for r in results),
        behaviour=behaviour,
        fsync=policy,
        verify_threads=threads,
        cpu=cpu,
        samples=[pair for r in results for pair in zip(r["completed"], r["latencies"], strict=True)],
        signatures={op: sig1[op] - sig0[op] for op in sig0} if sig0 and sig1 else {},
        state={"keys": state_keys, "value_size": value_size, "preload_s": round(preload_s, 2),
               "rss_mb": rss, **state} if state_keys else {"rss_mb": rss, **state},
    )


class BenchError(RuntimeError):
    """The bench could not run (a replica or a worker failed); one sentence."""


def _await_all(conns, procs, what: str, timeout: float, cluster) -> None:
    pending = dict(zip(conns, procs, strict=True))
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{len(pending)} client worker(s) were not {what} within {timeout:g} s.")
        for c in wait(list(pending), timeout=min(left, 1.0)):
            msg = _recv(c, pending[c])
            if msg[0] != what:
                raise BenchError(f"a client worker said {msg[0]!r} instead of {what!r}.")
            del pending[c]
        dead = [i for i in cluster.ids if i in cluster.procs and cluster.procs[i].poll() is not None]
        if dead:
            raise BenchError(f"replica {dead[0]} exited: {cluster.stderr_tail(dead[0]) or '(no output)'}")


def _recv(conn: Connection, proc) -> tuple:
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        proc.join(timeout=1)
        raise BenchError(f"a client worker exited with status {proc.exitcode}.") from None
    if msg[0] == "failed":
        raise BenchError(f"a client worker failed: {msg[1]}")
    return msg


def _collect(conns, procs, start: float, end: float, progress: Progress) -> list[dict]:
    counts = dict.fromkeys(conns, 0)
    pending = dict(zip(conns, procs, strict=True))
    results: list[dict] = []
    deadline = end + STOP_GRACE + 10.0
    while pending:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} client worker(s) did not report after the window.")
        for c in wait(list(pending), timeout=PROGRESS_EVERY):
            msg = _recv(c, pending[c])
            if msg[0] == "progress":
                counts[c] = msg[1]
            elif msg[0] == "done":
                counts[c] = len(msg[1]["latencies"])
                results.append(msg[1])
                del pending[c]
        progress.draw(time.monotonic() - start, sum(counts.values()))
    progress.draw(end - start, sum(counts.values()), final=True)
    return results


# -- the command ---------------------------------------------------------------------------


def report(
    run: RunResult, cost: CryptoCost, cores: int, attack: RunResult | None = None,
    sweep: list[RunResult] | tuple = (),
) -> dict[str, object]:
    """The JSON document of docs/formats.md, "The bench report" (plus what explains the figures)."""
    ceiling = ceiling_rps(cost, run.n, cores)
    out: dict[str, object] = {
        "n": run.n,
        "f": run.f,
        "clients": run.clients,
        "requests": run.requests,
        "throughput_rps": round(run.throughput_rps, 2),
        "latency_ms": run.latency_ms,
        "ceiling_rps": round(ceiling, 2),
        "ratio": round(run.throughput_rps / ceiling, 4),
        "cores": cores,
        "duration_s": run.duration_s,
        "workers": run.workers,
        "errors": run.errors,
        "fsync": run.fsync,
        "verify_threads": run.verify_threads,
        "t_sign_us": round(cost.t_sign * 1e6, 2),
        "t_verify_us": round(cost.t_verify * 1e6, 2),
        "ed25519": cost.library,
        "ed25519_measured": [
            {"library": lib, "t_sign_us": round(ts * 1e6, 2), "t_verify_us": round(tv * 1e6, 2)}
            for lib, ts, tv in cost.measured
        ],
        "ed25519_replicas": _replicas_library(),
        "cpu": run.cpu,
        "state": run.state,
        "python": sys.version.split()[0],
    }
    used = sum(run.cpu.get("replicas", [])) + float(run.cpu.get("workers", 0.0))
    if used > 0 and run.requests:
        # CPU actually spent per request by the replicas and clients, and the floor's share
        # of it: unlike `ratio`, this does not move when neighbours take cores away.
        per = used * run.duration_s / run.requests
        out["cpu_us_per_request"] = round(per * 1e6, 1)
        out["cpu_ratio"] = round((run.n * cost.t_verify + cost.t_sign) / per, 4)
        loops = run.cpu.get("loops") or []
        if loops:
            # What bounds a replica with a host of its own: its one event-loop thread.
            out["loop_cpu_us_per_request"] = round(max(loops) * run.duration_s / run.requests * 1e6, 1)
        if run.signatures:
            out.update(cpu_split(run, cost))
    if attack is not None:
        a = asdict(attack)
        a.pop("samples", None)
        a["ratio"] = round(attack.throughput_rps / ceiling, 4)
        out["behaviour"] = attack.behaviour
        out["attack"] = a
        out["relative_throughput"] = round(
            attack.throughput_rps / run.throughput_rps if run.throughput_rps else 0.0, 4
        )
    if sweep:
        out["sweep"] = [
            {"clients": r.clients, "throughput_rps": round(r.throughput_rps, 2), "latency_ms": r.latency_ms,
             "requests": r.requests, "errors": r.errors}
            for r in sorted(sweep, key=lambda r: r.clients)
        ]
    return out


def cpu_split(run: RunResult, cost: CryptoCost) -> dict[str, object]:
    """Where the CPU per request went: the replicas' Ed25519 (the signatures they made and
    verified in the window, counted by their metrics, at the measured cost of the library
    they use), the rest of the replicas' CPU, and the client workers' (which sign their
    requests and verify f+1 replies themselves)."""
    mine = _replicas_library()
    t_sign, t_verify = next(((ts, tv) for lib, ts, tv in cost.measured if lib == mine), (cost.t_sign, cost.t_verify))
    per_req = run.duration_s / run.requests
    replicas = sum(run.cpu.get("replicas", [])) * per_req
    ed25519 = (run.signatures.get("sign", 0) * t_sign + run.signatures.get("verify", 0) * t_verify) / run.requests
    return {
        "cpu_split_us": {
            "replicas_ed25519": round(ed25519 * 1e6, 1),
            "replicas_other": round(max(0.0, replicas - ed25519) * 1e6, 1),
            "clients": round(float(run.cpu.get("workers", 0.0)) * per_req * 1e6, 1),
        },
        "signatures_per_request": {op: round(k / run.requests, 2) for op, k in sorted(run.signatures.items())},
    }


def _replicas_library() -> str:
    from ..protocol.crypto import implementation

    return implementation().library


def summary(doc: dict) -> list[str]:
    lat = doc["latency_ms"]
    lines = [
        f"cluster      n={doc['n']} f={doc['f']}, {doc['clients']} clients in "
        f"{doc['workers']} processes, {doc['cores']} cores",
        f"requests     {doc['requests']} puts in {doc['duration_s']:g} s ({doc['errors']} errors), "
        f"fsync {doc.get('fsync') or 'n/a'}, verify_threads {doc.get('verify_threads', 0)}",
        f"throughput   {doc['throughput_rps']:.1f} req/s",
        f"latency ms   p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}",
        f"crypto       sign {doc['t_sign_us']:.1f} us, verify {doc['t_verify_us']:.1f} us "
        f"({doc.get('ed25519') or 'Ed25519'}, the fastest here; replicas use "
        f"{doc.get('ed25519_replicas') or '?'})",
        f"ceiling      {doc['ceiling_rps']:.0f} req/s = cores / (n * t_verify + t_sign)",
        f"ratio        {doc['ratio']:.3f}",
    ]
    st = doc.get("state") or {}
    if st.get("keys"):
        lines.append(f"state        {st['keys']} keys of {st['value_size']} B preloaded in {st['preload_s']:g} s")
    if st.get("rss_mb"):
        rss = " ".join(f"{x:.0f}" for x in st["rss_mb"] if x is not None)
        lines.append(f"replica RSS  {rss} MB")
    if st.get("checkpoint_cpu_ms") is not None:
        size = st["checkpoint_bytes"]
        shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
        lines.append(f"checkpoints  {st['checkpoints']} in the window; each {st['checkpoint_cpu_ms']:.1f} ms "
                     f"of CPU, {shown} written by the state store, then {st.get('commit_cpu_ms', 0):.1f} ms "
                     "of CPU to commit")
    cpu = doc.get("cpu") or {}
    if cpu.get("replicas"):
        per = " ".join(f"{x:.2f}" for x in cpu["replicas"])
        lines.append(f"cpu (cores)  replicas {per}; clients {cpu['workers']:.2f}; "
                     f"other processes {cpu.get('other', 0.0):.2f}")
        if cpu.get("other", 0.0) > NOISY * doc["cores"]:
            lines.append("warning      other processes used the CPU during the run; "
                         "the figures are lower than this machine can do")
    if "cpu_ratio" in doc:
        lines.append(f"cpu/request  {doc['cpu_us_per_request']:.0f} us (floor share {doc['cpu_ratio']:.3f})")
    if "loop_cpu_us_per_request" in doc:
        lines.append(f"  event loop {doc['loop_cpu_us_per_request']:.0f} us per request on the busiest replica's "
                     "main thread (what bounds a replica with a host of its own)")
    if "cpu_split_us" in doc:
        sp, sg = doc["cpu_split_us"], doc["signatures_per_request"]
        lines.append(f"  where      replicas' Ed25519 {sp['replicas_ed25519']:.0f} us ({sg['verify']:.1f} verified, "
                     f"{sg['sign']:.1f} signed per request), replicas' other {sp['replicas_other']:.0f} us, "
                     f"clients {sp['clients']:.0f} us")
    if "attack" in doc:
        a = doc["attack"]
        lines += [
            f"attack       replica 0 runs {doc['behaviour']!r}: {a['throughput_rps']:.1f} req/s, "
            f"p50 {a['latency_ms']['p50']:.2f} ms, p99 {a['latency_ms']['p99']:.2f} ms",
            f"relative     {doc['relative_throughput']:.3f} of fault-free throughput",
        ]
    for point in doc.get("sweep", []):
        lat = point["latency_ms"]
        lines.append(f"sweep        {point['clients']:>3} clients: {point['throughput_rps']:.1f} req/s, "
                     f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
    return lines
