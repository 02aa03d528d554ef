"""Declarative message rules: a Byzantine replica scripted in a scenario file, no Python.

Theory of operation (docs/rules.md has the grammar and examples). A `[[byzantine]]` entry
may carry `[[byzantine.rule]]` tables; they reach the behaviour as the parameter "rule" (a
list of tables). `parse_rules` checks each table and turns it into a `Rule`: a match (the
message kinds, sender, receiver, view and sequence numbers, the core's phase, a window on
the replica's own clock, the direction, a probability, a number of times) and an action
(drop, delay, duplicate, replay, mutate, equivocate). `Rules` is a `Behaviour` built on
the public decoded hooks only (`on_send` for what the replica sends, `on_message` for
what it receives): every rule whose match holds acts, in file order, on the same message;
a drop ends it.

Whatever a rule produces is signed with the replica's own key (`Outgoing.replace` with a
`Message`, or `forge`); a replay re-sends the signed bytes it saw or sent unaltered. The
probability is drawn from the run's seeded RNG once per message (all its receivers share
the outcome, and the variant of an equivocation or mutation is the same for all of them),
so a run replays exactly from its seed.

`build_with_rules` combines a named behaviour with rules: the behaviour wraps the core,
and the rules wrap that, so they act on what the behaviour sends.

Counters for tests and reports: `Rules.fired[i]` is how many messages rule i acted on,
`Rules.inapplicable[i]` how many matched but could not be changed as asked (a mutation
with no field of that name, no older message to use).
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol.crypto import batch_digest
from ..protocol.messages import (
    Commit,
    Message,
    MsgType,
    NewView,
    Prepare,
    PrePrepare,
    Request,
    StateChunk,
    ViewChange,
    open_envelope,
)
from .api import Incoming, Outgoing, did_you_mean, kind_of
from .base import Behaviour, ByzantineReplica

KINDS = tuple(t.name.replace("_", "-") for t in MsgType)
ACTIONS = ("drop", "delay", "duplicate", "replay", "mutate", "equivocate")
MUTATIONS = ("view", "seq", "digest", "random", "batch", "request", "older", "kind")
DIRECTIONS = ("send", "receive")
PHASES = ("normal", "view-change")
PICKS = ("this", "previous", "oldest", "random")

MATCH_KEYS = (
    "kinds", "from", "to", "views", "seqs", "view_min", "view_max", "seq_min", "seq_max",
    "phase", "at_ms", "until_ms", "direction", "probability", "times",
)
ACTION_KEYS: Mapping[str, tuple[str, ...]] = {
    "drop": (),
    "delay": ("delay_ms",),
    "duplicate": ("copies", "mutate", "by", "keep_digest"),
    "replay": ("delay_ms", "pick", "send_to", "mutate", "by", "keep_digest"),
    "mutate": ("mutate", "by", "keep_digest"),
    "equivocate": ("mutate", "by", "keep_digest", "split"),
}
ALL_KEYS = frozenset(MATCH_KEYS) | {"action"} | {k for ks in ACTION_KEYS.values() for k in ks}
RECEIVE_ACTIONS = ("drop", "delay", "replay")

_VIEW_KINDS = ("PRE-PREPARE", "PREPARE", "COMMIT", "REPLY", "VIEW-CHANGE", "NEW-VIEW", "STATUS", "HELD")
_SEQ_KINDS = (
    "PRE-PREPARE", "PREPARE", "COMMIT", "CHECKPOINT", "FETCH-STATE", "STATE-CHUNK", "STABLE-PROOF",
    "FETCH-BATCH", "BATCH",
)
_DIGEST_KINDS = ("PRE-PREPARE", "PREPARE", "COMMIT", "CHECKPOINT", "FETCH-STATE", "STATE-CHUNK", "FETCH-BATCH", "BATCH")
MUTATION_KINDS: Mapping[str, tuple[str, ...]] = {
    "view": _VIEW_KINDS,
    "seq": _SEQ_KINDS,
    "digest": _DIGEST_KINDS,
    "random": _DIGEST_KINDS,
    "batch": ("PRE-PREPARE", "VIEW-CHANGE", "NEW-VIEW"),
    "request": ("PRE-PREPARE",),
    "older": KINDS,
    "kind": ("PREPARE", "COMMIT"),
}
"""The message kinds each mutation can change; on any other it is `inapplicable`."""
HISTORY = 32
"""Messages remembered per kind (what it received and sent), for replays and `older`."""
REQUEST_HISTORY = 64
MAX_MS = 10**9


class RuleError(ValueError):
    """A bad rule: `index` (1-based) and one sentence without the entry's name."""

    def __init__(self, index: int, text: str) -> None:
        super().__init__(f"rule #{index}: {text}")
        self.index = index
        self.text = text


@dataclass(frozen=True, slots=True)
class Rule:
    index: int  # 1-based, as the error messages count
    action: str
    direction: str = "send"
    kinds: tuple[str, ...] = ()
    from_: tuple[int | str, ...] = ()
    to: tuple[int | str, ...] = ()
    views: tuple[int, ...] = ()
    seqs: tuple[int, ...] = ()
    view_min: int | None = None
    view_max: int | None = None
    seq_min: int | None = None
    seq_max: int | None = None
    phase: str | None = None
    at_ms: int = 0
    until_ms: int | None = None
    probability: float = 1.0
    times: int | None = None
    delay_ms: int = 0
    copies: int = 1
    mutate: str | None = None
    by: int = 1
    keep_digest: bool = False
    pick: str = "this"
    send_to: tuple[int | str, ...] = ()
    split: tuple[int | str, ...] | None = None

    def matches(self, kind: str, view: int | None, seq: int | None, sender: Any, receiver: Any,
                now_ms: int, in_view_change: bool) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        if self.from_ and sender not in self.from_:
            return False
        if self.to and receiver not in self.to:
            return False
        if self.views and view not in self.views:
            return False
        if self.seqs and seq not in self.seqs:
            return False
        if (self.view_min is not None or self.view_max is not None) and (
            view is None
            or (self.view_min is not None and view < self.view_min)
            or (self.view_max is not None and view > self.view_max)
        ):
            return False
        if (self.seq_min is not None or self.seq_max is not None) and (
            seq is None
            or (self.seq_min is not None and seq < self.seq_min)
            or (self.seq_max is not None and seq > self.seq_max)
        ):
            return False
        if self.phase is not None and (self.phase == "view-change") != in_view_change:
            return False
        return self.at_ms <= now_ms and (self.until_ms is None or now_ms < self.until_ms)


# -- parsing ------------------------------------------------------------------------------


def parse_rules(raw: object, n: int, clients: int | None = None, me: int | None = None) -> list[Rule]:
    """The rules of one [[byzantine]] entry; RuleError (one sentence) for the first bad one.
    `clients`: how many clients there are (None: do not check client names); `me`: the
    replica the rules run on (for checks that need it)."""
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not raw:
        raise RuleError(1, "'rule' must be one or more [[byzantine.rule]] tables.")
    return [parse_rule(t, i + 1, n, clients, me) for i, t in enumerate(raw)]


def parse_rule(t: object, index: int, n: int, clients: int | None = None, me: int | None = None) -> Rule:
    def fail(text: str) -> RuleError:
        return RuleError(index, text)

    if not isinstance(t, Mapping):
        raise fail("must be a table ([[byzantine.rule]]).")
    for key in t:
        if key not in ALL_KEYS:
            raise fail(f"unknown key '{key}'{did_you_mean(key, ALL_KEYS)}; rules take {', '.join(sorted(ALL_KEYS))}.")
    action = t.get("action")
    if action is None:
        raise fail(f"needs an 'action': one of {', '.join(ACTIONS)}.")
    action = _choice(t, "action", ACTIONS, None, fail)
    own = set(ACTION_KEYS[action])
    for key in t:
        if key not in MATCH_KEYS and key != "action" and key not in own:
            users = [a for a in ACTIONS if key in ACTION_KEYS[a]]
            raise fail(f"'{key}' belongs to action {' or '.join(users)}, not {action}.")
    direction = _choice(t, "direction", DIRECTIONS, "send", fail)
    if direction == "receive" and action not in RECEIVE_ACTIONS:
        raise fail(f"a received message can only be dropped, delayed or replayed, not {action!r}.")
    kinds = _strings(t, "kinds", fail)
    for k in kinds:
        if k not in KINDS:
            raise fail(f"'kinds' names {k!r}{did_you_mean(k, KINDS)}; message kinds are {', '.join(KINDS)}.")
    from_ = _nodes(t, "from", n, clients, fail)
    to = _nodes(t, "to", n, clients, fail)
    if direction == "send" and "from" in t:
        raise fail("'from' applies to received messages (direction = \"receive\"); what it sends is from itself.")
    if direction == "receive" and "to" in t:
        raise fail("'to' applies to sent messages; what it receives is to itself.")
    views = _ints(t, "views", fail)
    seqs = _ints(t, "seqs", fail)
    bounds = {k: _int(t, k, None, 0, 2**62, fail) for k in ("view_min", "view_max", "seq_min", "seq_max")}
    for lo, hi in (("view_min", "view_max"), ("seq_min", "seq_max")):
        if bounds[lo] is not None and bounds[hi] is not None and bounds[hi] < bounds[lo]:
            raise fail(f"'{hi}' ({bounds[hi]}) is below '{lo}' ({bounds[lo]}).")
    phase = _choice(t, "phase", PHASES, None, fail)
    at_ms = _int(t, "at_ms", 0, 0, MAX_MS, fail)
    until_ms = _int(t, "until_ms", None, 0, MAX_MS, fail)
    if until_ms is not None and until_ms <= at_ms:
        raise fail(f"'until_ms' ({until_ms}) must be after 'at_ms' ({at_ms}).")
    probability = t.get("probability", 1.0)
    if type(probability) not in (int, float) or not 0 <= probability <= 1:
        raise fail(f"'probability' must be a number from 0 to 1, not {probability!r}.")
    times = _int(t, "times", None, 1, 2**62, fail)
    delay_default = 500 if action == "replay" else None
    delay_ms = _int(t, "delay_ms", delay_default, 0 if action == "replay" else 1, MAX_MS, fail)
    if action == "delay" and delay_ms is None:
        raise fail("action delay needs 'delay_ms' (milliseconds).")
    copies = _int(t, "copies", 1, 1, 100, fail)
    mutate = _choice(t, "mutate", MUTATIONS, None, fail)
    if action == "mutate" and mutate is None:
        raise fail(f"action mutate needs 'mutate': one of {', '.join(MUTATIONS)}.")
    if mutate is not None and kinds and not set(kinds) & set(MUTATION_KINDS[mutate]):
        raise fail(
            f"mutation {mutate!r} changes only {', '.join(MUTATION_KINDS[mutate])}, none of {', '.join(kinds)}."
        )
    by = t.get("by", 1)
    if type(by) is not int or by == 0 or abs(by) > 2**32:
        raise fail(f"'by' must be a non-zero integer from -2^32 to 2^32, not {by!r}.")
    if "by" in t and mutate not in ("view", "seq"):
        raise fail("'by' goes with mutate = \"view\" or \"seq\".")
    keep_digest = t.get("keep_digest", False)
    if type(keep_digest) is not bool:
        raise fail(f"'keep_digest' must be true or false, not {keep_digest!r}.")
    if "keep_digest" in t and mutate not in ("batch", "request"):
        raise fail("'keep_digest' goes with mutate = \"batch\" or \"request\".")
    pick = _choice(t, "pick", PICKS, "this", fail)
    send_to = _nodes(t, "send_to", n, clients, fail)
    split = _nodes(t, "split", n, clients, fail) if "split" in t else None
    if me is not None and me in (split or ()):
        raise fail(f"'split' names replica {me} itself.")
    return Rule(
        index, action, direction, kinds, from_, to, views, seqs,
        bounds["view_min"], bounds["view_max"], bounds["seq_min"], bounds["seq_max"],
        phase, at_ms, until_ms, float(probability), times, delay_ms or 0, copies, mutate, by,
        keep_digest, pick, send_to, split,
    )


def _choice(t: Mapping, key: str, options: tuple[str, ...], default: str | None, fail) -> Any:
    v = t.get(key, default)
    if v is None or v in options:
        return v
    hint = did_you_mean(v, options) if isinstance(v, str) else ""
    raise fail(f"'{key}' is {v!r}{hint}; it must be one of {', '.join(options)}.")


def _int(t: Mapping, key: str, default: int | None, lo: int, hi: int, fail) -> Any:
    v = t.get(key, default)
    if v is None:
        return None
    if type(v) is not int or not lo <= v <= hi:
        raise fail(f"'{key}' must be an integer from {lo} to {hi}, not {v!r}.")
    return v


def _ints(t: Mapping, key: str, fail) -> tuple[int, ...]:
    v = t.get(key, [])
    if type(v) is int:
        v = [v]
    if isinstance(v, str):
        raise fail(f"'{key}' is a list of values, like [5, 6]; for a range give "
                   f"'{key[:-1]}_min' and '{key[:-1]}_max'.")
    if not isinstance(v, list) or not all(type(x) is int and x >= 0 for x in v):
        raise fail(f"'{key}' must be a list of non-negative integers (for a range: "
                   f"'{key[:-1]}_min' and '{key[:-1]}_max').")
    return tuple(v)


def _strings(t: Mapping, key: str, fail) -> tuple[str, ...]:
    v = t.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise fail(f"'{key}' must be a list of message kinds, like [\"COMMIT\"].")
    return tuple(v)


def _nodes(t: Mapping, key: str, n: int, clients: int | None, fail) -> tuple[int | str, ...]:
    v = t.get(key, [])
    if isinstance(v, int | str) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list):
        raise fail(f"'{key}' must be a list of nodes (replica ids, client names \"c0\", ...).")
    out: list[int | str] = []
    for x in v:
        if type(x) is int and 0 <= x < n:
            out.append(x)
        elif isinstance(x, str) and x[:1] == "c" and x[1:].isdigit() and (clients is None or int(x[1:]) < clients):
            out.append(x)
        else:
            raise fail(f"'{key}' names {x!r}, which is neither a replica 0 to {n - 1} nor a client"
                       f"{'' if clients is None else f' c0 to c{max(0, clients - 1)}'}.")
    return tuple(out)


# -- the behaviour --------------------------------------------------------------------------


class Rules(Behaviour):
    """Acts on messages as the scenario's [[byzantine.rule]] tables say (docs/rules.md)."""

    name = "rules"
    summary = "acts on messages as the scenario's [[byzantine.rule]] tables say"

    def setup(self) -> None:
        raw = self.params.get("rule", [])
        self.rules = parse_rules(raw, self.state.n, None, self.state.id)
        self.fired = [0] * len(self.rules)
        self.inapplicable = [0] * len(self.rules)
        self._history: dict[str, deque[tuple[bytes, Message]]] = {}
        self._requests: deque[tuple[bytes, str]] = deque(maxlen=REQUEST_HISTORY)
        self._step: dict[tuple[int, bytes], tuple[bool, Message | None]] = {}

    # -- hooks --------------------------------------------------------------------------

    def on_output(self, actions):
        self._step = {}  # one decision per message per step (all receivers alike)
        return super().on_output(actions)

    def on_message(self, msg: Incoming) -> None:
        self._remember(msg.data, msg.message)
        if msg.message is None:
            return
        self._step = {}
        view_change = self.state.in_view_change
        for i, rule in enumerate(self.rules):
            if rule.direction != "receive":
                continue
            if not rule.matches(msg.kind, msg.view, msg.seq, msg.sender, self.state.id, self.now_ms, view_change):
                continue
            if not self._decide(i, rule, msg.data, msg.message)[0]:
                continue
            if rule.action == "drop":
                msg.drop()
                return
            if rule.action == "delay":
                msg.delay(rule.delay_ms)
            else:
                self._replay(i, rule, msg.data, msg.message, None)

    def on_send(self, out: Outgoing) -> None:
        self._remember(out.data, out.message)
        if out.message is None:
            return
        view_change = self.state.in_view_change
        for i, rule in enumerate(self.rules):
            if rule.direction != "send":
                continue
            if not rule.matches(out.kind, out.view, out.seq, self.state.id, out.to, self.now_ms, view_change):
                continue
            fire, variant = self._decide(i, rule, out.data, out.message)
            if not fire:
                continue
            a = rule.action
            if a == "drop":
                out.drop()
                return
            if a == "delay":
                out.delay(rule.delay_ms)
            elif a == "duplicate":
                if rule.mutate is None:
                    out.duplicate(rule.copies)
                elif variant is not None:
                    self.send(out.to, variant)
                    for _ in range(rule.copies - 1):
                        self.send(out.to, variant)
            elif a == "replay":
                self._replay(i, rule, out.data, out.message, out.to)
            elif a == "mutate":
                if variant is not None:
                    out.replace(variant)
            elif a == "equivocate" and variant is not None and out.to in self._split(rule):
                out.replace(variant)

    # -- decisions ----------------------------------------------------------------------

    def _decide(self, i: int, rule: Rule, data: bytes, msg: Message) -> tuple[bool, Message | None]:
        """Whether rule i acts on this message, and the variant it sends (if it makes
        one): drawn once per message and step, so every receiver sees the same."""
        key = (i, data)
        known = self._step.get(key)
        if known is not None:
            return known
        fire = (rule.times is None or self.fired[i] < rule.times) and (
            rule.probability >= 1 or self.rng.random() < rule.probability
        )
        variant = None
        if fire:
            needs = rule.action in ("mutate", "equivocate") or (
                rule.action == "duplicate" and rule.mutate is not None
            )
            if needs:
                variant = self._mutated(rule, msg, data)
                if variant is None:
                    self.inapplicable[i] += 1
                    fire = False
            if fire:
                self.fired[i] += 1
        self._step[key] = (fire, variant)
        return fire, variant

    def _split(self, rule: Rule) -> tuple[int | str, ...]:
        if rule.split is not None:
            return rule.split
        peers = self.state.peers()
        cut = max(1, len(peers) // 2)
        return tuple(peers[cut:])

    def _replay(self, i: int, rule: Rule, data: bytes, msg: Message, to: Any) -> None:
        picked = self._pick(rule.pick, kind_of(msg), data) if rule.pick != "this" else (data, msg)
        if picked is None:
            self.inapplicable[i] += 1
            return
        payload: bytes | Message = picked[0]
        if rule.mutate is not None:
            variant = self._mutated(rule, picked[1], picked[0])
            if variant is None:
                self.inapplicable[i] += 1
                return
            payload = variant
        targets = list(rule.send_to) if rule.send_to else ([to] if to is not None else self.state.peers())
        self.send(targets, payload, rule.delay_ms)

    # -- history ------------------------------------------------------------------------

    def _remember(self, data: bytes, msg: Message | None) -> None:
        if msg is None:
            return
        kind = kind_of(msg)
        h = self._history.setdefault(kind, deque(maxlen=HISTORY))
        if not any(d == data for d, _ in h):
            h.append((data, msg))
        if isinstance(msg, Request):
            self._note_request(data, msg.client)
        elif isinstance(msg, PrePrepare):
            for req in msg.batch:
                opened = open_envelope(req)
                if opened is not None and isinstance(opened[1], Request):
                    self._note_request(req, opened[1].client)

    def _note_request(self, data: bytes, client: str) -> None:
        if not any(d == data for d, _ in self._requests):
            self._requests.append((data, client))

    def _pick(self, pick: str, kind: str, current: bytes) -> tuple[bytes, Message] | None:
        older = [e for e in self._history.get(kind, ()) if e[0] != current]
        if not older:
            return None
        if pick == "previous":
            return older[-1]
        if pick == "oldest":
            return older[0]
        return older[self.rng.randrange(len(older))]

    # -- mutations ----------------------------------------------------------------------

    def _mutated(self, rule: Rule, msg: Message, data: bytes) -> Message | None:
        """`msg` with the rule's one change, None if it does not apply to this message."""
        m = rule.mutate or ("batch" if isinstance(msg, PrePrepare) else "random")
        if kind_of(msg) not in MUTATION_KINDS[m]:
            return None
        if m == "view":
            name = "new_view" if isinstance(msg, ViewChange) else "view"
            value = getattr(msg, name) + rule.by
            return dataclasses.replace(msg, **{name: value}) if value >= 0 else None
        if m == "seq":
            value = msg.seq + rule.by  # type: ignore[union-attr]
            return dataclasses.replace(msg, seq=value) if value >= 0 else None
        if m == "digest":
            own = getattr(msg, "seq", None)
            others = sorted({
                s.digest for s in self.state.slots()
                if s.digest is not None and s.digest != msg.digest and s.seq != own  # type: ignore[union-attr]
            })
            if not others:
                return None
            return dataclasses.replace(msg, digest=others[self.rng.randrange(len(others))])
        if m == "random":
            if isinstance(msg, StateChunk):  # the chunk's data, one byte flipped
                if not msg.data:
                    return None
                i = self.rng.randrange(len(msg.data))
                data = msg.data[:i] + bytes([msg.data[i] ^ 0xFF]) + msg.data[i + 1 :]
                return dataclasses.replace(msg, data=data)
            return dataclasses.replace(msg, digest=self.rng.randbytes(32))
        if m == "kind":
            cls = Commit if isinstance(msg, Prepare) else Prepare
            return cls(msg.view, msg.seq, msg.digest)  # type: ignore[union-attr]
        if m == "older":
            picked = self._pick("previous", kind_of(msg), data)
            return None if picked is None else picked[1]
        if isinstance(msg, NewView | ViewChange):
            return self._smaller_pre_prepare(msg, rule.keep_digest)
        assert isinstance(msg, PrePrepare)
        if msg.batch is None:
            return None  # sent without its batch: nothing to change
        if m == "batch":
            batch = msg.batch[:-1]
        else:  # "request": the last request replaced by another client's one seen earlier
            if not msg.batch:
                return None
            opened = open_envelope(msg.batch[-1])
            client = opened[1].client if opened is not None and isinstance(opened[1], Request) else None
            pool = [d for d, c in self._requests if c != client and d not in msg.batch]
            if not pool:
                return None
            # one of the newest: a client's latest request, perhaps just executed
            batch = msg.batch[:-1] + (pool[-1 - self.rng.randrange(min(len(pool), 3))],)
        digest = msg.digest if rule.keep_digest else batch_digest(batch)
        if batch == msg.batch:
            return None
        return PrePrepare(msg.view, msg.seq, digest, batch)

    def _shrunk(self, env: bytes, keep_digest: bool) -> bytes | None:
        """A pre-prepare as a NEW-VIEW or VIEW-CHANGE carries it (without its batch),
        for the batch without its last request, re-signed by this replica. The batch
        comes from what the core holds for that digest."""
        opened = open_envelope(env)
        if opened is None or not isinstance(opened[1], PrePrepare):
            return None
        pp = opened[1]
        batch = pp.batch if pp.batch is not None else self.replica._known_batch(pp.seq, pp.digest)
        if not batch:
            return None
        smaller = batch[:-1]
        lie = PrePrepare(pp.view, pp.seq, pp.digest if keep_digest else batch_digest(smaller))
        return self.forge(lie)

    def _smaller_pre_prepare(self, msg: NewView | ViewChange, keep_digest: bool) -> Message | None:
        """`batch` on a NEW-VIEW or VIEW-CHANGE: the last pre-prepare it carries with a
        request (re-issued, or of a prepared certificate) named for its batch without its
        last request, re-signed by this replica."""
        if isinstance(msg, NewView):
            pps = list(msg.pre_prepares)
            for i in reversed(range(len(pps))):
                smaller = self._shrunk(pps[i], keep_digest)
                if smaller is not None:
                    pps[i] = smaller
                    return dataclasses.replace(msg, pre_prepares=tuple(pps))
            return None
        certs = list(msg.prepared)
        for i in reversed(range(len(certs))):
            if not certs[i]:
                continue
            smaller = self._shrunk(certs[i][0], keep_digest)
            if smaller is not None:
                certs[i] = (smaller, *certs[i][1:])
                return dataclasses.replace(msg, prepared=tuple(certs))
        return None


def build_with_rules(
    name: str, params: Mapping[str, Any], core: Any, key: Any, rng: random.Random, base_dir: str = ""
) -> ByzantineReplica:
    """`core` wrapped in behaviour `name` (if any) and then in the rules of params["rule"]:
    the behaviour acts first, the rules on what it sends. ValueError, one sentence, for a
    bad rule or for parameters given without a behaviour."""
    from . import catalogue

    rest = {k: v for k, v in params.items() if k != "rule"}
    rules_rng = random.Random(rng.getrandbits(64))
    inner = core
    if name:
        inner = catalogue.build(name, rest, core, key, rng, base_dir=base_dir)
    elif rest:
        raise ValueError(
            f"parameter '{sorted(rest)[0]}' given without a 'behaviour' (rules take their keys "
            "inside [[byzantine.rule]])."
        )
    # One failure record for both layers: whoever reads the node's failures sees them all.
    log = inner.failure_log if isinstance(inner, ByzantineReplica) else None
    wrapped = ByzantineReplica(inner, Rules(inner, key, {"rule": params["rule"]}, rules_rng), log)
    core.behaviour_label = f"{name}+rules" if name else "rules"
    return wrapped


def rules_of(node: Any) -> Rules | None:
    """The `Rules` behaviour of a simulated replica's node, if it has one (for tests)."""
    b = getattr(node, "behaviour", None)
    return b if isinstance(b, Rules) else None
