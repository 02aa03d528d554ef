"""The validated cluster configuration and quorum sizes (docs/formats.md "The cluster file").

`parse_cluster` takes the dictionary that tomllib produced and returns a `ClusterConfig`
or raises `ConfigError` with one sentence naming the field and the problem. Reading the
file is the runtime's business (pbft/node/clusterfile.py); this module stays pure.

Every table and field the format has is listed once, in `SECTIONS`; anything else is an
error with a suggestion ("unknown field 'batchmax' (did you mean 'batch_max'?)"), and a
missing field whose misspelling is present names it. `check_cluster` finds every problem
of a file in one pass (for `pbft config check`); `parse_cluster` raises the first.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import ConfigError
from .crypto import public_key_problem
from .messages import CLIENT_NAME, Signer

# One label of a host name (RFC 1123, and the `_` that container names often carry).
HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")

OPERATOR = "operator"
"""The signer name of the operator's requests (`[operator]`): reconfigurations
(pbft.protocol.epochs). No client may take it."""


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    id: int
    host: str
    port: int
    public_key: bytes
    certificate: str = ""
    metrics: str = ""
    """`HOST:PORT` to serve this replica's Prometheus metrics on, "" for none."""
    verify_threads: int = 0
    """Worker threads that check signatures before the core steps them (0: inline on
    the event loop; pbft.node.preverify). Default VERIFY_THREADS."""


@dataclass(frozen=True, slots=True)
class ClientInfo:
    id: str
    public_key: bytes
    certificate: str = ""


LINGER_MS = 10_000
"""`linger_ms` when the cluster file gives none: long enough for a crashed member to
restart and ask a few times (a member down for longer is helped by restarting the
removed replica, which lingers again)."""

LINGER_MAX_MS = 300_000
"""The most a removed replica lingers after it retired, however often it is asked: the
old key is not kept on line for as long as a faulty peer keeps asking. Also the largest
`linger_ms`."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    cluster_id: str
    f: int
    replicas: tuple[ReplicaInfo, ...]
    clients: tuple[ClientInfo, ...] = ()
    checkpoint_interval: int = 128
    log_window: int = 256
    batch_max: int = 256
    pipeline: int = 8
    view_change_timeout_ms: int = 1000
    tick_ms: int = 10
    retransmit_ms: int = 250
    linger_ms: int = LINGER_MS
    """`[cluster] linger_ms`: how long a replica removed by a change keeps answering the
    replicas left behind after it retired or last answered one (replica.py,
    `_on_received_retired`); never longer than LINGER_MAX_MS after it retired."""
    tls_ca: str = ""
    fsync: str = "always"
    """`[storage] fsync`: the replicas' durability policy (pbft.node.storage)."""
    service: ServiceSpec | None = None
    """`[service]`: the replicated state machine (None: the built-in key-value store)."""
    base_dir: str = "."
    epoch: int = 0
    """The configuration epoch (pbft.protocol.epochs): 0 is the cluster file's; each
    operator reconfiguration ordered through consensus makes the next."""
    operator_key: bytes = b""
    """`[operator] public_key`: who may reconfigure the group (b"": nobody)."""
    earlier: tuple[ClusterConfig, ...] = field(default=(), compare=False, repr=False)
    """The configurations of the epochs before this one, oldest first (the cluster
    file's `[[epoch]]` entries applied to its tables; pbft.protocol.epochs)."""
    commands: tuple[tuple[int, int, bytes], ...] = field(default=(), compare=False, repr=False)
    """The `[[epoch]]` entries themselves: (epoch, after, the operator's signed command)."""
    client_index: dict[str, ClientInfo] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.client_index:
            self.client_index.update({c.id: c for c in self.clients})

    @property
    def signing_domain(self) -> str:
        """What every signature binds besides the message: the cluster id, and when a
        `[service]` names the replicated class, that table as written (its class and
        parameters, hashed). Replicas and clients whose cluster files name different
        services cannot count one another's messages (docs/services.md, "Identity")."""
        if self.service is None:
            return self.cluster_id
        return f"{self.cluster_id}/service={self.service.digest()}"

    @property
    def replica_domain(self) -> str:
        """What a replica's signature binds: the signing domain and, from epoch 1 on, the
        epoch, so that nothing a replica signed under one configuration counts under
        another (pbft.protocol.epochs). Clients sign with `signing_domain`: a request is
        not about a configuration, and a client need not know the epoch to be heard."""
        if self.epoch == 0:
            return self.signing_domain
        return f"{self.signing_domain}/epoch={self.epoch}"

    # Quorum sizes, OSDI'99 section 4: any two sets of 2f+1 intersect in a correct replica;
    # f+1 always contain one.
    @property
    def n(self) -> int:
        return 3 * self.f + 1

    @property
    def quorum(self) -> int:
        return 2 * self.f + 1

    @property
    def weak_quorum(self) -> int:
        return self.f + 1

    def primary(self, view: int) -> int:
        return view % self.n

    def replica_ids(self) -> range:
        return range(self.n)

    @property
    def requester_count(self) -> int:
        """len(requesters), cheaply (the bounds of every step ask it)."""
        return len(self.client_index) + (1 if self.operator_key else 0)

    @property
    def requesters(self) -> tuple[str, ...]:
        """Who may send requests: the clients, and the operator if there is one."""
        names = tuple(c.id for c in self.clients)
        return (*names, OPERATOR) if self.operator_key else names

    def member_keys(self) -> dict[Signer, bytes]:
        keys: dict[Signer, bytes] = {r.id: r.public_key for r in self.replicas}
        keys.update({c.id: c.public_key for c in self.clients})
        if self.operator_key:
            keys[OPERATOR] = self.operator_key
        return keys


# ---------------------------------------------------------------------------- the schema

FSYNC_VALUES = ("always", "batch", "off")
"""`[storage] fsync` policies (pbft.node.storage.FSYNC_POLICIES maps them to SQLite)."""

VERIFY_THREADS = 0
"""`[[replica]] verify_threads` when an entry gives none: inline verification measured
best with 4 replicas sharing a 2-core host (docs/architecture.md, "Verifying on worker
threads"); a replica with a host of its own gains from 1 or 2."""
MAX_VERIFY_THREADS = 64
"""The most `verify_threads` a [[replica]] entry may ask for."""

SECTIONS: dict[str, tuple[str, ...]] = {
    "cluster": (
        "id", "f", "checkpoint_interval", "log_window", "batch_max", "pipeline",
        "view_change_timeout_ms", "tick_ms", "retransmit_ms", "linger_ms",
    ),
    "tls": ("ca",),
    "storage": ("fsync",),
    "service": ("class",),  # and the service's own parameters (`service_spec`)
    "replica": ("id", "address", "public_key", "certificate", "metrics", "verify_threads"),
    "client": ("id", "public_key", "certificate"),
    "operator": ("public_key", "certificate"),
    "epoch": ("epoch", "after", "command"),
}
"""Every table of a cluster file and every field it may hold. A field added to the format
is added here, or every command refuses the files that use it: an unknown key is always a
mistake (a misspelt `batchmax = 12` silently ignored is a setting the operator thinks is
in force and is not)."""

ARRAYS = frozenset({"replica", "client", "epoch"})
"""The sections written `[[name]]`, one table per member."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "": ("cluster", "replica"),
    "cluster": ("id", "f"),
    "tls": (),
    "storage": (),
    "service": ("class",),
    "replica": ("id", "address", "public_key"),
    "client": ("id", "public_key"),
    "operator": ("public_key",),
    "epoch": ("epoch", "command"),
}


def section_name(section: str) -> str:
    """How a section is written in the file: `[cluster]` or `[[replica]]`."""
    return f"[[{section}]]" if section in ARRAYS else f"[{section}]"


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate `word` is most likely a misspelling of (difflib, case-insensitive)."""
    by_lower: dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def _hint(key: str, section: str) -> str:
    """What to say after "unknown field 'key'": a spelling, the section it belongs in, or
    the fields this section knows."""
    known = SECTIONS[section]
    match = close_match(key, known)
    if match is not None:
        return f"did you mean '{match}'?"
    for other, fields in SECTIONS.items():
        if other != section and key in fields:
            return f"it belongs in {section_name(other)}"
    return f"known: {', '.join(known)}"


def _top_level_name(key: str, value: object) -> str:
    if isinstance(value, dict):
        return f"[{key}]"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"[[{key}]]"
    return f"'{key}'"


class _Problems:
    """The errors found so far, in file order; the parse goes on after each one so that
    `pbft config check` can report them all at once."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, text: str) -> None:
        self.errors.append(text)

    def fields(self, table: dict, section: str, where: str) -> None:
        """Report missing required fields (naming a present misspelling of one) and
        unknown fields (with a suggestion)."""
        unknown = [k for k in table if k not in SECTIONS[section]]
        for key in REQUIRED[section]:
            if key in table:
                continue
            typo = close_match(key, unknown)
            if typo is None:
                self.fail(f"{where}: the field '{key}' is missing.")
            else:
                unknown.remove(typo)
                self.fail(f"{where}: the field '{key}' is missing (is '{typo}' a misspelling of it?).")
        for key in unknown:
            self.fail(f"{where}: unknown field '{key}' ({_hint(key, section)}).")

    def top_level(self, data: dict) -> None:
        """The same for the tables of the file itself."""
        unknown = [k for k in data if k not in SECTIONS]
        for section in REQUIRED[""]:
            if section in data:
                continue
            typo = close_match(section, unknown)
            what = "table" if section not in ARRAYS else "entries"
            text = f"the cluster file has no {section_name(section)} {what}"
            if typo is None:
                self.fail(f"{text}.")
            else:
                unknown.remove(typo)
                shown = _top_level_name(typo, data[typo])
                self.fail(f"{text} (is {shown} a misspelling of it?).")
        for key in unknown:
            shown = _top_level_name(key, data[key])
            match = close_match(key, SECTIONS)
            if match is not None:
                hint = f"did you mean {section_name(match)}?"
            else:
                home = next((s for s, fields in SECTIONS.items() if key in fields), None)
                hint = (
                    f"it belongs in {section_name(home)}" if home and not shown.startswith("[")
                    else f"known: {', '.join(section_name(s) for s in SECTIONS)}"
                )
            kind = "table" if shown.startswith("[") else "top-level field"
            self.fail(f"unknown {kind} {shown} ({hint}).")

    def req(self, table: dict, key: str, kind: type, where: str):
        """The value of a required field, or None (missing: `fields` said so; wrong type:
        said here)."""
        if key not in table:
            return None
        value = table[key]
        if kind is int and type(value) is not int:
            self.fail(f"{where}: '{key}' must be an integer, not {value!r}.")
            return None
        if kind is str and type(value) is not str:
            self.fail(f"{where}: '{key}' must be a string, not {value!r}.")
            return None
        return value

    def opt_int(self, table: dict, key: str, default: int, lo: int, hi: int, where: str) -> int:
        value = table.get(key, default)
        if type(value) is not int or not lo <= value <= hi:
            self.fail(f"{where}: '{key}' must be an integer from {lo} to {hi}, not {value!r}.")
            return default if lo <= default <= hi else lo
        return value

    def path(self, table: dict, key: str, where: str) -> str:
        value = table.get(key, "")
        if not isinstance(value, str):
            self.fail(f"{where}: '{key}' must be a path.")
            return ""
        if "\x00" in value:  # no file has one; open() would raise on it
            self.fail(f"{where}: '{key}' must be a path without a NUL character.")
            return ""
        return value

    def table(self, data: dict, section: str) -> dict:
        """A single-table section, {} if absent or not a table (said so)."""
        value = data.get(section, {})
        if not isinstance(value, dict):
            self.fail(f"[{section}] must be a table.")
            return {}
        self.fields(value, section, f"[{section}]")
        return value

    def entries(self, data: dict, section: str) -> list[tuple[str, dict]]:
        """The tables of an array section with the name of each (`[[replica]] #2`)."""
        value = data.get(section, [])
        if isinstance(value, dict):
            self.fail(f"[{section}] must be written [[{section}]], one table per {section}.")
            return []
        if not isinstance(value, list):
            self.fail(f"[[{section}]] entries must be tables.")
            return []
        out = []
        for i, entry in enumerate(value):
            where = f"[[{section}]] #{i + 1}"
            if not isinstance(entry, dict):
                self.fail(f"{where} must be a table.")
                continue
            self.fields(entry, section, where)
            out.append((where, entry))
        return out


@dataclass(frozen=True)
class ServiceSpec:
    """`[service]` of a cluster or scenario file: the class (`module.path:Class` or
    `FILE.py:Class`, a FILE relative to `base_dir`) and the keyword arguments it is made
    with. Loading it is the runtime's (pbft.adversary.loader, target "service")."""

    ref: str
    params: tuple[tuple[str, bool | int | float | str], ...] = ()
    base_dir: str = ""
    identity: str = ""
    """`identity = "name version"`: what the class must say it is (`Service.identity()`);
    every replica checks it when it loads the class, and it is bound into the signing
    domain with the rest of the table. Empty: not checked."""

    def kwargs(self) -> dict[str, bool | int | float | str]:
        return dict(self.params)

    def digest(self) -> str:
        """16 hex digits naming the class, its identity and parameters as written (the
        signing domain's)."""
        import hashlib
        import json

        fields = [self.ref, [list(p) for p in self.params]]
        if self.identity:
            fields.append(self.identity)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def service_spec(table: object, fail, where: str, base_dir: str = "") -> ServiceSpec | None:
    """The `[service]` table as a ServiceSpec; `fail(sentence)` for each problem (then
    None): not a table, no `class` string, a parameter that is not a boolean, integer,
    float or string."""
    if not isinstance(table, dict):
        fail(f"{where} must be a table.")
        return None
    if "class" not in table:
        typo = close_match("class", list(table))
        hint = f" (is '{typo}' a misspelling of it?)" if typo is not None else ""
        fail(f"{where}: the field 'class' is missing{hint}.")
        return None
    ref = table.get("class")
    if not isinstance(ref, str) or ":" not in ref:
        fail(f"{where}: 'class' must be a string naming module.path:Class or FILE.py:Class.")
        return None
    identity = table.get("identity", "")
    if not isinstance(identity, str) or (identity and not identity.isprintable()):
        fail(f"{where}: 'identity' must be a string, the service's \"name version\".")
        return None
    class_dir = table.get("class_dir", "")
    if not isinstance(class_dir, str):
        fail(f"{where}: 'class_dir' must be a string, the directory a FILE.py in 'class' is found from.")
        return None
    if class_dir:
        # Where a relative FILE.py in `class` is found (a copy of the cluster file in
        # another directory, written by `pbft admin`): not hashed into the signing
        # domain (`ServiceSpec.digest`), so the copy keeps `class` as written.
        import os

        class_dir = os.path.expanduser(class_dir)
        base_dir = os.path.normpath(os.path.join(base_dir, class_dir)) if base_dir else class_dir
    params = []
    for key, value in table.items():
        if key in ("class", "identity", "class_dir"):
            continue
        if not isinstance(value, bool | int | float | str):
            fail(f"{where}: parameter '{key}' must be a boolean, integer, float or string.")
            return None
        params.append((key, value))
    return ServiceSpec(ref, tuple(sorted(params)), base_dir, identity)


def _hexkey(value: object, where: str, problems: _Problems) -> bytes | None:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        problems.fail(f"{where}: 'public_key' must be 64 hex digits (an Ed25519 key).")
        return None
    why = public_key_problem(raw)
    if why is not None:
        problems.fail(f"{where}: 'public_key' is {why}.")
        return None
    return raw


def split_hostport(value: object, lowest_port: int = 1) -> tuple[str, int] | None:
    """`HOST:PORT` -> (host, port), or None if it is not one: HOST a host name or IPv4
    address (letters, digits, '-' and '_' in dot-separated labels, at most 253
    characters) or an IPv6 address in brackets; PORT ASCII digits."""
    if not isinstance(value, str):
        return None
    host, colon, port = value.rpartition(":")
    # str.isdigit() takes other scripts' digits too, which int() reads but no resolver does.
    if not colon or not (port.isascii() and port.isdigit()) or not lowest_port <= int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return host[1:-1], int(port)
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name may end in a dot
    if len(name) > 253 or not all(HOST_LABEL.match(label) for label in name.split(".")):
        return None
    return host, int(port)


# ---------------------------------------------------------------------------- parsing


def parse_cluster(data: dict, base_dir: str = ".") -> ClusterConfig:
    """Validate a parsed cluster file. Raises ConfigError with one sentence: the first
    problem of those `check_cluster` finds."""
    config, errors = check_cluster(data, base_dir)
    if errors:
        raise ConfigError(errors[0])
    assert config is not None
    return config


def check_cluster(data: object, base_dir: str = ".") -> tuple[ClusterConfig | None, list[str]]:
    """Validate a parsed cluster file and report every problem, in file order: (the
    config, []) if it is good, else (None, one sentence per problem)."""
    p = _Problems()
    if not isinstance(data, dict):
        return None, ["the cluster file must be a TOML table."]
    p.top_level(data)

    cluster = data.get("cluster", {})
    if not isinstance(cluster, dict):
        p.fail("[cluster] must be a table.")
        cluster = {}
    elif "cluster" in data:
        p.fields(cluster, "cluster", "[cluster]")
    cid = p.req(cluster, "id", str, "[cluster]")
    if cid is not None and (not cid or len(cid.encode()) > 255):
        p.fail("[cluster]: 'id' must be a non-empty string of at most 255 bytes.")
    f = None
    if "f" in cluster:
        before = len(p.errors)
        f = p.opt_int(cluster, "f", 1, 1, 33, "[cluster]")
        if len(p.errors) > before:
            f = None  # said so; do not count replicas against a guess
    k = p.opt_int(cluster, "checkpoint_interval", 128, 1, 1 << 20, "[cluster]")
    window = p.opt_int(cluster, "log_window", 2 * k, 1, 1 << 22, "[cluster]")
    if window < k:
        p.fail(f"[cluster]: 'log_window' ({window}) must be at least 'checkpoint_interval' ({k}).")
    batch_max = p.opt_int(cluster, "batch_max", 256, 1, 4096, "[cluster]")
    # The default is 8 only where the window allows it: a file with a smaller window
    # and no `pipeline` was refused for a value nobody wrote.
    pipeline = p.opt_int(cluster, "pipeline", min(8, window), 1, window, "[cluster]")
    vct = p.opt_int(cluster, "view_change_timeout_ms", 1000, 10, 3_600_000, "[cluster]")
    tick = p.opt_int(cluster, "tick_ms", 10, 1, 1000, "[cluster]")
    retransmit = p.opt_int(cluster, "retransmit_ms", 250, tick, 3_600_000, "[cluster]")
    linger = p.opt_int(cluster, "linger_ms", LINGER_MS, 0, LINGER_MAX_MS, "[cluster]")

    tls = p.table(data, "tls")
    ca = p.path(tls, "ca", "[tls]")
    storage = p.table(data, "storage")
    fsync = storage.get("fsync", FSYNC_VALUES[0])
    if fsync not in FSYNC_VALUES:
        p.fail(f"[storage]: 'fsync' must be \"always\", \"batch\" or \"off\", not {fsync!r}.")
        fsync = FSYNC_VALUES[0]

    service = service_spec(data.get("service"), p.fail, "[service]", base_dir) if "service" in data else None
    operator = p.table(data, "operator") if "operator" in data else {}
    operator_key = b""
    if "public_key" in operator:
        operator_key = _hexkey(operator["public_key"], "[operator]", p) or b""
    replicas = _replicas(data, f, p)
    clients = _clients(data, p)
    if p.errors or f is None or cid is None:
        return None, p.errors or ["the cluster file is incomplete."]
    config = ClusterConfig(
        cluster_id=cid,
        f=f,
        replicas=tuple(replicas[i] for i in range(3 * f + 1)),
        clients=tuple(clients.values()),
        checkpoint_interval=k,
        log_window=window,
        batch_max=batch_max,
        pipeline=pipeline,
        view_change_timeout_ms=vct,
        tick_ms=tick,
        retransmit_ms=retransmit,
        linger_ms=linger,
        tls_ca=ca,
        fsync=fsync,
        service=service,
        base_dir=base_dir,
        operator_key=operator_key,
    )
    if "epoch" in data:
        config = _apply_epochs(config, data, p)
        if p.errors:
            return None, p.errors
    return config, []


def _apply_epochs(config: ClusterConfig, data: dict, p: _Problems) -> ClusterConfig:
    """The `[[epoch]]` entries, in order: each the operator's signed command that made
    the next epoch (pbft.protocol.epochs), checked against the operator's key and
    applied. The tables above them are epoch 0; the result is the latest epoch."""
    from dataclasses import replace

    from .crypto import Verifier
    from .epochs import apply, parse_operation
    from .messages import Request, decode_envelope

    earlier: list[ClusterConfig] = []
    commands: list[tuple[int, int, bytes]] = []
    for where, entry in p.entries(data, "epoch"):
        epoch = p.req(entry, "epoch", int, where)
        after = entry.get("after", 0)
        text = p.req(entry, "command", str, where)
        if epoch is None or text is None:
            return config
        if epoch != config.epoch + 1:
            p.fail(f"{where}: 'epoch' must be {config.epoch + 1}, the next one, not {epoch}.")
            return config
        if type(after) is not int or after < 0:
            p.fail(f"{where}: 'after' must be a non-negative integer.")
            return config
        if not config.operator_key:
            p.fail(f"{where}: an [[epoch]] entry needs the [operator] key that signed it.")
            return config
        try:
            command = bytes.fromhex(text)
            env, req = decode_envelope(command)
            verifier = Verifier(config.signing_domain, {OPERATOR: config.operator_key})
            if not isinstance(req, Request) or env.signer != OPERATOR or not verifier.verify(env):
                raise ValueError("it is not a request the operator signed")
            number, membership = parse_operation(req.operation)
            if number != epoch:
                raise ValueError(f"the command is for epoch {number}")
        except ValueError as exc:
            p.fail(f"{where}: 'command' does not hold the operator's command for epoch {epoch} ({exc}).")
            return config
        earlier.append(config)
        commands.append((epoch, after, command))
        config = apply(config, epoch, membership)
    return replace(config, earlier=tuple(earlier), commands=tuple(commands))


def _replicas(data: dict, f: int | None, p: _Problems) -> dict[int, ReplicaInfo]:
    raw = data.get("replica")
    if raw is None:
        return {}  # said by top_level
    if isinstance(raw, list) and not raw:
        p.fail("the cluster file has no [[replica]] entries.")
        return {}
    entries = p.entries(data, "replica")
    n = 3 * f + 1 if f is not None else None
    if n is not None and isinstance(raw, list) and len(raw) != n:
        p.fail(f"f = {f} needs exactly n = 3f+1 = {n} [[replica]] entries, found {len(raw)}.")
    replicas: dict[int, ReplicaInfo] = {}
    # Every id and address seen, whether or not the rest of its entry is good: a duplicate
    # is reported with the entry's other problems, not only once they are mended.
    seen_ids: set[int] = set()
    seen_addr: set[tuple[str, int]] = set()
    for where, r in entries:
        rid = p.req(r, "id", int, where)
        if rid is not None:
            if rid < 0 or (n is not None and rid >= n):
                upper = n - 1 if n is not None else "n-1"
                p.fail(f"{where}: 'id' must be between 0 and {upper}, not {rid}.")
                rid = None
            elif rid in seen_ids:
                p.fail(f"{where}: replica id {rid} appears twice.")
                rid = None
            else:
                seen_ids.add(rid)
        address = p.req(r, "address", str, where)
        hostport = split_hostport(address) if address is not None else None
        if address is not None and hostport is None:
            p.fail(f"{where}: 'address' must look like HOST:PORT, not {address!r}.")
        if hostport is not None:
            if hostport in seen_addr:
                p.fail(f"{where}: address {hostport[0]}:{hostport[1]} is used by two replicas.")
            seen_addr.add(hostport)
        public = p.req(r, "public_key", str, where)
        key = _hexkey(public, where, p) if public is not None else None
        cert = p.path(r, "certificate", where)
        metrics = r.get("metrics", "")
        if metrics != "" and split_hostport(metrics, lowest_port=0) is None:
            p.fail(f"{where}: 'metrics' must look like HOST:PORT, not {metrics!r}.")
            metrics = ""
        threads = p.opt_int(r, "verify_threads", VERIFY_THREADS, 0, MAX_VERIFY_THREADS, where)
        if rid is not None and hostport is not None and key is not None:
            replicas[rid] = ReplicaInfo(rid, hostport[0], hostport[1], key, cert, metrics, threads)
    return replicas


def _clients(data: dict, p: _Problems) -> dict[str, ClientInfo]:
    clients: dict[str, ClientInfo] = {}
    seen: set[str] = set()  # as for replicas: a duplicate is reported whatever else is wrong
    for where, c in p.entries(data, "client"):
        name = p.req(c, "id", str, where)
        if name is not None and not CLIENT_NAME.match(name):
            p.fail(f"{where}: 'id' must be 1-64 letters, digits, '.', '_' or '-'.")
            name = None
        if name == OPERATOR:
            p.fail(f"{where}: the client id {OPERATOR!r} is reserved for [operator].")
            name = None
        if name is not None and name in seen:
            p.fail(f"{where}: client id {name!r} appears twice.")
            name = None
        elif name is not None:
            seen.add(name)
        cert = p.path(c, "certificate", where)
        public = p.req(c, "public_key", str, where)
        key = _hexkey(public, where, p) if public is not None else None
        if name is not None and key is not None:
            clients[name] = ClientInfo(name, key, cert)
    return clients
