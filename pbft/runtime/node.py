"""A replica process: one protocol core inside a Trio shell.

Theory of operation. `ReplicaNode` owns exactly one `Replica` (or a `ByzantineReplica`,
which has the same `step` surface). Every input, whether a frame from the transport or a
tick from the clock, goes through one bounded memory channel (INBOX_LIMIT) into the one
task that calls `step()`, so the core never sees concurrency. The actions it returns are
performed in list order and none of them awaits: sends are queued on the transport's
bounded per-peer outboxes, observations are logged and counted. A full inbox slows the
readers (TCP backpressure) rather than growing memory.

`Persist` actions are ignored until durable storage lands (DESIGN.md section 8): with
no storage a restarted replica starts empty, like a new one.
"""

from __future__ import annotations

import functools
import importlib
import logging
import random
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
    Rejected,
    Send,
    SendClient,
    Tick,
)
from ..protocol.messages import Signer
from ..protocol.replica import Replica
from ..service.kv import KeyValueStore
from .transport import Transport, is_address_in_use

log = logging.getLogger("pbft.node")

INBOX_LIMIT = 4096
"""Inputs (frames and ticks) waiting for the state machine task."""
EVIDENCE_LIMIT = 1024
"""Evidence records kept in memory; the oldest are forgotten first."""


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
    ) -> None:
        self.config = config
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

    @property
    def port(self) -> int | None:
        return self.transport.listen_port

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (or `stop()`); `started()` once listening."""
        listeners = await self.transport.bind()  # outside the nursery: a plain OSError
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.transport.run, listeners)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._step_loop)
                log.info("replica %d listening on port %s", self.id, self.port)
                task_status.started()

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def _tick_loop(self) -> None:
        period = self.config.tick_ms / 1000
        while True:
            await trio.sleep(period)
            await self._send.send(Tick())

    async def _step_loop(self) -> None:
        async for event in self._recv:
            self.perform(self.replica.step(event))

    def perform(self, actions: list[Action]) -> None:
        """Carry out the core's actions, in order."""
        t = self.transport
        for a in actions:
            match a:
                case Send(to, data):
                    t.send(to, data)
                case Broadcast(data):
                    t.broadcast(data)
                case SendClient(client, data):
                    t.send_client(client, data)
                case Rejected(peer, reason, detail):
                    self.rejected[(peer, reason.value)] += 1
                    log.debug("replica %d rejected input from %r: %s %s", self.id, peer, reason.value, detail)
                case Note(text):
                    log.info("replica %d: %s", self.id, text)
                case Evidence(culprit, kind, _, _):
                    log.info("replica %d: evidence that replica %d is faulty: %s", self.id, culprit, kind)
                    self.evidence.append(a)
                    del self.evidence[:-EVIDENCE_LIMIT]
                case Executed(view, seq, _, requests):
                    self.executed = seq
                    log.debug("replica %d executed seq %d (view %d, %d requests)", self.id, seq, view, len(requests))
                case CheckpointStable(seq, _):
                    log.info("replica %d: checkpoint %d is stable", self.id, seq)
                case Persist():
                    pass  # durable storage is not wired in yet (module docstring)
                case _:
                    pass  # Prepared, Committed, CheckpointTaken: observations only


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


def build_node(config: ClusterConfig, identity, replica_id: int, behaviour: str | None = None):
    """A ReplicaNode for `replica_id` with the default key-value service."""
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
    )


async def run_replica(
    cluster_path: str,
    replica_id: int,
    *,
    behaviour: str | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Load the cluster file and this replica's identity, listen, serve until cancelled."""
    from ..cli import UsageError
    from .clusterfile import load_cluster, load_identity

    try:
        config = load_cluster(cluster_path)
        if not 0 <= replica_id < config.n:
            raise UsageError(
                f"replica id {replica_id} is not in the cluster file (ids are 0 to {config.n - 1})."
            )
        identity = load_identity(config, replica_id)
        node = build_node(config, identity, replica_id, behaviour)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    me = config.replicas[replica_id]
    try:
        await node.run(task_status=task_status)
    except OSError as exc:
        if is_address_in_use(exc):
            raise UsageError(
                f"replica {replica_id} cannot listen on {me.host}:{me.port}: the port is already in use."
            ) from None
        raise UsageError(f"replica {replica_id} cannot listen on {me.host}:{me.port}: {exc.strerror or exc}.") from None
