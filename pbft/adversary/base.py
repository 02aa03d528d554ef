"""A Byzantine replica is an honest core with a behaviour wrapped around it.

Theory of operation (Malachite's test middlewares, Twins): the honest `Replica` runs
unmodified; a `Behaviour` sees every event before the core does and every action after,
and may drop, delay, alter, duplicate or invent messages. Whatever it invents it signs
with the replica's own key (`forge`), so the attack exercises the protocol's checks, not
just signature checks (docs/attacks.md). The wrapper has the same `step` surface as a
`Replica`, so the simulator and the runtime node drive either without knowing which.

`Behaviour` is the public base a user's attacker derives from (docs/behaviours.md). It
offers two levels:

- decoded hooks, each optional: `on_message(Incoming)` for every message that arrives,
  `on_send(Outgoing)` for every message the core sends, once per receiver, and `on_tick()`
  once per unit of time; helpers `send`, `broadcast` and `forge` to inject messages of
  any kind, signed with this replica's key; `self.state` (read-only facts about the
  core), `self.args` (the declared `parameters`, validated), `self.rng` (the run's seeded
  RNG) and `self.now_ms` (this replica's clock, in ticks);
- the raw hooks `on_input(event) -> events` and `on_output(actions) -> actions`, which
  the built-in catalogue uses. Overriding them replaces the decoded hooks' plumbing.

A hook that raises is the attacker's failure, not the protocol's: `ByzantineReplica`
records it (`failures`, one sentence naming the file and line) and lets that step through
unaltered, so a broken script can never pass for a protocol violation.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import random
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import exception_text, is_interrupt
from ..protocol.crypto import KeyPair, seal
from ..protocol.events import Action, Broadcast, Event, Received, Send, SendClient, Tick
from ..protocol.messages import Message
from ..protocol.ready import Ready
from ..protocol.replica import Replica
from .api import Args, CoreView, Fate, Held, Incoming, Outgoing, Param, decode, validate_params

MESSAGE_TYPES = typing.get_args(Message)


class Behaviour:
    """The base of every attacker; the defaults behave correctly. Override the hooks."""

    name: ClassVar[str] = "honest"
    summary: ClassVar[str] = "behaves correctly"
    targets: ClassVar[str] = "replica"  # or "client"
    parameters: ClassVar[Mapping[str, Param]] = {}
    """Declared parameters, by name; what a scenario gives is checked against them."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__  # a user's class is known by its own name
        if "summary" not in cls.__dict__:
            doc = (cls.__doc__ or "").strip().splitlines()
            cls.summary = doc[0] if doc else "(no summary)"

    def __init__(self, replica: Replica, key: KeyPair, params: dict[str, Any], rng: random.Random):
        self.replica = replica  # the honest core: the catalogue's own behaviours reach in
        self.key = key
        self.params = dict(params or {})
        self.rng = rng
        self.state = CoreView(replica)
        self.now_ms = 0
        self._outbox: list[Action] = []
        self._held_out = Held()
        self._held_in = Held()
        self._tick_due = False
        cls = type(self)
        self._decode_in = cls.on_message is not Behaviour.on_message
        self._decode_out = cls.on_send is not Behaviour.on_send
        # The catalogue's classes validate their own `allowed` parameters (wire.Params).
        self.args = (
            Args({}) if hasattr(cls, "allowed")
            else validate_params(self.name, cls.parameters, self.params, replica.config.n)
        )
        self.setup()

    # -- decoded hooks (override any) ---------------------------------------------------

    def setup(self) -> None:
        """Called once, after the parameters are validated."""

    def on_message(self, msg: Incoming) -> None:
        """A message arrived; `msg.drop()` or `msg.delay(ms)` keep it from the core."""

    def on_send(self, out: Outgoing) -> None:
        """The core sends `out` to `out.to`; drop, delay, duplicate or replace it."""

    def on_tick(self) -> None:
        """Once per tick (`self.state.tick_ms`), after the core's own timers ran."""

    # -- helpers ----------------------------------------------------------------------------

    def forge(self, msg: Message) -> bytes:
        """Sign `msg` as this replica, bypassing its safety rules (that is the lie)."""
        if not isinstance(msg, MESSAGE_TYPES):
            raise TypeError(f"forge takes a protocol message (PrePrepare, Commit, ...), not {type(msg).__name__}")
        cfg = self.replica.config
        return seal(self.key, cfg.signing_domain, self.replica.id, msg).to_bytes()

    def send(self, to: int | str | Iterable[int | str], msg: Message | bytes, delay_ms: int = 0) -> None:
        """Send `msg` (signed here if it is a Message) to one replica or client, or to
        each of a list, now or `delay_ms` later."""
        data = msg if isinstance(msg, bytes) else self.forge(msg)
        targets = [to] if isinstance(to, int | str) else list(to)
        clients = set(self.state.clients())
        for t in targets:
            if not (type(t) is int and 0 <= t < self.state.n) and not (type(t) is str and t in clients):
                raise ValueError(f"send: {t!r} is neither a replica 0 to {self.state.n - 1} nor a client of the cluster")
            action: Action = Send(t, data) if isinstance(t, int) else SendClient(t, data)
            if delay_ms > 0:
                self._hold_out(delay_ms, action)
            else:
                self._outbox.append(action)

    def broadcast(self, msg: Message | bytes, delay_ms: int = 0) -> None:
        """Send `msg` to every other replica."""
        self.send(self.state.peers(), msg, delay_ms)

    # -- raw hooks --------------------------------------------------------------------------

    def on_input(self, event: Event) -> list[Event]:
        if isinstance(event, Tick):
            self.now_ms += self.replica.config.tick_ms
            self._tick_due = True
            return [event, *self._held_in.due(self.now_ms)]
        if self._decode_in and isinstance(event, Received):
            _, message = decode(event.data)
            inc = Incoming(event.peer, event.data, message)
            self.on_message(inc)
            if inc.fate is Fate.DROP:
                return []
            if inc.delay_ms > 0:
                self._held_in.hold(self.now_ms + inc.delay_ms, event)
                return []
        return [event]

    def on_output(self, actions: list[Action]) -> list[Action]:
        out = self._rewrite(actions) if self._decode_out else list(actions)
        if self._tick_due:
            self._tick_due = False
            self.on_tick()
            out.extend(self._held_out.due(self.now_ms))
        out.extend(self._outbox)
        self._outbox = []
        return out

    # -- plumbing ---------------------------------------------------------------------------

    def _rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        me = self.replica.id
        for a in actions:
            if isinstance(a, Broadcast):
                targets: list[int | str] = [r for r in range(self.replica.config.n) if r != me]
            elif isinstance(a, Send):
                targets = [a.to]
            elif isinstance(a, SendClient):
                targets = [a.client]
            else:
                out.append(a)
                continue
            signer, message = decode(a.data)
            for t in targets:
                og = Outgoing(t, a.data, message, signer)
                self.on_send(og)
                if og.fate is Fate.DROP:
                    continue
                data = og.data
                if og.replaced is not None:
                    r = og.replaced
                    data = r if isinstance(r, bytes) else self.forge(r)
                action: Action = Send(t, data) if isinstance(t, int) else SendClient(t, data)
                for _ in range(og.copies):
                    if og.delay_ms > 0:
                        self._hold_out(og.delay_ms, action)
                    else:
                        out.append(action)
        return out

    def _hold_out(self, delay_ms: int, action: Action) -> None:
        self._held_out.hold(self.now_ms + delay_ms, action)


@dataclass(frozen=True, slots=True)
class BehaviourFailure:
    """A behaviour's hook raised: the attacker failed, not the protocol."""

    behaviour: str
    hook: str
    error: str
    where: str  # "FILE line N" of the innermost frame

    def sentence(self) -> str:
        return f"behaviour {self.behaviour} raised {self.error} in {self.hook} ({self.where})"


class Running:
    """Which of a user's hooks is running now, if any: the wrappers mark each call
    (`hook`, and `entry` counts the calls), and a watchdog outside this pure layer reads
    it from a timer signal to stop a hook that never returns (pbft.sim.watchdog). Only
    two attribute writes per call: nothing here reads a clock."""

    __slots__ = ("hook", "entry")

    def __init__(self) -> None:
        self.hook: str | None = None
        self.entry = 0

    def enter(self, hook: str) -> None:
        self.entry += 1
        self.hook = hook


RUNNING = Running()


class HookTimeout(BaseException):
    """Raised by the watchdog inside a user's hook that ran over its time limit (a
    BaseException, so that the hook's own `except Exception` does not swallow it). The
    wrapper records it and calls that behaviour's hooks no more: the node runs its honest
    core for the rest of the run, which ends ATTACKER-FAILED."""


HOOKS = ("setup", "on_message", "on_send", "on_tick", "on_input", "on_output")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def failure_of(behaviour: str, hook: str, exc: BaseException, owner: object = None) -> BehaviourFailure:
    """The failure, placed at the deepest frame outside pbft itself (the user's line),
    else (what a hook returned was refused) at the `owner` class's own `hook`; named
    after the deepest hook on the stack."""
    frames = traceback.extract_tb(exc.__traceback__)
    theirs = [fr for fr in frames if not os.path.abspath(fr.filename).startswith(_PACKAGE + os.sep)]
    frame = (theirs or frames or [None])[-1]
    where = f"{frame.filename} line {frame.lineno}" if frame is not None else "unknown place"
    code = getattr(getattr(type(owner), hook, None), "__code__", None)
    if not theirs and code is not None and not os.path.abspath(code.co_filename).startswith(_PACKAGE + os.sep):
        where = f"{code.co_filename} line {code.co_firstlineno} (what {hook} returned)"
    hooks = [fr.name for fr in frames if fr.name in HOOKS]
    return BehaviourFailure(_text(behaviour), hooks[-1] if hooks else hook, exception_text(exc), where)


def _text(name: object) -> str:
    """A behaviour's name for a sentence, whatever its class says it is."""
    return name if isinstance(name, str) else type(name).__name__


def name_of(behaviour: object) -> str:
    """`behaviour.name`, never raising (a user's class may make it anything)."""
    try:
        return _text(behaviour.name)  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - a property of the user's
        if is_interrupt(exc):
            raise
        return type(behaviour).__name__


EVENT_TYPES = typing.get_args(Event)
ACTION_TYPES = typing.get_args(Action)
MAX_U64 = (1 << 64) - 1


def _fields(cls: type) -> tuple[tuple[str, Callable[[Any], bool]], ...]:
    """(field, test of a value) of an event or action class, made once per class."""
    found = _FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _FIELDS[cls] = tuple((f.name, _test(hints[f.name])) for f in dataclasses.fields(cls))
    return found


_FIELDS: dict[type, tuple[tuple[str, Callable[[Any], bool]], ...]] = {}


def _test(hint: Any) -> Callable[[Any], bool]:
    """Whether a value is what the core would put in a field of type `hint`: exact
    builtin types (no bool for an int, no subclass of bytes or str), unsigned 64-bit
    integers, tuples item by item, enums and nested dataclasses field by field; a type
    this does not know passes (the core will judge it)."""
    if hint is type(None):
        return lambda v: v is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        tests = [_test(h) for h in typing.get_args(hint)]
        return lambda v: any(t(v) for t in tests)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _test(args[0])
            return lambda v: type(v) is tuple and all(item(x) for x in v)
        each = [_test(h) for h in args]
        return lambda v: type(v) is tuple and len(v) == len(each) and all(t(x) for t, x in zip(each, v, strict=True))
    if hint is int:
        return lambda v: type(v) is int and 0 <= v <= MAX_U64
    if hint in (bool, bytes, str):
        return lambda v: type(v) is hint
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v: isinstance(v, hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return lambda v: type(v) is hint and all(t(getattr(v, n)) for n, t in _fields(hint))
    return lambda v: True


def field_problem(item: Any) -> str:
    """The first field of event or action `item` whose value the core would never put
    there, as "Send.to is str 'zz'", or ""."""
    for name, test in _fields(type(item)):
        value = getattr(item, name)
        if not test(value):
            return f"{type(item).__name__}.{name} is {type(value).__name__} {_short(value)}"
    return ""


def _short(value: Any) -> str:
    try:
        return f"{value!r:.60}"
    except BaseException as exc:  # noqa: BLE001 - a value of the user's making
        if is_interrupt(exc):
            raise
        return "(unprintable)"


class Cluster:
    """Who a Byzantine node may address: the replicas 0 to n-1 and the clients of its
    configuration, and any node its honest core addressed in the same step."""

    __slots__ = ("n", "clients", "extra")

    def __init__(self, n: int, clients: Iterable[str], extra: Iterable[int | str] = ()) -> None:
        self.n = n
        self.clients = frozenset(clients)
        self.extra = frozenset(extra)

    @classmethod
    def of(cls, config: Any, actions: Iterable[Any] = ()) -> Cluster:
        extra = [a.to if type(a) is Send else a.client for a in actions if type(a) in (Send, SendClient)]
        return cls(config.n, getattr(config, "requesters", ()), extra)

    def replica(self, to: int) -> bool:
        return 0 <= to < self.n or to in self.extra

    def client(self, name: str) -> bool:
        return name in self.clients or name in self.extra


def checked(
    items: Any, types: tuple[type, ...], hook: str, what: str,
    known: Iterable[Any] = (), cluster: Callable[[], Cluster] | None = None,
) -> list:
    """`items` as a list if it is a list of `types` whose fields hold what the core would
    put there, each Send and SendClient addressed to a node of the `cluster()` (if
    given); TypeError or ValueError naming the hook otherwise (what a behaviour hands the
    core or the runtime is checked: its bug is its failure). Items in `known` (the very
    objects the core itself made or was given) are not checked again."""
    if not isinstance(items, list | tuple):
        raise TypeError(f"{hook} must return a list of {what}, not {type(items).__name__}")
    ours = {id(k) for k in known}
    nodes: Cluster | None = None
    for item in items:
        if not isinstance(item, types):
            raise TypeError(f"{hook} returned {type(item).__name__} {_short(item)}, which is not one of the {what}")
        if id(item) in ours:
            continue
        problem = field_problem(item)
        if problem:
            raise TypeError(f"{hook} returned a {type(item).__name__} whose {problem.split('.', 1)[1]}")
        if cluster is None or type(item) not in (Send, SendClient):
            continue
        nodes = nodes or cluster()
        if type(item) is Send and not nodes.replica(item.to):
            raise ValueError(
                f"{hook} returned a Send to {item.to}, which is not a replica of the cluster (0 to {nodes.n - 1})"
            )
        if type(item) is SendClient and not nodes.client(item.client):
            raise ValueError(
                f"{hook} returned a SendClient to {_short(item.client)}, which is not a client of the cluster"
            )
    return list(items)


MAX_FAILURES = 20
"""Failures kept word for word; the rest are only counted."""


class FailureLog:
    """A Byzantine node's record of its behaviours' failures: the first MAX_FAILURES word
    for word, all of them counted. Layers wrapped around one node (rules over a
    behaviour) share one log, so whoever reads it sees them all."""

    __slots__ = ("failures", "count")

    def __init__(self) -> None:
        self.failures: list[BehaviourFailure] = []
        self.count = 0

    def add(self, behaviour: Any, hook: str, exc: BaseException) -> None:
        self.count += 1
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(failure_of(name_of(behaviour), hook, exc, behaviour))


class Failing:
    """`failures` and `failure_count` of a wrapper, read from its `failure_log`."""

    failure_log: FailureLog
    behaviour: Any

    @property
    def failures(self) -> list[BehaviourFailure]:
        return self.failure_log.failures

    @property
    def failure_count(self) -> int:
        return self.failure_log.count

    stalled = False
    """A hook of the behaviour ran over the watchdog's limit: it is called no more."""

    def _failed(self, hook: str, exc: BaseException) -> None:
        if isinstance(exc, HookTimeout):
            self.stalled = True
        self.failure_log.add(self.behaviour, hook, exc)


class ByzantineReplica(Failing):
    """`Replica`-compatible wrapper: behaviour.on_input -> core.step -> behaviour.on_output.
    `log`: the failure record to share with a wrapper underneath (rules over a behaviour)."""

    def __init__(self, replica: Replica, behaviour: Behaviour, log: FailureLog | None = None) -> None:
        self.core = replica
        self.behaviour = behaviour
        self.failure_log = log if log is not None else FailureLog()
        replica.behaviour_label = behaviour.name  # `pbft status` shows it

    def step(self, event: Event) -> Ready:
        if self.stalled:
            return Ready.of(self.core.step(event))
        b = self.behaviour
        running = RUNNING
        try:
            running.enter("on_input")
            try:
                given = b.on_input(event)
            finally:
                running.hook = None
            events = checked(given, EVENT_TYPES, "on_input", "events (Received, Tick or Load)", known=(event,))
        except BaseException as exc:  # noqa: BLE001 - the attacker's bug, reported as such
            running.hook = None
            if is_interrupt(exc):
                raise
            self._failed("on_input", exc)
            events = [event]
        out: list[Action] = []
        for ev in events:
            out.extend(self.core.step(ev))
        try:
            running.enter("on_output")
            try:
                acts = b.on_output(list(out))
            finally:
                running.hook = None
            return Ready.of(checked(
                acts, ACTION_TYPES, "on_output", "actions", out, lambda: Cluster.of(self.core.config, out)
            ))
        except BaseException as exc:  # noqa: BLE001
            running.hook = None
            if is_interrupt(exc):
                raise
            self._failed("on_output", exc)
            return Ready.of(out)

    def __getattr__(self, name: str) -> Any:
        # view, last_executed, stable_seq, state_digest(), ... come from the honest core.
        return getattr(self.core, name)
