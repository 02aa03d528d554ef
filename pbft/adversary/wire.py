"""Shared helpers for behaviours, and the behaviours that attack the wire itself.

Theory of operation. A behaviour sees the honest core's outgoing actions as envelope
bytes. To lie it decodes them (`open_envelope`), builds the altered message and signs it
with its own key (`Behaviour.forge`); to say different things to different peers it turns
one `Broadcast` into several `Send`s (`recipients`). Parameters come from scenario files,
so they are validated up front and a bad one raises `ValueError` with one sentence.

The wire behaviours here (`bad-signature`, `future-flood`, `selective-send`, `flood`,
`replay`) attack the checks that come before protocol state: decoding, membership,
signatures, view and water-mark filters, and per-peer budgets. Every choice they make is
drawn from the injected `rng`, so a run replays exactly from its seed.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, ClassVar

from ..protocol.crypto import seal
from ..protocol.events import Action, Broadcast, Event, Received, Send, SendClient, Tick
from ..protocol.messages import (
    DIGEST_LEN,
    Checkpoint,
    Commit,
    Envelope,
    Message,
    Prepare,
    PrePrepare,
    envelope_from_bytes,
    open_envelope,
)
from .api import SCENARIO_KEYS, did_you_mean
from .base import Behaviour

# -- helpers ------------------------------------------------------------------------------


def recipients(action: Action, n: int, me: int) -> list[int]:
    """The replicas a Send or Broadcast reaches."""
    if isinstance(action, Send):
        return [action.to]
    if isinstance(action, Broadcast):
        return [r for r in range(n) if r != me]
    return []


def random_digest(rng: random.Random) -> bytes:
    return rng.randbytes(DIGEST_LEN)


class Params:
    """Validates one behaviour's parameters; every error is one clear sentence."""

    def __init__(self, owner: str, params: dict[str, Any], allowed: tuple[str, ...]) -> None:
        self.owner = owner
        self.params = dict(params or {})
        unknown = sorted(set(self.params) - set(allowed) - SCENARIO_KEYS)
        if unknown:
            accepts = ", ".join(allowed) or "no parameters"
            raise ValueError(
                f"behaviour '{owner}' has no parameter '{unknown[0]}'"
                f"{did_you_mean(unknown[0], allowed)}; it accepts: {accepts}."
            )

    def integer(self, key: str, default: int | None, lo: int = 0, hi: int = 1 << 62) -> int | None:
        value = self.params.get(key, default)
        if value is None:
            return None
        if type(value) is not int or not lo <= value <= hi:
            raise ValueError(
                f"behaviour '{self.owner}': '{key}' must be an integer from {lo} to {hi}, not {value!r}."
            )
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.params.get(key, default)
        if type(value) is not bool:
            raise ValueError(
                f"behaviour '{self.owner}': '{key}' must be true or false, not {value!r}."
            )
        return value

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.params.get(key, default)
        if value not in options:
            raise ValueError(
                f"behaviour '{self.owner}': '{key}' must be one of {', '.join(options)}, not {value!r}."
            )
        return value

    def choices(
        self, key: str, default: tuple[str, ...], options: tuple[str, ...]
    ) -> tuple[str, ...]:
        value = self.params.get(key, list(default))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not value or any(v not in options for v in value):
            raise ValueError(
                f"behaviour '{self.owner}': '{key}' must be a non-empty list drawn from "
                f"{', '.join(options)}, not {value!r}."
            )
        return tuple(value)

    def replica_ids(self, key: str, default: list[int] | None, n: int) -> list[int] | None:
        value = self.params.get(key, default)
        if value is None:
            return None
        if not isinstance(value, list | tuple) or any(
            type(r) is not int or not 0 <= r < n for r in value
        ):
            raise ValueError(
                f"behaviour '{self.owner}': '{key}' must be a list of replica ids from 0 to {n - 1}, not {value!r}."
            )
        return sorted(set(value))


class ReplicaBehaviour(Behaviour):
    """A `Behaviour` with parameter validation and a few shared conveniences."""

    name: ClassVar[str] = "honest"
    summary: ClassVar[str] = "behaves correctly"
    allowed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params or {}, rng)
        self.p = Params(self.name, self.params, self.allowed)
        self.ticks = 0
        self._tick = False

    @property
    def n(self) -> int:
        return self.replica.config.n

    @property
    def me(self) -> int:
        return self.replica.id

    def peers(self) -> list[int]:
        return [r for r in range(self.n) if r != self.me]

    def to_each(self, targets: list[int], data: bytes) -> list[Action]:
        return [Send(r, data) for r in targets]

    # The wrapper calls on_input once per event and on_output once per step, so a step
    # that began with a Tick is the place to inject the traffic of one unit of time.
    def on_input(self, event: Event) -> list[Event]:
        self._tick = isinstance(event, Tick)
        if self._tick:
            self.ticks += 1
        return self.intercept(event)

    def on_output(self, actions: list[Action]) -> list[Action]:
        out = self.rewrite(actions)
        if self._tick:
            self._tick = False
            out = [*out, *self.every_tick()]
        return out

    def intercept(self, event: Event) -> list[Event]:
        return [event]

    def rewrite(self, actions: list[Action]) -> list[Action]:
        return actions

    def every_tick(self) -> list[Action]:
        return []


Plan = dict[int, list[bytes]]


class OutgoingLie(ReplicaBehaviour):
    """Rewrites this replica's own outgoing messages of the types in `kinds` (with
    seq >= `from_seq`) according to `lie`: a plan saying which envelopes each peer gets
    instead. Plans are memoised per (type, view, seq), so a retransmission repeats the
    same lie byte for byte, and forgotten below the stable checkpoint (bounded memory)."""

    kinds: ClassVar[tuple[type, ...]] = ()

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.from_seq = self.p.integer("from_seq", 1, 0) if "from_seq" in self.allowed else 0
        self._plans: dict[tuple[type, int, int], Plan | None] = {}
        self._extra: list[Action] = []

    def lie(self, msg: Message, data: bytes) -> Plan | None:
        """What each peer receives instead of `data`; None sends the honest message."""
        return None

    def everyone(self, *datas: bytes) -> Plan:
        return {r: list(datas) for r in self.peers()}

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            plan = self._plan_for(a)
            if plan is None:
                out.append(a)
                continue
            for r in recipients(a, self.n, self.me):
                out.extend(Send(r, d) for d in plan.get(r, ()))
        out.extend(self._extra)
        self._extra = []
        return out

    def _plan_for(self, a: Action) -> Plan | None:
        if not isinstance(a, Send | Broadcast):
            return None
        opened = open_envelope(a.data)
        if opened is None:
            return None
        env, msg = opened
        if not isinstance(msg, self.kinds) or env.signer != self.me:
            return None
        seq = msg.seq  # type: ignore[union-attr]
        if seq < self.from_seq:
            return None
        key = (type(msg), getattr(msg, "view", 0), seq)
        if key not in self._plans:
            low = self.replica.stable_seq
            for k in [k for k in self._plans if k[2] <= low]:
                del self._plans[k]
            self._plans[key] = self.lie(msg, a.data)
        return self._plans[key]


# -- wire behaviours ----------------------------------------------------------------------


class BadSignature(ReplicaBehaviour):
    """Everything it sends fails authentication, in one of three ways (`modes`):
    a corrupted signature, a signer that is not a member, or a signature made for another
    cluster (another signing domain). Receivers must drop it before any state change."""

    name = "bad-signature"
    summary = "signatures that do not verify, non-member signers, bytes signed for another cluster"
    allowed = ("modes",)
    MODES = ("corrupt", "non-member", "domain")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.modes = self.p.choices("modes", self.MODES, self.MODES)

    def spoil(self, data: bytes) -> bytes:
        opened = open_envelope(data)
        if opened is None:
            return data
        env, msg = opened
        mode = self.rng.choice(self.modes)
        cfg = self.replica.config
        if mode == "corrupt":
            sig = bytearray(env.signature or bytes(64))
            sig[self.rng.randrange(len(sig))] ^= 1 << self.rng.randrange(8)
            return Envelope(env.body, env.signer, bytes(sig), env.attachment).to_bytes()
        if mode == "non-member":
            return seal(self.key, cfg.signing_domain, cfg.n + 7, msg).to_bytes()
        return seal(self.key, cfg.signing_domain + "/elsewhere", self.me, msg).to_bytes()

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Send):
                out.append(Send(a.to, self.spoil(a.data)))
            elif isinstance(a, Broadcast):
                out.append(Broadcast(self.spoil(a.data)))
            else:
                out.append(a)
        return out


class FutureFlood(ReplicaBehaviour):
    """Each tick, `rate` signed messages for views and sequence numbers far ahead, hoping
    peers buffer them (they must drop them: bounded buffering, no view change)."""

    name = "future-flood"
    summary = "messages for far-future views and sequence numbers, every tick"
    allowed = ("rate",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.rate = self.p.integer("rate", 10, 1, 10_000)

    def one(self) -> Message:
        core = self.replica
        far_view = core.view + 1 + self.rng.randrange(1, 1 << 20)
        far_seq = core.log.high + 1 + self.rng.randrange(1 << 20)
        d = random_digest(self.rng)
        k = core.config.checkpoint_interval
        match self.rng.randrange(4):
            case 0:
                return Prepare(far_view, core.last_executed + 1, d)
            case 1:
                return Commit(core.view, far_seq, d)
            case 2:
                return PrePrepare(far_view, far_seq, d, ())
            case _:
                return Checkpoint((far_seq // k + 1) * k, d)

    def every_tick(self) -> list[Action]:
        return [Broadcast(self.forge(self.one())) for _ in range(self.rate)]


class SelectiveSend(ReplicaBehaviour):
    """Sends only to the replicas in `to` (default: the lower half of its peers); with
    `clients = false` it also never replies to clients."""

    name = "selective-send"
    summary = "sends only to a subset of replicas (to = [ids])"
    allowed = ("to", "clients")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        peers = self.peers()
        self.to = set(self.p.replica_ids("to", peers[: max(1, len(peers) // 2)], self.n) or [])
        self.to.discard(self.me)
        self.clients = self.p.boolean("clients", True)

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Broadcast):
                out.extend(Send(r, a.data) for r in sorted(self.to))
            elif isinstance(a, Send):
                if a.to in self.to:
                    out.append(a)
            elif isinstance(a, SendClient):
                if self.clients:
                    out.append(a)
            else:
                out.append(a)
        return out


class Flood(ReplicaBehaviour):
    """Each tick, `rate` messages to every peer: `valid` ones are correctly signed votes
    for random in-window slots with random digests (each costs the receiver a signature
    check), `invalid` ones are garbage bytes or envelopes with broken signatures."""

    name = "flood"
    summary = "many valid-looking or invalid messages every tick"
    allowed = ("rate", "kind")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.rate = self.p.integer("rate", 20, 1, 100_000)
        self.kind = self.p.choice("kind", "mixed", ("valid", "invalid", "mixed"))

    def valid(self) -> bytes:
        core = self.replica
        seq = core.log.low + 1 + self.rng.randrange(core.log.window)
        cls = self.rng.choice((Prepare, Commit))
        return self.forge(cls(core.view, seq, random_digest(self.rng)))

    def invalid(self) -> bytes:
        if self.rng.randrange(2):
            return self.rng.randbytes(self.rng.randrange(1, 256))
        env = envelope_from_bytes(self.valid())
        return Envelope(env.body, env.signer, self.rng.randbytes(64), env.attachment).to_bytes()

    def every_tick(self) -> list[Action]:
        out: list[Action] = []
        for _ in range(self.rate):
            kind = self.kind if self.kind != "mixed" else self.rng.choice(("valid", "invalid"))
            out.append(Broadcast(self.valid() if kind == "valid" else self.invalid()))
        return out


class Replay(ReplicaBehaviour):
    """Remembers validly signed messages it received or sent (a bounded history) and, each
    tick, re-sends `rate` of them to random peers; one in four is re-signed for another
    cluster id. Correct replicas must ignore replays and count the foreign ones."""

    name = "replay"
    summary = "re-sends old validly signed messages, and messages signed for another cluster"
    allowed = ("rate", "history")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.rate = self.p.integer("rate", 3, 1, 10_000)
        self.seen: deque[bytes] = deque(maxlen=self.p.integer("history", 256, 1, 1 << 16))

    def intercept(self, event: Event) -> list[Event]:
        if isinstance(event, Received) and open_envelope(event.data) is not None:
            self.seen.append(event.data)
        return [event]

    def foreign(self, data: bytes) -> bytes:
        opened = open_envelope(data)
        assert opened is not None
        cfg = self.replica.config
        return seal(self.key, cfg.signing_domain + "/other", self.me, opened[1]).to_bytes()

    def rewrite(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Send | Broadcast) and open_envelope(a.data) is not None:
                self.seen.append(a.data)
        return actions

    def every_tick(self) -> list[Action]:
        out: list[Action] = []
        if not self.seen:
            return out
        for _ in range(self.rate):
            data = self.seen[self.rng.randrange(len(self.seen))]
            if self.rng.randrange(4) == 0:
                data = self.foreign(data)
            out.append(Send(self.rng.choice(self.peers()), data))
        return out
