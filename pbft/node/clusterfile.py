"""Reading the cluster file and a node's key material from disk (docs/formats.md).

Theory of operation. `pbft keygen` writes one directory per cluster:

    cluster.toml                 the cluster file (section 4); paths in it are relative to it
    ca.pem, ca.key               the cluster CA: certificate, and the key that signs members
    replica-<i>.pem/.key         replica i: certificate and Ed25519 private key (PKCS8 PEM)
    client-<name>.pem/.key       client <name>: the same

Every node has exactly one Ed25519 identity key. It signs protocol messages, and the same
key is the subject key of the node's TLS certificate, so "who is at the other end of this
TLS channel" and "who signed this message" are one question with one answer: the public
key listed in the cluster file.

The pure validation of the file's contents lives in `pbft.protocol.config.parse_cluster`;
this module adds what needs the disk: reading the file, checking that the files it names
exist, parse, and hold the key they claim to (a certificate issued by the cluster CA for the
public key the file lists), and loading a node's private key and checking it matches.

A private key file may be encrypted (`pbft keygen --passphrase-env/--passphrase-file`);
its passphrase comes from PBFT_KEY_PASSPHRASE or the file PBFT_KEY_PASSPHRASE_FILE names,
never from a prompt. A key file other users can read or write is used, with a warning
logged once per process, so an operator sees it at start without being locked out.
Every operator mistake becomes a `ConfigError` with one sentence naming the file and the
problem, so a replica fails at start-up instead of mid-handshake with an OpenSSL trace.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from pbft.errors import ConfigError, UsageError
from pbft.files import Unreadable, check_regular, parse_toml
from pbft.protocol.config import OPERATOR, ClusterConfig, parse_cluster
from pbft.protocol.crypto import KeyPair
from pbft.protocol.messages import Signer

CLUSTER_FILE = "cluster.toml"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
MAX_CLUSTER_FILE = 16 * 1024 * 1024
"""Largest cluster file we read, in bytes (a limit on everything: docs/architecture.md)."""
MAX_PEM_FILE = 64 * 1024
"""Largest key or certificate file we read, in bytes."""
MAX_PASSPHRASE = 4096
"""Largest passphrase file we read, in bytes."""
PASSPHRASE_ENV = "PBFT_KEY_PASSPHRASE"
"""The environment variable holding the passphrase of encrypted private keys."""
PASSPHRASE_FILE_ENV = "PBFT_KEY_PASSPHRASE_FILE"
"""The environment variable naming a file whose first line is that passphrase."""

log = logging.getLogger("pbft.keys")


@dataclass(frozen=True, slots=True)
class Identity:
    """One node's identity: its private key and where its TLS material lives on disk."""

    node_id: Signer
    key: KeyPair
    cert_path: str
    key_path: str
    ca_path: str
    key_passphrase: bytes | None = None
    """What decrypts `key_path` (TLS reads the key file again), None if not encrypted."""


# ---------------------------------------------------------------------------- layout


def node_stem(node_id: Signer) -> str:
    """The file name stem of a node: `replica-2` or `client-alice`."""
    if isinstance(node_id, int) and not isinstance(node_id, bool):
        return f"replica-{node_id}"
    return f"client-{node_id}"


def describe(node_id: Signer) -> str:
    """How a node is named in error messages: `replica 2` or `client 'alice'`."""
    if isinstance(node_id, int) and not isinstance(node_id, bool):
        return f"replica {node_id}"
    return f"client {node_id!r}"


def node_files(base_dir: str, node_id: Signer) -> tuple[str, str]:
    """(private key path, certificate path) of a node in keygen's default layout."""
    stem = os.path.join(base_dir, node_stem(node_id))
    return stem + ".key", stem + ".pem"


def ca_files(base_dir: str) -> tuple[str, str]:
    """(CA private key path, CA certificate path) in keygen's default layout."""
    return os.path.join(base_dir, CA_KEY), os.path.join(base_dir, CA_CERT)


def ca_path(config: ClusterConfig) -> str:
    """The CA certificate: `[tls] ca` relative to the cluster file, else the default."""
    return os.path.join(config.base_dir, config.tls_ca or CA_CERT)


def ca_key_path(config: ClusterConfig) -> str:
    """The CA private key sits beside the CA certificate with a `.key` suffix."""
    return os.path.splitext(ca_path(config))[0] + ".key"


def cert_path(config: ClusterConfig, node_id: Signer) -> str:
    """A node's certificate: its `certificate` field if set, else the default layout."""
    named = _member_certificate(config, node_id)
    if named:
        return os.path.join(config.base_dir, named)
    return node_files(config.base_dir, node_id)[1]


def _member_certificate(config: ClusterConfig, node_id: Signer) -> str:
    if isinstance(node_id, str):
        info = config.client_index.get(node_id)
        return info.certificate if info else ""
    if 0 <= node_id < len(config.replicas):
        return config.replicas[node_id].certificate
    return ""


def member_public_key(config: ClusterConfig, node_id: Signer) -> bytes:
    """The public key the cluster file lists for `node_id`; ConfigError if it is not there."""
    if isinstance(node_id, bool) or not isinstance(node_id, int | str):
        raise ConfigError(f"{node_id!r} is neither a replica id nor a client name.")
    if isinstance(node_id, str):
        if node_id == OPERATOR and config.operator_key:
            return config.operator_key
        info = config.client_index.get(node_id)
        if info is None:
            raise ConfigError(f"client {node_id!r} is not listed in the cluster file.")
        return info.public_key
    if not 0 <= node_id < len(config.replicas):
        raise ConfigError(
            f"replica {node_id} is not in the cluster file (ids are 0 to {len(config.replicas) - 1})."
        )
    return config.replicas[node_id].public_key


# ---------------------------------------------------------------------------- reading


def _read_bytes(path: str, what: str, limit: int) -> bytes:
    """Read a whole file with a size limit, turning OS errors into one sentence."""
    try:
        check_regular(path)
    except Unreadable as why:
        raise ConfigError(f"{what} {path!r} {why}.") from None
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file.") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} cannot be read: permission denied.") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}.") from None
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes.")
    return data


def read_certificate(path: str, what: str) -> x509.Certificate:
    """Load one PEM certificate; ConfigError if missing or not a certificate."""
    data = _read_bytes(path, what, MAX_PEM_FILE)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"{what} {path} is not a PEM certificate.") from None


def certificate_key(cert: x509.Certificate) -> bytes | None:
    """The raw 32-byte Ed25519 subject key of a certificate, or None for any other kind."""
    try:
        key = cert.public_key()
    except ValueError:
        return None  # an algorithm cryptography cannot load: certainly not one of ours
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_passphrase(environ: dict[str, str] | None = None) -> tuple[bytes | None, str]:
    """The passphrase for encrypted private keys and where it came from: the environment
    variable PBFT_KEY_PASSPHRASE, or the first line of the file PBFT_KEY_PASSPHRASE_FILE
    names (for a systemd credential or a secrets mount). (None, "") if neither is set."""
    env = os.environ if environ is None else environ
    direct = env.get(PASSPHRASE_ENV)
    named = env.get(PASSPHRASE_FILE_ENV)
    if direct and named:
        raise ConfigError(f"set only one of {PASSPHRASE_ENV} and {PASSPHRASE_FILE_ENV}.")
    if direct:
        return passphrase_bytes(direct, PASSPHRASE_ENV), PASSPHRASE_ENV
    if named:
        return read_passphrase_file(named, f"the passphrase file ({PASSPHRASE_FILE_ENV})"), named
    return None, ""


def passphrase_bytes(value: str, name: str) -> bytes:
    """The bytes of a passphrase taken from the environment variable `name`, exactly as
    they were set: Python decodes the environment with the file-system encoding and
    `surrogateescape`, and `os.fsencode` undoes that, so a passphrase that is not UTF-8
    (any bytes, like a passphrase file's) is used as it is rather than failing to encode.
    ConfigError for a string no environment could hold (a lone surrogate put there by
    Python code)."""
    try:
        return os.fsencode(value)
    except UnicodeError:
        raise ConfigError(f"the passphrase in {name} cannot be turned back into bytes.") from None


def read_passphrase_file(path: str, what: str) -> bytes:
    """The first line of a passphrase file, without its line ending; ConfigError if the
    file cannot be read or the line is empty."""
    data = _read_bytes(path, what, MAX_PASSPHRASE)
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise ConfigError(f"{what} {path} holds no passphrase on its first line.")
    return line


def load_private_key(path: str, what: str, passphrase: bytes | None = None) -> tuple[KeyPair, bytes | None]:
    """Load a PKCS8 PEM Ed25519 private key, encrypted or not: (the key, the passphrase
    that opened it, None if it was not encrypted). An encrypted key is opened with
    `passphrase`, else with the one from the environment (`key_passphrase`)."""
    data = _read_bytes(path, what, MAX_PEM_FILE)
    used: bytes | None = None
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography: "Password was not given but private key is encrypted".
        source = "the passphrase given"
        if passphrase is None:
            passphrase, source = key_passphrase()
        if passphrase is None:
            raise ConfigError(
                f"{what} {path} is encrypted and no passphrase was given: set "
                f"{PASSPHRASE_ENV} to it, or {PASSPHRASE_FILE_ENV} to a file holding it."
            ) from None
        try:
            key = load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{what} {path} cannot be decrypted with the passphrase from {source}: "
                "wrong passphrase."
            ) from None
        used = passphrase
    except ValueError:
        raise ConfigError(f"{what} {path} is not a PEM private key.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} {path} is not an Ed25519 key.")
    return KeyPair(key.private_bytes_raw()), used


def read_private_key(path: str, what: str, passphrase: bytes | None = None) -> KeyPair:
    """Load a PKCS8 PEM Ed25519 private key (see `load_private_key`)."""
    return load_private_key(path, what, passphrase)[0]


def exposure(mode: int) -> str | None:
    """Who besides the owner may use a private key file of this mode, or None if nobody:
    "group and others can read it", "others can write it", ..."""
    def who(bits_group: int, bits_other: int) -> str:
        return " and ".join(
            w for w, b in (("its group", bits_group), ("others", bits_other)) if mode & b
        )

    readers, writers = who(0o040, 0o004), who(0o020, 0o002)
    if readers:
        return f"{readers} can read it"
    if writers:
        return f"{writers} can write it"
    return None


def exposed_key(path: str) -> str | None:
    """One clause if the private key file at `path` is open to other users (mode and who),
    else None (also when it cannot be stat'ed: the load says why)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    why = exposure(mode)
    return f"mode {mode:04o}: {why}" if why else None


_warned_keys: set[str] = set()
"""Key files warned about in this process (once each: a program may open many clients)."""


def warn_if_exposed(path: str, who: str) -> None:
    """Log a warning, once per file and process, if a private key file is open to others."""
    why = exposed_key(path)
    real = os.path.realpath(path)
    if why is None or real in _warned_keys:
        return
    _warned_keys.add(real)
    log.warning(
        "the private key of %s, %s, is not private (%s); chmod 600 %s",
        who, path, why, path,
    )


def _check_issued_by(cert: x509.Certificate, ca: x509.Certificate, path: str, ca_file: str) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        # ValueError: issuer name differs; TypeError: a key type it cannot check.
        raise ConfigError(
            f"the certificate {path} is not signed by the cluster CA {ca_file}."
        ) from None


def _check_member_certificate(
    config: ClusterConfig, node_id: Signer, ca: x509.Certificate, ca_file: str
) -> None:
    path = cert_path(config, node_id)
    cert = read_certificate(path, f"the certificate of {describe(node_id)},")
    if certificate_key(cert) != member_public_key(config, node_id):
        raise ConfigError(
            f"the certificate {path} does not hold {describe(node_id)}'s public_key "
            "in the cluster file."
        )
    _check_issued_by(cert, ca, path, ca_file)


def _check_distinct_keys(config: ClusterConfig) -> None:
    # The TLS layer names a peer by its key (tls.peer_id), so two members sharing one key
    # would make a channel's peer ambiguous.
    owner: dict[bytes, Signer] = {}
    for node_id, key in config.member_keys().items():
        if key in owner:
            raise ConfigError(
                f"{describe(owner[key])} and {describe(node_id)} have the same public_key."
            )
        owner[key] = node_id


def read_cluster_table(path: str) -> dict:
    """The cluster file as tomllib reads it, not yet validated; ConfigError if it cannot
    be read or is not TOML."""
    data = _read_bytes(path, "the cluster file", MAX_CLUSTER_FILE)
    try:
        return parse_toml(data)
    except Unreadable as why:
        raise ConfigError(f"the cluster file {path} {why}.") from None


def load_cluster(path: str) -> ClusterConfig:
    """Read and validate a cluster file and the CA and certificates it names.

    Raises ConfigError with one sentence naming the file and the problem.
    """
    table = read_cluster_table(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    try:
        config = parse_cluster(table, base_dir=base_dir)
        _check_distinct_keys(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None

    ca_file = ca_path(config)
    ca = read_certificate(ca_file, "the CA certificate ([tls] ca)")
    # Only certificates the file names are required here: a client host needs its own
    # certificate (checked by load_identity), not copies of everyone else's.
    for r in config.replicas:
        if r.certificate:
            _check_member_certificate(config, r.id, ca, ca_file)
    for c in config.clients:
        if c.certificate:
            _check_member_certificate(config, c.id, ca, ca_file)
    return config


def load_identity(config: ClusterConfig, node_id: Signer) -> Identity:
    """Load the private key of `node_id` (int: replica, str: client) and check it.

    The key must match the public key the cluster file lists for that node, and the node's
    certificate must hold that same key: one identity key per node (docs/formats.md, "Key files").
    """
    public = member_public_key(config, node_id)
    key_file = node_files(config.base_dir, node_id)[0]
    if not os.path.exists(key_file):
        raise ConfigError(f"no private key for {describe(node_id)} at {key_file}.")
    key, passphrase = load_private_key(key_file, f"the private key of {describe(node_id)},")
    warn_if_exposed(key_file, describe(node_id))
    if key.public != public:
        raise ConfigError(
            f"the private key in {key_file} does not match {describe(node_id)}'s public_key "
            "in the cluster file."
        )
    cert_file = cert_path(config, node_id)
    if not os.path.exists(cert_file):
        raise ConfigError(f"no certificate for {describe(node_id)} at {cert_file}.")
    cert = read_certificate(cert_file, f"the certificate of {describe(node_id)},")
    if certificate_key(cert) != public:
        raise ConfigError(
            f"the certificate {cert_file} does not hold {describe(node_id)}'s public_key "
            "in the cluster file."
        )
    ca_file = ca_path(config)
    ca = read_certificate(ca_file, "the CA certificate ([tls] ca)")
    _check_issued_by(cert, ca, cert_file, ca_file)
    return Identity(node_id, key, cert_file, key_file, ca_file, passphrase)


@dataclass(frozen=True, slots=True)
class ReplicaFiles:
    """What a replica process takes from its cluster file, read and validated once
    (`load_replica`): the configuration (which has the `[storage] fsync` policy and each
    replica's `metrics` address) and this replica's identity. The node, its TLS contexts,
    its transport, its storage and its metrics all take their settings from here."""

    path: str
    config: ClusterConfig
    replica_id: int
    identity: Identity

    @property
    def fsync(self) -> str:
        """The `[storage] fsync` policy."""
        return self.config.fsync

    @property
    def metrics(self) -> str | None:
        """This replica's `metrics = "HOST:PORT"`, None if it has none."""
        return self.config.replicas[self.replica_id].metrics or None


def load_replica(path: str, replica_id: int) -> ReplicaFiles:
    """Read the cluster file at `path` once, and replica `replica_id`'s identity; a
    ConfigError for a bad file or key, a UsageError for an id the file does not have."""
    config = load_cluster(path)
    if not 0 <= replica_id < config.n:
        raise UsageError(
            f"replica id {replica_id} is not in the cluster file (ids are 0 to {config.n - 1})."
        )
    return ReplicaFiles(path, config, replica_id, load_identity(config, replica_id))
