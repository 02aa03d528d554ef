"""The one catalogue of scripted attackers, by the names docs/attacks.md gives them.

Everything that runs a behaviour by name goes through here: the simulator and its
scenario files, fuzz, `pbft replica --behaviour`, bench and the real-process scenarios.
`REGISTRY` maps a replica behaviour's name to its class, `CLIENT_REGISTRY` a client
behaviour's; both are read-only (nothing registers anything at run time). `lookup` finds
a class or raises one sentence listing the valid names; `build` wraps a core in the
behaviour (`ByzantineReplica(core, Cls(core, key, params, rng))`, or for a client
`ByzantineClient(core, Cls(core, key, params, rng, config))`). Each class has a `name`, a
one-line `summary`, and the parameters it `allowed`; a bad parameter raises `ValueError`
with one sentence when the behaviour is built. `parse_spec` reads the command line's
`NAME[:key=value,...]` and `spec_text` writes it back.

View-change and state-transfer attacks (`fake-prepared-cert`, `drop-cert`,
`bad-new-view`, `view-change-storm`, `lying-state-transfer`) are in viewchange_attacks.py;
`wrong-reply` (lying to clients, or withholding replies) is in replies.py;
`status-flood`, `buffer-stuffing` and `stale-proof` (exhausting a replica, stranding a
laggard) in resources.py.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import UsageError, is_interrupt, safe_str
from ..protocol.config import ClusterConfig
from ..protocol.crypto import KeyPair
from . import loader
from .api import did_you_mean
from .base import RUNNING, Behaviour, ByzantineReplica, failure_of
from .clients import CLIENTS, ByzantineClient, ClientBehaviour
from .primary import PRIMARY
from .replies import REPLIES
from .resources import RESOURCES
from .viewchange_attacks import VIEWCHANGE_ATTACKS
from .votes import VOTES
from .wire import BadSignature, Flood, FutureFlood, Replay, SelectiveSend

WIRE = (BadSignature, FutureFlood, SelectiveSend, Flood, Replay)

REGISTRY: Mapping[str, type[Behaviour]] = MappingProxyType({
    cls.name: cls for cls in (*PRIMARY, *VOTES, *WIRE, *VIEWCHANGE_ATTACKS, *REPLIES, *RESOURCES)
})
CLIENT_REGISTRY: Mapping[str, type[ClientBehaviour]] = MappingProxyType(
    {cls.name: cls for cls in CLIENTS}
)
TARGETS = ("replica", "client")


def catalogue(target: str = "replica") -> Mapping[str, type]:
    """The behaviours of one target ("replica" or "client"), by name."""
    return REGISTRY if target == "replica" else CLIENT_REGISTRY


def lookup(name: str, target: str = "replica", base_dir: str = "") -> type:
    """The class of behaviour `name`: a catalogue name, a user's `FILE.py:Class` (a
    relative FILE is looked up in `base_dir`, else the working directory) or an
    importable `module.path:Class`. UsageError, one sentence, if there is none: for a
    user's file it names the file and the line (loader.py)."""
    if is_ref(name):
        return loader.load(name, target, base_dir)
    known = catalogue(target)
    cls = known.get(name)
    if cls is None:
        raise UsageError(
            f"unknown behaviour {name}{did_you_mean(name, list(known))} (known: "
            f"{', '.join(sorted(known))}; or give FILE.py:Class or module:Class)."
        )
    return cls


def build(
    name: str,
    params: Mapping[str, Any],
    core: Any,
    key: KeyPair,
    rng: random.Random,
    config: ClusterConfig | None = None,
    target: str = "replica",
    base_dir: str = "",
) -> Any:
    """`core` (a `Replica`, or a `ClientCore` for target "client", which also takes the
    cluster `config`) wrapped in behaviour `name` with `params`. An unknown name is a
    UsageError; a bad parameter raises the behaviour's ValueError or TypeError, which the
    caller words (it knows the file or flag the parameter came from). A replica's
    [[byzantine.rule]] tables (params["rule"]) wrap the behaviour, if any, in rules.py."""
    if params.get("rule") is not None and target == "replica":
        from .rules import build_with_rules

        return build_with_rules(name, params, core, key, rng, base_dir)
    if params.get("rule") is not None:
        from .client_rules import build_client_rules

        return build_client_rules(name, params, core, key, rng, config, base_dir)
    cls = lookup(name, target, base_dir)
    RUNNING.enter("setup")  # a user's __init__ and setup(), for the watchdog
    try:
        with loader.user_output():
            if target == "client":
                behaviour = cls(core, key, dict(params), rng, config)
            else:
                behaviour = cls(core, key, dict(params), rng)
    finally:
        RUNNING.hook = None
    return ByzantineClient(core, behaviour) if target == "client" else ByzantineReplica(core, behaviour)


def check(
    name: str, params: Mapping[str, Any], config: ClusterConfig, replica_id: int, base_dir: str = ""
) -> None:
    """Build replica behaviour `name` once around a throwaway core, so a bad parameter (or
    a user's class that cannot even be built) is a UsageError, one sentence, before
    anything listens."""
    from ..protocol.replica import Replica
    from ..service.kv import KeyValueStore

    if name or params.get("rule") is None:  # rules alone need no behaviour
        lookup(name, "replica", base_dir)
    if not 0 <= replica_id < config.n:
        return
    key = KeyPair.generate()
    try:
        build(name, params, Replica(config, replica_id, key, KeyValueStore()), key, random.Random(),
              base_dir=base_dir)
    except (ValueError, TypeError) as exc:
        raise UsageError(safe_str(exc)) from None
    except BaseException as exc:  # noqa: BLE001 - a user's __init__ or setup() that raises
        if is_interrupt(exc):
            raise
        failure = failure_of(name, "setup", exc)
        raise UsageError(f"{failure.sentence()} while being built.") from None


# -- NAME[:key=value,...] -----------------------------------------------------------------


def parse_value(text: str) -> object:
    """One parameter value from the command line: true/false, an integer, a float, a
    list in brackets (`[prepare,commit]`, items parsed alike), else the text itself."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(item) for item in _split_top(inner)] if inner else []
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def split_ref(spec: str) -> tuple[str, str]:
    """`spec` -> (the behaviour's reference, the `key=value,...` text after it). A
    reference is a catalogue NAME, `FILE.py:Class` or `module.path:Class`; its second
    part is told from parameters by having no `=`."""
    parts = spec.split(":")
    where = parts[0].strip()
    if len(parts) >= 2 and "=" not in parts[1] and (
        loader.is_file(where) or all(p.isidentifier() for p in where.split("."))
    ):
        return f"{where}:{parts[1].strip()}", ":".join(parts[2:])
    return where, ":".join(parts[1:])


def is_ref(name: str) -> bool:
    """Whether `name` points at a user's class (FILE.py:Class, module:Class), not the
    catalogue."""
    return ":" in name


def parse_spec(spec: str) -> tuple[str, dict[str, object]]:
    """`REF` or `REF:key=value,key=value` -> (REF, params); UsageError if malformed. REF
    is a catalogue NAME, `FILE.py:Class` or `module.path:Class`."""
    name, rest = split_ref(spec)
    if not name:
        raise UsageError(f"--behaviour {spec!r} names no behaviour.")
    params: dict[str, object] = {}
    for item in _split_top(rest) if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(
                f"--behaviour {spec!r}: expected key=value after the name, not {item.strip()!r}."
            )
        if key in params:
            raise UsageError(f"--behaviour {spec!r} gives {key!r} twice.")
        params[key] = parse_value(value)
    return name, params


def spec_text(name: str, params: Mapping[str, object]) -> str:
    """`NAME`, or `NAME:key=value,...` (values as repr, keys sorted) that `parse_spec`
    reads back: how a running replica names its behaviour (logs, metrics, status).
    Message rules (the "rule" key, a list of tables) are only counted: "+3 rules"."""
    rules = params.get("rule")
    plain = {k: v for k, v in params.items() if k != "rule"}
    text = name if not plain else f"{name}:{','.join(f'{k}={v!r}' for k, v in sorted(plain.items()))}"
    if isinstance(rules, list):
        text += f" +{len(rules)} rule{'s' if len(rules) != 1 else ''}"
    return text


@dataclass(frozen=True, slots=True)
class BehaviourSpec:
    """A behaviour as the runtime gets it: its reference (catalogue NAME, FILE.py:Class,
    module:Class), its parameters as typed (a scenario's tables stay tables) and where a
    relative FILE is looked up."""

    ref: str
    params: Mapping[str, Any] = field(default_factory=dict)
    base_dir: str = ""

    @classmethod
    def parse(cls, text: str) -> BehaviourSpec:
        """From the command line's `REF[:key=value,...]`."""
        ref, params = parse_spec(text)
        return cls(ref, params)

    def label(self) -> str:
        """How the running replica names it (logs, metrics, status)."""
        ref = loader.absolute(self.ref, self.base_dir) if is_ref(self.ref) else self.ref
        return spec_text(ref or "rules", self.params)

__all__ = [
    "CLIENT_REGISTRY",
    "REGISTRY",
    "build",
    "check",
    "lookup",
    "parse_spec",
    "spec_text",
    "Behaviour",
    "ByzantineClient",
    "ByzantineReplica",
    "ClientBehaviour",
]
