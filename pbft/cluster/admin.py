"""`pbft admin`: change a running group through consensus (pbft.protocol.epochs).

Theory of operation. The operator's machine holds the cluster directory (`pbft keygen`'s:
the CA's key, the operator's key, the cluster file). A change is planned, then applied:

* `plan` builds the next epoch's membership from the cluster file's latest epoch and the
  change asked (replace replicas by new keys and addresses, change f and so the number of
  replicas, add or remove clients), issues keys and certificates for the new nodes with
  the CA, and signs the operator's command. It writes one directory per new replica,
  holding only what that host needs (its key and certificate, the CA certificate and the
  cluster file with the new `[[epoch]]` entry), so the new replicas can be started before
  the change takes effect and catch up as soon as it does.
* `apply` sends the signed command as the operator, waits for f+1 replicas to agree on
  the outcome, and records the `[[epoch]]` entry (the command and the checkpoint after
  which the epoch begins) in the cluster file, whose tables stay those of epoch 0:
  whoever loads the file gets the latest epoch.

Deterministic signatures make the command known before it is sent: the entry written by
`plan` is the very request `apply` sends (`Plan.command`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pbft.errors import ConfigError, UsageError
from pbft.files import check_regular, parse_toml
from pbft.protocol import codec
from pbft.protocol.config import OPERATOR, ClientInfo, ReplicaInfo, split_hostport
from pbft.protocol.crypto import seal
from pbft.protocol.epochs import Membership, reconfigure_operation
from pbft.protocol.messages import CLIENT_NAME, Request

from ..node.clusterfile import (
    ca_key_path,
    ca_path,
    load_cluster,
    load_identity,
    node_files,
    read_certificate,
    read_private_key,
)
from .keygen import _write_atomic, _write_private, _write_public, issue

MAX_PLAN_FILE = 1024 * 1024  # a plan is a few hundred bytes per replica


@dataclass
class Plan:
    """A change ready to apply: the signed command and where the new nodes' files are."""

    cluster_path: str
    epoch: int
    membership: Membership
    command: bytes
    timestamp: int
    new_replicas: dict[int, str] = field(default_factory=dict)
    """Replica id -> the directory to start it from (`pbft replica --config DIR/cluster.toml`)."""
    new_clients: list[str] = field(default_factory=list)


def _address(text: str, what: str) -> tuple[str, int]:
    hostport = split_hostport(text)
    if hostport is None:
        raise UsageError(f"{what}: the address must look like HOST:PORT, not {text!r}.")
    return hostport


def plan(
    cluster_path: str,
    *,
    replace: dict[int, str] | None = None,
    f: int | None = None,
    add: dict[int, str] | None = None,
    add_clients: list[str] | None = None,
    remove_clients: list[str] | None = None,
    rotate_clients: list[str] | None = None,
    out_dir: str | None = None,
) -> Plan:
    """The next epoch: `replace` replica ids by new nodes at new addresses, `f` (a larger
    one needs the new replicas' addresses in `add`; a smaller one drops the highest ids),
    clients added (keys made here) and removed. UsageError, one sentence, for a change
    that cannot be made."""
    replace = dict(replace or {})
    add = dict(add or {})
    config = load_cluster(cluster_path)
    if not config.operator_key:
        raise UsageError(f"{cluster_path} has no [operator] key: the group cannot be changed through it.")
    new_f = config.f if f is None else f
    n = 3 * new_f + 1
    for rid in replace:
        if not 0 <= rid < min(n, config.n):
            raise UsageError(f"replica {rid} is not in both the current group and the new one.")
    missing = [i for i in range(config.n, n) if i not in add]
    if missing:
        raise UsageError(f"f = {new_f} needs {n} replicas: give the address of replica {missing[0]} (--add).")
    if any(not config.n <= i < n for i in add):
        raise UsageError(f"--add names replicas {config.n} to {n - 1} only.")
    if not replace and new_f == config.f and not add_clients and not remove_clients and not rotate_clients:
        raise UsageError("nothing to change: give --replace, --f, --add-client, --remove-client or --rotate-client.")
    base = config.base_dir
    ca_cert = read_certificate(ca_path(config), "the CA certificate ([tls] ca)")
    ca_key = read_private_key(ca_key_path(config), "the CA private key")
    if ca_key.public != ca_cert.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw):
        raise ConfigError(f"the CA private key {ca_key_path(config)} does not match {ca_path(config)}.")
    signer = Ed25519PrivateKey.from_private_bytes(ca_key.private_bytes_raw())
    epoch = config.epoch + 1
    out_dir = out_dir or os.path.join(base, f"epoch-{epoch}")
    issued: dict[int, object] = {}
    replicas = []
    for i in range(n):
        if i in replace or i in add:
            host, port = _address(replace.get(i) or add[i], f"replica {i}")
            issued[i] = issue(signer, ca_cert, config.cluster_id, i)
            replicas.append(ReplicaInfo(i, host, port, issued[i].public))  # type: ignore[attr-defined]
        else:
            old = config.replicas[i]
            replicas.append(ReplicaInfo(i, old.host, old.port, old.public_key))
    for name in [*(remove_clients or []), *(rotate_clients or [])]:
        if name not in config.client_index:
            raise UsageError(f"client {name!r} is not in the group.")
    made_clients: dict[str, object] = {}
    clients = []
    for c in config.clients:
        if c.id in (remove_clients or []):
            continue
        if c.id in (rotate_clients or []):
            # A new key for the same name: the old one is refused from the new epoch on.
            made_clients[c.id] = issue(signer, ca_cert, config.cluster_id, c.id)
            c = ClientInfo(c.id, made_clients[c.id].public)  # type: ignore[attr-defined]
        clients.append(c)
    for name in add_clients or []:
        if not CLIENT_NAME.match(name) or name == OPERATOR or name in config.client_index:
            raise UsageError(f"{name!r} cannot be a new client's name (taken, reserved or malformed).")
        made_clients[name] = issue(signer, ca_cert, config.cluster_id, name)
        clients.append(ClientInfo(name, made_clients[name].public))  # type: ignore[attr-defined]
    membership = Membership(new_f, tuple(replicas), tuple(clients))
    problem = membership.problem()
    if problem is not None:
        raise UsageError(f"the new group breaks a rule: {problem}.")
    # The operator's request, signed now: Ed25519 is deterministic, so it is exactly
    # what `apply` sends (its client core numbers it the same way).
    operator = load_identity(config, OPERATOR)
    timestamp = time.time_ns() // 1000
    request = Request(reconfigure_operation(epoch, membership), timestamp + 1, OPERATOR)
    command = seal(operator.key, config.signing_domain, OPERATOR, request).to_bytes()
    result = Plan(cluster_path, epoch, membership, command, timestamp)
    text = _with_entry(cluster_path, epoch, 0, command)
    # Everything is checked; now the files. Where they go is checked first, and a write
    # that fails all the same (a full disk) takes back what was written: one sentence,
    # nothing left behind.
    if made_clients:
        _check_writable_dir(base, "the cluster file's directory")
    if issued:
        _check_writable_dir(out_dir, "the new replicas' directory")
    written: list[str] = []
    made_dirs: list[str] = []
    try:
        # New clients' keys go beside the cluster file (this is the operator's machine).
        for name, made in made_clients.items():
            key_file, cert_file = node_files(base, name)
            _write_new(written, key_file, lambda p, m=made: _write_private(p, m.key_pem))  # type: ignore[attr-defined]
            _write_new(written, cert_file, lambda p, m=made: _write_public(p, m.cert_pem))  # type: ignore[attr-defined]
            result.new_clients.append(name)
        for i, made in issued.items():
            d = os.path.join(out_dir, f"replica-{i}")
            made_dirs += _missing_dirs(d)
            os.makedirs(d, mode=0o700, exist_ok=True)
            key_file, cert_file = node_files(d, i)
            ca_copy = os.path.join(d, os.path.basename(ca_path(config)))
            _write_new(written, key_file, lambda p, m=made: _write_private(p, m.key_pem))  # type: ignore[attr-defined]
            _write_new(written, cert_file, lambda p, m=made: _write_public(p, m.cert_pem))  # type: ignore[attr-defined]
            _write_new(written, ca_copy, lambda p: shutil.copyfile(ca_path(config), p))
            _write_new(written, os.path.join(d, "cluster.toml"), lambda p: _write_atomic(p, _node_text(text)))
            result.new_replicas[i] = d
    except OSError as exc:
        for path in reversed(written):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        where = f" {exc.filename}" if exc.filename else ""
        raise UsageError(f"cannot write the new nodes' files{where}: {exc.strerror or exc}; nothing was written.") from None
    return result


def _write_new(written: list[str], path: str, write) -> None:
    """`write(path)`, and `path` noted in `written` if it did not exist before (so a
    later failure removes only what this plan created)."""
    existed = os.path.lexists(path)
    write(path)
    if not existed:
        written.append(path)


def _missing_dirs(path: str) -> list[str]:
    """The directories `os.makedirs(path)` would create, outermost first."""
    out: list[str] = []
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out[::-1]


def _check_writable_dir(path: str, what: str) -> None:
    """UsageError unless `path` is a directory this process can write in, or can be made:
    its nearest existing ancestor a writable directory."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{what} {path} cannot be made: {probe} is not a directory.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path} cannot be written: {probe} is not writable (permission denied).")


def _with_entry(cluster_path: str, epoch: int, after: int, command: bytes) -> str:
    """The cluster file's text with the `[[epoch]]` entry (new clients' keys are in the
    command's membership: no [[client]] table is added, the entry says it all)."""
    with open(cluster_path, encoding="utf-8") as fh:
        text = fh.read()
    if not text.endswith("\n"):
        text += "\n"
    return text + "\n".join(_entry_block(epoch, after, command)) + "\n"


def _entry_block(epoch: int, after: int, command: bytes) -> list[str]:
    return [
        "",
        f"# epoch {epoch}: ordered through consensus by `pbft admin`; do not edit.",
        "[[epoch]]",
        f"epoch = {epoch}",
        f"after = {after}",
        f'command = "{command.hex()}"',
    ]


def _node_text(text: str) -> str:
    """The cluster file for a new replica's own directory: certificates are found in the
    directory's default layout, not at the paths the operator's copy names."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("certificate = ")) + "\n"


async def apply(p: Plan, timeout: float = 60.0) -> dict:
    """Send the planned command as the operator and wait for the outcome; on success,
    record the `[[epoch]]` entry in the cluster file (and in the new replicas' copies).
    Returns the replicas' answer: {"epoch", "after"}; UsageError if they refused it."""
    from ..node.client import open_client

    async with open_client(p.cluster_path, OPERATOR, timeout=timeout) as client:
        client.core.timestamp = p.timestamp  # the next request is the one signed in `plan`
        result = await client.execute(reconfigure_operation(p.epoch, p.membership))
    answer = codec.decode(result)
    if not isinstance(answer, dict) or "error" in answer:
        raise UsageError(f"the replicas refused the change: {answer.get('error') if isinstance(answer, dict) else answer}.")
    text = _with_entry(p.cluster_path, p.epoch, answer["after"], p.command)
    _write_atomic(p.cluster_path, text)
    for d in p.new_replicas.values():
        _write_atomic(os.path.join(d, "cluster.toml"), _node_text(text))
    load_cluster(p.cluster_path)  # what we wrote must read back
    return answer


def save_plan(p: Plan, path: str) -> None:
    """The plan as a file, for `pbft admin apply` once the new replicas are running."""
    lines = [
        "# A change planned by `pbft admin change --plan-only`; apply it with `pbft admin apply`.",
        f"cluster = {_q(os.path.abspath(p.cluster_path))}",
        f"epoch = {p.epoch}",
        f"timestamp = {p.timestamp}",
        f'command = "{p.command.hex()}"',
        "[replicas]",
        *(f'"{rid}" = {_q(os.path.abspath(d))}' for rid, d in sorted(p.new_replicas.items())),
    ]
    _write_atomic(path, "\n".join(lines) + "\n")


def load_plan(path: str) -> Plan:
    from pbft.protocol.epochs import parse_operation
    from pbft.protocol.messages import decode_envelope

    try:
        check_regular(path)
        with open(path, "rb") as fh:
            t = parse_toml(fh.read(MAX_PLAN_FILE))
        command = bytes.fromhex(t["command"])
        _, req = decode_envelope(command)
        assert isinstance(req, Request)
        epoch, membership = parse_operation(req.operation)
        return Plan(t["cluster"], epoch, membership, command, int(t["timestamp"]),
                    {int(k): v for k, v in t.get("replicas", {}).items()})
    except (OSError, KeyError, ValueError, TypeError, AssertionError) as exc:  # Unreadable is a ValueError
        raise UsageError(f"{path} is not a plan written by `pbft admin change --plan-only` ({exc}).") from None


def _q(text: str) -> str:
    import json

    return json.dumps(text)


