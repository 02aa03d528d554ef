"""`pbft config check FILE`: every problem of a cluster file and its keys, at once.

Theory of operation. A replica stops at the first mistake in its cluster file, which is
right for a replica and slow for an operator fixing a new file one restart at a time. The
check reads the same file with the same validation (`check_cluster` collects every problem
`parse_cluster` would raise first), then does what `load_cluster` and `load_identity` do
on disk for every member whose files are here, collecting instead of stopping:

* errors (exit 2): anything a replica or client would refuse at start: unknown or
  misspelt fields, bad values, missing or mismatched certificates, a private key that
  does not match its public key or cannot be decrypted, an expired certificate;
* warnings (exit 0, or 1 with --strict): what starts but is unsafe: private key files
  other users can read or write, `[storage] fsync = "off"` or `"batch"`, a metrics
  address off loopback (the endpoint has no authentication), a cluster file or directory
  others can write (whoever can edit it can add their own key as a member), a certificate
  about to expire;
* notes: what could not be checked (an encrypted key and no passphrase in the
  environment).

Keys absent from this host are not a problem: a replica host holds only its own.
"""

from __future__ import annotations

import datetime
import glob
import ipaddress
import os
from dataclasses import dataclass, field

from pbft.errors import ConfigError, UsageError
from pbft.protocol.config import OPERATOR, ClusterConfig, check_cluster

from ..node.clusterfile import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    _check_distinct_keys,
    _check_member_certificate,
    ca_key_path,
    ca_path,
    cert_path,
    certificate_key,
    describe,
    exposed_key,
    load_private_key,
    node_files,
    read_certificate,
    read_cluster_table,
)

EXPIRY_WARNING = datetime.timedelta(days=30)
"""A certificate expiring sooner than this is worth a warning."""

FSYNC_RISKS = {
    "batch": (
        '[storage] fsync = "batch": a power loss or OS crash may roll back a replica\'s last '
        "commits, so it may forget votes it sent and then equivocate; PBFT survives that "
        'for at most f replicas at once (use "always" unless you accept it).'
    ),
    "off": (
        '[storage] fsync = "off": nothing is ever fsynced, so a power loss or OS crash may '
        "corrupt a replica's database or make it forget votes it signed; if that happens "
        'to more than f replicas at once, safety is lost (use "always").'
    ),
}


@dataclass
class Report:
    """What `check_cluster_file` found, in the order found."""

    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: ClusterConfig | None = None
    unopened: list[str] = field(default_factory=list)
    """Encrypted private key files that could not be opened: no passphrase was given."""

    def attempt(self, check, *args) -> None:
        """Run one check that raises ConfigError; record its sentence as an error."""
        try:
            check(*args)
        except ConfigError as exc:
            self.errors.append(str(exc))


def check_cluster_file(path: str, now: datetime.datetime | None = None) -> Report:
    """Check a cluster file, the certificates it names and the private keys beside it."""
    report = Report(path)
    try:
        table = read_cluster_table(path)
    except ConfigError as exc:
        report.errors.append(str(exc))
        return report
    base_dir = os.path.dirname(os.path.abspath(path))
    config, errors = check_cluster(table, base_dir=base_dir)
    report.errors += errors
    report.config = config
    _check_file_modes(report, path, base_dir)
    _check_settings(report, table)
    if config is not None:
        _check_members(report, config, now or datetime.datetime.now(datetime.UTC))
        _check_service(report, config)
    return report


def _check_service(report: Report, config: ClusterConfig) -> None:
    """The service a replica would load at start: its class found and made with the
    file's parameters, its identity the one the file names (adversary.loader.make_service,
    which runs the class's own code, as a starting replica does)."""
    if config.service is None:
        return
    from ..adversary.loader import make_service

    try:
        make_service(config.service)
    except (UsageError, ConfigError) as exc:
        report.errors.append(str(exc))


# ---------------------------------------------------------------------------- warnings


def _check_file_modes(report: Report, path: str, base_dir: str) -> None:
    for file, what in ((path, "the cluster file"), (base_dir, "the cluster directory")):
        try:
            mode = os.stat(file).st_mode & 0o777
        except OSError:
            continue
        if mode & 0o022:
            report.warnings.append(
                f"{what} {file} has mode {mode:04o}: other users can change it (and so add "
                f"their own key as a member); chmod go-w {file}."
            )
    for key_file in sorted(glob.glob(os.path.join(base_dir, "*.key"))):
        why = exposed_key(key_file)
        if why:
            report.warnings.append(
                f"the private key file {key_file} is not private ({why}); chmod 600 {key_file}."
            )


def _check_settings(report: Report, table: dict) -> None:
    """Warnings read from the raw table, so they are given even when errors were found."""
    storage = table.get("storage")
    if isinstance(storage, dict) and storage.get("fsync") in FSYNC_RISKS:
        report.warnings.append(FSYNC_RISKS[storage["fsync"]])
    replicas = table.get("replica")
    for i, entry in enumerate(replicas if isinstance(replicas, list) else []):
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, str) or ":" not in metrics:
            continue
        host = metrics.rpartition(":")[0].strip("[]")
        if not is_loopback(host):
            report.warnings.append(
                f"[[replica]] #{i + 1}: metrics = {metrics!r} is not a loopback address, and "
                "the metrics endpoint is plain HTTP with no authentication: anyone who can "
                "reach it reads the replica's state; bind it to 127.0.0.1 or a private "
                "address behind a firewall."
            )


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP address or name) certainly means this machine only."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------- disk


def _check_members(report: Report, config: ClusterConfig, now: datetime.datetime) -> None:
    report.attempt(_check_distinct_keys, config)
    ca_file = ca_path(config)
    try:
        ca = read_certificate(ca_file, "the CA certificate ([tls] ca)")
    except ConfigError as exc:
        report.errors.append(str(exc))
        return
    _check_validity(report, ca, ca_file, now)
    # The operator's key and certificate are checked like a member's: `pbft admin`
    # refuses a pair that does not match the [operator] public_key.
    members = [*(r.id for r in config.replicas), *(c.id for c in config.clients),
               *([OPERATOR] if config.operator_key else [])]
    for node_id in members:
        named = _named_certificate(config, node_id)
        cert_file = cert_path(config, node_id)
        if named or os.path.exists(cert_file):
            before = len(report.errors)
            report.attempt(_check_member_certificate, config, node_id, ca, ca_file)
            if len(report.errors) == before:
                cert = read_certificate(cert_file, f"the certificate of {describe(node_id)},")
                _check_validity(report, cert, cert_file, now)
        _check_private_key(report, config, node_id)
    _check_ca_key(report, config, ca)
    if report.unopened:
        report.notes.append(
            f"{len(report.unopened)} private key files are encrypted and were not checked "
            f"against the cluster file ({', '.join(report.unopened)}); set "
            f"{PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV} to check them."
        )


def _named_certificate(config: ClusterConfig, node_id) -> str:
    if node_id == OPERATOR:
        return ""  # the operator's is always client-operator.pem (cert_path)
    if isinstance(node_id, str):
        return config.client_index[node_id].certificate
    return config.replicas[node_id].certificate


def _check_validity(report: Report, cert, path: str, now: datetime.datetime) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now >= end:
        report.errors.append(
            f"the certificate {path} expired on {end:%Y-%m-%d}: TLS handshakes with it fail."
        )
    elif now < start:
        report.errors.append(
            f"the certificate {path} is not valid before {start:%Y-%m-%d %H:%M} UTC "
            "(is this host's clock right?)."
        )
    elif end - now < EXPIRY_WARNING:
        report.warnings.append(
            f"the certificate {path} expires on {end:%Y-%m-%d}, in {(end - now).days} days."
        )


def _check_private_key(report: Report, config: ClusterConfig, node_id) -> None:
    key_file = node_files(config.base_dir, node_id)[0]
    if not os.path.exists(key_file):
        return  # a host holds only its own key
    what = f"the private key of {describe(node_id)},"
    try:
        key, _ = load_private_key(key_file, what)
    except ConfigError as exc:
        _key_problem(report, key_file, exc)
        return
    public = config.member_keys()[node_id]
    if key.public != public:
        report.errors.append(
            f"the private key in {key_file} does not match {describe(node_id)}'s public_key "
            "in the cluster file."
        )


def _check_ca_key(report: Report, config: ClusterConfig, ca) -> None:
    key_file = ca_key_path(config)
    if not os.path.exists(key_file):
        return
    try:
        key, _ = load_private_key(key_file, "the CA private key")
    except ConfigError as exc:
        _key_problem(report, key_file, exc)
        return
    if key.public != certificate_key(ca):
        report.errors.append(f"the CA private key {key_file} does not match {ca_path(config)}.")


def _key_problem(report: Report, key_file: str, exc: ConfigError) -> None:
    # An encrypted key without a passphrase is not a mistake, only something not checked.
    if "is encrypted and no passphrase was given" in str(exc):
        report.unopened.append(os.path.basename(key_file))
    elif str(exc) not in report.errors:  # one sentence about the passphrase, not one per key
        report.errors.append(str(exc))


# ---------------------------------------------------------------------------- command
