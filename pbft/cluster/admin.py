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

The key files beside the cluster file are always those of the epoch it records (so
`pbft config check`, `pbft up` and a client started from that directory find no
superseded key). A new client's key is written there by `plan`. A rotated client's new
key cannot be: until the change takes effect the old key is the one the file lists, so
`plan` writes it as `client-NAME.epoch-E.key`/`.pem`, and `apply`, once the replicas
took the change, moves the old files aside to `client-NAME.before-epoch-E.key`/`.pem`
and the new ones into place. A replaced or removed replica's (or a removed client's)
files beside the cluster file are moved aside the same way; a new replica's key lives
only in its own directory (`epoch-E/replica-I/`). Every write and rename of one step is
undone if a later one fails (`_Files`): a failed command leaves every file that existed
before exactly as it was.

Deterministic signatures make the command known before it is sent: the entry written by
`plan` is the very request `apply` sends (`Plan.command`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pbft.errors import ConfigError, UsageError
from pbft.files import check_regular, parse_toml
from pbft.protocol import codec
from pbft.protocol.config import (
    OPERATOR,
    ClientInfo,
    ReplicaInfo,
    ServiceSpec,
    check_cluster,
    split_hostport,
)
from pbft.protocol.crypto import seal
from pbft.protocol.epochs import Membership, reconfigure_operation
from pbft.protocol.messages import CLIENT_NAME, Request

from ..node.clusterfile import (
    ca_key_path,
    ca_path,
    certificate_key,
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
    """Clients added: their keys are written beside the cluster file."""
    rotated_clients: list[str] = field(default_factory=list)
    """Clients given a new key: it waits as `client-NAME.epoch-E.key` until `apply`."""
    same_address: list[int] = field(default_factory=list)
    """Replicas given a new key at their old address: the new node can listen only once
    the old one has stopped (it lingers after the change)."""
    moved: list[tuple[str, str]] = field(default_factory=list)
    """What `apply` renamed once the change took effect: (from, to)."""
    warnings: list[str] = field(default_factory=list)
    """What the operator must do by hand before a new replica can start (one sentence each)."""


class ChangeRefused(Exception):
    """The replicas ordered the command and refused it (its answer is an error): not a
    mistake in the command line, so `pbft admin` exits 1, as when they do not answer."""


def aside_files(base_dir: str, node_id, epoch: int) -> tuple[str, str]:
    """Where the key and certificate of a node that epoch `epoch` replaced or removed are
    kept beside the cluster file: `replica-3.before-epoch-1.key` and `.pem`."""
    return _infix(node_files(base_dir, node_id), f"before-epoch-{epoch}")


def staged_files(base_dir: str, name: str, epoch: int) -> tuple[str, str]:
    """Where `plan` writes a rotated client's new key and certificate until the change
    takes effect: `client-alice.epoch-1.key` and `.pem`."""
    return _infix(node_files(base_dir, name), f"epoch-{epoch}")


def _infix(paths: tuple[str, str], infix: str) -> tuple[str, str]:
    key_file, cert_file = (os.path.splitext(p) for p in paths)
    return f"{key_file[0]}.{infix}{key_file[1]}", f"{cert_file[0]}.{infix}{cert_file[1]}"


class _Files:
    """The files one step writes or moves, undone together if a later one fails: a file
    it created is removed, a file it overwrote is put back (the very file, kept aside
    under a hidden name until `done`, so its content and mode are as they were), a file
    it renamed is renamed back, a directory it made is removed."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._kept: list[str] = []

    def write(self, path: str, write: Callable[[str], None], *, atomic: bool = False) -> None:
        """`write(path)`. An existing file is kept aside first: hard-linked when `write`
        replaces the file atomically (readers never miss it), else renamed away."""
        if os.path.lexists(path):
            kept = _hidden_name(path)
            if atomic:
                os.link(path, kept)
            else:
                os.rename(path, kept)
            self._kept.append(kept)
            self._undo.append(lambda: _put_back(kept, path))
        else:
            self._undo.append(lambda: _remove(path))
        write(path)

    def move(self, src: str, dst: str) -> None:
        """Rename `src` to `dst`, which must not exist."""
        if os.path.lexists(dst):
            raise FileExistsError(17, "File exists", dst)
        os.rename(src, dst)
        self._undo.append(lambda: os.rename(dst, src))

    def makedirs(self, path: str) -> None:
        made = _missing_dirs(path)
        os.makedirs(path, mode=0o700, exist_ok=True)
        for d in made:
            self._undo.append(lambda d=d: os.rmdir(d))

    def undo(self) -> None:
        for step in reversed(self._undo):
            with contextlib.suppress(OSError):
                step()
        self._undo.clear()
        self._kept.clear()

    def done(self) -> None:
        for kept in self._kept:
            with contextlib.suppress(OSError):
                os.unlink(kept)
        self._undo.clear()
        self._kept.clear()


def _put_back(kept: str, path: str) -> None:
    # rename() does nothing when both names are links to one file: the write never
    # replaced it, and the extra name goes.
    if os.path.lexists(path) and os.path.samestat(os.lstat(kept), os.lstat(path)):
        os.unlink(kept)
    else:
        os.replace(kept, path)


def _remove(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)


def _hidden_name(path: str) -> str:
    directory, name = os.path.split(path)
    for n in itertools.count():
        kept = os.path.join(directory, f".{name}.pbft-undo-{os.getpid()}-{n}")
        if not os.path.lexists(kept):
            return kept
    raise AssertionError("unreachable")


def _unused(path: str) -> str:
    """`path`, or `path` with `.2`, `.3`... before its suffix if it is taken."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{stem}.{n}{ext}"
    return candidate


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
    same_address = []
    for i in range(n):
        if i in replace or i in add:
            host, port = _address(replace.get(i) or add[i], f"replica {i}")
            issued[i] = issue(signer, ca_cert, config.cluster_id, i)
            replicas.append(ReplicaInfo(i, host, port, issued[i].public))  # type: ignore[attr-defined]
            if i in replace and (host, port) == (config.replicas[i].host, config.replicas[i].port):
                same_address.append(i)
        else:
            old = config.replicas[i]
            replicas.append(ReplicaInfo(i, old.host, old.port, old.public_key))
    for name in [*(remove_clients or []), *(rotate_clients or [])]:
        if name not in config.client_index:
            raise UsageError(f"client {name!r} is not in the group.")
    made_clients: dict[str, object] = {}
    rotated: dict[str, object] = {}
    clients = []
    for c in config.clients:
        if c.id in (remove_clients or []):
            continue
        if c.id in (rotate_clients or []):
            # A new key for the same name: the old one is refused from the new epoch on.
            rotated[c.id] = issue(signer, ca_cert, config.cluster_id, c.id)
            c = ClientInfo(c.id, rotated[c.id].public)  # type: ignore[attr-defined]
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
    result = Plan(cluster_path, epoch, membership, command, timestamp, same_address=same_address)
    text = _with_entry(cluster_path, epoch, 0, command)
    # Everything is checked; now the files. Where they go is checked first, and a write
    # that fails all the same (a full disk) takes back what was written and puts back
    # what was overwritten: one sentence, every file as it was.
    if made_clients or rotated:
        _check_writable_dir(base, "the cluster file's directory")
    if issued:
        _check_writable_dir(out_dir, "the new replicas' directory")
    files = _Files()
    try:
        # New clients' keys go beside the cluster file (this is the operator's machine);
        # a rotated client's wait beside it until the change takes effect (`apply`).
        for name, made in [*made_clients.items(), *rotated.items()]:
            key_file, cert_file = node_files(base, name) if name in made_clients else staged_files(base, name, epoch)
            files.write(key_file, lambda p, m=made: _write_private(p, m.key_pem))  # type: ignore[attr-defined]
            files.write(cert_file, lambda p, m=made: _write_public(p, m.cert_pem))  # type: ignore[attr-defined]
            (result.new_clients if name in made_clients else result.rotated_clients).append(name)
        for i, made in issued.items():
            d = os.path.join(out_dir, f"replica-{i}")
            files.makedirs(d)
            key_file, cert_file = node_files(d, i)
            ca_copy = os.path.join(d, os.path.basename(ca_path(config)))
            files.write(key_file, lambda p, m=made: _write_private(p, m.key_pem))  # type: ignore[attr-defined]
            files.write(cert_file, lambda p, m=made: _write_public(p, m.cert_pem))  # type: ignore[attr-defined]
            files.write(ca_copy, lambda p: shutil.copyfile(ca_path(config), p))
            node_text, problem = _node_copy(text, config.service, config.signing_domain, d)
            files.write(os.path.join(d, "cluster.toml"), lambda p, t=node_text: _write_atomic(p, t), atomic=True)
            result.new_replicas[i] = d
            if problem:
                result.warnings.append(f"replica {i}: {problem}")
    except OSError as exc:
        files.undo()
        where = f" {exc.filename}" if exc.filename else ""
        raise UsageError(f"cannot write the new nodes' files{where}: {exc.strerror or exc}; nothing was written.") from None
    files.done()
    return result


def _superseded(p: Plan) -> list[tuple[str, str]]:
    """The renames that make the key files beside the cluster file those of epoch
    `p.epoch`, checked before the change is sent: (from, to), in order. Every replica
    and client whose key the change replaces or removes has its key and certificate moved
    aside (`aside_files`); a rotated client's new ones (`staged_files`, written by
    `plan`) then take their place. UsageError if a rotated client's new key is missing
    or is not the one the planned command names (the plan was made again since)."""
    config = load_cluster(p.cluster_path)
    base = config.base_dir
    old = {**{r.id: r.public_key for r in config.replicas}, **{c.id: c.public_key for c in config.clients}}
    new = {**{r.id: r.public_key for r in p.membership.replicas}, **{c.id: c.public_key for c in p.membership.clients}}
    moves: list[tuple[str, str]] = []
    for node_id in [*old, *(i for i in new if i not in old and isinstance(i, int))]:
        if old.get(node_id) == new.get(node_id):
            continue
        for path, aside in zip(node_files(base, node_id), aside_files(base, node_id, p.epoch), strict=True):
            if os.path.lexists(path):
                moves.append((path, _unused(aside)))
        if isinstance(node_id, str) and node_id in new:  # a rotated client
            key_file, cert_file = staged_files(base, node_id, p.epoch)
            try:
                cert = read_certificate(cert_file, f"the new certificate of client {node_id!r}")
            except ConfigError as exc:
                raise UsageError(f"{exc} Plan the change again.") from None
            if certificate_key(cert) != new[node_id] or not os.path.exists(key_file):
                raise UsageError(f"{key_file} and {cert_file} are not client {node_id!r}'s new key and certificate "
                                 "in this plan (was the change planned again since?).")
            moves += zip((key_file, cert_file), node_files(base, node_id), strict=True)
    return moves


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


CLASS_DIR = "class_dir"
"""`[service] class_dir`: the directory a relative FILE.py in `class` is found from,
relative to the cluster file's own directory (default: that directory). It is not part
of the signed identity (pbft.protocol.config.service_spec), so a copy of the cluster file
in another directory can name the same service file without changing `class`, which is."""


def _service_file(service: ServiceSpec | None) -> str | None:
    """The absolute path of the FILE.py a `[service]` names, or None (a module path)."""
    if service is None:
        return None
    from ..adversary.loader import is_file, resolve_path

    where = service.ref.rpartition(":")[0]
    return resolve_path(where, service.base_dir) if is_file(where) else None


def _with_class_dir(text: str, rel: str | None) -> str:
    """`text` with the `[service]` table's `class_dir` line replaced by one naming `rel`
    (None: removed)."""
    out: list[str] = []
    in_service = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_service = re.fullmatch(r"\[\s*service\s*\]\s*(#.*)?", stripped) is not None
            out.append(line)
            if in_service and rel is not None:
                out.append(f"{CLASS_DIR} = {json.dumps(rel)}  # where this copy finds the class's "
                           "file (pbft admin); not part of the service's identity")
            continue
        if in_service and re.match(rf"{CLASS_DIR}\s*=", stripped):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _node_copy(text: str, service: ServiceSpec | None, domain: str, d: str) -> tuple[str, str]:
    """The cluster file for the new replica directory `d` (`_node_text`), and a problem
    ("" if none). A relative `[service]` FILE.py path means the file beside the operator's
    cluster file, and would mean another one from `d`: the copy keeps `class` as written
    (it is hashed into the signing domain every replica must share) and says where the
    file is with `class_dir`. The copy is read back: it must name the same file and give
    the same signing domain as the operator's."""
    node = _node_text(text)
    wanted = _service_file(service)
    if wanted is None:
        return node, ""
    d = os.path.abspath(d)
    where = service.ref.rpartition(":")[0]  # type: ignore[union-attr]
    if os.path.isabs(os.path.expanduser(where)):
        return node, ""
    base = service.base_dir  # type: ignore[union-attr]
    node = _with_class_dir(node, None if os.path.normpath(base) == d else os.path.relpath(base, d))
    try:
        copy, _ = check_cluster(parse_toml(node.encode()), d)
    except ValueError:
        copy = None
    if copy is None or _service_file(copy.service) != wanted or copy.signing_domain != domain:
        return _node_text(text), (
            f"its cluster file's [service] could not be made to name {wanted} from {d}: put the service "
            f"file at {os.path.normpath(os.path.join(d, where))} before starting it."
        )
    return node, ""


async def apply(p: Plan, timeout: float = 60.0) -> dict:
    """Send the planned command as the operator and wait for the outcome; on success,
    record the `[[epoch]]` entry in the cluster file (and in the new replicas' copies).
    Returns the replicas' answer: {"epoch", "after"}; ChangeRefused if they refused it."""
    from ..node.client import open_client

    moves = _superseded(p)
    async with open_client(p.cluster_path, OPERATOR, timeout=timeout) as client:
        client.core.timestamp = p.timestamp  # the next request is the one signed in `plan`
        result = await client.execute(reconfigure_operation(p.epoch, p.membership))
    answer = codec.decode(result)
    if not isinstance(answer, dict) or "error" in answer:
        raise ChangeRefused(f"the replicas refused the change: {answer.get('error') if isinstance(answer, dict) else answer}.")
    text = _with_entry(p.cluster_path, p.epoch, answer["after"], p.command)
    config = load_cluster(p.cluster_path)
    files = _Files()
    try:
        for src, dst in moves:
            files.move(src, dst)
        files.write(p.cluster_path, lambda path: _write_atomic(path, text), atomic=True)
        for d in p.new_replicas.values():
            node_text, _ = _node_copy(text, config.service, config.signing_domain, d)
            files.write(os.path.join(d, "cluster.toml"), lambda path, t=node_text: _write_atomic(path, t),
                        atomic=True)
        load_cluster(p.cluster_path)  # what we wrote must read back
    except (OSError, ConfigError) as exc:
        files.undo()
        why = f"{exc.filename}: {exc.strerror or exc}" if isinstance(exc, OSError) and exc.filename else str(exc)
        raise UsageError(
            f"the replicas took the change to epoch {p.epoch} (after checkpoint {answer['after']}), but it "
            f"could not be recorded ({why.rstrip('.')}); every file was put back as it was, so "
            f"{p.cluster_path} does not record epoch {p.epoch} yet."
        ) from None
    files.done()
    p.moved = list(moves)
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


