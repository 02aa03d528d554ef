"""Evidence of Byzantine faults: export from data directories, verify offline.

Theory of operation. When a correct replica receives two validly signed envelopes from
one replica that conflict (two PRE-PREPAREs for one (view, seq) with different digests,
two PREPAREs or COMMITs for one slot, two CHECKPOINTs for one seq), the core emits
`events.Evidence` and the node stores the pair in its data directory
(`Storage.add_evidence`). Because every protocol message is signed (docs/protocol.md, "Evidence")
the pair convinces anyone who holds the cluster file: nothing else needs trusting, not
even the replica that recorded it.

`export(config, dirs)` reads the `evidence` table of each data directory (read-only, so
it works while the replica runs) and merges duplicates reported by several replicas.
The export is JSON (EXPORT_FORMAT): per record the culprit, the kind, the two envelopes
in base64 and who reported it. `verify_evidence(config, record)` re-checks one record
from nothing but the cluster file: both envelopes decode strictly, both are signed by
the named culprit (a replica of the cluster, under this cluster's signing domain), they
are the same kind of message for the same slot, and they differ in digest. It never
trusts the record's own claims: the culprit it names is the envelopes' signer.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sqlite3
from dataclasses import dataclass

from ..errors import ConfigError
from ..node.storage import DB_FILE, evidence_pair_digest, open_read_only, read_evidence
from ..protocol.config import ClusterConfig
from ..protocol.crypto import Verifier
from ..protocol.messages import (
    Checkpoint,
    Commit,
    Message,
    Prepare,
    PrePrepare,
    decode_envelope,
)

EXPORT_FORMAT = "pbft-evidence/1"

KIND_MESSAGE: dict[str, type] = {
    "equivocate": PrePrepare,
    "double-pre-prepare": PrePrepare,
    "double-prepare": Prepare,
    "double-commit": Commit,
    "double-checkpoint": Checkpoint,
}
"""The evidence kinds the core emits and the message type each one is about."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    culprit: int | None
    reason: str
    """Why the record is valid (what the culprit signed) or why it is not."""


# -- export ------------------------------------------------------------------------------


def read_data_dir(config: ClusterConfig, path: str) -> tuple[int, list]:
    """(replica id, evidence rows) of the data directory `path`, opened read-only.
    ConfigError (one sentence) for a directory that is missing or of another cluster."""
    db, file = open_read_only(path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("cluster_id") != config.cluster_id:
            raise ConfigError(
                f"the data directory {path} belongs to cluster {meta.get('cluster_id')!r}, "
                f"not {config.cluster_id!r}."
            )
        return int(meta.get("replica_id", "-1")), read_evidence(db)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the evidence in {file}: {exc}.") from None
    finally:
        db.close()


def data_dirs(config: ClusterConfig, root: str | None, explicit: list[str]) -> list[str]:
    """The data directories to read: each `--replica-data DIR`, else every
    `ROOT/replica-<id>` that exists (ROOT: --data, default `<cluster dir>/data`)."""
    if explicit:
        return list(explicit)
    root = root or os.path.join(config.base_dir, "data")
    found = [
        os.path.join(root, f"replica-{i}")
        for i in config.replica_ids()
        if os.path.isfile(os.path.join(root, f"replica-{i}", DB_FILE))
    ]
    if not found:
        raise ConfigError(f"no replica data directory under {root} (replica-<id>/{DB_FILE}).")
    return found


def export(config: ClusterConfig, dirs: list[str]) -> dict:
    """The JSON-ready export of every evidence record stored in `dirs`, one entry per
    distinct pair (with every replica that reported it)."""
    merged: dict[tuple[int, str, bytes], dict] = {}
    for path in dirs:
        reporter, rows = read_data_dir(config, path)
        for culprit, kind, first, second, recorded in rows:
            key = (culprit, kind, evidence_pair_digest(first, second))
            entry = merged.get(key)
            if entry is None:
                entry = merged[key] = {
                    "culprit": culprit,
                    "kind": kind,
                    "first": base64.b64encode(first).decode(),
                    "second": base64.b64encode(second).decode(),
                    "reported_by": [],
                    "recorded": recorded,
                }
            if reporter not in entry["reported_by"]:
                entry["reported_by"].append(reporter)
            entry["recorded"] = min(entry["recorded"], recorded)
    records = sorted(merged.values(), key=lambda e: (e["recorded"], e["culprit"], e["kind"]))
    for e in records:
        e["reported_by"].sort()
    return {"format": EXPORT_FORMAT, "cluster": config.cluster_id, "records": records}


def load_export(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the evidence export {path}: {exc}.") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{path} is not a pbft evidence export ({EXPORT_FORMAT}).")
    if not isinstance(doc.get("records"), list):
        raise ConfigError(f"{path}: 'records' must be a list.")
    return doc


# -- verification -------------------------------------------------------------------------


def _slot(msg: Message) -> tuple:
    if isinstance(msg, PrePrepare | Prepare | Commit):
        return ("view", msg.view, "seq", msg.seq)
    assert isinstance(msg, Checkpoint)
    return ("seq", msg.seq)


def _describe(msg: Message) -> str:
    name = {PrePrepare: "PRE-PREPAREs", Prepare: "PREPAREs", Commit: "COMMITs",
            Checkpoint: "CHECKPOINTs"}[type(msg)]
    if isinstance(msg, Checkpoint):
        return f"two {name} for seq {msg.seq}"
    return f"two {name} for view {msg.view} seq {msg.seq}"


def verify_evidence(config: ClusterConfig, record: dict) -> Verdict:
    """Check one exported record against the cluster file alone (see the module doc)."""
    claimed = record.get("culprit") if isinstance(record, dict) else None
    if not isinstance(record, dict):
        return Verdict(False, None, "a record must be an object")
    kind = record.get("kind")
    expected = KIND_MESSAGE.get(kind) if isinstance(kind, str) else None
    if expected is None:
        return Verdict(False, None, f"unknown evidence kind {kind!r}")
    envs = []
    for field in ("first", "second"):
        raw = record.get(field)
        try:
            data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            data = None
        if data is None:
            return Verdict(False, None, f"'{field}' is not base64")
        try:
            env, msg = decode_envelope(data)
        except Exception as exc:  # strict decoding rejects with its own error types
            return Verdict(False, None, f"'{field}' is not a signed pbft message ({exc})")
        envs.append((env, msg))
    (e1, m1), (e2, m2) = envs
    if e1.signer != e2.signer:
        return Verdict(False, None, f"signed by two different nodes ({e1.signer!r}, {e2.signer!r})")
    signer = e1.signer
    if type(signer) is not int or signer not in config.replica_ids():
        return Verdict(False, None, f"the signer {signer!r} is not a replica of {config.cluster_id!r}")
    if claimed != signer:
        return Verdict(False, signer, f"the record names replica {claimed!r}, but the envelopes are signed by {signer}")
    verifier = Verifier(config.signing_domain, {signer: config.replicas[signer].public_key})
    for field, env in (("first", e1), ("second", e2)):
        if not verifier.verify(env):
            return Verdict(False, signer, f"the {field} signature does not verify with replica {signer}'s key")
    if type(m1) is not type(m2) or type(m1) is not expected:
        return Verdict(
            False, signer,
            f"kind {kind!r} needs two {expected.__name__}s, not {type(m1).__name__} and {type(m2).__name__}",
        )
    if _slot(m1) != _slot(m2):
        return Verdict(False, signer, f"different slots {_slot(m1)} and {_slot(m2)}: no conflict")
    if m1.digest == m2.digest:  # type: ignore[union-attr]
        return Verdict(False, signer, "the same digest twice: no conflict")
    return Verdict(
        True, signer,
        f"replica {signer} signed {_describe(m1)} with different digests "
        f"({m1.digest.hex()[:12]}, {m2.digest.hex()[:12]})",  # type: ignore[union-attr]
    )
