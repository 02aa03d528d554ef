"""A replica process: one protocol core inside a Trio shell.

Theory of operation. `ReplicaNode` owns exactly one `Replica` (or a `ByzantineReplica`,
which has the same `step` surface). Every input, whether a frame from the transport or a
tick from the clock, goes through one bounded memory channel (INBOX_LIMIT) into the one
task that calls `step()`, so the core never sees concurrency. The actions it returns are
performed in list order and none of them awaits: sends are queued on the transport's
bounded per-peer outboxes, observations are logged and counted. A full inbox slows the
readers (TCP backpressure) rather than growing memory.

Durability (docs/architecture.md, "The durability contract"). With a `Storage`, the node first loads what an earlier
run stored and hands it to `Replica.recover` before it listens. Then, group commit
(pbft.node.groupcommit): the stepping task steps the input it waited for plus whatever
else is already queued (at most GROUP_COMMIT_LIMIT inputs) and hands the group to its
`GroupCommit`, which makes the group's writes durable before it performs the group's
sends (on the event loop, or with fsync "always" and a slow disk pipelined through one
commit thread while stepping goes on).
Ticks come through the same inbox as one TICK event for every tick owed (coalesced); an
idle replica is woken every IDLE_TICKS ticks, a busy one every BUSY_TICKS.
A failed write (full disk) stops the node with one log line: running on without
durability could make it equivocate after the next crash. Without a storage (tests)
`Persist` actions are ignored and a restarted replica starts empty.

Observability. Every node has its own `NodeMetrics` (pbft.node.metrics), updated as
frames arrive and actions are performed, and served on HTTP when `metrics_address` is
given, together with the health endpoints /healthz, /readyz and /status
(pbft.node.health; `links_since` is what they need of the tick loop's link watch).
Protocol events are logged once each at info level with an `event` name and
`fields` (the JSON log format prints both): the typed actions (ViewChangeStarted,
ViewInstalled, CheckpointStable, StateTransferStarted, StateInstalled) and the core's
Notes, each as it comes. Links
to peers going up and down are noticed on each tick from `transport.connected`.
Per-message detail is logged at debug level only, behind `log.isEnabledFor`.
With a `tracer` (`pbft replica --trace FILE`, pbft.node.tracing) every message sent and
accepted from the transport, every protocol event and what the link-fault layer did is
written as a trace record; for a Byzantine replica, what its honest core would have sent
judges what it did send (`lie`). Without one, each hook is one `is not None` test.
Evidence is stored in the data directory (deduplicated) and logged once per new pair.
Two lines say what the process is doing, on their own logger (`lifecycle`, "pbft.replica",
which `pbft replica` keeps at info whatever --log-level says, so a replica started with the
defaults does not look hung): one once it listens (id, address, view, last executed, data
directory; a WARNING naming the behaviour if it runs a Byzantine one, so a flag left in a
unit file cannot go unnoticed) and one when it stops, saying why. A Byzantine behaviour is
also in the metrics (`pbft_byzantine_behaviour`) and in `ReplicaNode.behaviour`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ..adversary import broken as broken_cores
from ..adversary import catalogue
from ..errors import ConfigError, UsageError
from ..protocol.config import ClusterConfig
from ..protocol.crypto import VERDICTS, Verifier
from ..protocol.epochs import Epochs
from ..protocol.events import (
    Action,
    Broadcast,
    CheckpointStable,
    Departed,
    Diverged,
    EpochStarted,
    Evidence,
    Executed,
    Load,
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
from ..protocol.ready import Ready
from ..protocol.recovery import ReplayDiverged
from ..protocol.replica import Replica
from ..protocol.store import Store
from ..service.api import Hosted
from ..service.kv import KeyValueStore
from . import health
from .groupcommit import GROUP_COMMIT_LIMIT, GroupCommit
from .loadmeter import LoadMeter, cpu_stall_s
from .metrics import NodeMetrics, bind_metrics, serve_metrics
from .preverify import GROUP as PREVERIFY_GROUP
from .preverify import PreVerify
from .storage import Storage, StorageError, default_data_dir, is_disk_full
from .tls import PeerTable
from .tracing import FLUSH_S, wall_ms
from .transport import Transport, is_address_in_use

log = logging.getLogger("pbft.node")
lifecycle = logging.getLogger("pbft.replica")
"""The start-up and stop lines (see the module docstring)."""
STARTED = "replica {id} listening on {address}"
"""The start of a replica's start-up line: pbft.cluster.launcher waits for it in the log
to know the replica is really up (a foreign listener on its port says nothing)."""

INBOX_LIMIT = 4096
"""Inputs (frames and ticks) waiting for the state machine task."""
INBOX_BYTES = 64 * 1024 * 1024
"""Bytes of frames waiting for the state machine task: with frames of up to 16 MiB, a
bound in count alone allowed 4096 x 16 MiB (issue 13, item 8). A frame larger than what
is left waits for room (backpressure on its connection); one frame always fits."""


WARN_INTERVAL = 60.0
"""Seconds between two warnings of one kind (a state divergence, a slow step): the first
is logged at once, later ones at most this often, with how many were not logged."""


def slow_step_seconds(config: ClusterConfig) -> float:
    """How long one step of the core may block the event loop before it is worth a
    warning: a quarter of the view-change timeout (at least 0.1 s). While a step runs,
    nothing is read, sent or ticked: a few of them in a row and the other replicas take
    this one for unreachable, or its primary for faulty."""
    return max(0.1, config.view_change_timeout_ms / 4000)


class Throttle:
    """At most one log line per `interval` seconds: `due(now)` says whether to log now,
    and how many were held back since the last one."""

    __slots__ = ("interval", "last", "held")

    def __init__(self, interval: float = WARN_INTERVAL) -> None:
        self.interval = interval
        self.last = -math.inf
        self.held = 0

    def due(self, now: float) -> int | None:
        if now - self.last < self.interval:
            self.held += 1
            return None
        held, self.held, self.last = self.held, 0, now
        return held


class BoundedInbox:
    """The node's inbox as the transport sees it: a memory channel bounded in inputs
    (INBOX_LIMIT) and in bytes of frames (INBOX_BYTES). The step loop calls `taken` for
    each input it receives."""

    __slots__ = ("_send", "bytes", "limit", "_room")

    def __init__(self, send: trio.MemorySendChannel, limit: int = INBOX_BYTES) -> None:
        self._send = send
        self.bytes = 0
        self.limit = limit
        self._room = trio.Event()

    def _full(self, size: int) -> bool:
        return self.bytes > 0 and self.bytes + size > self.limit

    def send_nowait(self, value) -> None:
        size = len(value.data) if type(value) is Received else 0
        if size and self._full(size):
            raise trio.WouldBlock
        self._send.send_nowait(value)
        self.bytes += size

    async def send(self, value) -> None:
        size = len(value.data) if type(value) is Received else 0
        while size and self._full(size):
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()
        await self._send.send(value)
        self.bytes += size

    def taken(self, value) -> None:
        if type(value) is Received:
            self.bytes -= len(value.data)
            self._room.set()
EVIDENCE_LIMIT = 1024
"""Evidence records kept in memory; the oldest are forgotten first."""
IDLE_TICKS = 5
"""Ticks delivered per wake-up while nothing but ticks arrives (see `_tick_loop`)."""
BUSY_TICKS = 3
"""Ticks delivered per wake-up while inputs arrive: every wake-up is two task switches
(the tick task, then the stepping task), ~5% of a busy replica's Python time at one per
tick. The core's timers are tens to hundreds of ticks long, so a few ticks late is nothing
for them; the one short wait, the primary's for the clients of the batch it just executed,
ends by itself when they are back, which under load is well before a tick."""
TICK_CATCHUP_LIMIT = 20
"""Ticks owed at most: a replica that stalled longer does not jump its timers further."""
TICK = Tick()
NOTE_EVENTS = (
    (re.compile(r"recovered: view (\d+), executed (\d+), stable (\d+)"), "recovered",
     ("view", "executed", "stable")),
)
"""Notes that name an event of their own: (pattern, event, the fields its groups fill)."""


def event_log(level: int, event: str, replica: int, msg: str, *args: object, **fields: object) -> None:
    """One log line for a protocol event: `msg % args` as text, with `event`, `replica`
    and `fields` as attributes for the JSON format (pbft.cli.replica)."""
    if log.isEnabledFor(level):
        log.log(level, msg, *args, extra={"event": event, "replica": replica, "fields": fields})


def _of_epoch(epoch: int) -> str:
    """What a view-change log line adds after the view within its epoch: nothing in epoch
    0, ` (epoch E)` after (the text keeps `view N started` / `view N installed`)."""
    return "" if epoch == 0 else f" (epoch {epoch})"


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
        behaviour: str | None = None,
        broken: str | None = None,
        link_faults: Any = None,
        twin: bool = False,
        tracer: Any = None,
        verify_threads: int = 0,
    ) -> None:
        self.config = config
        self._trim = MemoryTrim()
        self.tracer = tracer
        """The trace writer (pbft.sim.trace.TraceWriter; None: no trace)."""
        self._lies: Any = None
        """With a trace, for a Byzantine replica: what its honest core sent (trace.Lies)."""
        self._judges: dict[int, Any] = {}
        """id(action) -> the judge of the step that produced it, until it is performed."""
        if tracer is not None and behaviour is not None:
            from ..sim.trace import watch_honest

            self._lies = watch_honest(replica)
        self.behaviour = behaviour
        """The Byzantine behaviour this replica runs (its --behaviour spec), else None."""
        self.broken = broken
        """The deliberately broken core it runs (--broken NAME), else None."""
        self._attacker_failures_seen = 0
        self._attacker_failures_logged = 0
        """The count the last "the attacker failed" line said."""
        self._attacker_logged_at = float("-inf")
        self.stop_reason: str | None = None
        """Why the node is being stopped, for its stop line (`stop(reason)`)."""
        self.stop_reason_from: Callable[[], str | None] | None = None
        """Asked for the reason when the node is cancelled from outside (`pbft replica`
        says which signal); neither set: "cancelled"."""
        self.storage = storage
        self.failure: str | None = None
        """Why the node stopped on its own (a storage failure), else None."""
        self.recovery_seconds: float | None = None
        self.replica = replica
        self.id: int = replica.id
        self._send, self._recv = trio.open_memory_channel(INBOX_LIMIT)
        self._inbox = BoundedInbox(self._send)
        self.preverify: PreVerify | None = None
        """With `verify_threads` > 0 (and a core whose Verifier keeps verdicts, as
        `build_node` makes it): the stage that checks signatures on worker threads between
        the inbox and the step loop (pbft.node.preverify)."""
        self._to_step: trio.MemorySendChannel | None = None
        self._from_inbox: trio.MemoryReceiveChannel | None = None
        verifier = getattr(replica, "verifier", None)
        if verify_threads > 0:
            if isinstance(verifier, Verifier) and verifier.memo_size > 0:
                self.preverify = PreVerify(verifier, verify_threads)
                self._from_inbox = self._recv
                self._to_step, self._recv = trio.open_memory_channel(PREVERIFY_GROUP)
            else:
                log.warning("replica %d: verify_threads ignored: its core's Verifier keeps no verdicts", self.id)
        self.transport = Transport(
            config,
            self.id,
            server_context=server_context,
            client_context=client_context,
            identify=identify,
            inbox=self._inbox,
            rng=rng,
            autoflush=False,  # perform() flushes once per batch of actions
        )
        self.link_faults: Any = None
        """Testing only (a pbft.node.linkfaults plan): the link-fault layer in front of the
        transport (`links`)."""
        if link_faults is not None:
            from .linkfaults import LinkFaults

            for peer, (host, port) in link_faults.twins.items():
                self.transport.add_twin(peer, host, port)
            if twin:
                self.transport.listen_at = link_faults.twins[self.id]
            self.link_faults = LinkFaults(self.transport, self.id, link_faults, instance=1 if twin else 0)
            self.link_faults.tracer = tracer
        self.rejected: Counter[tuple[Signer | None, str]] = Counter()
        self.evidence: list[Evidence] = []
        self.executed = 0
        self._cancel: trio.CancelScope | None = None
        self.metrics = NodeMetrics(self.id)
        self.metrics.bind(replica, self.transport)
        self.metrics.health = functools.partial(health.readiness, self)
        self.metrics.set_behaviour(behaviour)
        self.metrics_address = metrics_address
        self.metrics_port: int | None = None
        """The port metrics are served on once bound (None: not served)."""
        self._links: set[int] = set()
        self.links_since: float | None = None
        """When (time.monotonic) the links to 2f other replicas last came up; None while
        fewer are up (pbft.node.health: a replica that just reconnected waits to hear
        where the others are before it calls itself ready)."""
        self.commits: GroupCommit | None = None
        """The group commit over `storage` (None without a storage: nothing is kept)."""
        if storage is not None:
            self.commits = GroupCommit(
                storage, self.perform, self._storage_failed, self.metrics.storage_write.observe, self.id
            )
        self._ticks_owed = 0
        """Ticks fallen due and not yet stepped (the queued TICK carries them)."""
        self._tick_queued = False
        self._inputs = 0
        """Inputs other than ticks stepped so far (the tick task's idle test)."""
        self.load: LoadMeter | None = None
        """How busy the event loop is (loadmeter.py); made when the node runs."""
        self.cpu_stall: Callable[[], float | None] = cpu_stall_s
        """Where the host's CPU pressure is read (tests replace it)."""
        self.cpu_time: Callable[[], float] = time.process_time
        """Where the process's CPU time is read (tests replace it)."""
        self._load_owed: Load | None = None
        """A change of load the inbox had no room for: the tick task tries again."""
        self._evidence_seen: set[tuple[int, str, bytes, bytes]] = set()
        self.fatal: str | None = None
        """Why the node stopped itself on a fatal `Diverged` (its runtime exits with status
        2: the service changed or is broken), else None."""
        self.divergences: Counter[str] = Counter()
        """`Diverged` reports by kind (pbft_state_divergence_total; `/status`)."""
        self._warned: dict[str, Throttle] = {}
        self.slow_steps = 0
        """Steps that took `slow_step` or longer (pbft_slow_steps_total; `/status`)."""
        self.slow_step = slow_step_seconds(config)
        """Seconds a step may take before it is logged and counted as slow."""

    @property
    def links(self) -> Any:
        """What sends go through: the transport, or the link-fault layer in front of it."""
        return self.transport if self.link_faults is None else self.link_faults

    @property
    def port(self) -> int | None:
        return self.transport.listen_port

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Recover from storage, then serve until cancelled, `stop()` or a storage
        failure (`failure` says why); `started()` once listening. Logs the start-up line
        once listening and the stop line when it returns or raises after that."""
        self.recover()
        if self.tracer is not None:
            label = None if self.behaviour is None else str(getattr(self.behaviour, "label", lambda: self.behaviour)())
            self.tracer.start(wall_ms(), self.id, os.getpid(), self.replica.view, self.replica.last_executed,
                              behaviour=label)
            self.tracer.flush()
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
        if self.commits is not None:
            self.commits.start(trio.lowlevel.current_trio_token())
        started = False
        crash: BaseException | None = None
        self.load = LoadMeter(time.perf_counter(), self.cpu_time(), self.cpu_stall())
        try:
            with trio.CancelScope() as self._cancel:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.transport.run, listeners)
                    if metrics_listeners is not None:
                        await nursery.start(
                            serve_metrics, metrics_listeners, self.metrics.text, health.routes(self)
                        )
                    if self.commits is not None and self.commits.pipelined:
                        nursery.start_soon(self.commits.run)
                    if self.link_faults is not None:
                        await nursery.start(self.link_faults.run)
                    nursery.start_soon(self._tick_loop)
                    if self.preverify is not None:
                        nursery.start_soon(self.preverify.run, self._from_inbox, self._to_step)
                    nursery.start_soon(self._step_loop)
                    self._log_started()
                    started = True
                    task_status.started()
        except BaseException as exc:
            crash = exc
            raise
        finally:
            if self.commits is not None:
                self.commits.close()
            if self.tracer is not None:
                self.tracer.flush()
            if started:
                self._note_attacker_failures(final=True)
                self._log_stopped(crash)

    def _log_started(self) -> None:
        me = self.config.replicas[self.id]
        address = f"{me.host}:{self.port if self.port is not None else me.port}"
        data = self.storage.path if self.storage is not None else None
        core = self.replica
        text = STARTED.format(id=self.id, address=address) + " (%s, last executed %d, data %s)"
        args: list[object] = [health.view_text(core.view), core.last_executed, data or "none: nothing is kept"]
        level = logging.INFO
        if self.behaviour is not None:
            level = logging.WARNING
            text += (" -- BYZANTINE: it runs the behaviour %s and misbehaves on purpose; "
                     "remove --behaviour to run it honestly")
            args.append(self.behaviour)
        if self.broken is not None:
            level = logging.WARNING
            text += (" -- BROKEN CORE: it runs %s, which breaks one protocol rule on purpose; "
                     "remove --broken to run it correctly")
            args.append(self.broken)
        lifecycle.log(level, text, *args, extra={
            "event": "replica-started", "replica": self.id,
            "fields": {"address": address, **health.view_fields(core.view), "last_executed": core.last_executed,
                       "data": data, "behaviour": self.behaviour, "broken": self.broken,
                       "pid": os.getpid()},
        })

    def _log_stopped(self, crash: BaseException | None) -> None:
        level = logging.INFO
        if self.failure is not None:
            level, reason = logging.ERROR, f"its storage failed ({self.failure})"
        elif crash is not None and not _cancelled(crash):
            level, reason = logging.ERROR, f"{type(crash).__name__}: {crash}"
        else:
            asked = self.stop_reason_from() if self.stop_reason_from is not None else None
            reason = self.stop_reason or asked or "cancelled"
        core = self.replica
        lifecycle.log(
            level, "replica %d stopped: %s (%s, last executed %d)",
            self.id, reason, health.view_text(core.view), core.last_executed,
            extra={"event": "replica-stopped", "replica": self.id,
                   "fields": {"reason": reason, **health.view_fields(core.view),
                              "last_executed": core.last_executed}},
        )

    def recover(self) -> None:
        """Rebuild the core from what the storage holds (nothing to do when empty)."""
        if self.storage is None or self.recovery_seconds is not None:
            return
        started = time.monotonic()
        try:
            records = self.storage.load()
        except ConfigError as exc:  # a record that fails its checksum: a damaged store

            raise UsageError(str(exc)) from None
        if records:
            try:
                notes = self.replica.recover(records)
            except ReplayDiverged as exc:
                # The service changed or is not deterministic: one sentence, exit 2.
                raise UsageError(str(exc)) from None
            except ValueError as exc:  # CodecError too: records this core cannot replay

                raise UsageError(
                    f"the data directory {self.storage.path} holds records replica {self.id} "
                    f"cannot recover from ({exc}); restore a backup or move it away to start "
                    "this replica empty."
                ) from None
            for note in notes:
                if isinstance(note, Note):
                    self._log_note(note.text)
                elif isinstance(note, EpochStarted):
                    # The store is in a later epoch than the cluster file this node was
                    # started with: its links, its peers, or retirement (as when it began).
                    self._on_epoch(note)
            self.executed = self.replica.last_executed
        self.recovery_seconds = time.monotonic() - started
        if records:
            log.info(
                "replica %d recovered %d records from %s in %.3f s",
                self.id, len(records), self.storage.path, self.recovery_seconds,
            )

    def stop(self, reason: str | None = None) -> None:
        """Stop serving; `reason` goes into the stop line."""
        if reason is not None and self.stop_reason is None:
            self.stop_reason = reason
        if self._cancel is not None:
            self._cancel.cancel()

    async def _tick_loop(self) -> None:
        """Feed the core its ticks through the inbox, one Tick event for all the ticks
        that fell due since the last one it stepped (`_ticks_owed`): a tick never waits
        behind another in the inbox, and a busy replica is not woken once per tick. The
        task sleeps BUSY_TICKS periods at a time, IDLE_TICKS while nothing but ticks
        arrives (a wake-up costs ~0.13 ms of CPU here, the core's tick ~nothing): a timer
        then fires at most IDLE_TICKS - 1 ticks late, well inside retransmit_ms and
        view_change_timeout_ms. Each wake-up also samples the loop's load and tells the
        core when it changed (`_sample_load`)."""
        period = self.config.tick_ms / 1000
        last = trio.current_time()
        next_flush = last + FLUSH_S
        seen = -1
        while True:
            idle = seen == self._inputs
            seen = self._inputs
            await trio.sleep_until(last + (IDLE_TICKS if idle else BUSY_TICKS) * period)
            due = int((trio.current_time() - last) / period)
            last += due * period
            self._ticks_owed = min(self._ticks_owed + due, TICK_CATCHUP_LIMIT)
            if not self._tick_queued:
                try:
                    self._send.send_nowait(TICK)
                    self._tick_queued = True
                except trio.WouldBlock:
                    pass  # a full inbox: the ticks stay owed, the next attempt carries them
            self._sample_load()
            if self.transport.connected != self._links:
                self._log_links()
            if self.tracer is not None and last >= next_flush:
                self.tracer.flush()
                next_flush = last + FLUSH_S

    def _log_links(self) -> None:
        now = set(self.transport.connected)
        for peer in sorted(now - self._links):
            event_log(logging.INFO, "peer-connected", self.id, "replica %d: connected to replica %d", self.id, peer, peer=peer)
        for peer in sorted(self._links - now):
            event_log(logging.INFO, "peer-lost", self.id, "replica %d: lost the link to replica %d", self.id, peer, peer=peer)
        self._links = now
        if len(now) < 2 * self.config.f:
            self.links_since = None
        elif self.links_since is None:
            self.links_since = time.monotonic()

    def _step(self, event) -> Ready:
        started = time.perf_counter()
        store = getattr(self.replica, "store", None)
        checkpointing = getattr(store, "checkpoint_seconds", 0.0) + getattr(store, "commit_seconds", 0.0)
        try:
            ready = self._step_core(event)
        except (sqlite3.Error, OSError) as exc:
            # The state store (in the data directory) failed during the step: the core is
            # half-way through it, so nothing of it may be sent. Stop, saying why.
            where = self.storage.path if self.storage is not None else "memory"
            if is_disk_full(exc):
                text = f"the disk holding the data directory {where} is full"
            else:
                text = f"cannot write the replicated state in the data directory {where}: {exc}"
            self._storage_failed(StorageError(text))
            return Ready.of([])
        took = time.perf_counter() - started
        if took >= self.slow_step:
            checkpointing = (getattr(store, "checkpoint_seconds", 0.0) + getattr(store, "commit_seconds", 0.0)
                             - checkpointing)
            self._slow(took, checkpointing, ready)
        if self.behaviour is not None:
            self._note_attacker_failures()
            if self._lies is not None:
                self._judge_step(ready)
        return ready

    def _warn(self, event: str, text: str, *args: object, **fields: object) -> None:
        """A WARNING of `event` (its name), at most one per WARN_INTERVAL (`Throttle`)
        with the count of those held back since."""
        throttle = self._warned.get(event)
        if throttle is None:
            throttle = self._warned[event] = Throttle()
        held = throttle.due(time.monotonic())
        if held is None:
            return
        if held:
            text += " (%d more like it since the last such warning)"
            args = (*args, held)
        event_log(logging.WARNING, event, self.id, text, *args, **fields)

    def _slow(self, took: float, checkpointing: float, ready: Ready) -> None:
        """A step blocked the event loop for `took` seconds: count it and say (rate-
        limited) what it did, naming the service when it executed requests and its time
        was not spent taking a checkpoint."""
        m = self.metrics
        m.slow_steps.inc()
        self.slow_steps += 1
        m.longest_step = max(m.longest_step, took)
        requests = sum(len(a.requests) for a in ready.actions if type(a) is Executed)
        if requests and took - checkpointing >= self.slow_step:
            self._warn(
                "slow-step",
                "replica %d: one step took %.2f s and executed %d requests: the service's execute "
                "is the likely cause (it runs on the event loop, which nothing else uses meanwhile: "
                "the other replicas may take this one for unreachable and change views; "
                "docs/services.md)", self.id, took, requests,
                seconds=round(took, 3), requests=requests, cause="service",
            )
        else:
            self._warn(
                "slow-step",
                "replica %d: one step took %.2f s (%.2f s of it taking a checkpoint of the state, "
                "%d requests executed): the other replicas may take this one for unreachable",
                self.id, took, checkpointing, requests,
                seconds=round(took, 3), requests=requests, cause="checkpoint" if checkpointing else "other",
            )

    def _diverged(self, d: Diverged) -> None:
        """The core found its state is not the group's (`Diverged`): count it and warn
        (rate-limited per kind); a fatal one stops the node (exit status 2)."""
        kind = d.kind.value
        self.divergences[kind] += 1
        self.metrics.divergence.labels(kind).inc()
        sentence = d.sentence(self.id)
        fields = {"seq": d.seq, "kind": kind, "own": d.own_digest.hex(), "other": d.other_digest.hex()}
        if d.fatal:
            self.fatal = sentence
            event_log(logging.ERROR, "state-diverged", self.id, "%s", sentence, **fields)
            self.stop(sentence)
            return
        self._warn(f"state-diverged-{kind}", "%s", sentence, **fields)

    def _judge_step(self, ready: Ready) -> None:
        """Trace what the honest core under the behaviour reported in this step, and keep
        its judge for the step's sends until they are performed (group commit may join
        this step's actions with later ones')."""
        tracer, lies = self.tracer, self._lies
        tracer.notes(wall_ms(), self.id, False, lies.step)
        judge = lies.judge(self.config.n, self.id, tracer.describe)
        if len(self._judges) > 4 * INBOX_LIMIT:
            self._judges.clear()  # actions never performed (the node is stopping)
        for a in ready.actions:
            if type(a) in (Send, Broadcast, SendClient):
                self._judges[id(a)] = judge

    def _sample_load(self) -> None:
        """A full window of load (loadmeter.py); a change goes to the core as `Load`,
        through the inbox like a tick (owed while the inbox is full)."""
        assert self.load is not None
        now = time.perf_counter()
        if self.load.due(now):
            change = self.load.sample(now, self.cpu_time(), self.cpu_stall())
            self.metrics.cpu_ratio.set(self.load.share)
            if self.load.pressure is not None:
                self.metrics.host_pressure.set(self.load.pressure)
            if change is not None:
                self._load_owed = Load(busy=change)
                self.metrics.batching_for_throughput.set(int(change))
                log.info("replica %d: CPU %.2f, host CPU pressure %s: %s", self.id, self.load.share,
                         "unknown" if self.load.pressure is None else f"{self.load.pressure:.2f}",
                         "batching for throughput" if change else "proposing at once")
        if self._load_owed is not None:
            try:
                self._send.send_nowait(self._load_owed)
                self._load_owed = None
            except trio.WouldBlock:
                pass

    def _step_core(self, event) -> Ready:
        if type(event) is Load:
            return self.replica.step(event)  # not an input of the tick task's idle test
        if event is TICK:
            self._tick_queued = False
            owed, self._ticks_owed = self._ticks_owed, 0
            if owed == 1:
                return self.replica.step(event)
            return Ready.join([self.replica.step(event) for _ in range(owed)])
        self._inputs += 1
        if type(event) is Received:
            self._inbox.taken(event)
            self.metrics.on_received(event.data)
            if self.tracer is not None:
                self.tracer.deliver(wall_ms(), event.peer, self.id, event.data)
        return self.replica.step(event)

    def _note_attacker_failures(self, final: bool = False) -> None:
        """A behaviour's hook raised (adversary.base): log it, the attacker's failure and
        no protocol's, with the sentence naming the file and line. The first few are
        logged word for word, then every hundredth, the count at most once a second
        when it changed, and (`final`, at the stop) the count if it was not logged yet:
        what the last line says is the exact total (pbft.cluster.realscenario)."""
        count = getattr(self.replica, "failure_count", 0)
        seen = self._attacker_failures_seen
        if count <= seen and not (final and count > self._attacker_failures_logged):
            return
        self._attacker_failures_seen = count
        failures = self.replica.failures
        now = time.monotonic()
        for i in range(seen if count > seen else count - 1, count):
            due = i == count - 1 and (final or now - self._attacker_logged_at >= 1.0)
            if i < len(failures) or (i + 1) % 100 == 0 or due:
                sentence = failures[min(i, len(failures) - 1)].sentence()
                log.error("replica %d: the attacker failed (%d so far): %s", self.id, i + 1, sentence)
                self._attacker_failures_logged = i + 1
                self._attacker_logged_at = now

    async def _step_loop(self) -> None:
        recv = self._recv
        commits = self.commits
        async for event in recv:
            ticked = event is TICK
            ready = self._step(event)
            if self.failure is not None:
                return
            if commits is None:
                self.perform(ready.actions)
                continue
            # Group commit: what is already queued shares this commit.
            group = [ready]
            for _ in range(GROUP_COMMIT_LIMIT - 1):
                try:
                    event = recv.receive_nowait()
                except trio.WouldBlock:
                    break
                ticked = ticked or event is TICK
                group.append(self._step(event))
                if self.failure is not None:
                    return
            ready = Ready.join(group)
            actions = list(ready.actions)
            writes = commits.writes_to_commit(ready, ticked)
            if writes and commits.inline():
                if not commits.make_durable(writes):
                    return
                self.perform(actions)
                continue
            commits.hold_until_durable(writes, actions)
            await commits.wait_for_room()
            if self.failure is not None:
                return

    def _storage_failed(self, exc: StorageError) -> None:
        """A commit failed (GroupCommit): stop, saying why once; nothing more is sent."""
        self.failure = str(exc)
        self.metrics.storage_failures.inc()
        log.error("replica %d stopped: %s; nothing more is sent without durability", self.id, exc)
        self.stop()

    def perform(self, actions: Sequence[Action]) -> None:
        """Carry out the core's actions, in order."""
        t = self.links
        m = self.metrics
        if self.tracer is not None:
            self._trace_actions(actions)
        for a in actions:
            match a:
                case Send(to, data):
                    t.send(to, data)
                    m.on_sent(data)
                case Broadcast(data):
                    t.broadcast(data)
                    m.on_sent(data, len(self.transport.outboxes))
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
                case Diverged():
                    self._diverged(a)
                case Executed(view, seq, _, requests):
                    self.executed = seq
                    m.on_executed(seq, requests)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("replica %d executed seq %d (%s, %d requests)", self.id, seq,
                                  health.view_text(view), len(requests))
                case CheckpointStable(seq, digest):
                    m.on_stable(seq)
                    self._trim.maybe()
                    event_log(
                        logging.INFO, "checkpoint-stable", self.id,
                        "replica %d: checkpoint %d is stable", self.id, seq, seq=seq, digest=digest.hex(),
                    )
                case EpochStarted():
                    self._on_epoch(a)
                case Departed(epoch):
                    self.stop(f"replica {self.id} is not a member of epoch {epoch}: retired")
                case ViewChangeStarted(view):
                    m.view_changes.inc()
                    vf = health.view_fields(view)
                    event_log(
                        logging.INFO, "view-change-started", self.id,
                        "replica %d: view change to view %d started%s", self.id, vf["view"], _of_epoch(vf["epoch"]),
                        **vf,
                    )
                case ViewInstalled(view, primary):
                    vf = health.view_fields(view)
                    event_log(
                        logging.INFO, "view-installed", self.id,
                        "replica %d: view %d installed, primary %d%s", self.id, vf["view"], primary,
                        _of_epoch(vf["epoch"]), **vf, primary=primary,
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
                    pass  # made durable before this batch's sends (GroupCommit)
                case _:
                    pass  # Prepared, Committed, CheckpointTaken: observations only
        t.flush()

    def _on_epoch(self, a: EpochStarted) -> None:
        """A new configuration epoch (pbft.protocol.epochs): connect to who is in it now,
        accept only its members; or, if this replica is not one any more, keep to the
        epoch it was last a member of, where replicas left behind may still need it, until
        the core says it has lingered enough (`Departed`)."""
        config = getattr(self.replica, "config", None)
        if a.retired:
            left = getattr(self.replica, "left_config", lambda: None)()
            config = left if isinstance(left, ClusterConfig) and left.epoch != self.config.epoch else None
        if isinstance(config, ClusterConfig) and (a.retired or config.epoch == a.epoch):
            self.config = config
            if isinstance(self.transport.identify, PeerTable):
                self.transport.identify.config = config
            self.transport.reconfigure(config)
        verifier = getattr(self.replica, "verifier", None)
        if not a.retired and self.preverify is not None and isinstance(verifier, Verifier) and verifier.memo_size:
            self.preverify.verifier = verifier  # the new epoch's: its verdicts go where the core looks
        self.metrics.epoch.set(a.epoch)
        event_log(
            logging.INFO, "epoch-started", self.id,
            "replica %d: epoch %d began after checkpoint %d (n=%d, f=%d)%s", self.id, a.epoch, a.after,
            a.n, a.f,
            ": not a member, retiring (lingering while replicas left behind ask)" if a.retired else "",
            epoch=a.epoch, after=a.after, n=a.n, f=a.f, retired=a.retired,
        )

    def _trace_actions(self, actions: Sequence[Action]) -> None:
        """Trace records for a batch of actions about to be performed: the core's events
        (a Byzantine replica's honest ones were traced as it stepped) and one `send` per
        receiver, judged against the honest core for a Byzantine replica."""
        tracer, me, now = self.tracer, self.id, wall_ms()
        if self._lies is None:
            tracer.notes(now, me, True, actions)
        for a in actions:
            match a:
                case Send(to, data):
                    self._trace_send(now, a, to, data)
                case Broadcast(data):
                    for to in range(self.config.n):
                        if to != me:
                            self._trace_send(now, a, to, data)
                case SendClient(client, data):
                    self._trace_send(now, a, client, data)
        for a in actions:
            self._judges.pop(id(a), None)

    def _trace_send(self, now: float, action: Action, to: Any, data: bytes) -> None:
        judge = self._judges.get(id(action))
        lie = honest = None
        if judge is not None:
            lie, honest = judge(to, data, self.tracer.describe(data))
        self.tracer.send(now, self.id, to, data, lie, honest)

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
                self.metrics.storage_failures.inc()
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


def _cancelled(exc: BaseException) -> bool:
    """`exc` is a cancellation or an interrupt (alone or as every leaf of a group)."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split((trio.Cancelled, KeyboardInterrupt))
        return rest is None
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)


class MemoryTrim:
    """Hands freed heap memory back to the system after a stable checkpoint, at most every
    TRIM_INTERVAL seconds (glibc's malloc_trim; nothing elsewhere). A replica's largest
    transient allocations (a checkpoint that digests many leaves, a log window of large
    batches) are freed by then, but the allocator keeps the pages: measured after a
    preload of 1,000,000 keys, replica RSS 116-213 MB without, DETAIL with."""

    TRIM_INTERVAL = 10.0

    def __init__(self) -> None:
        self._last = 0.0
        self._trim: Any = None
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            if name:
                self._trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
        except OSError:
            self._trim = None

    def maybe(self) -> None:
        now = time.monotonic()
        if self._trim is None or now - self._last < self.TRIM_INTERVAL:
            return
        self._last = now
        self._trim(0)


def build_node(
    config: ClusterConfig,
    identity,
    replica_id: int,
    behaviour: catalogue.BehaviourSpec | str | None = None,
    storage: Storage | None = None,
    metrics_address: tuple[str, int] | None = None,
    broken: str | None = None,
    link_faults: Any = None,
    twin: bool = False,
    tracer: Any = None,
):
    """A ReplicaNode for `replica_id` running the cluster file's `[service]` (the built-in
    key-value store if it names none; the core is the
    deliberately broken one called `broken`, if given: pbft.adversary.broken); it recovers from
    and writes to `storage` if given (the caller closes the storage after `run`), and
    serves Prometheus metrics on `metrics_address` (HOST, PORT) if given."""
    from . import tls

    replica_class = Replica if broken is None else broken_cores.lookup(broken)
    threads = config.replicas[replica_id].verify_threads
    # With a pool the core's Verifier keeps verdicts, which the pool hands in (preverify).
    memo = VERDICTS if threads else 0
    verifier = (
        Verifier(config.signing_domain, config.member_keys(), memo=memo, replica_domain=config.replica_domain)
        if threads else None
    )
    store = storage.state_store() if storage is not None else None
    # Every epoch the cluster file records (its [[epoch]] entries), this one current.
    epochs = Epochs(config, memo=memo, earlier={c.epoch: c for c in config.earlier})
    core: Any = replica_class(
        config, replica_id, identity.key, replicated_service(config, store), verifier, epochs=epochs
    )
    if broken is not None:
        core.behaviour_label = f"broken:{broken}"  # `pbft status` shows it
    label = None
    if behaviour is not None:
        spec = catalogue.BehaviourSpec.parse(behaviour) if isinstance(behaviour, str) else behaviour
        label = spec.label()
        try:
            core = catalogue.build(spec.ref, spec.params, core, identity.key, random.Random(),
                                   base_dir=spec.base_dir)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
    return ReplicaNode(
        config,
        core,
        server_context=tls.server_context(identity),
        client_context=tls.client_context(identity),
        identify=tls.PeerTable(config),
        storage=storage,
        metrics_address=metrics_address,
        behaviour=label,
        broken=broken,
        link_faults=link_faults,
        twin=twin,
        tracer=tracer,
        verify_threads=threads,
    )


async def run_replica(
    cluster_path: str,
    replica_id: int,
    *,
    behaviour: catalogue.BehaviourSpec | str | None = None,
    data: str | None = None,
    metrics: str | None = None,
    accept_rollback: bool = False,
    stop_reason=None,
    broken: str | None = None,
    link_faults: str | None = None,
    fault_epoch: float | None = None,
    twin: bool = False,
    trace: str | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> str | None:
    """Load the cluster file, this replica's identity and its data directory (`data`, by
    default `<cluster dir>/data/replica-<id>`), recover, listen, serve until cancelled.
    Metrics are served on `metrics` (HOST:PORT), by default on the `metrics` address of
    this replica's [[replica]] entry in the cluster file, if it has one.
    `accept_rollback`: open a data directory whose database is behind its HISTORY file
    (the operator restored an older copy on purpose; see pbft.node.storage).
    `stop_reason`: a callable that says, once the replica is cancelled, why (for its stop
    line: "SIGTERM received"); None says "cancelled".
    `link_faults`, `fault_epoch`, `twin`: testing only (pbft.node.linkfaults): apply the
    link faults of that plan file to everything sent, from that epoch (else the plan's);
    `twin`: run as the second process of a twinned replica, on the plan's extra address.
    `trace`: write this replica's trace to that file (pbft.node.tracing; appended to by a
    restarted process).
    Returns None, or why the replica stopped on its own (a storage failure)."""
    from .clusterfile import load_replica
    from .metrics import parse_hostport

    plan = None
    if link_faults is not None:
        from .linkfaults import load_plan

        plan = load_plan(link_faults, fault_epoch)
        if twin and replica_id not in plan.twins:
            raise UsageError(f"--twin: {link_faults} names no twin address for replica {replica_id}.")
    elif twin or fault_epoch is not None:
        raise UsageError("--twin and --fault-epoch need --link-faults.")
    try:
        files = load_replica(cluster_path, replica_id)
        config = files.config
        metrics = metrics or files.metrics
        try:
            metrics_address = parse_hostport(metrics) if metrics else None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        storage = Storage.open(
            data or default_data_dir(config, replica_id), config, replica_id, files.fsync,
            accept_rollback=accept_rollback,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    me = config.replicas[replica_id]
    tracer = None
    try:
        if trace is not None:
            tracer = _open_trace(trace, config, replica_id, behaviour, broken, twin)
        node = build_node(
            config, files.identity, replica_id, behaviour, storage, metrics_address,
            broken=broken, link_faults=plan, twin=twin, tracer=tracer,
        )
        if stop_reason is not None:
            node.stop_reason_from = stop_reason
        await node.run(task_status=task_status)
        if node.fatal is not None:
            raise UsageError(node.fatal)  # one sentence; exit status 2 (pbft.cli.replica)
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
        if tracer is not None:
            tracer.close()


def _open_trace(path: str, config: ClusterConfig, rid: int, behaviour: Any, broken: str | None, twin: bool):
    from .tracing import open_trace

    extra: dict[str, Any] = {}
    if behaviour is not None:
        spec = catalogue.BehaviourSpec.parse(behaviour) if isinstance(behaviour, str) else behaviour
        extra["behaviour"] = spec.label()
    if broken is not None:
        extra["broken"] = broken
    if twin:
        extra["twin"] = True
    return open_trace(path, rid, config.n, config.f, [rid] if behaviour is not None else [],
                      [c.id for c in config.clients], **extra)


def replicated_service(config: ClusterConfig, store: Store | None = None) -> Hosted:
    """The service the cluster file's `[service]` names, on `store` (the replica's state
    in its data directory; a fresh one in memory if None), the built-in key-value store
    when it names none; ConfigError (one sentence) for one that cannot be loaded or made."""
    if config.service is None:
        return KeyValueStore(store)
    from ..adversary.loader import make_service

    try:
        return Hosted(make_service(config.service), store)
    except UsageError as exc:
        raise ConfigError(f"[service]: {exc}") from None
