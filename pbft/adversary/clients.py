"""Byzantine clients (docs/attacks.md, "Faulty clients").

Theory of operation. As for replicas, an honest `ClientCore` runs underneath and a
`ClientBehaviour` rewrites what it sends (`on_output`) and injects traffic of its own once
per tick (`on_tick`). A client's lies are requests signed with its own key: the cluster
must keep every correct client's requests flowing, execute each (client, timestamp) at
most once, and reach the same verdict on the same bytes at every replica.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..errors import is_interrupt
from ..protocol import codec
from ..protocol.client import ClientCore
from ..protocol.config import ClusterConfig
from ..protocol.crypto import KeyPair, seal
from ..protocol.events import Action, Event, Send, Tick
from ..protocol.messages import (
    MAX_OPERATION,
    MAX_U64,
    Envelope,
    QueryStatus,
    Request,
    open_envelope,
)
from .api import Param, validate_params
from .base import ACTION_TYPES, RUNNING, Cluster, Failing, FailureLog, checked
from .wire import Params


class ClientBehaviour:
    """Override `on_output` / `on_tick`; the defaults behave correctly. A user's client
    attacker derives from this and declares `parameters` (adversary.api.Param)."""

    name: ClassVar[str] = "honest-client"
    summary: ClassVar[str] = "behaves correctly"
    targets: ClassVar[str] = "client"
    allowed: ClassVar[tuple[str, ...]] = ()
    parameters: ClassVar[Mapping[str, Param]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        if "summary" not in cls.__dict__:
            doc = (cls.__doc__ or "").strip().splitlines()
            cls.summary = doc[0] if doc else "(no summary)"

    def __init__(
        self,
        core: ClientCore,
        key: KeyPair,
        params: dict[str, Any],
        rng: random.Random,
        config: ClusterConfig,
    ) -> None:
        self.core = core
        self.key = key
        self.params = params or {}
        self.rng = rng
        self.config = config
        self.p = Params(self.name, self.params, (*self.allowed, *self.parameters))
        self.args = validate_params(self.name, self.parameters, {
            k: v for k, v in self.params.items() if k not in self.allowed
        }, config.n)
        self.ticks = 0

    def sign(self, req: Request) -> bytes:
        return seal(self.key, self.config.signing_domain, self.core.id, req).to_bytes()

    def own_request(self, a: Action) -> Request | None:
        """The request an outgoing Send carries, if it is one of this client's."""
        if not isinstance(a, Send):
            return None
        opened = open_envelope(a.data)
        if opened is None or not isinstance(opened[1], Request) or opened[0].signer != self.core.id:
            return None
        return opened[1]

    def rewrite_requests(
        self, actions: list[Action], rewrite: Callable[[Send, Request], list[Action]]
    ) -> list[Action]:
        """`actions` with each Send of one of this client's requests replaced by what
        `rewrite(send, request)` returns; everything else as it was."""
        out: list[Action] = []
        for a in actions:
            req = self.own_request(a)
            if req is None:
                out.append(a)
            else:
                out.extend(rewrite(a, req))  # type: ignore[arg-type]
        return out

    def to_all(self, data: bytes) -> list[Action]:
        return [Send(r, data) for r in self.config.replica_ids()]

    def halves(self) -> tuple[list[int], list[int]]:
        ids = list(self.config.replica_ids())
        cut = len(ids) // 2
        return ids[:cut], ids[cut:]

    def on_output(self, actions: list[Action]) -> list[Action]:
        return actions

    def on_tick(self) -> list[Action]:
        return []


class ByzantineClient(Failing):
    """`ClientCore`-compatible wrapper: core -> behaviour.on_output, plus on_tick.
    `log`: the failure record to share with a wrapper underneath (rules over a behaviour)."""

    def __init__(self, core: ClientCore, behaviour: ClientBehaviour, log: FailureLog | None = None) -> None:
        self.core = core
        self.behaviour = behaviour
        self.failure_log = log if log is not None else FailureLog()

    def submit(self, operation: bytes, read_only: bool = False) -> list[Action]:
        return self._output(self.core.submit(operation, read_only))

    def step(self, event: Event) -> list[Action]:
        out = self._output(self.core.step(event))
        if isinstance(event, Tick) and not self.stalled:
            try:
                RUNNING.enter("on_tick")
                try:
                    self.behaviour.ticks += 1
                    given = self.behaviour.on_tick()
                finally:
                    RUNNING.hook = None
                out = [*out, *checked(given, ACTION_TYPES, "on_tick", "actions", (), self._cluster)]
            except BaseException as exc:  # noqa: BLE001 - the attacker's bug, reported as such
                RUNNING.hook = None
                if is_interrupt(exc):
                    raise
                self._failed("on_tick", exc)
        return out

    def _output(self, actions: list[Action]) -> list[Action]:
        if self.stalled:
            return actions
        try:
            RUNNING.enter("on_output")
            try:
                given = self.behaviour.on_output(list(actions))
            finally:
                RUNNING.hook = None
            return checked(given, ACTION_TYPES, "on_output", "actions", actions, lambda: self._cluster(actions))
        except BaseException as exc:  # noqa: BLE001
            RUNNING.hook = None
            if is_interrupt(exc):
                raise
            self._failed("on_output", exc)
            return actions

    def _cluster(self, actions: list[Action] = ()) -> Cluster:  # type: ignore[assignment]
        return Cluster.of(self.core.config, actions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


class ClientEquivocate(ClientBehaviour):
    """Each request goes straight to every replica: the first half gets the real one, the
    second half the same (client, timestamp) with a different operation."""

    name = "client-equivocate"
    summary = "the same (client, timestamp) with different operations to different replicas"

    def __init__(self, core, key, params, rng, config) -> None:
        super().__init__(core, key, params, rng, config)
        self.variants: dict[int, bytes] = {}

    def on_output(self, actions: list[Action]) -> list[Action]:
        return self.rewrite_requests(actions, self._equivocate)

    def _equivocate(self, a: Send, req: Request) -> list[Action]:
        other = self.variants.get(req.timestamp)
        if other is None:
            op = codec.encode(["put", b"client-equivocate", str(req.timestamp).encode()])
            other = self.sign(Request(op, req.timestamp, req.client, req.read_only))
            self.variants = {req.timestamp: other}
        first, second = self.halves()
        return [*(Send(r, a.data) for r in first), *(Send(r, other) for r in second)]


class ClientReplay(ClientBehaviour):
    """Every `every` ticks re-sends one of its old signed requests to every replica, and
    a burst of `burst` copies of the outstanding one."""

    name = "client-replay"
    summary = "re-sends old signed requests and bursts of retransmissions"
    allowed = ("every", "burst", "history")

    def __init__(self, core, key, params, rng, config) -> None:
        super().__init__(core, key, params, rng, config)
        self.every = self.p.integer("every", 5, 1)
        self.burst = self.p.integer("burst", 5, 0, 10_000)
        self.sent: deque[bytes] = deque(maxlen=self.p.integer("history", 64, 1, 1 << 16))

    def on_output(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if self.own_request(a) is not None and a.data not in self.sent:  # type: ignore[union-attr]
                self.sent.append(a.data)  # type: ignore[union-attr]
        return actions

    def on_tick(self) -> list[Action]:
        if self.ticks % self.every:
            return []
        out: list[Action] = []
        if self.sent:
            out.extend(self.to_all(self.sent[self.rng.randrange(len(self.sent))]))
        if self.core.outstanding is not None:
            for _ in range(self.burst):
                out.extend(self.to_all(self.core.outstanding.data))
        return out


class ClientPartialSignature(ClientBehaviour):
    """Each request goes to every replica: those in `valid_for` (default the first half)
    get it correctly signed, the others the same bytes with a corrupted signature."""

    name = "client-partial-signature"
    summary = "a request whose signature is valid for some replicas only"
    allowed = ("valid_for",)

    def __init__(self, core, key, params, rng, config) -> None:
        super().__init__(core, key, params, rng, config)
        self.valid_for = set(self.p.replica_ids("valid_for", self.halves()[0], config.n) or [])
        self.spoiled: dict[bytes, bytes] = {}

    def spoil(self, data: bytes) -> bytes:
        if data not in self.spoiled:
            env = open_envelope(data)[0]  # type: ignore[index]
            sig = bytearray(env.signature)
            sig[self.rng.randrange(len(sig))] ^= 1 << self.rng.randrange(8)
            self.spoiled = {data: Envelope(env.body, env.signer, bytes(sig)).to_bytes()}
        return self.spoiled[data]

    def on_output(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if self.own_request(a) is None:
                out.append(a)
                continue
            data = a.data  # type: ignore[union-attr]
            for r in self.config.replica_ids():
                out.append(Send(r, data if r in self.valid_for else self.spoil(data)))
        return out


class ClientAbuse(ClientBehaviour):
    """Each tick, `rate` abusive messages to every replica, cycling through `modes`:
    many outstanding requests with fresh timestamps, timestamps near 2^64, operations
    over MAX_OPERATION, and signed status queries (each answer costs a replica a signature).
    The cluster must bound what one client costs."""

    name = "client-abuse"
    summary = "many outstanding requests, huge timestamps, oversized operations, status queries"
    allowed = ("rate", "modes")
    MODES = ("outstanding", "huge-timestamp", "oversize", "status-flood")

    def __init__(self, core, key, params, rng, config) -> None:
        super().__init__(core, key, params, rng, config)
        self.rate = self.p.integer("rate", 3, 1, 10_000)
        self.modes = self.p.choices("modes", self.MODES, self.MODES)
        self.count = 0

    def abusive(self, mode: str) -> bytes:
        core = self.core
        # The honest core below catches up with the huge timestamps the replicas come to
        # hold for this client (they executed its huge-timestamp requests), so everything
        # derived from core.timestamp is kept within the codec's range.
        if mode == "outstanding":
            core.timestamp = min(core.timestamp + 1, MAX_U64)
            op = codec.encode(["get", b"client-abuse"])
            return self.sign(Request(op, min(core.timestamp + 1_000_000, MAX_U64), core.id))
        if mode == "huge-timestamp":
            ts = MAX_U64 - self.rng.randrange(1 << 16)
            return self.sign(Request(codec.encode(["get", b"client-abuse"]), ts, core.id))
        if mode == "status-flood":
            query = QueryStatus(self.rng.randrange(MAX_U64))
            return seal(self.key, self.config.signing_domain, core.id, query).to_bytes()
        return self.sign(Request(bytes(MAX_OPERATION + 1), min(core.timestamp + 1, MAX_U64), core.id))

    def on_tick(self) -> list[Action]:
        out: list[Action] = []
        for _ in range(self.rate):
            mode = self.modes[self.count % len(self.modes)]
            self.count += 1
            out.extend(self.to_all(self.abusive(mode)))
        return out


CLIENTS = (ClientEquivocate, ClientReplay, ClientPartialSignature, ClientAbuse)
