"""The public pieces of the behaviour API: parameters, messages in flight, the core's view.

Theory of operation. A user's attacker (docs/behaviours.md) is a `Behaviour` subclass that
sees decoded messages, never the honest core's private state:

- `Param` declares one parameter (type, default, bounds, a one-line help). The framework
  validates what a scenario file or `--behaviour FILE.py:Class:k=v` gives before the run,
  and a bad value is one sentence naming the behaviour and the parameter ("did you mean"
  for a misspelt name).
- `Outgoing` is one message the honest core is about to send to one receiver; the
  behaviour may drop it, delay it, duplicate it or replace it by another message (which
  is signed with the replica's own key: the lie is attributable, as a real one would be).
- `Incoming` is one message that arrived; the behaviour may drop it or delay it before the
  core sees it.
- `CoreView` is a read-only view of the honest core underneath: view, sequence numbers,
  water marks, the log's slots and the prepared certificates it would send in a
  VIEW-CHANGE. It copies what it returns, so nothing a behaviour does to it reaches the core.

Everything here is pure: time is the replica's own ticks (`Behaviour.now_ms`), randomness
is the run's seeded RNG, so a simulation replays exactly from its seed.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import exception_text, is_interrupt
from ..protocol.config import close_match
from ..protocol.messages import (
    Checkpoint,
    Commit,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Reply,
    Request,
    ViewChange,
    decode_envelope,
    open_envelope,
    type_of,
)

MESSAGE_TYPES = typing.get_args(Message)
MAX_COPIES = 1000
"""Copies of one message a behaviour may send (`Outgoing.duplicate`): a flood, not a hang."""

# -- parameters ---------------------------------------------------------------------------


class ParamKind(Enum):
    INTEGER = "an integer"
    NUMBER = "a number"
    BOOLEAN = "true or false"
    TEXT = "a string"
    CHOICE = "one of"
    REPLICAS = "a list of replica ids"
    PROBABILITY = "a probability from 0 to 1"


@dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter. Build with the class methods: `Param.integer(200, lo=0)`."""

    kind: ParamKind
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    options: tuple[str, ...] = ()
    help: str = ""

    @classmethod
    def integer(cls, default: int | None = None, lo: int | None = None, hi: int | None = None, help: str = "") -> Param:
        return cls(ParamKind.INTEGER, default, lo, hi, (), help)

    @classmethod
    def number(cls, default: float | None = None, lo: float | None = None, hi: float | None = None, help: str = "") -> Param:
        return cls(ParamKind.NUMBER, default, lo, hi, (), help)

    @classmethod
    def probability(cls, default: float = 1.0, help: str = "") -> Param:
        return cls(ParamKind.PROBABILITY, default, 0.0, 1.0, (), help)

    @classmethod
    def boolean(cls, default: bool = False, help: str = "") -> Param:
        return cls(ParamKind.BOOLEAN, default, None, None, (), help)

    @classmethod
    def text(cls, default: str | None = None, help: str = "") -> Param:
        return cls(ParamKind.TEXT, default, None, None, (), help)

    @classmethod
    def choice(cls, options: tuple[str, ...] | list[str], default: str | None = None, help: str = "") -> Param:
        if isinstance(options, str) or not isinstance(options, Iterable):
            raise TypeError(f"Param.choice: options must be a list of strings, not {type(options).__name__}")
        options = tuple(options)
        return cls(ParamKind.CHOICE, options[0] if default is None and options else default, None, None, options, help)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(f"Param.{self.kind.name.lower() if isinstance(self.kind, ParamKind) else 'kind'}: {problem}")

    def _problem(self) -> str:
        """What makes this declaration unusable (one clause), or ""."""
        k = self.kind
        if not isinstance(k, ParamKind):
            return f"kind must be a ParamKind, not {type(k).__name__}"
        if not isinstance(self.help, str):
            return f"help must be a string, not {type(self.help).__name__}"
        for bound in ("lo", "hi"):
            v = getattr(self, bound)
            if v is not None and (type(v) not in (int, float) or v != v):
                return f"{bound} must be a number, not {v!r:.60}"
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            return f"lo {self.lo:g} is above hi {self.hi:g}"
        d = self.default
        if k is ParamKind.CHOICE:
            if not self.options or not all(type(o) is str for o in self.options):
                return "options must be a non-empty list of strings"
            if d not in self.options:
                return f"the default {d!r:.60} is not one of its options ({', '.join(self.options)})"
            return ""
        if d is None:
            return ""  # no default: the parameter is None unless given
        wanted = {
            ParamKind.INTEGER: type(d) is int,
            ParamKind.NUMBER: type(d) in (int, float) and d == d,
            ParamKind.PROBABILITY: type(d) in (int, float) and d == d,
            ParamKind.BOOLEAN: type(d) is bool,
            ParamKind.TEXT: type(d) is str,
            ParamKind.REPLICAS: isinstance(d, list | tuple) and all(type(r) is int and r >= 0 for r in d),
        }[k]
        if not wanted:
            return f"the default {d!r:.60} is not {k.value}"
        if k in (ParamKind.INTEGER, ParamKind.NUMBER, ParamKind.PROBABILITY) and (
            (self.lo is not None and d < self.lo) or (self.hi is not None and d > self.hi)
        ):
            return f"the default {d!r:.60} is outside its own bounds ({self.describe()})"
        return ""

    @classmethod
    def replicas(cls, default: list[int] | None = None, help: str = "") -> Param:
        return cls(ParamKind.REPLICAS, default, None, None, (), help)

    def describe(self) -> str:
        if self.kind is ParamKind.CHOICE:
            return f"one of {', '.join(self.options)}"
        text = self.kind.value
        if self.kind in (ParamKind.INTEGER, ParamKind.NUMBER):
            if self.lo is not None and self.hi is not None:
                text += f" from {self.lo:g} to {self.hi:g}"
            elif self.lo is not None:
                text += f" of at least {self.lo:g}"
            elif self.hi is not None:
                text += f" of at most {self.hi:g}"
        return text

    def check(self, owner: str, key: str, value: Any, n: int) -> Any:
        """`value` if it fits, else ValueError with one sentence."""
        ok = True
        k = self.kind
        if k is ParamKind.INTEGER:
            ok = type(value) is int
        elif k in (ParamKind.NUMBER, ParamKind.PROBABILITY):
            ok = type(value) in (int, float)
        elif k is ParamKind.BOOLEAN:
            ok = type(value) is bool
        elif k is ParamKind.TEXT:
            ok = type(value) is str
        elif k is ParamKind.CHOICE:
            ok = value in self.options
        elif k is ParamKind.REPLICAS:
            if isinstance(value, int) and not isinstance(value, bool):
                value = [value]
            ok = isinstance(value, list | tuple) and all(
                type(r) is int and 0 <= r < n for r in value
            )
            if ok:
                value = tuple(sorted(set(value)))
        if ok and k in (ParamKind.INTEGER, ParamKind.NUMBER, ParamKind.PROBABILITY):
            ok = (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        if not ok:
            wanted = self.describe() if k is not ParamKind.REPLICAS else f"a list of replica ids from 0 to {n - 1}"
            raise ValueError(f"behaviour '{owner}': '{key}' must be {wanted}, not {value!r}.")
        return value


class Args(Mapping[str, Any]):
    """A behaviour's validated parameters: `self.args.delay_ms` or `self.args["delay_ms"]`."""

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r} (declared: {', '.join(self._values) or 'none'})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("parameters are read-only")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Args({self._values!r})"


SCENARIO_KEYS = frozenset({"replica", "client", "behaviour", "rule"})
"""Keys a scenario's [[byzantine]] table carries besides the behaviour's own parameters."""


def declaration_problem(cls: type) -> str:
    """What is wrong with what a user's behaviour class declares (`name`, `summary`,
    `parameters`, and a client behaviour's `allowed`), as one clause beginning with the
    attribute, or "": checked when the class is loaded, so a bad declaration is one
    sentence then rather than a crash while it is built or listed."""
    try:
        for attr in ("name", "summary"):
            value = getattr(cls, attr, "")
            if not isinstance(value, str):
                return f"{attr} must be a string, not {type(value).__name__}"
        declared = getattr(cls, "parameters", {})
        if not isinstance(declared, Mapping):
            return f"parameters must be a dict of name to Param, not {type(declared).__name__}"
        for key, p in list(declared.items()):
            if not isinstance(key, str) or not key:
                return f"parameters: a parameter's name must be a non-empty string, not {key!r:.60}"
            if key in SCENARIO_KEYS:
                return f"parameters: {key!r} is a key of the scenario's [[byzantine]] table, not free for a parameter"
            if not isinstance(p, Param):
                return f"parameters: {key!r} must be a Param (Param.integer(...), ...), not {type(p).__name__}"
        allowed = getattr(cls, "allowed", ())
        if not isinstance(allowed, tuple | list) or not all(isinstance(a, str) for a in allowed):
            return f"allowed must be a tuple of parameter names, not {allowed!r:.60}"
    except BaseException as exc:  # noqa: BLE001 - a descriptor or mapping of the user's
        if is_interrupt(exc):
            raise
        return f"reading its declarations raised {exception_text(exc)}"
    return ""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `choices` (config.close_match, the cluster
    file's spelling hint), or ''."""
    close = close_match(word, sorted(choices))
    return f" (did you mean {close!r}?)" if close else ""


def validate_params(owner: str, declared: Mapping[str, Param], given: Mapping[str, Any], n: int) -> Args:
    """Given parameters checked against the declared ones, defaults filled in."""
    for key in given:
        if key in declared or key in SCENARIO_KEYS:
            continue
        accepts = ", ".join(sorted(declared)) or "no parameters"
        raise ValueError(
            f"behaviour '{owner}' has no parameter '{key}'{did_you_mean(key, list(declared))}; it accepts: {accepts}."
        )
    values: dict[str, Any] = {}
    for key, p in declared.items():
        if key in given:
            values[key] = p.check(owner, key, given[key], n)
        else:
            values[key] = tuple(p.default) if isinstance(p.default, list) else p.default
    return Args(values)


# -- messages in flight -------------------------------------------------------------------

KIND_NAMES = {
    "REQUEST": Request,
    "PRE-PREPARE": PrePrepare,
    "PREPARE": Prepare,
    "COMMIT": Commit,
    "REPLY": Reply,
    "CHECKPOINT": Checkpoint,
    "VIEW-CHANGE": ViewChange,
    "NEW-VIEW": NewView,
}


def kind_of(msg: Message | None) -> str:
    """"PRE-PREPARE", "COMMIT", ... (the names scenario files use), "" for garbage."""
    if msg is None:
        return ""
    return type_of(msg).name.replace("_", "-")


def _view_seq(msg: Message | None) -> tuple[int | None, int | None]:
    view = getattr(msg, "view", None)
    if isinstance(msg, ViewChange | NewView):
        view = msg.new_view if isinstance(msg, ViewChange) else msg.view
    seq = getattr(msg, "seq", None)
    return (view if type(view) is int else None, seq if type(seq) is int else None)


class Fate(Enum):
    SEND = "send"
    DROP = "drop"


class InFlight:
    """What `Outgoing` and `Incoming` share: the decoded message's kind, view and seq,
    and the two fates both may choose."""

    __slots__ = ()
    message: Message | None
    fate: Fate
    delay_ms: int

    @property
    def kind(self) -> str:
        return kind_of(self.message)

    @property
    def view(self) -> int | None:
        return _view_seq(self.message)[0]

    @property
    def seq(self) -> int | None:
        return _view_seq(self.message)[1]

    def drop(self) -> None:
        """It never arrives."""
        self.fate = Fate.DROP

    def delay(self, ms: int) -> None:
        """It goes `ms` later (rounded up to the replica's next tick)."""
        self.delay_ms = max(self.delay_ms, int(ms))


@dataclass(slots=True)
class Outgoing(InFlight):
    """One message the honest core is about to send to one receiver (a replica id, or a
    client name for a REPLY). Decide its fate with the methods; by default it goes as is."""

    to: int | str
    data: bytes
    message: Message | None
    signer: Any
    fate: Fate = Fate.SEND
    delay_ms: int = 0
    copies: int = 1
    replaced: bytes | Message | None = field(default=None, repr=False)

    def duplicate(self, times: int = 1) -> None:
        """Send it `times` more times (at most MAX_COPIES copies in all)."""
        self.copies += max(0, int(times))
        if self.copies > MAX_COPIES:
            raise ValueError(f"duplicate: at most {MAX_COPIES} copies of one message, not {self.copies}")

    def replace(self, message: Message | bytes) -> None:
        """Send `message` instead (a Message is signed with this replica's key by the
        framework; bytes go as they are)."""
        if not isinstance(message, (bytes, *MESSAGE_TYPES)):
            raise TypeError(f"replace takes a protocol message or signed bytes, not {type(message).__name__}")
        self.replaced = message


@dataclass(slots=True)
class Incoming(InFlight):
    """One message that arrived from `sender` (a replica id or a client name; None when
    the runtime could not authenticate the link). Drop or delay it before the core sees it."""

    sender: Any
    data: bytes
    message: Message | None
    fate: Fate = Fate.SEND
    delay_ms: int = 0


def decode(data: bytes) -> tuple[Any, Message | None]:
    """(signer, message) of an envelope, (None, None) for bytes that do not decode."""
    opened = open_envelope(data)
    if opened is None:
        return None, None
    return opened[0].signer, opened[1]


# -- messages held back ---------------------------------------------------------------------

MAX_HELD = 100_000
"""Messages a behaviour may hold back at once (delays): memory stays bounded."""


class Held:
    """What a behaviour delays: items due at a time on its own clock, released in order
    of that time and then of holding (so a run replays exactly). Bounded by MAX_HELD: a
    ValueError past it, the attacker's failure (delays so long they never end)."""

    __slots__ = ("_items", "_count")

    def __init__(self) -> None:
        self._items: list[tuple[int, int, Any]] = []
        self._count = 0

    def hold(self, due_ms: int, item: Any) -> None:
        if len(self._items) >= MAX_HELD:
            raise ValueError(f"more than {MAX_HELD} delayed messages held at once; delays that long never end")
        self._count += 1
        self._items.append((due_ms, self._count, item))

    def due(self, now_ms: int) -> list:
        """The items due by `now_ms`, removed, in order."""
        if not self._items:
            return []
        ready = sorted(h for h in self._items if h[0] <= now_ms)
        if ready:
            self._items = [h for h in self._items if h[0] > now_ms]
        return [h[2] for h in ready]

    def __len__(self) -> int:
        return len(self._items)


# -- the honest core, read only -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotView:
    """One slot of the log as the core holds it."""

    seq: int
    view: int
    digest: bytes | None
    pre_prepare: PrePrepare | None
    prepares: int  # matching PREPAREs counted
    commits: int  # matching COMMITs counted
    prepared: bool
    committed: bool


@dataclass(frozen=True, slots=True)
class PreparedView:
    """A prepared certificate the core would send in a VIEW-CHANGE: (view, seq, digest)."""

    seq: int
    view: int
    digest: bytes


class CoreView:
    """Read-only facts about the honest core a behaviour wraps (copies, never references)."""

    __slots__ = ("_core",)

    def __init__(self, core: Any) -> None:
        self._core = core

    @property
    def id(self) -> int:
        return self._core.id

    @property
    def n(self) -> int:
        return self._core.config.n

    @property
    def f(self) -> int:
        return self._core.config.f

    @property
    def view(self) -> int:
        return self._core.view

    @property
    def primary(self) -> int:
        return self._core.primary

    @property
    def is_primary(self) -> bool:
        return self._core.is_primary

    @property
    def in_view_change(self) -> bool:
        return self._core.status.name != "NORMAL"

    @property
    def last_executed(self) -> int:
        return self._core.last_executed

    @property
    def next_seq(self) -> int:
        """The sequence number the core would assign next if it is the primary."""
        return self._core.next_seq

    @property
    def stable_seq(self) -> int:
        """The latest stable checkpoint (the low water mark)."""
        return self._core.stable_seq

    @property
    def high_water_mark(self) -> int:
        return self._core.log.high

    @property
    def checkpoint_interval(self) -> int:
        return self._core.config.checkpoint_interval

    @property
    def tick_ms(self) -> int:
        return self._core.config.tick_ms

    def peers(self) -> list[int]:
        """Every other replica id."""
        return [r for r in range(self.n) if r != self.id]

    def clients(self) -> list[str]:
        return [c.id for c in self._core.config.clients]

    def slot(self, seq: int) -> SlotView | None:
        s = self._core.log.get(seq)
        if s is None:
            return None
        d = s.digest
        return SlotView(
            s.seq, s.view, d, s.pre_prepare,
            s.prepares.count(d) if d is not None else 0,
            s.commits.count(d) if d is not None else 0,
            s.prepared, s.committed,
        )

    def slots(self) -> list[SlotView]:
        """Every slot in the log window, by sequence number."""
        out = []
        for seq in range(self._core.log.low + 1, self._core.log.high + 1):
            v = self.slot(seq)
            if v is not None:
                out.append(v)
        return out

    def prepared_certificates(self) -> list[PreparedView]:
        return [
            PreparedView(seq, view, decode_envelope(pp_env)[1].digest)  # type: ignore[union-attr]
            for seq, (view, pp_env, _) in sorted(self._core.prepared_certs.items())
        ]

    def state_digest(self) -> bytes:
        return self._core.state_digest()
