"""Prometheus metrics of one replica, and the tiny HTTP server that exposes them.

Theory of operation. Every `ReplicaNode` gets its own `NodeMetrics`, holding its own
`CollectorRegistry` (never prometheus_client's global one), so several nodes in one
process (tests, `pbft demo`) never mix their numbers. The node calls the `on_*` methods
from its single stepping task; each is a dictionary lookup and a counter increment, so
the per-message cost stays small. What can be read at scrape time instead of being
updated per message is read then: view, last executed, stable checkpoint (from the core)
and per-peer queue depth, connection state and link counters (from the transport's
public attributes).

A frame's message type is read by `protocol.messages.envelope_type`, which reads the
CBOR heads of the signed envelope `[body, signer, signature]` and of the body
`[type, ...]` without decoding anything else (the codec owns that layout); for a
PRE-PREPARE `envelope_slot` also reads (view, seq), so the node can time a batch from its
pre-prepare to its execution (pbft_commit_latency_seconds).

`serve_metrics` answers `GET /metrics` (and `/`) on HOST:PORT with `generate_latest`, in
a Trio task of the node's nursery: no thread, and the collectors read the core from the
task that owns it. Requests are bounded (REQUEST_LIMIT bytes, REQUEST_TIMEOUT seconds).
The node adds its health endpoints (`/healthz`, `/readyz`, `/status`: pbft.node.health)
as extra routes; their readiness is also exported as gauges (`pbft_ready`, ...) through
`NodeMetrics.health`.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..protocol.messages import MsgType, envelope_slot, envelope_type
from ..protocol.viewchange import ViewStatus

log = logging.getLogger("pbft.metrics")

PENDING_LIMIT = 4096
"""Pre-prepares whose first sighting is remembered for the commit-latency histogram."""
REQUEST_LIMIT = 8192
"""Bytes of an HTTP request head the metrics server reads before giving up."""
REQUEST_TIMEOUT = 5.0
"""Seconds a scraper gets to send its request and take the answer."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are closed at once. Without a cap an idle-connection
flood took every file descriptor of the process, and the replica stopped at its next
write of HISTORY (a red-team finding)."""

BATCH_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STORAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)

_TYPE_NAMES: dict[int, str] = {int(t): t.name.lower().replace("_", "-") for t in MsgType}
_PRE_PREPARE = int(MsgType.PRE_PREPARE)


def parse_hostport(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:9100`) -> (host, port); ValueError with one sentence."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"the metrics address must be HOST:PORT, not {text!r}.")
    return host, int(port)


def peek_type(data: bytes) -> str:
    """The message type name of a signed envelope's bytes ("unknown" if unreadable)."""
    return _TYPE_NAMES.get(envelope_type(data), "unknown")


# -- the metrics of one node -------------------------------------------------------------


class FastHistogram:
    """A Prometheus histogram observed without a lock: bucket counts in a list, turned
    into a histogram family at scrape time (observed from one task only)."""

    __slots__ = ("name", "doc", "bounds", "counts", "sum")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        buckets = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)


class _LiveCollector:
    """Values read at scrape time from the core and the transport."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterable[Any]:
        transport = self.m.transport
        if transport is None:
            yield from self.m.counted()
            for h in (self.m.batch_size, self.m.commit_latency, self.m.storage_write):
                yield h.family()
            yield from self.m.health_families()
            return
        yield from self.m.counted()
        for h in (self.m.batch_size, self.m.commit_latency, self.m.storage_write):
            yield h.family()
        yield from self.m.health_families()
        yield self.m.signature_family()
        yield from self.m.state_families()
        depth = GaugeMetricFamily(
            "pbft_queue_depth", "Frames queued for a peer replica", labels=["peer"]
        )
        up = GaugeMetricFamily(
            "pbft_peer_connected", "1 while the outbound link to a peer is up", labels=["peer"]
        )
        for peer, box in sorted(transport.outboxes.items()):
            depth.add_metric([str(peer)], len(box))
            up.add_metric([str(peer)], 1 if peer in transport.connected else 0)
        yield depth
        yield up
        clients = GaugeMetricFamily("pbft_client_links", "Live inbound client connections")
        clients.add_metric([], sum(len(v) for v in transport.client_links.values()))
        yield clients
        events = CounterMetricFamily(
            "pbft_transport_events", "Transport events (drops, link failures)", labels=["event"]
        )
        for name, value in sorted(transport.counters.items()):
            events.add_metric([name], value)
        yield events


class NodeMetrics:
    """The `pbft_*` metrics of one replica, in a registry of its own."""

    def __init__(self, replica_id: int) -> None:
        self.replica_id = replica_id
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.transport: Any = None
        self.view = Gauge(
            "pbft_view", "Current view number, raw: epoch << 32 plus the view within the epoch (pbft_epoch)",
            registry=r,
        )
        self.epoch = Gauge("pbft_epoch", "Current configuration epoch", registry=r)
        self.last_executed = Gauge("pbft_last_executed", "Last executed sequence number", registry=r)
        self.cpu_ratio = Gauge(
            "pbft_cpu_ratio", "The replica's CPU time over wall time in the last load window (one core = 1)", registry=r
        )
        self.host_pressure = Gauge(
            "pbft_host_cpu_pressure_ratio",
            "Share of the last load window some task on the host waited for a core (Linux PSI; absent elsewhere)",
            registry=r,
        )
        self.batching_for_throughput = Gauge(
            "pbft_batching_for_throughput", "1 while the replica's core batches for throughput, 0 while it proposes at once",
            registry=r,
        )
        self.batching_for_throughput.set(1)
        self.stable_checkpoint = Gauge(
            "pbft_stable_checkpoint", "Sequence number of the last stable checkpoint", registry=r
        )
        self.view_changes = Counter(
            "pbft_view_changes", "View changes this replica started", registry=r
        )
        self.batch_size = FastHistogram(
            "pbft_batch_size", "Requests per executed batch", BATCH_BUCKETS
        )
        self.commit_latency = FastHistogram(
            "pbft_commit_latency_seconds",
            "Time from a batch's pre-prepare first seen (sent or received) to its execution",
            LATENCY_BUCKETS,
        )
        self.storage_write = FastHistogram(
            "pbft_storage_write_seconds", "Duration of one storage commit (group commit)",
            STORAGE_BUCKETS,
        )
        self.evidence = Counter(
            "pbft_evidence", "Distinct evidence records stored, by kind", ["kind"], registry=r
        )
        self.executed_requests = Counter(
            "pbft_executed_requests", "Requests executed (fresh, not cached replies)", registry=r
        )
        self.byzantine_behaviour = Gauge(
            "pbft_byzantine_behaviour",
            "1 with the behaviour's name while this replica runs a Byzantine behaviour "
            "(--behaviour); 0 with an empty name while it runs honestly",
            ["name"],
            registry=r,
        )
        self.set_behaviour(None)
        self.messages_in: dict[int, int] = {}
        self.bytes_in: dict[int, int] = {}
        """Frames received, by message type number (-1: unreadable)."""
        self.messages_out: dict[int, int] = {}
        """Frames queued for sending, one per destination, by message type number."""
        self.rejected: dict[tuple[str, str], int] = {}
        """Inputs dropped by the core, by (peer, reason)."""
        self.storage_failures = Counter(
            "pbft_storage_failures", "Storage writes that failed (the replica stops on a protocol "
            "write; an evidence write is only logged)", registry=r,
        )
        self.divergence = Counter(
            "pbft_state_divergence",
            "Times this replica found its replicated state is not the group's at a checkpoint, by kind: "
            "stable (2f+1 signed another state), split (the replicas disagree: none can become stable), "
            "replay (a re-execution after a restart contradicts what it signed; it stops). The service "
            "is not deterministic, or its code changed without a new version",
            ["kind"], registry=r,
        )
        for kind in ("stable", "split", "replay"):
            self.divergence.labels(kind)  # each at 0 from the start
        self.slow_steps = Counter(
            "pbft_slow_steps",
            "Steps of the core that blocked the event loop longer than a quarter of the view-change "
            "timeout (a slow service, a large checkpoint)", registry=r,
        )
        self.longest_step = 0.0
        self.longest_step_gauge = Gauge(
            "pbft_longest_step_seconds", "The longest step of the core so far (it blocks the event loop)",
            registry=r,
        )
        self.longest_step_gauge.set_function(lambda: self.longest_step)
        self.health: Callable[[], Any] | None = None
        """Set by the node: returns its `health.Readiness` (read at scrape time)."""
        self.core: Any = None
        r.register(_LiveCollector(self))
        self._pending: dict[int, float] = {}

    def bind(self, core: Any, transport: Any) -> None:
        """Read the gauges from `core` and the per-peer values from `transport` at scrape
        time (attribute reads only)."""
        self.transport = transport
        self.core = core
        self.view.set_function(lambda: core.view)
        self.last_executed.set_function(lambda: core.last_executed)
        self.stable_checkpoint.set_function(lambda: core.stable_seq)

    def set_behaviour(self, name: str | None) -> None:
        """Say which Byzantine behaviour this replica runs (None: honest)."""
        self.byzantine_behaviour.clear()
        self.byzantine_behaviour.labels(name or "").set(1 if name else 0)

    # -- per message (cheap) -------------------------------------------------------------

    def on_received(self, data: bytes) -> None:
        code = envelope_type(data)
        counts = self.messages_in
        counts[code] = counts.get(code, 0) + 1
        sizes = self.bytes_in
        sizes[code] = sizes.get(code, 0) + len(data)
        if code == _PRE_PREPARE:
            self._seen_pre_prepare(data)

    def on_sent(self, data: bytes, copies: int = 1) -> None:
        code = envelope_type(data)
        counts = self.messages_out
        counts[code] = counts.get(code, 0) + copies
        if code == _PRE_PREPARE:
            self._seen_pre_prepare(data)

    def _seen_pre_prepare(self, data: bytes) -> None:
        slot = envelope_slot(data)
        if slot is None or slot[1] in self._pending:
            return  # the first sighting counts (a re-issued pre-prepare keeps its start)
        if len(self._pending) >= PENDING_LIMIT:
            del self._pending[next(iter(self._pending))]
        self._pending[slot[1]] = time.monotonic()

    def on_executed(self, seq: int, requests: tuple) -> None:
        self.batch_size.observe(len(requests))
        fresh = sum(1 for r in requests if r.fresh)
        if fresh:
            self.executed_requests.inc(fresh)
        started = self._pending.pop(seq, None)
        if started is not None:
            self.commit_latency.observe(time.monotonic() - started)

    def on_stable(self, seq: int) -> None:
        """Forget pre-prepare sightings a stable checkpoint covers (never executed here,
        e.g. skipped by state transfer)."""
        for s in [s for s in self._pending if s <= seq]:
            del self._pending[s]

    def on_rejected(self, peer: object, reason: str) -> None:
        key = ("none" if peer is None else str(peer), reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def counted(self) -> Iterable[Any]:
        """The plain per-message counters as Prometheus counter families."""
        for name, doc, counts in (
            ("pbft_messages_in", "Frames received, by message type", self.messages_in),
            ("pbft_received_bytes", "Bytes of the frames received, by message type (what a state "
             "transfer moved is its state-chunk bytes)", self.bytes_in),
            ("pbft_messages_out", "Frames queued for sending, one per destination, by message type",
             self.messages_out),
        ):
            family = CounterMetricFamily(name, doc, labels=["type"])
            for code, value in sorted(counts.items()):
                family.add_metric([_TYPE_NAMES.get(code, "unknown")], value)
            yield family
        family = CounterMetricFamily(
            "pbft_rejected", "Inputs dropped by the core, by peer and reason", labels=["peer", "reason"]
        )
        for (peer, reason), value in sorted(self.rejected.items()):
            family.add_metric([peer, reason], value)
        yield family

    def signature_family(self) -> Any:
        """Ed25519 work of this replica's core: signatures made and verified (what `pbft
        bench` turns into the CPU its replicas spent on Ed25519)."""
        family = CounterMetricFamily("pbft_signatures", "Ed25519 signatures made and verified", labels=["op"])
        core = self.core
        family.add_metric(["sign"], getattr(getattr(core, "safety", None), "signatures", 0))
        family.add_metric(["verify"], getattr(getattr(core, "verifier", None), "checked", 0))
        return family

    def state_families(self) -> Iterable[Any]:
        """The replicated state's store: checkpoints taken, the CPU they took and the
        bytes the store wrote (0 for a store in memory)."""
        store = getattr(self.core, "store", None)
        values = (
            ("pbft_state_checkpoints", "Checkpoints the state store took", getattr(store, "checkpoints", 0)),
            ("pbft_state_checkpoint_seconds", "CPU seconds the state store spent taking checkpoints",
             getattr(store, "checkpoint_seconds", 0.0)),
            ("pbft_state_commit_seconds", "CPU seconds the state store spent committing at checkpoints",
             getattr(store, "commit_seconds", 0.0)),
            ("pbft_state_written_bytes", "Bytes the state store wrote (entries, copies on write, digests)",
             getattr(store, "written", 0)),
        )
        for name, doc, value in values:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family

    def health_families(self) -> Iterable[Any]:
        """Readiness and its parts as gauges (0 when unknown: no core or health bound)."""
        core, ready = self.core, self.health() if self.health is not None else None
        values = (
            ("pbft_ready", "1 while the replica is ready (GET /readyz answers 200)",
             1 if ready is not None and ready.ready else 0),
            ("pbft_view_active", "1 while the replica's view is active (no view change)",
             1 if core is not None and core.status is ViewStatus.NORMAL else 0),
            ("pbft_state_transfer", "1 while the replica fetches a checkpoint's state",
             1 if core is not None and core.transfer is not None else 0),
            ("pbft_behind", "Sequence numbers f+1 other replicas are known to have executed "
             "past this one", ready.behind if ready is not None else 0),
            ("pbft_primary", "The primary of the replica's current view",
             core.primary if core is not None else 0),
        )
        for name, doc, value in values:
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family

    def text(self) -> bytes:
        return generate_latest(self.registry)


# -- serving -----------------------------------------------------------------------------


async def bind_metrics(host: str, port: int) -> list[trio.SocketListener]:
    """The metrics listening socket; call it outside any nursery so that a bind failure
    arrives as a plain OSError."""
    return await trio.open_tcp_listeners(port, host=host)


Route = Callable[[], tuple[int, str, bytes]]
"""An extra endpoint: returns (HTTP status, content type, body)."""


async def serve_metrics(
    listeners: list[trio.SocketListener],
    render: Callable[[], bytes],
    routes: dict[bytes, Route] | None = None,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `render()` as Prometheus text on http://HOST:PORT/metrics, and each of
    `routes` (path -> handler) on its path, until cancelled; `started()` once listening."""
    sockname = listeners[0].socket.getsockname()
    host, bound = sockname[0], sockname[1]
    extra = dict(routes or {})

    active = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            await trio.aclose_forcefully(stream)
            return
        active += 1
        try:
            with trio.fail_after(REQUEST_TIMEOUT):  # the answer too: a reader that never reads
                await _answer(stream, render, extra)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        finally:
            active -= 1
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        task_status.started()


async def _answer(
    stream: trio.SocketStream, render: Callable[[], bytes], routes: dict[bytes, Route]
) -> None:
    head = b""
    with trio.fail_after(REQUEST_TIMEOUT):
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
            if len(head) > REQUEST_LIMIT:
                await stream.send_all(_response(431, b"request too large\n", "text/plain"))
                return
    parts = head.split(b"\r\n", 1)[0].split()
    method = parts[0] if parts else b""
    path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
    if method not in (b"GET", b"HEAD"):
        await stream.send_all(_response(405, b"only GET\n", "text/plain"))
    elif path in routes:
        status, ctype, body = routes[path]()
        await stream.send_all(_response(status, body if method == b"GET" else b"", ctype, len(body)))
    elif path not in (b"/", b"/metrics"):
        paths = b", ".join([b"/metrics", *sorted(routes)])
        await stream.send_all(_response(404, b"try " + paths + b"\n", "text/plain"))
    else:
        body = render()
        await stream.send_all(_response(200, body if method == b"GET" else b"", CONTENT_TYPE_LATEST, len(body)))


def _response(status: int, body: bytes, ctype: str, length: int | None = None) -> bytes:
    reason = {
        200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
        503: "Service Unavailable",
    }[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
