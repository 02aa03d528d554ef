"""Scenario files: the attacker's script (docs/formats.md, "Scenario files").

Theory of operation. A scenario is plain data: the cluster size, a seed, a closed-loop
workload, Byzantine behaviours attached to replicas or clients, network faults with time
windows, and what the run must achieve. `parse_scenario` validates the dictionary tomllib
produced and raises `UsageError` with one sentence naming the entry and the problem;
`to_toml` writes a scenario back, so a schedule the fuzzer shrank can be saved and replayed
with `pbft scenario run`.

Optional sections and keys (docs/formats.md lists every key):

    [workload] keys = 4            # size of the key space; read_only = 0.5 (share of gets)
    [cluster]  checkpoint_interval, log_window, batch_max, pipeline,
               view_change_timeout_ms, tick_ms, retransmit_ms, linger_ms
    [[network]] delay_ms = 50  jitter_ms = 20  reorder = 0.3  reorder_ms = 80
    [[network]] crash = 2  at_ms = 1000  until_ms = 3000   # restart at until_ms (omit: never)
                amnesia = true   # the restart comes back from nothing instead of from its
                                 # durable store: a faulty replica (docs/attacks.md `amnesia`)
    [[network]] crash = 2  at_ms = 500  on = "transfer"  down_ms = 200  times = 2
                # a crash at the worst moment: right after the step in which replica 2 (from
                # at_ms on) makes a checkpoint stable ("checkpoint"), starts a state transfer
                # ("transfer"), installs one ("installed"), starts a view change
                # ("view-change") or installs a NEW-VIEW ("new-view"); it restarts down_ms
                # later (omit: never), and the trigger re-arms `times` times in all
    [[network]] drop = 1.0  kinds = ["COMMIT"]  to = [0, 1, 2]  views = [0]  seqs = [1]
                # filters: a link fault touches only matching messages (kind, sender,
                # receiver, view and seq of the message); omitted filters match everything
    [expect]   liveness_ms = 30000  # a correct client's request completes within this bound
                                    # (virtual ms) once the last fault has healed
               catch_up = true      # after the workload and a settle period, every live correct
                                    # replica reached the latest stable checkpoint

Nodes: replicas are integers 0..n-1, clients are named "c0", "c1", ...; `client = 2` in a
[[byzantine]] entry means "c2". Partition groups may list client names; a node listed in no
group keeps all its links.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..adversary import catalogue, rules
from ..adversary.api import did_you_mean
from ..errors import UsageError
from ..files import Unreadable, check_regular, parse_toml
from ..protocol.config import LINGER_MAX_MS, ServiceSpec, service_spec

Node = int | str

CLUSTER_KEYS = (
    "checkpoint_interval",
    "log_window",
    "batch_max",
    "pipeline",
    "view_change_timeout_ms",
    "tick_ms",
    "retransmit_ms",
    "linger_ms",
)
CLUSTER_RANGES = {"linger_ms": (0, LINGER_MAX_MS)}
"""[cluster] settings whose valid values are not 1 to 2^22 (as in the cluster file)."""
NETWORK_KEYS = frozenset(
    {
        "at_ms",
        "until_ms",
        "partition",
        "drop",
        "delay_ms",
        "jitter_ms",
        "duplicate",
        "reorder",
        "reorder_ms",
        "one_way",
        "twin",
        "crash",
        "amnesia",
        "on",
        "down_ms",
        "times",
        "kinds",
        "from",
        "to",
        "views",
        "seqs",
    }
)
KINDS = (
    "REQUEST",
    "PRE-PREPARE",
    "PREPARE",
    "COMMIT",
    "REPLY",
    "CHECKPOINT",
    "VIEW-CHANGE",
    "NEW-VIEW",
    "FETCH-STATE",
    "STATE-CHUNK",
    "STATUS",
    "QUERY-STATUS",
    "HELD",
    "STABLE-PROOF",
    "FETCH-BATCH",
    "BATCH",
    "EPOCHS",
)
TRIGGERS = ("checkpoint", "transfer", "installed", "view-change", "new-view")
"""What a triggered crash (`on = ...`) waits for; simulation.TRIGGER_ACTIONS maps them."""
MAX_F = 4
MAX_CLIENTS = 64
MAX_REQUESTS = 100_000
MAX_SCENARIO_FILE = 16 * 1024 * 1024  # far above any hand-written or shrunk scenario


def client_name(index: int) -> str:
    return f"c{index}"


@dataclass(frozen=True, slots=True)
class ByzantineSpec:
    target: str  # "replica" or "client"
    index: int
    behaviour: str  # a catalogue name, FILE.py:Class or module.path:Class
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    base_dir: str = field(default="", compare=False)
    """Where a relative FILE.py is looked up: the scenario file's directory."""

    @property
    def node(self) -> Node:
        return self.index if self.target == "replica" else client_name(self.index)


@dataclass(frozen=True, slots=True)
class NetworkFault:
    at_ms: int = 0
    until_ms: int | None = None
    partition: tuple[tuple[Node, ...], ...] = ()
    drop: float = 0.0
    delay_ms: int = 0
    jitter_ms: int = 0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_ms: int = 50
    one_way: tuple[Node, Node] | None = None
    twin: int | None = None
    crash: int | None = None
    amnesia: bool = False  # with crash: restart from nothing rather than from storage
    on: str | None = None  # with crash: crash right after this event (TRIGGERS), not at at_ms
    down_ms: int | None = None  # with on: restart this long after the crash (None: never)
    times: int = 1  # with on: how many times the trigger fires
    # Filters: the fault touches only matching messages (empty = all).
    kinds: tuple[str, ...] = ()
    from_: tuple[Node, ...] = ()
    to: tuple[Node, ...] = ()
    views: tuple[int, ...] = ()
    seqs: tuple[int, ...] = ()

    @property
    def filtered(self) -> bool:
        return bool(self.kinds or self.from_ or self.to or self.views or self.seqs)

    def active(self, now: int) -> bool:
        return self.at_ms <= now and (self.until_ms is None or now < self.until_ms)

    @property
    def is_link_fault(self) -> bool:
        return self.twin is None and self.crash is None


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """`[[reconfigure]]`: at `at_ms` the operator orders the next epoch (pbft.protocol.epochs)
    once the previous one has begun: `replace` gives these replicas new keys and addresses
    (new nodes, which the simulator starts first, as an operator would), `f` changes the
    group's size (new replicas are started; removed ones retire), `add_clients` adds that
    many clients (with their own workload), `remove_clients` removes these."""

    at_ms: int = 0
    f: int | None = None
    replace: tuple[int, ...] = ()
    add_clients: int = 0
    remove_clients: tuple[str, ...] = ()


Instance = tuple[int, int]
"""One running copy of a replica under a `[twins]` schedule: (replica id, copy), copy 0
the replica itself and copy 1 its twin, written `3` and `"3'"` in a scenario file."""
TWIN_MARK = "'"
MAX_TWIN_ROUNDS = 64


def instance_name(inst: Instance) -> str:
    """`3` or `3'`: how a scenario file and a report name an instance."""
    return f"{inst[0]}{TWIN_MARK * inst[1]}"


@dataclass(frozen=True, slots=True)
class Twins:
    """`[twins]`: replica `replica` runs as two correct instances with one key (Twins, Bano
    et al., OPODIS 2021), and per view a partition of the n+1 instances (pbft.sim.twins).

    Round v is view v: a message that carries a view (PRE-PREPARE, PREPARE, COMMIT,
    VIEW-CHANGE, NEW-VIEW) belongs to that view's round, any other to the later of its
    sender's view and the round under way (now // round_ms). A message of round v < len(rounds) crosses only within a group of
    `rounds[v]`, and only until (v+1) * round_ms: then the round is over and its messages
    are lost, so the replicas time out into the next view (a PBFT view, unlike a HotStuff
    round, never ends by itself while it makes progress). From `heal_ms` on (every round
    over) nothing is filtered: liveness is judged from there. Clients are in no group:
    they reach every instance, and every instance reaches them."""

    replica: int
    round_ms: int
    rounds: tuple[tuple[tuple[Instance, ...], ...], ...]
    """Per view 0, 1, ...: its groups, each a sorted tuple of instances."""

    @property
    def heal_ms(self) -> int:
        return self.round_ms * len(self.rounds)

    def groups(self) -> list[dict[Instance, int]]:
        """Per round, instance -> the index of its group."""
        return [{i: g for g, group in enumerate(groups) for i in group} for groups in self.rounds]


@dataclass(frozen=True, slots=True)
class Expect:
    safety: bool = True
    all_requests_complete: bool = True
    max_view_changes: int | None = None
    liveness_ms: int = 30_000
    catch_up: bool = False


class ReplicaLoad(Enum):
    """What the simulated replicas tell their cores about their own load (the runtime's
    `Load` input): simulated replicas cost nothing, so this is the scenario's choice."""

    BUSY = "busy"
    """The primary batches for throughput (a core's starting policy)."""
    IDLE = "idle"
    """The primary proposes as soon as its pipeline has room (a lightly loaded group)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "unnamed"
    f: int = 1
    seed: int = 0
    clients: int = 2
    requests: int = 10
    keys: int = 4
    read_only: float = 0.5
    byzantine: tuple[ByzantineSpec, ...] = ()
    network: tuple[NetworkFault, ...] = ()
    cluster: tuple[tuple[str, int], ...] = ()
    expect: Expect = Expect()
    source: str = ""
    broken: str = ""
    """A name from pbft.adversary.broken.BROKEN: the correct replicas run that deliberately
    broken core (to see the scenario's checks catch a wrong protocol); "" for the real one."""
    service: ServiceSpec | None = None
    """`[service]`: the replicated state machine (None: the key-value store)."""
    reconfigure: tuple[Reconfigure, ...] = ()
    """`[[reconfigure]]` steps, in order: the epochs the operator makes."""
    load: ReplicaLoad = ReplicaLoad.BUSY
    """`load`: what every replica core is told of its load when it starts."""
    twins: Twins | None = None
    """`[twins]`: a twinned replica and its per-view partitions (None: none)."""
    think_ms: int = 0
    """`[workload] think_ms`: how long a client waits after a completed request before it
    submits the next (a paced workload, so that requests span a Twins run's rounds)."""

    @property
    def n(self) -> int:
        return 3 * self.f + 1

    @property
    def fs(self) -> list[int]:
        """f of each epoch, the first the scenario's."""
        out = [self.f]
        for r in self.reconfigure:
            out.append(r.f if r.f is not None else out[-1])
        return out

    @property
    def max_n(self) -> int:
        """The most replicas any epoch has (replica ids are 0..max_n-1)."""
        return 3 * max(self.fs) + 1

    def faulty_replicas(self) -> list[int]:
        """Replicas outside the correct set: behaviours, twins and amnesiac restarts (a
        crash with a restart from durable storage is benign)."""
        ids = {b.index for b in self.byzantine if b.target == "replica"}
        ids |= {n.twin for n in self.network if n.twin is not None}
        if self.twins is not None:
            ids.add(self.twins.replica)
        ids |= {n.crash for n in self.network if n.crash is not None and n.amnesia}
        return sorted(ids)

    def byzantine_clients(self) -> list[str]:
        return sorted({b.node for b in self.byzantine if b.target == "client"})  # type: ignore[type-var]

    def exceeds_fault_assumption(self) -> bool:
        """More faulty replicas than f, in any epoch of the plan (those the epoch has)."""
        faulty = self.faulty_replicas()
        return any(len([r for r in faulty if r < 3 * f + 1]) > f for f in self.fs)


# -- parsing --------------------------------------------------------------------------------


def _fail(where: str, text: str) -> UsageError:
    return UsageError(f"{where}: {text}")


def _int(table: dict, key: str, default: int | None, lo: int, hi: int, where: str) -> int | None:
    if key not in table:
        return default
    v = table[key]
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(where, f"'{key}' must be an integer from {lo} to {hi}, not {v!r}.")
    return v


def _prob(table: dict, key: str, where: str) -> float:
    v = table.get(key, 0.0)
    if type(v) not in (int, float) or not 0.0 <= v <= 1.0:
        raise _fail(where, f"'{key}' must be a probability from 0 to 1, not {v!r}.")
    return float(v)


def _bool(table: dict, key: str, default: bool, where: str) -> bool:
    v = table.get(key, default)
    if type(v) is not bool:
        raise _fail(where, f"'{key}' must be true or false, not {v!r}.")
    return v


def _node(v: object, n: int, clients: int, where: str, key: str) -> Node:
    if type(v) is int and 0 <= v < n:
        return v
    if type(v) is str and v.startswith("c") and v[1:].isdigit() and int(v[1:]) < clients:
        return v
    raise _fail(where, f"'{key}' names {v!r}, which is neither a replica 0..{n - 1} nor a client c0..c{clients - 1}.")


def _replica(v: object, n: int, where: str, key: str) -> int:
    if type(v) is not int or not 0 <= v < n:
        raise _fail(where, f"'{key}' must be a replica id from 0 to {n - 1}, not {v!r}.")
    return v


def _network(t: object, n: int, clients: int, where: str) -> NetworkFault:
    if not isinstance(t, dict):
        raise _fail(where, "must be a table.")
    unknown = sorted(set(t) - NETWORK_KEYS)
    if unknown:
        raise _fail(where, f"unknown field '{unknown[0]}' (known: {', '.join(sorted(NETWORK_KEYS))}).")
    at = _int(t, "at_ms", 0, 0, 10**9, where)
    until = _int(t, "until_ms", None, 0, 10**9, where)
    if until is not None and until <= at:
        raise _fail(where, f"'until_ms' ({until}) must be after 'at_ms' ({at}).")
    partition: tuple[tuple[Node, ...], ...] = ()
    if "partition" in t:
        groups = t["partition"]
        if not isinstance(groups, list) or len(groups) < 2 or not all(isinstance(g, list) for g in groups):
            raise _fail(where, "'partition' must be a list of at least two groups, like [[0, 1], [2, 3]].")
        seen: set[Node] = set()
        parsed = []
        for g in groups:
            nodes = tuple(_node(x, n, clients, where, "partition") for x in g)
            if seen & set(nodes):
                raise _fail(where, "'partition' lists a node in two groups.")
            seen |= set(nodes)
            parsed.append(nodes)
        partition = tuple(parsed)
    one_way = None
    if "one_way" in t:
        ow = t["one_way"]
        if not isinstance(ow, list) or len(ow) != 2:
            raise _fail(where, "'one_way' must be [from, to].")
        one_way = (_node(ow[0], n, clients, where, "one_way"), _node(ow[1], n, clients, where, "one_way"))
    msg_kinds = _list(t, "kinds", where)
    for k in msg_kinds:
        if k not in KINDS:
            raise _fail(where, f"'kinds' names {k!r}; message kinds are {', '.join(KINDS)}.")
    from_ = tuple(_node(x, n, clients, where, "from") for x in _list(t, "from", where))
    to = tuple(_node(x, n, clients, where, "to") for x in _list(t, "to", where))
    views = _list(t, "views", where)
    seqs = _list(t, "seqs", where)
    if not all(type(x) is int and x >= 0 for x in views + seqs):
        raise _fail(where, "'views' and 'seqs' must be lists of non-negative integers.")
    twin = _replica(t["twin"], n, where, "twin") if "twin" in t else None
    crash = _replica(t["crash"], n, where, "crash") if "crash" in t else None
    amnesia = _bool(t, "amnesia", False, where)
    on = t.get("on")
    if on is not None and on not in TRIGGERS:
        raise _fail(where, f"'on' names {on!r}; triggers are {', '.join(TRIGGERS)}.")
    down = _int(t, "down_ms", None, 1, 10**9, where)
    times = _int(t, "times", 1, 1, 1000, where) or 1
    if on is not None and (crash is None or until is not None):
        raise _fail(where, "'on' belongs on a crash entry without 'until_ms' (give 'down_ms' instead).")
    if on is None and ("down_ms" in t or "times" in t):
        raise _fail(where, "'down_ms' and 'times' belong on a triggered crash ('on').")
    restarts = until is not None or down is not None
    if amnesia and (crash is None or not restarts):
        raise _fail(where, "'amnesia' belongs on a crash entry with a restart ('crash' and 'until_ms' or 'down_ms').")
    if twin is not None and ("at_ms" in t or "until_ms" in t):
        raise _fail(where, "a 'twin' runs for the whole run; drop 'at_ms'/'until_ms'.")
    # The link faults' values first: a value out of range is that, not an entry saying nothing.
    drop = _prob(t, "drop", where)
    delay_ms = _int(t, "delay_ms", 0, 0, 600_000, where) or 0
    jitter_ms = _int(t, "jitter_ms", 0, 0, 600_000, where) or 0
    duplicate = _prob(t, "duplicate", where)
    reorder = _prob(t, "reorder", where)
    reorder_ms = _int(t, "reorder_ms", 50, 0, 600_000, where) or 0
    kinds = sum(x is not None and x != () for x in (twin, crash)) + (
        1 if any(k in t for k in ("partition", "drop", "delay_ms", "duplicate", "reorder", "one_way")) else 0
    )
    if kinds == 0:
        raise _fail(where, "says nothing: give partition, drop, delay_ms, duplicate, reorder, one_way, twin or crash.")
    if kinds > 1:
        raise _fail(where, "mixes 'twin' or 'crash' with link faults; use separate [[network]] entries.")
    return NetworkFault(
        at_ms=at or 0,
        until_ms=until,
        partition=partition,
        drop=drop,
        delay_ms=delay_ms,
        jitter_ms=jitter_ms,
        duplicate=duplicate,
        reorder=reorder,
        reorder_ms=reorder_ms,
        one_way=one_way,
        twin=twin,
        crash=crash,
        amnesia=amnesia,
        on=on,
        down_ms=down,
        times=times,
        kinds=tuple(msg_kinds),
        from_=from_,
        to=to,
        views=tuple(views),
        seqs=tuple(seqs),
    )


def _list(t: dict, key: str, where: str) -> list:
    v = t.get(key, [])
    if not isinstance(v, list):
        raise _fail(where, f"'{key}' must be a list.")
    return v


def _byzantine(t: object, n: int, clients: int, where: str, base_dir: str = "") -> ByzantineSpec:
    if not isinstance(t, dict):
        raise _fail(where, "must be a table.")
    if ("replica" in t) == ("client" in t):
        raise _fail(where, "needs exactly one of 'replica = I' or 'client = I'.")
    has_rules = "rule" in t
    name = t.get("behaviour", "" if has_rules else None)
    if type(name) is not str or (not name and not has_rules):
        raise _fail(
            where,
            "'behaviour' must be a behaviour name (see `pbft scenario list`), FILE.py:Class or module:Class"
            " (or give [[byzantine.rule]] tables, docs/rules.md).",
        )
    params = {k: v for k, v in t.items() if k not in ("replica", "client", "behaviour")}
    if "replica" in t:
        rid = _replica(t["replica"], n, where, "replica")
        if has_rules:
            _check_rules(t["rule"], n, clients, rid, where)
            if not name and len(params) > 1:
                extra = sorted(k for k in params if k != "rule")[0]
                raise _fail(where, f"'{extra}' is a behaviour's parameter but the entry names no 'behaviour'"
                            f"{did_you_mean(extra, sorted(RULE_KEYS))}; a rule's keys go inside its"
                            " [[byzantine.rule]] table.")
        return ByzantineSpec("replica", rid, name, params, base_dir)
    c = t["client"]
    if type(c) is not int or not 0 <= c < clients:
        raise _fail(where, f"'client' must be a client index from 0 to {clients - 1}, not {c!r}.")
    if has_rules:
        from ..adversary.client_rules import parse_client_rules

        try:
            parse_client_rules(t["rule"], n, clients)
        except rules.RuleError as exc:
            raise _fail(f"{where} rule #{exc.index}", exc.text) from None
    return ByzantineSpec("client", c, name, params, base_dir)


def _check_rules(raw: object, n: int, clients: int, rid: int, where: str) -> None:
    try:
        rules.parse_rules(raw, n, clients, rid)
    except rules.RuleError as exc:
        raise _fail(f"{where} rule #{exc.index}", exc.text) from None


RULE_KEYS = rules.ALL_KEYS


def check_broken(name: str, where: str) -> str:
    """`name` if it is a broken core of pbft.adversary.broken.BROKEN, else UsageError
    listing them (with a "did you mean")."""
    from ..adversary import broken

    try:
        broken.lookup(name)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return name


def check_behaviours(s: Scenario) -> None:
    """Every behaviour named must exist: in the catalogue, or a user's class that loads
    (a relative FILE.py is looked up next to the scenario file)."""
    for i, b in enumerate(s.byzantine):
        if not b.behaviour:  # rules alone
            continue
        try:
            catalogue.lookup(b.behaviour, b.target, b.base_dir)
        except UsageError as exc:
            raise UsageError(f"{s.source} [[byzantine]] #{i + 1}: {exc}") from None


def parse_scenario(data: dict, source: str = "<scenario>") -> Scenario:
    """Validate a parsed scenario file; raise UsageError with one sentence."""
    top = f"{source}"
    known = {
        "name", "f", "seed", "workload", "byzantine", "network", "expect", "cluster", "broken", "service",
        "reconfigure", "load", "twins",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(top, f"unknown top-level field '{unknown[0]}'{did_you_mean(unknown[0], known)}.")
    broken = data.get("broken", "")
    if type(broken) is not str:
        raise _fail(top, "'broken' must be the name of a broken core (pbft.adversary.broken).")
    if broken:
        check_broken(broken, top)
    name = data.get("name", source)
    if type(name) is not str:
        raise _fail(top, "'name' must be a string.")
    f = _int(data, "f", 1, 1, MAX_F, top) or 1
    seed = _int(data, "seed", 0, 0, 2**63 - 1, top) or 0
    n = 3 * f + 1
    w = data.get("workload", {})
    if not isinstance(w, dict):
        raise _fail(top, "[workload] must be a table.")
    wwhere = f"{source} [workload]"
    unknown = sorted(set(w) - {"clients", "requests", "keys", "read_only", "think_ms"})
    if unknown:
        raise _fail(wwhere, f"unknown field '{unknown[0]}'.")
    clients = _int(w, "clients", 2, 0, MAX_CLIENTS, wwhere) or 0
    requests = _int(w, "requests", 10, 0, MAX_REQUESTS, wwhere) or 0
    keys = _int(w, "keys", 4, 1, 1 << 16, wwhere) or 1
    read_only = _prob(w, "read_only", wwhere) if "read_only" in w else 0.5
    think_ms = _int(w, "think_ms", 0, 0, 600_000, wwhere) or 0
    c = data.get("cluster", {})
    if not isinstance(c, dict):
        raise _fail(top, "[cluster] must be a table.")
    unknown = sorted(set(c) - set(CLUSTER_KEYS))
    if unknown:
        raise _fail(f"{source} [cluster]", f"unknown field '{unknown[0]}'.")
    cluster = tuple(
        (k, _int(c, k, 0, *CLUSTER_RANGES.get(k, (1, 1 << 22)), f"{source} [cluster]"))
        for k in CLUSTER_KEYS if k in c
    )
    given = dict(cluster)
    # As in a cluster file. A setting given alone is fitted to the simulator's default of
    # the other (simulation.py), so only two given together can disagree.
    if given.get("log_window", 1 << 22) < given.get("checkpoint_interval", 0):
        raise _fail(f"{source} [cluster]", f"'log_window' ({given['log_window']}) must be at least "
                                           f"'checkpoint_interval' ({given['checkpoint_interval']}).")
    if given.get("retransmit_ms", 1 << 22) < given.get("tick_ms", 0):
        raise _fail(f"{source} [cluster]", f"'retransmit_ms' ({given['retransmit_ms']}) must be at least "
                                           f"'tick_ms' ({given['tick_ms']}).")
    byz_raw = data.get("byzantine", [])
    net_raw = data.get("network", [])
    if not isinstance(byz_raw, list) or not isinstance(net_raw, list):
        raise _fail(top, "[[byzantine]] and [[network]] must be arrays of tables.")
    base_dir = os.path.dirname(os.path.abspath(source)) if os.path.isfile(source) else ""
    byz = tuple(
        _byzantine(t, n, clients, f"{source} [[byzantine]] #{i + 1}", base_dir) for i, t in enumerate(byz_raw)
    )
    targets = [b.node for b in byz]
    if len(targets) != len(set(targets)):
        raise _fail(top, "a node has two [[byzantine]] behaviours; give each node one.")
    net = tuple(_network(t, n, clients, f"{source} [[network]] #{i + 1}") for i, t in enumerate(net_raw))
    e = data.get("expect", {})
    if not isinstance(e, dict):
        raise _fail(top, "[expect] must be a table.")
    ewhere = f"{source} [expect]"
    unknown = sorted(
        set(e) - {"safety", "all_requests_complete", "max_view_changes", "liveness_ms", "catch_up"}
    )
    if unknown:
        raise _fail(ewhere, f"unknown field '{unknown[0]}'.")
    if not _bool(e, "safety", True, ewhere):
        raise _fail(ewhere, "'safety = false' is not a valid expectation: safety is always checked.")
    expect = Expect(
        safety=True,
        all_requests_complete=_bool(e, "all_requests_complete", True, ewhere),
        max_view_changes=_int(e, "max_view_changes", None, 0, 10**6, ewhere),
        liveness_ms=_int(e, "liveness_ms", 30_000, 1, 10**9, ewhere) or 30_000,
        catch_up=_bool(e, "catch_up", False, ewhere),
    )
    service = _service(data["service"], f"{source} [service]", base_dir) if "service" in data else None
    recon_raw = data.get("reconfigure", [])
    if not isinstance(recon_raw, list):
        raise _fail(top, "[[reconfigure]] must be an array of tables.")
    recon = _reconfigure_steps(recon_raw, f, clients, source)
    load_raw = data.get("load", ReplicaLoad.BUSY.value)
    loads = [x.value for x in ReplicaLoad]
    if load_raw not in loads:
        raise _fail(top, f"'load' must be one of {', '.join(map(repr, loads))}, not {load_raw!r}.")
    twins = _twins(data["twins"], n, f"{source} [twins]") if "twins" in data else None
    if twins is not None:
        _check_twins_fit(twins, net, recon, top)
    return Scenario(name, f, seed, clients, requests, keys, read_only, byz, net, cluster, expect, source, broken,  # type: ignore[arg-type]
                    service, recon, ReplicaLoad(load_raw), twins, think_ms)


TWINS_KEYS = ("replica", "round_ms", "rounds")


def _instance(v: object, n: int, twin: int, where: str) -> Instance:
    """`2` (replica 2, or the first copy of the twinned one) or `"T'"` (its twin)."""
    if type(v) is int and 0 <= v < n:
        return (v, 0)
    if v == f"{twin}{TWIN_MARK}":
        return (twin, 1)
    raise _fail(where, f"{v!r} is not an instance: replicas are 0 to {n - 1}, and the twin of replica "
                       f"{twin} is \"{twin}{TWIN_MARK}\".")


def _twins(t: object, n: int, where: str) -> Twins:
    if not isinstance(t, dict):
        raise _fail(where, "must be a table.")
    unknown = sorted(set(t) - set(TWINS_KEYS))
    if unknown:
        raise _fail(where, f"unknown field '{unknown[0]}'{did_you_mean(unknown[0], TWINS_KEYS)}.")
    for key in ("replica", "rounds"):
        if key not in t:
            raise _fail(where, f"the field '{key}' is missing.")
    twin = _replica(t["replica"], n, where, "replica")
    round_ms = _int(t, "round_ms", 1000, 1, 10**7, where) or 1000
    raw = t["rounds"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TWIN_ROUNDS:
        raise _fail(where, f"'rounds' must be a list of 1 to {MAX_TWIN_ROUNDS} partitions, one per view.")
    everyone = {(i, 0) for i in range(n)} | {(twin, 1)}
    rounds = []
    for v, groups in enumerate(raw):
        at = f"{where} round {v} (view {v})"
        if not isinstance(groups, list) or not groups or not all(isinstance(g, list) and g for g in groups):
            raise _fail(at, "must be a list of non-empty groups, like [[0, 1, 2], [3, \"3'\"]].")
        parsed = [tuple(sorted(_instance(x, n, twin, at) for x in g)) for g in groups]
        listed = [i for g in parsed for i in g]
        if len(listed) != len(set(listed)):
            raise _fail(at, "lists an instance twice.")
        missing = sorted(everyone - set(listed))
        if missing:
            raise _fail(at, f"leaves out {', '.join(instance_name(i) for i in missing)}: every instance "
                            "is in exactly one group (a group of one is cut off).")
        rounds.append(tuple(sorted(parsed)))
    return Twins(twin, round_ms, tuple(rounds))


def _check_twins_fit(twins: Twins, net: tuple[NetworkFault, ...], recon: tuple, where: str) -> None:
    """What a `[twins]` schedule is not combined with: another twin (the schedule names the
    instances it partitions), a crash of the twinned replica (a restart would not know which
    copy it is) or a reconfiguration (the schedule is for one group)."""
    if any(nf.twin is not None for nf in net):
        raise _fail(where, "[twins] twins a replica already: drop the [[network]] 'twin' entry.")
    if any(nf.crash == twins.replica for nf in net):
        raise _fail(where, f"[twins]: replica {twins.replica} is twinned and cannot also crash.")
    if recon:
        raise _fail(where, "[twins] and [[reconfigure]] cannot be combined.")


RECONFIGURE_KEYS = ("at_ms", "f", "replace", "add_clients", "remove_clients")


def _reconfigure_steps(raw: list, f: int, clients: int, source: str) -> tuple[Reconfigure, ...]:
    """`[[reconfigure]]` entries, checked against the epoch each one follows."""
    steps = []
    names = [client_name(i) for i in range(clients)]
    next_index = clients  # clients added get the next names: never one removed before
    last_at = 0
    for i, t in enumerate(raw):
        where = f"{source} [[reconfigure]] #{i + 1}"
        if not isinstance(t, dict):
            raise _fail(where, "must be a table.")
        unknown = sorted(set(t) - set(RECONFIGURE_KEYS))
        if unknown:
            raise _fail(where, f"unknown field '{unknown[0]}'{did_you_mean(unknown[0], RECONFIGURE_KEYS)}.")
        at = _int(t, "at_ms", 0, 0, 10**9, where) or 0
        if at < last_at:
            raise _fail(where, "'at_ms' must not be earlier than the previous step's.")
        last_at = at
        new_f = _int(t, "f", None, 1, MAX_F, where)
        n = 3 * f + 1
        replace = t.get("replace", [])
        if not isinstance(replace, list) or not all(type(r) is int and 0 <= r < n for r in replace):
            raise _fail(where, f"'replace' must list replica ids from 0 to {n - 1}.")
        add = _int(t, "add_clients", 0, 0, MAX_CLIENTS, where) or 0
        remove = t.get("remove_clients", [])
        if not isinstance(remove, list) or not all(isinstance(c, str) and c in names for c in remove):
            raise _fail(where, f"'remove_clients' must list clients of the epoch before ({', '.join(names)}).")
        names = [c for c in names if c not in remove]
        names += [client_name(next_index + k) for k in range(add)]
        next_index += add
        if len(names) > MAX_CLIENTS:
            raise _fail(where, f"at most {MAX_CLIENTS} clients.")
        if new_f is None and not replace and not add and not remove:
            raise _fail(where, "changes nothing: give 'f', 'replace', 'add_clients' or 'remove_clients'.")
        steps.append(Reconfigure(at, new_f, tuple(replace), add, tuple(remove)))
        f = new_f if new_f is not None else f
    return tuple(steps)


def _service(table: object, where: str, base_dir: str) -> ServiceSpec:
    """`[service]`: checked now, by making one instance, so that a class that cannot be
    loaded or made is one sentence before any run."""
    from ..adversary.loader import make_service

    problems: list[str] = []
    spec = service_spec(table, problems.append, where, base_dir)
    if spec is None:
        raise UsageError(problems[0])
    try:
        make_service(spec)
    except UsageError as exc:  # named with the file and table, as the table's own problems are
        raise UsageError(f"{where}: {exc}") from None
    return spec


def load_scenario(path: str) -> Scenario:
    try:
        check_regular(path)
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SCENARIO_FILE + 1)
        if len(raw) > MAX_SCENARIO_FILE:
            raise Unreadable(f"is larger than {MAX_SCENARIO_FILE} bytes")
        data = parse_toml(raw)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such scenario file.") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror}).") from None
    except Unreadable as why:
        raise UsageError(f"the scenario file {path!r} {why}.") from None
    s = parse_scenario(data, path)
    check_behaviours(s)
    return s


# -- writing --------------------------------------------------------------------------------


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def to_toml(s: Scenario) -> str:
    """A scenario file that replays `s` (used to print shrunk fuzz schedules)."""
    lines = [f"name = {_toml_value(s.name)}", f"f = {s.f}", f"seed = {s.seed}"]
    if s.broken:
        lines.append(f"broken = {_toml_value(s.broken)}")
    if s.load is not ReplicaLoad.BUSY:
        lines.append(f"load = {_toml_value(s.load.value)}")
    lines += ["", "[workload]"]
    lines += [f"clients = {s.clients}", f"requests = {s.requests}", f"keys = {s.keys}"]
    lines += [f"read_only = {s.read_only!r}"]
    if s.think_ms:
        lines.append(f"think_ms = {s.think_ms}")
    if s.cluster:
        lines += ["", "[cluster]"] + [f"{k} = {v}" for k, v in s.cluster]
    for b in s.byzantine:
        lines += ["", "[[byzantine]]", f"{b.target} = {b.index}"]
        if b.behaviour:
            lines.append(f"behaviour = {_toml_value(b.behaviour)}")
        lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(b.params.items()) if k != "rule"]
        raw = b.params.get("rule")
        for rule in [raw] if isinstance(raw, dict) else raw or []:
            lines += ["[[byzantine.rule]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items()]
    default = NetworkFault()
    for nf in s.network:
        lines += ["", "[[network]]"]
        for k in NetworkFault.__slots__:
            v = getattr(nf, k)
            if isinstance(v, tuple) and k != "one_way" and k != "partition":
                v = list(v)
            if k == "from_":
                if v:
                    lines.append(f"from = {_toml_value(v)}")
                continue
            if k == "at_ms" and nf.twin is None:
                lines.append(f"at_ms = {v}")
            elif v != getattr(default, k) and v is not None and v != () and v != []:
                if k == "reorder_ms" and not nf.reorder:
                    continue
                lines.append(f"{k} = {_toml_value(v)}")
    for r in s.reconfigure:
        lines += ["", "[[reconfigure]]", f"at_ms = {r.at_ms}"]
        if r.f is not None:
            lines.append(f"f = {r.f}")
        if r.replace:
            lines.append(f"replace = {_toml_value(list(r.replace))}")
        if r.add_clients:
            lines.append(f"add_clients = {r.add_clients}")
        if r.remove_clients:
            lines.append(f"remove_clients = {_toml_value(list(r.remove_clients))}")
    if s.twins is not None:
        lines += ["", "[twins]", f"replica = {s.twins.replica}", f"round_ms = {s.twins.round_ms}", "rounds = ["]
        for v, groups in enumerate(s.twins.rounds):
            text = ", ".join("[" + ", ".join(_instance_toml(i) for i in g) + "]" for g in groups)
            lines.append(f"  [{text}],  # view {v}")
        lines.append("]")
    e = s.expect
    lines += ["", "[expect]", "safety = true", f"all_requests_complete = {_toml_value(e.all_requests_complete)}"]
    if e.max_view_changes is not None:
        lines.append(f"max_view_changes = {e.max_view_changes}")
    lines.append(f"liveness_ms = {e.liveness_ms}")
    if e.catch_up:
        lines.append("catch_up = true")
    return "\n".join(lines) + "\n"


def _instance_toml(inst: Instance) -> str:
    return str(inst[0]) if inst[1] == 0 else _toml_value(instance_name(inst))
