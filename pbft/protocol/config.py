"""The validated cluster configuration and quorum sizes (DESIGN.md section 4).

`parse_cluster` takes the dictionary that tomllib produced and returns a `ClusterConfig`
or raises `ConfigError` with one sentence naming the field and the problem. Reading the
file is the runtime's business (pbft/runtime/clusterfile.py); this module stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import CLIENT_NAME, Signer


class ConfigError(ValueError):
    """An operator mistake in the cluster file: one clear sentence."""


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    id: int
    host: str
    port: int
    public_key: bytes
    certificate: str = ""


@dataclass(frozen=True, slots=True)
class ClientInfo:
    id: str
    public_key: bytes
    certificate: str = ""


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
    tls_ca: str = ""
    base_dir: str = "."
    client_index: dict[str, ClientInfo] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.client_index:
            self.client_index.update({c.id: c for c in self.clients})

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

    def member_keys(self) -> dict[Signer, bytes]:
        keys: dict[Signer, bytes] = {r.id: r.public_key for r in self.replicas}
        keys.update({c.id: c.public_key for c in self.clients})
        return keys

    def with_clients(self, clients: tuple[ClientInfo, ...]) -> ClusterConfig:
        from dataclasses import replace

        return replace(self, clients=clients, client_index={})


def _req(table: dict, key: str, kind: type, where: str):
    if key not in table:
        raise ConfigError(f"{where}: the field '{key}' is missing.")
    value = table[key]
    if kind is int and (type(value) is not int):
        raise ConfigError(f"{where}: '{key}' must be an integer, not {value!r}.")
    if kind is str and type(value) is not str:
        raise ConfigError(f"{where}: '{key}' must be a string, not {value!r}.")
    return value


def _opt_int(table: dict, key: str, default: int, lo: int, hi: int, where: str) -> int:
    value = table.get(key, default)
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError(f"{where}: '{key}' must be an integer from {lo} to {hi}, not {value!r}.")
    return value


def _hexkey(value: object, where: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{where}: 'public_key' must be 64 hex digits (an Ed25519 key).")
    return raw


def _address(value: object, where: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{where}: 'address' must look like HOST:PORT, not {value!r}.")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: 'address' must look like HOST:PORT, not {value!r}.")
    return host.strip("[]"), int(port)


def parse_cluster(data: dict, base_dir: str = ".") -> ClusterConfig:
    """Validate a parsed cluster file. Raises ConfigError with one sentence."""
    if not isinstance(data, dict):
        raise ConfigError("the cluster file must be a TOML table.")
    cluster = data.get("cluster")
    if not isinstance(cluster, dict):
        raise ConfigError("the cluster file has no [cluster] table.")
    cid = _req(cluster, "id", str, "[cluster]")
    if not cid or len(cid.encode()) > 255:
        raise ConfigError("[cluster]: 'id' must be a non-empty string of at most 255 bytes.")
    f = _opt_int(cluster, "f", -1, 1, 33, "[cluster]") if "f" in cluster else None
    if f is None:
        raise ConfigError("[cluster]: the field 'f' is missing.")
    k = _opt_int(cluster, "checkpoint_interval", 128, 1, 1 << 20, "[cluster]")
    window = _opt_int(cluster, "log_window", 2 * k, 1, 1 << 22, "[cluster]")
    if window < k:
        raise ConfigError(
            f"[cluster]: 'log_window' ({window}) must be at least 'checkpoint_interval' ({k})."
        )
    batch_max = _opt_int(cluster, "batch_max", 256, 1, 4096, "[cluster]")
    pipeline = _opt_int(cluster, "pipeline", 8, 1, window, "[cluster]")
    vct = _opt_int(cluster, "view_change_timeout_ms", 1000, 10, 3_600_000, "[cluster]")
    tick = _opt_int(cluster, "tick_ms", 10, 1, 1000, "[cluster]")
    retransmit = _opt_int(cluster, "retransmit_ms", 250, tick, 3_600_000, "[cluster]")

    tls = data.get("tls", {})
    if not isinstance(tls, dict):
        raise ConfigError("[tls] must be a table.")
    ca = tls.get("ca", "")
    if not isinstance(ca, str):
        raise ConfigError("[tls]: 'ca' must be a path.")

    raw_replicas = data.get("replica")
    if not isinstance(raw_replicas, list) or not raw_replicas:
        raise ConfigError("the cluster file has no [[replica]] entries.")
    n = 3 * f + 1
    if len(raw_replicas) != n:
        raise ConfigError(
            f"f = {f} needs exactly n = 3f+1 = {n} [[replica]] entries, found {len(raw_replicas)}."
        )
    replicas: dict[int, ReplicaInfo] = {}
    seen_addr: set[tuple[str, int]] = set()
    for i, r in enumerate(raw_replicas):
        where = f"[[replica]] #{i + 1}"
        if not isinstance(r, dict):
            raise ConfigError(f"{where} must be a table.")
        rid = _req(r, "id", int, where)
        if not 0 <= rid < n:
            raise ConfigError(f"{where}: 'id' must be between 0 and {n - 1}, not {rid}.")
        if rid in replicas:
            raise ConfigError(f"{where}: replica id {rid} appears twice.")
        host, port = _address(_req(r, "address", str, where), where)
        if (host, port) in seen_addr:
            raise ConfigError(f"{where}: address {host}:{port} is used by two replicas.")
        seen_addr.add((host, port))
        key = _hexkey(_req(r, "public_key", str, where), where)
        cert = r.get("certificate", "")
        if not isinstance(cert, str):
            raise ConfigError(f"{where}: 'certificate' must be a path.")
        replicas[rid] = ReplicaInfo(rid, host, port, key, cert)

    clients: dict[str, ClientInfo] = {}
    raw_clients = data.get("client", [])
    if not isinstance(raw_clients, list):
        raise ConfigError("[[client]] entries must be tables.")
    for i, c in enumerate(raw_clients):
        where = f"[[client]] #{i + 1}"
        if not isinstance(c, dict):
            raise ConfigError(f"{where} must be a table.")
        name = _req(c, "id", str, where)
        if not CLIENT_NAME.match(name):
            raise ConfigError(f"{where}: 'id' must be 1-64 letters, digits, '.', '_' or '-'.")
        if name in clients:
            raise ConfigError(f"{where}: client id {name!r} appears twice.")
        cert = c.get("certificate", "")
        if not isinstance(cert, str):
            raise ConfigError(f"{where}: 'certificate' must be a path.")
        clients[name] = ClientInfo(name, _hexkey(_req(c, "public_key", str, where), where), cert)

    return ClusterConfig(
        cluster_id=cid,
        f=f,
        replicas=tuple(replicas[i] for i in range(n)),
        clients=tuple(clients.values()),
        checkpoint_interval=k,
        log_window=window,
        batch_max=batch_max,
        pipeline=pipeline,
        view_change_timeout_ms=vct,
        tick_ms=tick,
        retransmit_ms=retransmit,
        tls_ca=ca,
        base_dir=base_dir,
    )
