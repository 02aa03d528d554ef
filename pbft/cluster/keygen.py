"""`pbft keygen`: a cluster CA, one Ed25519 identity per node, and the cluster file.

Theory of operation. A cluster is one directory (layout in clusterfile.py). The CA is a
self-signed Ed25519 certificate; each replica and client gets an Ed25519 key and a
certificate for that key signed by the CA, and the cluster file lists every node's public
key. The public key in the cluster file is what identifies a node, both for message
signatures and for TLS channels (tls.peer_id); the certificate's CN is only for humans.

Writing order matters for a crash halfway: keys and certificates first, the cluster file
last and atomically (temporary file, then rename), so a directory either has a complete
cluster file whose files all exist or no cluster file at all. Before anything is written,
the cluster file we are about to write is validated with the same `parse_cluster` the
replicas use, so keygen cannot produce a file the replicas would refuse.

Private keys are written with mode 0600 from the moment the file exists (os.open with the
mode, then fchmod in case the file pre-existed or the umask interfered). With a passphrase
(`--passphrase-env VAR` or `--passphrase-file FILE`) every private key, the CA's included,
is written encrypted (PKCS8 with the best encryption `cryptography` offers); replicas and
clients then need it in PBFT_KEY_PASSPHRASE or PBFT_KEY_PASSPHRASE_FILE
(pbft.node.clusterfile.key_passphrase).
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pbft.errors import ConfigError, UsageError
from pbft.protocol.config import OPERATOR, parse_cluster
from pbft.protocol.messages import CLIENT_NAME, Signer

from ..node.clusterfile import (
    CA_CERT,
    CA_KEY,
    CLUSTER_FILE,
    ca_key_path,
    ca_path,
    load_cluster,
    node_files,
    node_stem,
    read_certificate,
    read_private_key,
)

CERT_VALIDITY = datetime.timedelta(days=3650)
CLOCK_SKEW = datetime.timedelta(hours=1)
"""Certificates start this long in the past, so a host whose clock lags still accepts them."""

DEFAULT_SETTINGS: dict[str, int] = {
    "checkpoint_interval": 128,
    "log_window": 256,
    "batch_max": 256,
    "view_change_timeout_ms": 1000,
}
"""Written into every [cluster] table (docs/formats.md, "The cluster file")."""

TUNABLE = frozenset({*DEFAULT_SETTINGS, "pipeline", "tick_ms", "retransmit_ms", "linger_ms"})
"""The [cluster] settings `generate_cluster(**cluster_settings)` may override."""

MAX_F = 33
"""Largest f parse_cluster accepts."""


@dataclass(frozen=True, slots=True)
class _Issued:
    """A freshly made node key (PEM) and its certificate (PEM)."""

    key_pem: bytes
    cert_pem: bytes
    public: bytes


# ---------------------------------------------------------------------------- certificates


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str, cluster_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"pbft cluster {cluster_id}"[:64]),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _key_pem(key: Ed25519PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS8 PEM, encrypted with `passphrase` if one is given."""
    how: KeySerializationEncryption = (
        BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    )
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, how)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def make_ca(cluster_id: str) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A self-signed Ed25519 CA that may sign leaf certificates only (path length 0)."""
    key = Ed25519PrivateKey.generate()
    name = _name(f"pbft CA {cluster_id}", cluster_id)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, algorithm=None)  # Ed25519 has its hash built in
    )
    return key, cert


def issue(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    cluster_id: str,
    node_id: Signer,
    passphrase: bytes | None = None,
) -> _Issued:
    """A new Ed25519 identity key for `node_id` and its certificate signed by the CA."""
    key = Ed25519PrivateKey.generate()
    is_replica = isinstance(node_id, int)
    # Replicas both accept and open connections; clients only open them.
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if is_replica:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(node_stem(node_id), cluster_id))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, algorithm=None)
    )
    return _Issued(_key_pem(key, passphrase), cert.public_bytes(Encoding.PEM), _raw_public(key))


# ---------------------------------------------------------------------------- writing files


def _write_private(path: str, data: bytes) -> None:
    """Write a private key file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may have existed with a wider mode (--force)
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_public(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _write_atomic(path: str, text: str) -> None:
    """Replace `path` with `text` so readers see the old file or the new one, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".cluster-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _toml_str(value: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"{host}:{port}"


def _render(
    cluster_id: str,
    f: int,
    settings: dict[str, int],
    replicas: list[tuple[int, str, bytes]],
    clients: list[tuple[str, bytes]],
    operator: bytes = b"",
) -> str:
    lines = [
        "# pbft cluster file written by `pbft keygen`; paths are relative to this file.",
        "[cluster]",
        f"id = {_toml_str(cluster_id)}",
        f"f = {f}",
        *(f"{k} = {v}" for k, v in settings.items()),
        "",
        "[tls]",
        f"ca = {_toml_str(CA_CERT)}",
    ]
    for rid, address, public in replicas:
        lines += [
            "",
            "[[replica]]",
            f"id = {rid}",
            f"address = {_toml_str(address)}",
            f'public_key = "{public.hex()}"',
            f"certificate = {_toml_str(node_stem(rid) + '.pem')}",
        ]
    for name, public in clients:
        lines += _client_block(name, public)
    if operator:
        lines += [
            "",
            "# Who may change the group through consensus (`pbft admin`; docs/reconfiguration.md).",
            "[operator]",
            f'public_key = "{operator.hex()}"',
            f"certificate = {_toml_str(node_stem(OPERATOR) + '.pem')}",
        ]
    return "\n".join(lines) + "\n"


def _client_block(name: str, public: bytes) -> list[str]:
    return [
        "",
        "[[client]]",
        f"id = {_toml_str(name)}",
        f'public_key = "{public.hex()}"',
        f"certificate = {_toml_str(node_stem(name) + '.pem')}",
    ]


# ---------------------------------------------------------------------------- validation


def _check_clients(clients: list[str]) -> None:
    seen: set[str] = set()
    for name in clients:
        if not isinstance(name, str) or not CLIENT_NAME.match(name):
            raise UsageError(
                f"the client name {name!r} must be 1-64 letters, digits, '.', '_' or '-'."
            )
        if name in seen:
            raise UsageError(f"the client name {name!r} is given twice.")
        seen.add(name)


def _settings(overrides: dict[str, int]) -> dict[str, int]:
    unknown = sorted(set(overrides) - TUNABLE)
    if unknown:
        raise UsageError(
            f"unknown cluster setting {unknown[0]!r}; known: {', '.join(sorted(TUNABLE))}."
        )
    for k, v in overrides.items():
        if type(v) is not int:
            raise UsageError(f"the cluster setting {k!r} must be an integer, not {v!r}.")
    settings = dict(DEFAULT_SETTINGS)
    settings.update({k: int(v) for k, v in overrides.items()})
    if "log_window" not in overrides:
        # Keep the window at least two checkpoint intervals wide (h < seq <= h + L).
        settings["log_window"] = max(settings["log_window"], 2 * settings["checkpoint_interval"])
    return settings


def _ports(f: int, base_port: int, ports: list[int] | None) -> list[int]:
    n = 3 * f + 1
    if ports is None:
        return [base_port + i for i in range(n)]
    if len(ports) != n:
        raise UsageError(f"f = {f} needs {n} ports, {len(ports)} were given.")
    return list(ports)


# ---------------------------------------------------------------------------- commands


def generate_cluster(
    directory: str,
    f: int = 1,
    clients: list[str] | tuple[str, ...] = ("alice", "bob"),
    host: str = "127.0.0.1",
    base_port: int = 7000,
    cluster_id: str | None = None,
    ports: list[int] | None = None,
    force: bool = False,
    passphrase: bytes | None = None,
    **cluster_settings: int,
) -> str:
    """Make the CA, every node's key and certificate, and `directory/cluster.toml`.
    With `passphrase` every private key file is encrypted with it.

    Returns the cluster file's path. Raises UsageError (one sentence) for a bad argument or
    an existing cluster file without `force`.
    """
    if type(f) is not int or not 1 <= f <= MAX_F:
        raise UsageError(f"--f must be an integer from 1 to {MAX_F}, not {f!r}.")
    clients = list(clients)
    _check_clients(clients)
    settings = _settings(cluster_settings)
    port_list = _ports(f, base_port, ports)
    if cluster_id is None:
        cluster_id = os.path.basename(os.path.normpath(os.path.abspath(directory)))
    path = os.path.join(directory, CLUSTER_FILE)
    if os.path.exists(path) and not force:
        raise UsageError(f"{path} already exists; use --force to overwrite it.")

    ca_key, ca_cert = make_ca(cluster_id)
    replicas = [issue(ca_key, ca_cert, cluster_id, i, passphrase) for i in range(3 * f + 1)]
    members = [issue(ca_key, ca_cert, cluster_id, name, passphrase) for name in clients]
    operator = issue(ca_key, ca_cert, cluster_id, OPERATOR, passphrase)
    text = _render(
        cluster_id,
        f,
        settings,
        [(i, _address(host, port_list[i]), r.public) for i, r in enumerate(replicas)],
        [(name, m.public) for name, m in zip(clients, members, strict=True)],
        operator.public,
    )
    # Validate exactly what replicas will read, before touching the disk.
    try:
        parse_cluster(tomllib.loads(text), base_dir=directory)
    except ConfigError as exc:
        raise UsageError(str(exc).rstrip(".") + ".") from None

    try:
        _make_directory(directory)
        ca_key_file = os.path.join(directory, CA_KEY)
        _write_private(ca_key_file, _key_pem(ca_key, passphrase))
        _write_public(os.path.join(directory, CA_CERT), ca_cert.public_bytes(Encoding.PEM))
        for node_id, issued in [*enumerate(replicas), *zip(clients, members, strict=True), (OPERATOR, operator)]:
            key_file, cert_file = node_files(directory, node_id)
            _write_private(key_file, issued.key_pem)
            _write_public(cert_file, issued.cert_pem)
        _write_atomic(path, text)
    except OSError as exc:
        where = exc.filename or directory
        raise UsageError(f"cannot write {where}: {exc.strerror or exc}.") from None
    return path


def _make_directory(directory: str) -> None:
    if os.path.isdir(directory):
        return
    # The directory holds private keys: only its owner may list it.
    os.makedirs(directory, mode=0o700)


def add_client(cluster_path: str, name: str, passphrase: bytes | None = None) -> None:
    """Add client `name` to an existing cluster: key, certificate signed by ca.key, entry.
    `passphrase` opens an encrypted ca.key (else PBFT_KEY_PASSPHRASE does) and encrypts
    the new key; without it the new key is written unencrypted.

    The [[client]] entry is appended to the file's text so the operator's comments and
    layout survive. Raises UsageError for a bad or duplicate name, ConfigError for a bad
    cluster directory (no ca.key, for example).
    """
    config = load_cluster(cluster_path)
    _check_clients([name])
    if name in config.client_index:
        raise UsageError(f"client {name!r} is already in {cluster_path}.")
    base = config.base_dir
    key_file, cert_file = node_files(base, name)
    if os.path.exists(key_file):
        raise UsageError(f"{key_file} already exists; remove it to make a new key for {name!r}.")
    ca_cert = read_certificate(ca_path(config), "the CA certificate ([tls] ca)")
    ca_key = read_private_key(ca_key_path(config), "the CA private key", passphrase)
    if ca_key.public != ca_cert.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw):
        raise ConfigError(
            f"the CA private key {ca_key_path(config)} does not match {ca_path(config)}."
        )
    signer = Ed25519PrivateKey.from_private_bytes(ca_key.private_bytes_raw())
    issued = issue(signer, ca_cert, config.cluster_id, name, passphrase)
    with open(cluster_path, encoding="utf-8") as fh:
        text = fh.read()
    if not text.endswith("\n"):
        text += "\n"
    text += "\n".join(_client_block(name, issued.public)) + "\n"
    try:
        _write_private(key_file, issued.key_pem)
        _write_public(cert_file, issued.cert_pem)
        _write_atomic(cluster_path, text)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or base}: {exc.strerror or exc}.") from None
    load_cluster(cluster_path)  # what we wrote must read back


def locate_service(ref: str, directory: str) -> str:
    """`pbft keygen --dir DIRECTORY --service REF`: REF as the cluster file in DIRECTORY
    is to name it. A relative FILE.py path is looked for relative to DIRECTORY first (where
    the cluster file resolves it), then relative to the working directory (as `pbft
    scenario run --service` takes it); found there, it is given relative to DIRECTORY, so
    the cluster file still finds it. Found in neither: UsageError naming both paths looked
    at. A module path or an absolute path is returned as it is (the loader reports it)."""
    from ..adversary.loader import is_file

    where, sep, cls = ref.rpartition(":")
    path = os.path.expanduser(where)
    if not sep or not where or not is_file(where) or os.path.isabs(path):
        return ref
    base = os.path.abspath(directory)
    in_dir = os.path.abspath(os.path.join(base, path))
    if os.path.lexists(in_dir):
        return ref
    here = os.path.abspath(path)
    if os.path.lexists(here):
        return f"{os.path.relpath(here, base)}:{cls}"
    raise UsageError(
        f"--service {ref}: no such service file: looked for {in_dir} (relative to --dir, where the "
        f"cluster file looks) and {here} (relative to the working directory)."
    )
