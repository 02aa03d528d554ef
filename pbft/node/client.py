"""The async client (README: sending requests from Python), the same one the CLI uses.

Theory of operation. `open_client` loads the cluster file and the client's identity and
dials every replica over mutual TLS. The sans-IO `ClientCore` decides where requests go
and when to retransmit; this shell performs its `Send`s and wakes the caller on
`Completed`. Nothing here ever awaits inside a step, so the core never sees concurrency
even though three kinds of task step it:
* the caller's task (`submit`, in `execute`);
* the transport's readers: a client's inbox is `_Direct`, which steps each frame at once
  in the reader's task. A channel and a pump task in between cost two task switches per
  reply (four replies per request) and bought nothing: a client's steps are microseconds;
* the timer task, which sleeps until the outstanding request's retransmission is due
  (`ClientCore.ticks_until_due`) and then delivers those ticks at once, instead of
  waking every tick (`tick_ms`) whether or not anything is outstanding.

STATUS envelopes (answers to `status()`) are not replies, so while a `status()` call
waits they are routed here, checking the replica's signature, before anything reaches
`ClientCore.step`; otherwise a stray STATUS is rejected by the core like any other frame
that is not a reply.

Calls are serialised with a lock (the core has one request outstanding, section 4.1).
Up to f faulty or unreachable replicas never make a call raise: the core retransmits to
everyone until f+1 (2f+1 for reads) agree. With `timeout` set, a call that takes longer
raises TimeoutError and the outstanding request is abandoned. Correct replicas that
answer with different results (a service that is not deterministic) make `execute` raise
`ReplicasDisagree` as soon as no result can reach f+1 any more, and a timeout's message
says so when the answers differed.

Timestamps start from the wall clock in microseconds. A client whose clock is behind
the timestamp the replicas hold for it (say it once ran years ahead, then was corrected)
continues from the timestamp f+1 of them report (`ClientCore`, "catching up"), at the
cost of one more round trip for its first request. When that is impossible the call
raises `TimestampError` saying why.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import trio

from ..errors import ConfigError
from ..protocol import codec
from ..protocol.client import ClientCore, OversizedRequest
from ..protocol.config import OPERATOR, ClusterConfig
from ..protocol.crypto import KeyPair, Verifier, seal
from ..protocol.events import Action, Completed, Failed, Received, Rejected, Send, Tick
from ..protocol.messages import (
    MAX_U64,
    QueryStatus,
    Status,
    decode_envelope,
)
from ..service.kv import MAX_KEY, MAX_VALUE, decode_result, op_delete, op_get, op_put
from .tls import PeerTable
from .tracing import wall_ms
from .transport import (
    CLOSED_AFTER_HANDSHAKE,
    REFUSED,
    TLS_FAILED,
    UNREACHABLE,
    LinkTrouble,
    Transport,
)

log = logging.getLogger("pbft.client")

TICK = Tick()


class ClientError(RuntimeError):
    """`put`, `get` or `delete`: the key-value store answered with an error result (e.g.
    a value that is too large; `execute` returns error results as bytes), or the
    request cannot be made (`TimestampError`; a call on a client whose `open_client`
    block has ended: "the client is closed")."""


class RequestTooLarge(ClientError):
    """A request no replica would accept (a value, key or operation over its limit),
    refused at once before anything is sent; the message names the limit. Without this
    check the replicas would drop it unanswered and the call would wait out its timeout."""


class ReplicasDisagree(ClientError):
    """The replicas answered an ordered request with different results, so that no f+1
    of them can agree on one any more: the service is not deterministic (docs/services.md).
    The message counts the different results."""


class TimestampError(ClientError):
    """No timestamp is left to continue from: f+1 replicas hold the largest one for this
    client, or keep holding newer ones than it catches up to (another process using the
    same identity). The message says which."""


class Client:
    def __init__(
        self,
        config: ClusterConfig,
        client_id: str,
        key: KeyPair,
        transport: Transport,
        timeout: float | None,
    ) -> None:
        self.config = config
        self.id = client_id
        self._key = key
        self.transport = transport
        self.timeout = timeout
        # Microseconds of wall-clock time: a restarted client never reuses a timestamp.
        self.core = ClientCore(config, client_id, key, start_timestamp=time.time_ns() // 1000)
        self.verifier = Verifier(config.signing_domain, config.member_keys(), replica_domain=config.replica_domain)
        self._lock = trio.Lock()
        self._done: dict[int, bytes] = {}
        self._failed: str | None = None
        self._disagreed = False
        self._wake = trio.Event()
        self._timer_wake = trio.Event()
        self._timer_ref = 0.0
        """When the core's count of waited ticks was last zero (submit or retransmission)."""
        self._timer_deadline = math.inf
        """When the timer task's current sleep ends."""
        self._statuses: dict[int, Status] | None = None
        self._status_wake = trio.Event()
        self.rejected = 0
        self.sent = 0
        """Frames the core (or its behaviour) sent."""
        self.path: str | None = None
        """The cluster file, read again when replies come from a later epoch (`_reload`)."""
        self._reloaded = -math.inf
        self.link_faults: Any = None
        """Testing only: a link-fault layer in front of the transport (pbft.node.linkfaults;
        `open_client(link_faults=...)`)."""
        self.tracer: Any = None
        """Testing only: a trace writer (pbft.sim.trace) for what this client sends and
        receives (`open_client(tracer=...)`; `pbft scenario run --real --trace`)."""
        self._every_tick = False
        """A Byzantine client (testing only, `misbehave`) is ticked every tick."""
        self.closed = False
        """Set when the `open_client` block ends: its transport is gone, so a call would
        send nothing and wait for ever; every call raises ClientError instead."""

    @property
    def links(self) -> Any:
        """What sends go through: the transport, or the link-fault layer in front of it."""
        return self.transport if self.link_faults is None else self.link_faults

    def misbehave(self, name: str, params: dict[str, Any], rng: random.Random, base_dir: str = "") -> None:
        """Testing only (`pbft scenario run --real`): wrap this client's core in the client
        behaviour `name` (pbft.adversary, built through its catalogue), so that what it
        sends really goes out over TLS, and tick it every `tick_ms` as the simulator does
        (a behaviour injects its traffic on ticks). ValueError or TypeError for a bad
        parameter."""
        from ..adversary import catalogue

        self.core = catalogue.build(
            name, params, self.core, self._key, rng, self.config, target="client", base_dir=base_dir
        )
        self._every_tick = True
        self._timer_wake.set()

    # -- key-value API ------------------------------------------------------------------

    async def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        _check_key(key)
        _check_bytes(value, "value")
        if len(value) > MAX_VALUE:
            raise RequestTooLarge(
                f"the value is {len(value)} bytes, over the limit of {MAX_VALUE} bytes "
                f"({MAX_VALUE // 1024} KiB) the key-value store keeps per key"
            )
        self._check(await self.execute(op_put(key, value)))

    async def get(self, key: bytes) -> bytes | None:
        self._check_open()
        _check_key(key)
        result = self._check(await self.execute(op_get(key), read_only=True))
        if result is not None and not isinstance(result, bytes):
            raise ClientError(f"unexpected result {result!r}")
        return result

    async def delete(self, key: bytes) -> bool:
        self._check_open()
        _check_key(key)
        return bool(self._check(await self.execute(op_delete(key))))

    @staticmethod
    def _check(result: bytes) -> Any:
        value = decode_result(result)
        if isinstance(value, dict) and "error" in value:
            raise ClientError(str(value["error"]))
        return value

    # -- raw operations -----------------------------------------------------------------

    async def execute(self, operation: bytes, read_only: bool = False) -> bytes:
        """Submit one operation and wait until enough replicas agree on its result, and
        return the result bytes: a service's error (`{"error": ...}` in CBOR) is a result
        like any other, returned, not raised (docs/services.md, "Calling it").
        RequestTooLarge at once for an operation no replica would accept; TypeError at once
        for an operation that is not bytes; ClientError once the client is closed."""
        self._check_open()
        _check_bytes(operation, "operation")
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only must be True or False, not {_type_name(read_only)}")
        async with self._lock:
            scope = trio.fail_after(self.timeout) if self.timeout is not None else nullcontext()
            try:
                with scope:
                    try:
                        actions = self.core.submit(operation, read_only)
                    except OversizedRequest as exc:
                        raise RequestTooLarge(str(exc)) from None
                    self._perform(actions)
                    self._timer_restart()
                    while True:
                        # The core may fall back from a read to an ordered request with a
                        # new timestamp; whichever completes is the answer.
                        if self._done:
                            _, result = self._done.popitem()
                            return result
                        if self._failed is not None:
                            if self._disagreed:
                                raise ReplicasDisagree(self._failed)
                            raise TimestampError(self._failed)
                        self._wake = trio.Event()
                        await self._wake.wait()
            except trio.TooSlowError:
                raise TimeoutError(
                    f"no answer from the cluster within {self.timeout:g} seconds{self._why_no_answer()}"
                ) from None
            finally:
                # Abandon whatever is still outstanding (timeout or cancellation) so the
                # next call can submit; a late reply carries an old timestamp and is ignored.
                self.core.cancel()
                self._done.clear()
                self._failed = None
                self._disagreed = False

    def _why_no_answer(self) -> str:
        """What the client saw while a request went unanswered, as `: cause; cause`
        (empty if nothing): replicas that refused the connection (their addresses),
        replicas that closed it right after the TLS handshake (they do not know this
        client's certificate), failed handshakes, replicas that answered with different
        results, and replicas that hold a newer timestamp for this client than its
        request's."""
        out = self.core.outstanding
        answered = set(out.replies) | set(out.held) if out is not None else set()
        by_kind: dict[str, list[tuple[int, LinkTrouble]]] = {}
        for r in self.config.replica_ids():
            trouble = self.transport.trouble(r)
            if r not in answered and trouble is not None:
                by_kind.setdefault(trouble.kind, []).append((r, trouble))
        causes = []
        n = self.config.n
        refused = by_kind.get(REFUSED, [])
        if refused:
            who = "every replica" if len(refused) == n else _replicas([r for r, _ in refused])
            addresses = ", ".join(t.address for _, t in refused)
            hint = ": is the cluster running?" if len(refused) == n else ""
            causes.append(f"{who} refused the connection ({addresses}){hint}")
        for r, t in by_kind.get(UNREACHABLE, []):
            causes.append(f"replica {r} at {t.address} could not be reached ({t.detail})")
        closed = by_kind.get(CLOSED_AFTER_HANDSHAKE, [])
        if closed:
            who = "every replica" if len(closed) == n else _replicas([r for r, _ in closed])
            causes.append(
                f"{who} closed the connection right after the TLS handshake: they do not "
                f"know client {self.id}'s certificate (a client added to the cluster file "
                "after the replicas started is admitted once they restart)"
            )
        failed = by_kind.get(TLS_FAILED, [])
        if failed:
            details = sorted({t.detail for _, t in failed})
            causes.append(
                f"the TLS handshake with {_replicas([r for r, _ in failed])} failed "
                f"({'; '.join(details)})"
            )
        results = {result for result, _ in out.replies.values()} if out is not None else set()
        if len(results) > 1:
            # Some f+1 could still have matched (else the core would have failed at once).
            assert out is not None
            causes.append(
                f"{_replicas(sorted(out.replies))} answered, but with {len(results)} different "
                f"results and no {self.config.f + 1} alike: the service is not deterministic? "
                "(docs/services.md)"
            )
        if out is not None and out.held:
            # Fewer than f+1 alike (else the core would have caught up and re-sent).
            causes.append(
                f"{_replicas(sorted(out.held))} refused the request as stale: they hold a "
                f"newer timestamp for client {self.id} "
                f"({', '.join(map(str, sorted(set(out.held.values()))))}) than its "
                f"{out.timestamp} (its clock is behind), but fewer than {self.config.f + 1} "
                "agree on one, so it cannot continue from it"
            )
        return ": " + "; ".join(causes) if causes else ""

    async def status(self, timeout: float = 2.0) -> dict[int, Status]:
        """Ask every replica for its signed STATUS; those that answer within `timeout`
        (a positive number of seconds: TypeError or ValueError otherwise)."""
        self._check_open()
        check_timeout(timeout, allow_none=False)
        nonce = random.SystemRandom().randrange(MAX_U64)
        data = seal(self._key, self.config.signing_domain, self.id, QueryStatus(nonce)).to_bytes()
        self._statuses = {}
        try:
            for r in self.config.replica_ids():
                self.links.send(r, data)
            self.links.flush()
            with trio.move_on_after(timeout):
                while len(self._statuses) < self.config.n:
                    self._status_wake = trio.Event()
                    await self._status_wake.wait()
            return dict(sorted(self._statuses.items()))
        finally:
            self._statuses = None

    def _check_open(self) -> None:
        if self.closed:
            raise ClientError(
                f"the client {self.id} is closed: its `async with open_client(...)` block has "
                "ended; open a new one"
            )

    # -- the pump -----------------------------------------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        for a in actions:
            match a:
                case Send(to, data):
                    if self.tracer is not None:
                        self.tracer.send(wall_ms(), self.id, to, data)
                    self.links.send(to, data)
                    self.sent += 1
                case Completed(timestamp, result):
                    self._done[timestamp] = result
                    self._wake.set()
                case Failed(_, detail, disagreed):
                    self._failed = detail
                    self._disagreed = disagreed
                    self._wake.set()
                case Rejected(peer, reason, detail):
                    self.rejected += 1
                    log.debug("client %s rejected input from %r: %s %s", self.id, peer, reason.value, detail)
                case _:
                    pass
        self.links.flush()

    def _on_status(self, peer, data: bytes) -> bool:
        """Handle a STATUS envelope; False if `data` is not one (give it to the core)."""
        try:
            env, msg = decode_envelope(data)
        except codec.CodecError:
            return False
        if not isinstance(msg, Status):
            return False
        if self._statuses is not None and env.signer == peer and self.verifier.verify(env):
            self._statuses[peer] = msg
            self._status_wake.set()
        else:
            self.rejected += 1
        return True

    def _on_event(self, event: Received) -> None:
        """Step one frame from a replica (called by the transport's reader, see `_Direct`)."""
        # Only while status() waits can a frame be a STATUS worth decoding here: the rest
        # of the time every frame goes straight to the core (which decodes it once, and
        # rejects a stray STATUS as not a reply).
        if self._statuses is not None and self._on_status(event.peer, event.data):
            return
        if self.tracer is not None:
            self.tracer.deliver(wall_ms(), event.peer, self.id, event.data)
        before = self.core.outstanding
        self._perform(self.core.step(event))
        if self.core.newer_epoch > self.core.config.epoch:
            self._reload()
        after = self.core.outstanding
        if after is not None and after is not before:
            # A new request: a read fell back to the ordered path, or the core caught up
            # with the timestamp the replicas hold and re-sent the operation.
            self._timer_restart()

    def _reload(self) -> None:
        """Replies come from a configuration epoch we do not know (pbft.protocol.epochs):
        read the cluster file again (the operator's tool updates it), at most once a
        second. A later epoch found there is adopted at once: its replicas, its f."""
        now = time.monotonic()
        if self.path is None or now - self._reloaded < 1.0:
            return
        self._reloaded = now
        try:
            from .clusterfile import load_cluster

            config = load_cluster(self.path)
        except ConfigError as exc:
            log.warning("client %s: the cluster file cannot be read again: %s", self.id, exc)
            return
        if config.epoch <= self.core.config.epoch:
            return
        self.config = config
        if isinstance(self.transport.identify, PeerTable):
            self.transport.identify.config = config
        self.transport.reconfigure(config)
        self.verifier = Verifier(config.signing_domain, config.member_keys(), replica_domain=config.replica_domain)
        self._perform(self.core.reconfigure(config))

    async def _timer_loop(self) -> None:
        """Sleep until the outstanding request's timer is due, then deliver its ticks.
        A new request whose timer is due earlier than the current sleep wakes it
        (`_timer_restart`); one due later is picked up when the sleep ends."""
        tick = self.config.tick_ms / 1000
        core = self.core
        while True:
            if self._every_tick:
                await trio.sleep(tick)
                self._perform(self.core.step(TICK))
                continue
            out = core.outstanding
            due = core.ticks_until_due()
            self._timer_wake = trio.Event()
            if due is None:
                self._timer_deadline = math.inf
                await self._timer_wake.wait()
                continue
            self._timer_deadline = self._timer_ref + due * tick
            with trio.move_on_at(self._timer_deadline):
                await self._timer_wake.wait()
                continue  # an earlier deadline: start over
            if core.outstanding is not out:
                continue  # completed meanwhile; time the next one from its own submit
            for _ in range(due):
                self._perform(core.step(TICK))
            self._timer_ref = trio.current_time()

    def _timer_restart(self) -> None:
        """A new request is outstanding (submit, or a read fell back): time it from now."""
        self._timer_ref = trio.current_time()
        due = self.core.ticks_until_due()
        if due is not None and self._timer_ref + due * self.config.tick_ms / 1000 < self._timer_deadline:
            self._timer_wake.set()


def _replicas(ids: list[int]) -> str:
    return f"replica{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _check_bytes(value: object, what: str) -> None:
    """TypeError, before anything is sent, for an argument that is not bytes: a str or a
    list would be sent and dropped (or refused) by the replicas, after a round trip or a
    wait for ever."""
    if not isinstance(value, bytes):
        hint = " (encode a str first, e.g. with .encode())" if isinstance(value, str) else ""
        raise TypeError(f"{what} must be bytes, not {_type_name(value)}{hint}")


def check_timeout(timeout: object, *, allow_none: bool = True, what: str = "timeout") -> None:
    """TypeError unless `timeout` is an int or a float (not a bool), or None where
    `allow_none`; ValueError unless it is a finite number of seconds above zero."""
    expected = "None or a positive number of seconds" if allow_none else "a positive number of seconds"
    if timeout is None and allow_none:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{what} must be {expected}, not {_type_name(timeout)}")
    try:
        seconds = float(timeout)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{what} must be {expected}, not {timeout!r}")


def _check_key(key: bytes) -> None:
    _check_bytes(key, "key")
    if len(key) > MAX_KEY:
        raise RequestTooLarge(
            f"the key is {len(key)} bytes, over the limit of {MAX_KEY} bytes a key may have"
        )


class _Direct:
    """A client's transport inbox: every frame is stepped at once, in the reader's task."""

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    def send_nowait(self, event: Received) -> None:
        self._client._on_event(event)

    async def send(self, event: Received) -> None:
        self._client._on_event(event)


def _cluster_path(cluster_file: object) -> str:
    """The cluster file's path as a str: a str, a bytes path or an os.PathLike; TypeError
    for anything else (None, a number)."""
    try:
        path = os.fspath(cluster_file)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"cluster_file must be a path (a str or an os.PathLike), not {_type_name(cluster_file)}"
        ) from None
    return os.fsdecode(path)


@asynccontextmanager
async def open_client(
    cluster_file: str, client_id: str, *, timeout: float | None = None, link_faults: Any = None,
    tracer: Any = None,
) -> AsyncIterator[Client]:
    """`async with open_client("keys/demo/cluster.toml", "alice") as c: ...`

    A problem with the cluster file, the client's name or its key and certificate raises
    `pbft.ConfigError` (one sentence) before anything is dialled. `timeout` is None (wait
    as long as it takes) or a positive number of seconds per call (an int or a float);
    another type raises TypeError, zero, a negative number, NaN or infinity ValueError. `link_faults` (testing
    only): a pbft.node.linkfaults.FaultPlan whose link faults apply to what it sends;
    `tracer` (testing only): a trace writer for what it sends and receives."""
    from . import tls
    from .clusterfile import load_cluster, load_identity

    check_timeout(timeout)
    cluster_file = _cluster_path(cluster_file)
    if not isinstance(client_id, str):
        raise TypeError(f"client_id must be a str (a client's name), not {_type_name(client_id)}")
    config = load_cluster(cluster_file)
    if client_id not in config.client_index and not (client_id == OPERATOR and config.operator_key):
        raise ConfigError(f"client {client_id!r} is not listed in {cluster_file}.")
    identity = load_identity(config, client_id)
    context = tls.client_context(identity)
    transport = Transport(
        config,
        client_id,
        server_context=None,
        client_context=context,
        identify=tls.PeerTable(config),
        inbox=None,
        autoflush=False,  # _perform() flushes once per step
    )
    client = Client(config, client_id, identity.key, transport, timeout)
    client.path = cluster_file
    transport.inbox = _Direct(client)
    if link_faults is not None:
        from .linkfaults import LinkFaults

        for peer, (host, port) in link_faults.twins.items():
            transport.add_twin(peer, host, port)
        client.link_faults = LinkFaults(transport, client_id, link_faults)
        client.link_faults.tracer = tracer
    client.tracer = tracer
    # The caller's exception is re-raised outside the nursery, so it arrives as itself
    # (e.g. TimeoutError), not wrapped in an ExceptionGroup.
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        if client.link_faults is not None:
            await nursery.start(client.link_faults.run)
        nursery.start_soon(client._timer_loop)
        try:
            yield client
        except BaseException as exc:
            error = exc
        finally:
            client.closed = True
            nursery.cancel_scope.cancel()
    if error is not None:
        raise error
