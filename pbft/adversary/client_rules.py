"""Declarative rules on a Byzantine client: the REQUESTs it sends, scripted in the file.

Theory of operation (docs/rules.md, "Rules on a client"). A client's `[[byzantine]]` entry
may carry `[[byzantine.rule]]` tables like a replica's; they are parsed by the same
`rules.parse_rules` and then narrowed to what a client sends: REQUEST messages, to the
replicas. `ClientRules` wraps the honest `ClientCore` (a `ClientBehaviour`) and acts on
each request it sends, once per receiving replica, rule by rule in file order:

- `drop` it, `delay` it (`delay_ms`, released on the client's ticks), `duplicate` it;
- `replay` it (or, with `pick`, an older request of its own) `delay_ms` later, to the
  replicas in `send_to` (default: the same one);
- `mutate` it (`random`: the same client and timestamp with random operation bytes;
  `older`: one of its own older signed requests instead);
- `equivocate`: the replicas in `split` (default: the second half) get the mutated
  version (`random` unless `mutate` says otherwise), the others the honest one.

Everything it produces is signed with the client's own key, so the replicas' exactly-once
and ordering rules are what is tested. Chance (`probability`) and the mutated bytes are
drawn from the run's seeded RNG, once per request, so all receivers see the same variant
and a simulation replays from its seed.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..protocol.events import Action, Send
from ..protocol.messages import Request
from .api import Held
from .clients import ByzantineClient, ClientBehaviour
from .rules import PICKS, REQUEST_HISTORY, Rule, RuleError, parse_rules

CLIENT_ACTIONS = ("drop", "delay", "duplicate", "replay", "mutate", "equivocate")
CLIENT_MUTATIONS = ("random", "older")
"""What can be changed in a client's own request and still be signed by it."""
CLIENT_KEYS_REFUSED = ("from", "views", "seqs", "view_min", "view_max", "seq_min", "seq_max", "phase", "keep_digest", "by")


def parse_client_rules(raw: object, n: int, clients: int | None = None) -> list[Rule]:
    """The rules of a client's entry: replica rules narrowed to the REQUESTs it sends.
    RuleError (one sentence) for the first that asks for something a client cannot do."""
    rules = parse_rules(raw, n, clients)
    tables = [raw] if isinstance(raw, dict) else list(raw)  # type: ignore[arg-type]
    for rule, table in zip(rules, tables, strict=True):
        def fail(text: str, index: int = rule.index) -> RuleError:
            return RuleError(index, text)

        if rule.direction != "send":
            raise fail("a client's rules act on what it sends (direction = \"send\").")
        if rule.kinds and set(rule.kinds) != {"REQUEST"}:
            raise fail(f"a client sends REQUESTs only, not {', '.join(k for k in rule.kinds if k != 'REQUEST')}.")
        refused = [k for k in CLIENT_KEYS_REFUSED if k in table]
        if refused:
            raise fail(f"'{refused[0]}' does not apply to a client's requests (they have no view, seq or phase).")
        if rule.mutate is not None and rule.mutate not in CLIENT_MUTATIONS:
            raise fail(f"a client can mutate its request by {' or '.join(CLIENT_MUTATIONS)}, not {rule.mutate!r}.")
        if any(isinstance(x, str) for x in (*rule.to, *rule.send_to, *(rule.split or ()))):
            raise fail("a client's requests go to replicas: name replica ids in 'to', 'send_to' and 'split'.")
    return rules


class ClientRules(ClientBehaviour):
    """Acts on the REQUESTs it sends as the scenario's [[byzantine.rule]] tables say."""

    name = "client-rules"
    summary = "acts on its REQUESTs as the scenario's [[byzantine.rule]] tables say"
    allowed = ("rule",)

    def __init__(self, core, key, params, rng, config) -> None:
        super().__init__(core, key, params, rng, config)
        self.rules = parse_client_rules(self.params.get("rule", []), config.n)
        self.fired = [0] * len(self.rules)
        self._history: deque[bytes] = deque(maxlen=REQUEST_HISTORY)  # its own signed requests
        self._held = Held()
        self._drawn: dict[bytes, tuple[bool, ...]] = {}  # per request: which rules' chance held
        self._variants: dict[tuple[int, bytes], bytes] = {}

    @property
    def now_ms(self) -> int:
        return self.ticks * self.config.tick_ms

    def on_output(self, actions: list[Action]) -> list[Action]:
        return self.rewrite_requests(actions, self._apply)

    def on_tick(self) -> list[Action]:
        return self._held.due(self.now_ms)  # ByzantineClient counted this tick already

    # -- one request to one replica ------------------------------------------------------

    def _apply(self, a: Send, req: Request) -> list[Action]:
        data = a.data
        if not self._history or self._history[-1] != data:
            if data not in self._history:
                self._history.append(data)
        chances = self._chances(data)
        sends: list[Action] = [a]
        for i, rule in enumerate(self.rules):
            if not chances[i] or not rule.matches("REQUEST", None, None, None, a.to, self.now_ms, False):
                continue
            if rule.times is not None and self.fired[i] >= rule.times:
                continue
            self.fired[i] += 1
            sends = self._act(rule, a, req, sends)
            if not sends:
                break
        return sends

    def _chances(self, data: bytes) -> tuple[bool, ...]:
        """Whether each rule's `probability` holds for this request: drawn once per
        request, so every replica it goes to sees the same fate."""
        drawn = self._drawn.get(data)
        if drawn is None:
            drawn = tuple(r.probability >= 1.0 or self.rng.random() < r.probability for r in self.rules)
            self._drawn = {data: drawn}  # only the request being sent
        return drawn

    def _act(self, rule: Rule, a: Send, req: Request, sends: list[Action]) -> list[Action]:
        if rule.action == "drop":
            return []
        if rule.action == "delay":
            for s in sends:
                self._hold(rule.delay_ms, s)
            return []
        if rule.action == "duplicate":
            return [s for s in sends for _ in range(1 + rule.copies)]
        if rule.action == "replay":
            data = self._pick(rule.pick, a.data)
            for r in rule.send_to or (a.to,):
                self._hold(rule.delay_ms, Send(int(r), data))
            return sends
        variant = self._variant(rule.mutate or "random", req, a.data)
        if rule.action == "mutate":
            return [Send(a.to, variant)]
        # equivocate: the split replicas (default the second half) get the variant
        split = rule.split if rule.split is not None else tuple(self.halves()[1])
        return [Send(a.to, variant)] if a.to in split else sends

    def _pick(self, pick: str, data: bytes) -> bytes:
        older = [d for d in self._history if d != data]
        if pick == "this" or not older:
            return data
        if pick == "previous":
            return older[-1]
        if pick == "oldest":
            return older[0]
        assert pick in PICKS
        return older[self.rng.randrange(len(older))]

    def _variant(self, mutate: str, req: Request, data: bytes) -> bytes:
        if mutate == "older":
            return self._pick("previous", data)
        # The same (client, timestamp), other operation bytes: memoised per request so a
        # retransmission and every receiver carry the same lie.
        key = (req.timestamp, data)
        if key not in self._variants:
            op = self.rng.randbytes(max(1, min(len(req.operation), 64)))
            self._variants = {key: self.sign(Request(op, req.timestamp, req.client, req.read_only))}
        return self._variants[key]

    def _hold(self, delay_ms: int, action: Action) -> None:
        self._held.hold(self.now_ms + max(0, delay_ms), action)


def build_client_rules(
    name: str, params: Mapping[str, Any], core: Any, key: Any, rng: random.Random, config: Any,
    base_dir: str = "",
) -> ByzantineClient:
    """A client core wrapped in client behaviour `name` (if any), then in the rules of
    params["rule"], which act on what the behaviour sends. ValueError, one sentence, for a
    bad rule or for parameters given without a behaviour."""
    from . import catalogue

    rest = {k: v for k, v in params.items() if k != "rule"}
    rules_rng = random.Random(rng.getrandbits(64))
    inner = core
    if name:
        inner = catalogue.build(name, rest, core, key, rng, config, target="client", base_dir=base_dir)
    elif rest:
        raise ValueError(
            f"parameter '{sorted(rest)[0]}' given without a 'behaviour' (rules take their keys "
            "inside [[byzantine.rule]])."
        )
    try:
        behaviour = ClientRules(inner, key, {"rule": params["rule"]}, rules_rng, config)
    except RuleError as exc:
        raise ValueError(str(exc)) from None
    return ByzantineClient(inner, behaviour, inner.failure_log if isinstance(inner, ByzantineClient) else None)


def client_rules_of(node: Any) -> ClientRules | None:
    """The `ClientRules` of a simulated client's driver, if it has one (for tests)."""
    b = getattr(node, "behaviour", None)
    return b if isinstance(b, ClientRules) else None
