"""A replica process: one protocol core inside a Trio shell.

Theory of operation. `ReplicaNode` owns exactly one `Replica` (or a `ByzantineReplica`,
which has the same `step` surface). Every input, whether a frame from the transport or a
tick from the clock, goes through one bounded memory channel (INBOX_LIMIT) into the one
task that calls `step()`, so the core never sees concurrency. The actions it returns are
performed in list order and none of them awaits: sends are queued on the transport's
bounded per-peer outboxes, observations are logged and counted. A full inbox slows the
readers (TCP backpressure) rather than growing memory.

Durability (DESIGN.md section 8). With a `Storage`, the node first loads what an earlier
run stored and hands it to `Replica.recover` before it listens. Then, group commit: the
stepping task steps the input it waited for plus whatever else is already queued (at most
GROUP_COMMIT_LIMIT inputs), writes every Persist/Truncate of those steps in one
transaction (`Storage.apply`: one commit, one fsync), and only then performs their sends.
No send is ever performed before the commit that covers it, so a replica killed at any
point never contradicts what it sent. While a commit is in progress (in a worker thread
when every commit fsyncs, so the event loop keeps reading sockets and ticking) inputs
queue up, and the next commit covers more of them: the slower the disk, the larger the
batch.
A failed write (full disk) stops the node with one log line: running on without
durability could make it equivocate after the next crash. Without a storage (tests)
`Persist` actions are ignored and a restarted replica starts empty.

Observability. Every node has its own `NodeMetrics` (pbft.runtime.metrics), updated as
frames arrive and actions are performed, and served on HTTP when `metrics_address` is
given. Protocol events are logged once each at info level with an `event` name and
`fields` (the JSON log format prints both): the typed actions (ViewChangeStarted,
ViewInstalled, CheckpointStable, StateTransferStarted, StateInstalled) and the core's
Notes, each as it comes. Links
to peers going up and down are noticed on each tick from `transport.connected`.
Per-message detail is logged at debug level only, behind `log.isEnabledFor`.
Evidence is stored in the data directory (deduplicated) and logged once per new pair.
"""

from __future__ import annotations

import functools
import importlib
import logging
import random
import re
import time
from collections import Counter
from typing import Any

import trio

from ..protocol.config import ClusterConfig, ConfigError
from ..protocol.events import (
    Action,
    Broadcast,
    CheckpointStable,
    Evidence,
    Executed,
    Note,
    Persist,
    Received,
    Rejected,
    Send,
    SendClient,
    StateInstalled,
    StateTransferStarted,
    Tick,
    Truncate,
    ViewChangeStarted,
    ViewInstalled,
)
from ..protocol.messages import Signer
from ..protocol.replica import Replica
from ..service.kv import KeyValueStore
from .metrics import NodeMetrics, bind_metrics, serve_metrics
from .storage import Storage, StorageError, default_data_dir, fsync_setting
from .transport import Transport, is_address_in_use

log = logging.getLogger("pbft.node")

INBOX_LIMIT = 4096
"""Inputs (frames and ticks) waiting for the state machine task."""
EVIDENCE_LIMIT = 1024
"""Evidence records kept in memory; the oldest are forgotten first."""
GROUP_COMMIT_LIMIT = 256
"""Inputs stepped before one storage commit (and the sends it covers)."""

NOTE_EVENTS = (
    (re.compile(r"recovered: view (\d+), executed (\d+), stable (\d+)"), "recovered",
     ("view", "executed", "stable")),
)
"""Notes that name an event of their own: (pattern, event, the fields its groups fill)."""


def event_log(level: int, event: str, replica: int, msg: str, *args: object, **fields: object) -> None:
    """One log line for a protocol event: `msg % args` as text, with `event`, `replica`
    and `fields` as attributes for the JSON format (pbft.runtime.commands)."""
    if log.isEnabledFor(level):
        log.log(level, msg, *args, extra={"event": event, "replica": replica, "fields": fields})


def _note_event(text: str) -> tuple[str, dict[str, object]]:
    for pattern, event, names in NOTE_EVENTS:
        m = pattern.match(text)
        if m:
            return event, {n: int(v) for n, v in zip(names, m.groups(), strict=True)}
    return "note", {}


class ReplicaNode:
    """Runs one replica core: transport, tick task and the single stepping task."""

    def __init__(
        self,
        config: ClusterConfig,
        replica: Any,
        *,
        server_context,
        client_context,
        identify,
        rng: random.Random | None = None,
        storage: Storage | None = None,
        metrics_address: tuple[str, int] | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.failure: str | None = None
        """Why the node stopped on its own (a storage failure), else None."""
        self.recovery_seconds: float | None = None
        self.replica = replica
        self.id: int = replica.id
        self._send, self._recv = trio.open_memory_channel(INBOX_LIMIT)
        self.transport = Transport(
            config,
            self.id,
            server_context=server_context,
            client_context=client_context,
            identify=identify,
            inbox=self._send,
            rng=rng,
        )
        self.rejected: Counter[tuple[Signer | None, str]] = Counter()
        self.evidence: list[Evidence] = []
        self.executed = 0
        self._cancel: trio.CancelScope | None = None
        self.metrics = NodeMetrics(self.id)
        self.metrics.bind(replica, self.transport)
        self.metrics_address = metrics_address
        self.metrics_port: int | None = None
        """The port metrics are served on once bound (None: not served)."""
        self._links: set[int] = set()
        self._evidence_seen: set[tuple[int, str, bytes, bytes]] = set()

    @property
    def port(self) -> int | None:
        return self.transport.listen_port

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Recover from storage, then serve until cancelled, `stop()` or a storage
        failure (`failure` says why); `started()` once listening."""
        self.recover()
        listeners = await self.transport.bind()  # outside the nursery: a plain OSError
        metrics_listeners = None
        if self.metrics_address is not None:
            try:
                metrics_listeners = await bind_metrics(*self.metrics_address)
            except OSError:
                for listener in listeners:
                    await listener.aclose()
                raise
            self.metrics_port = metrics_listeners[0].socket.getsockname()[1]
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.transport.run, listeners)
                if metrics_listeners is not None:
                    await nursery.start(serve_metrics, metrics_listeners, self.metrics.text)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._step_loop)
                log.info("replica %d listening on port %s", self.id, self.port)
                task_status.started()

    def recover(self) -> None:
        """Rebuild the core from what the storage holds (nothing to do when empty)."""
        if self.storage is None or self.recovery_seconds is not None:
            return
        started = time.monotonic()
        records = self.storage.load()
        if records:
            for note in self.replica.recover(records):
                if isinstance(note, Note):
                    self._log_note(note.text)
            self.executed = self.replica.last_executed
        self.recovery_seconds = time.monotonic() - started
        if records:
            log.info(
                "replica %d recovered %d records from %s in %.3f s",
                self.id, len(records), self.storage.path, self.recovery_seconds,
            )

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def _tick_loop(self) -> None:
        period = self.config.tick_ms / 1000
        while True:
            await trio.sleep(period)
            await self._send.send(Tick())
            if self.transport.connected != self._links:
                self._log_links()

    def _log_links(self) -> None:
        now = set(self.transport.connected)
        for peer in sorted(now - self._links):
            event_log(logging.INFO, "peer-connected", self.id, "replica %d: connected to replica %d", self.id, peer, peer=peer)
        for peer in sorted(self._links - now):
            event_log(logging.INFO, "peer-lost", self.id, "replica %d: lost the link to replica %d", self.id, peer, peer=peer)
        self._links = now

    def _step(self, event) -> list[Action]:
        if type(event) is Received:
            self.metrics.on_received(event.data)
        return self.replica.step(event)

    async def _step_loop(self) -> None:
        async for event in self._recv:
            actions = self._step(event)
            if self.storage is not None:
                # Group commit: what is already queued shares this commit.
                for _ in range(GROUP_COMMIT_LIMIT - 1):
                    try:
                        event = self._recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    actions.extend(self._step(event))
                if not await self._make_durable(actions):
                    return
            self.perform(actions)

    async def _make_durable(self, actions: list[Action]) -> bool:
        """Commit the Persist/Truncate actions; False (and the node stops) if that fails."""
        assert self.storage is not None
        if not any(isinstance(a, Persist | Truncate) for a in actions):
            return True
        started = time.monotonic()
        try:
            if self.storage.fsync == "always":
                # An fsync per commit (~1.4 ms on the test VM): off the event loop, so
                # sockets and ticks keep flowing and the next commit covers more inputs.
                await trio.to_thread.run_sync(self.storage.apply, actions)
            else:
                self.storage.apply(actions)  # no fsync per commit: ~0.15 ms, stay on the loop
        except StorageError as exc:
            self.failure = str(exc)
            log.error("replica %d stopped: %s; nothing more is sent without durability", self.id, exc)
            self.stop()
            return False
        self.metrics.storage_write.observe(time.monotonic() - started)
        return True

    def perform(self, actions: list[Action]) -> None:
        """Carry out the core's actions, in order."""
        t = self.transport
        m = self.metrics
        for a in actions:
            match a:
                case Send(to, data):
                    t.send(to, data)
                    m.on_sent(data)
                case Broadcast(data):
                    t.broadcast(data)
                    m.on_sent(data, len(t.outboxes))
                case SendClient(client, data):
                    t.send_client(client, data)
                    m.on_sent(data)
                case Rejected(peer, reason, detail):
                    self.rejected[(peer, reason.value)] += 1
                    m.on_rejected(peer, reason.value)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("replica %d rejected input from %r: %s %s", self.id, peer, reason.value, detail)
                case Note(text):
                    self._log_note(text)
                case Evidence():
                    self._record_evidence(a)
                case Executed(view, seq, _, requests):
                    self.executed = seq
                    m.on_executed(seq, requests)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("replica %d executed seq %d (view %d, %d requests)", self.id, seq, view, len(requests))
                case CheckpointStable(seq, digest):
                    m.on_stable(seq)
                    event_log(
                        logging.INFO, "checkpoint-stable", self.id,
                        "replica %d: checkpoint %d is stable", self.id, seq, seq=seq, digest=digest.hex(),
                    )
                case ViewChangeStarted(view):
                    m.view_changes.inc()
                    event_log(
                        logging.INFO, "view-change-started", self.id,
                        "replica %d: view change to view %d started", self.id, view, view=view,
                    )
                case ViewInstalled(view, primary):
                    event_log(
                        logging.INFO, "view-installed", self.id,
                        "replica %d: view %d installed, primary %d", self.id, view, primary,
                        view=view, primary=primary,
                    )
                case StateTransferStarted(seq, digest):
                    event_log(
                        logging.INFO, "state-transfer-started", self.id,
                        "replica %d: state transfer to checkpoint %d started", self.id, seq,
                        seq=seq, digest=digest.hex(),
                    )
                case StateInstalled(seq, digest):
                    m.on_stable(seq)
                    event_log(
                        logging.INFO, "state-transfer-done", self.id,
                        "replica %d: state transfer to checkpoint %d done", self.id, seq,
                        seq=seq, digest=digest.hex(),
                    )
                case Persist() | Truncate():
                    pass  # made durable before this batch's sends (_make_durable)
                case _:
                    pass  # Prepared, Committed, CheckpointTaken: observations only

    def _log_note(self, text: str) -> None:
        event, fields = _note_event(text)
        event_log(logging.INFO, event, self.id, "replica %d: %s", self.id, text, **fields)

    def _record_evidence(self, ev: Evidence) -> None:
        """Store the pair (once); count and log it the first time it is seen."""
        key = (ev.culprit, ev.kind, ev.first, ev.second)
        if key in self._evidence_seen:
            return
        new = True
        if self.storage is not None:
            try:
                new = self.storage.add_evidence(ev.culprit, ev.kind, ev.first, ev.second, time.time())
            except StorageError as exc:
                # Not a safety matter: keep running, keep it in memory, say so once.
                log.error("replica %d: %s", self.id, exc)
        if len(self._evidence_seen) >= EVIDENCE_LIMIT:
            self._evidence_seen.clear()
        self._evidence_seen.add(key)
        self.evidence.append(ev)
        del self.evidence[:-EVIDENCE_LIMIT]
        if new:
            self.metrics.evidence.labels(ev.kind).inc()
            event_log(
                logging.INFO, "evidence", self.id,
                "replica %d: evidence recorded that replica %d is faulty: %s",
                self.id, ev.culprit, ev.kind, culprit=ev.culprit, kind=ev.kind,
            )


def load_behaviour(name: str):
    """The behaviour class registered as `name`, or UsageError."""
    from ..cli import UsageError

    module = "pbft.adversary.behaviours"
    try:
        registry = getattr(importlib.import_module(module), "REGISTRY", {})
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise  # a bug inside the behaviours, not a missing catalogue
        registry = {}
    if not isinstance(registry, dict) or name not in registry:
        raise UsageError(f"unknown behaviour {name}")
    return registry[name]


def build_node(
    config: ClusterConfig,
    identity,
    replica_id: int,
    behaviour: str | None = None,
    storage: Storage | None = None,
    metrics_address: tuple[str, int] | None = None,
):
    """A ReplicaNode for `replica_id` with the default key-value service; it recovers from
    and writes to `storage` if given (the caller closes the storage after `run`), and
    serves Prometheus metrics on `metrics_address` (HOST, PORT) if given."""
    from ..adversary.base import ByzantineReplica
    from . import tls

    core: Any = Replica(config, replica_id, identity.key, KeyValueStore())
    if behaviour is not None:
        cls = load_behaviour(behaviour)
        core = ByzantineReplica(core, cls(core, identity.key, {}, random.Random()))
    return ReplicaNode(
        config,
        core,
        server_context=tls.server_context(identity),
        client_context=tls.client_context(identity),
        identify=functools.partial(tls.peer_id, config),
        storage=storage,
        metrics_address=metrics_address,
    )


async def run_replica(
    cluster_path: str,
    replica_id: int,
    *,
    behaviour: str | None = None,
    data: str | None = None,
    metrics: str | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> str | None:
    """Load the cluster file, this replica's identity and its data directory (`data`, by
    default `<cluster dir>/data/replica-<id>`), recover, listen, serve until cancelled.
    Metrics are served on `metrics` (HOST:PORT), by default on the `metrics` address of
    this replica's [[replica]] entry in the cluster file, if it has one.
    Returns None, or why the replica stopped on its own (a storage failure)."""
    from ..cli import UsageError
    from .clusterfile import load_cluster, load_identity
    from .metrics import parse_hostport

    try:
        config = load_cluster(cluster_path)
        if not 0 <= replica_id < config.n:
            raise UsageError(
                f"replica id {replica_id} is not in the cluster file (ids are 0 to {config.n - 1})."
            )
        identity = load_identity(config, replica_id)
        metrics = metrics or metrics_setting(cluster_path, replica_id)
        try:
            metrics_address = parse_hostport(metrics) if metrics else None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        fsync = fsync_setting(cluster_path)
        storage = Storage.open(data or default_data_dir(config, replica_id), config, replica_id, fsync)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    me = config.replicas[replica_id]
    try:
        node = build_node(config, identity, replica_id, behaviour, storage, metrics_address)
        await node.run(task_status=task_status)
        return node.failure
    except OSError as exc:
        if metrics_address is not None and node.port is not None and node.metrics_port is None:
            # the replica's port was bound, the metrics one was not
            where = f"{metrics_address[0]}:{metrics_address[1]}"
            raise UsageError(f"replica {replica_id} cannot serve metrics on {where}: {exc.strerror or exc}.") from None
        if is_address_in_use(exc):
            raise UsageError(
                f"replica {replica_id} cannot listen on {me.host}:{me.port}: the port is already in use."
            ) from None
        raise UsageError(f"replica {replica_id} cannot listen on {me.host}:{me.port}: {exc.strerror or exc}.") from None
    finally:
        storage.close()


def metrics_setting(cluster_path: str, replica_id: int) -> str | None:
    """The optional `metrics = "HOST:PORT"` of replica `replica_id`'s [[replica]] entry
    (read here, beside the validated cluster file, which ignores keys it does not know)."""
    import tomllib

    try:
        with open(cluster_path, "rb") as fh:
            table = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None  # load_cluster has read it already; nothing more to say here
    for entry in table.get("replica", []):
        if isinstance(entry, dict) and entry.get("id") == replica_id:
            value = entry.get("metrics")
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{cluster_path}: [[replica]] {replica_id}: 'metrics' must be \"HOST:PORT\".")
            return value
    return None
