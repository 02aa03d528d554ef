"""What the correct replicas of a real run agreed, read back from their durable stores.

Theory of operation. `pbft scenario run --real` judges what clients saw; the simulator's
oracle also compares what the correct replicas agreed. After a real run the replica
processes are stopped and their data directories are still there, so this module reads
each correct replica's store (`storage.read_records`, read-only; every row decoded by
`pbft.protocol.records`) and compares them. Faulty replicas, twins included (both their
processes), are not compared: only what correct replicas agreed must match.

- `agreement`: a sequence number both executed (its `executed` row is still in the log
  window: rows at or below the stable checkpoint are truncated) carries the same batch
  digest, the PRE-PREPARE digest of the executed slot's prepared certificate (else the
  pre-prepare it accepted or signed, else the COMMIT it signed for that slot);
- `checkpoint-digests`: a state digest one replica holds for a checkpoint seq (its
  latest stable checkpoint, its window jump, or a CHECKPOINT it signed and still holds)
  is the one every other replica holds for that seq;
- `prepared-uniqueness`: no two correct replicas prepared different digests for one
  (view, seq): their PREPARED rows, and the prepared certificates their VIEW-CHANGEs
  claim (inside the stored NEW-VIEW that installed a replica's view, or its own pending
  VIEW-CHANGE), which outlive the truncated rows;
- `agreement` within one store: every executed slot has its prepared certificate (the
  core writes PREPARED with or before EXECUTED and truncates both together; a slot
  executed without one was committed by a replica that was not prepared itself).

The comparison (`summarise`, `compare`) is pure over decoded records; `check_stores` does
the reading. Data that is missing (a store never created or emptied, a slot truncated at
one replica only, a record that names no digest) is not a violation: only two digests
that both exist and differ are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from ..protocol import codec
from ..protocol.messages import Checkpoint, Commit, NewView, PrePrepare, ViewChange, decode_envelope
from ..protocol.records import (
    AcceptedPrePrepare,
    DurableRecord,
    ExecutedBatch,
    PreparedCertificate,
    SignedVote,
    StableCheckpoint,
    ViewState,
    WindowJump,
)
from ..sim.oracle import Violation


@dataclass
class Agreed:
    """What one replica process's store says it agreed."""

    name: str
    replica: int | None = None
    """The replica id (None: unknown; its VIEW-CHANGE claims are then not matched to it)."""
    executed: dict[int, bytes] = field(default_factory=dict)
    """seq -> batch digest of each executed slot still in the window (highest view)."""
    prepared: dict[tuple[int, int], bytes] = field(default_factory=dict)
    """(view, seq) -> digest of each prepared certificate."""
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    """seq -> state digest: the stable checkpoint, a window jump, own CHECKPOINT votes."""
    stable: int | None = None
    """The latest stable checkpoint's seq (None: none recorded)."""
    claimed: dict[int, dict[tuple[int, int], bytes]] = field(default_factory=dict)
    """signer -> (view, seq) -> digest: the prepared certificates each VIEW-CHANGE held in
    the store (the NEW-VIEW that installed its view, or its own pending VIEW-CHANGE)
    says its signer had prepared; they outlive the truncated PREPARED rows."""
    unprepared: list[tuple[int, int]] = field(default_factory=list)
    """(view, seq) of executed slots with no prepared certificate of that view: a correct
    replica writes PREPARED with or before EXECUTED and truncates them together."""


def _message(envelope: bytes) -> object | None:
    try:
        return decode_envelope(envelope)[1]
    except (codec.CodecError, ValueError):
        return None


def _pp_digest(envelope: bytes) -> bytes | None:
    msg = _message(envelope)
    return msg.digest if isinstance(msg, PrePrepare) else None


def summarise(name: str, records: list[DurableRecord], replica: int | None = None) -> Agreed:
    """One store's records (in the order they were written) reduced to what it agreed."""
    out = Agreed(name, replica)
    executed: dict[int, tuple[int, bytes]] = {}  # seq -> (view, old-format pre-prepare)
    proposals: dict[tuple[int, int], bytes] = {}  # accepted or signed pre-prepare digests
    commits: dict[tuple[int, int], bytes] = {}
    for r in records:
        match r:
            case PreparedCertificate():
                d = _pp_digest(r.pre_prepare)
                if d is not None:
                    out.prepared[(r.view, r.seq)] = d
            case ExecutedBatch():
                if r.seq not in executed or r.view >= executed[r.seq][0]:
                    executed[r.seq] = (r.view, r.pre_prepare)
            case AcceptedPrePrepare():
                d = _pp_digest(r.envelope)
                if d is not None:
                    proposals[(r.view, r.seq)] = d
            case SignedVote(phase="pre-prepare"):
                d = _pp_digest(r.envelope)
                if d is not None:
                    proposals.setdefault((r.view, r.seq), d)
            case SignedVote(phase="commit"):
                msg = _message(r.envelope)
                if isinstance(msg, Commit):
                    commits[(r.view, r.seq)] = msg.digest
            case SignedVote(phase="checkpoint"):
                msg = _message(r.envelope)
                if isinstance(msg, Checkpoint):
                    out.checkpoints.setdefault(msg.seq, msg.digest)
            case StableCheckpoint():
                out.checkpoints[r.seq] = r.digest
                out.stable = r.seq
            case WindowJump():
                out.checkpoints[r.seq] = r.digest
            case ViewState():
                _claims(out, r.message)
    for seq, (view, old) in executed.items():
        if not old and (view, seq) not in out.prepared:
            out.unprepared.append((view, seq))
        d = (_pp_digest(old) if old else None) or out.prepared.get((view, seq)) \
            or proposals.get((view, seq)) or commits.get((view, seq))
        if d is not None:
            out.executed[seq] = d
    return out


def _claims(out: Agreed, message: bytes) -> None:
    """The prepared certificates the VIEW-CHANGEs in a stored NEW-VIEW (or one stored
    VIEW-CHANGE) claim, by signer. Certificates are not checked again here: the replica
    checked them when it accepted the NEW-VIEW; only their PRE-PREPAREs' digests are read."""
    if not message:
        return
    try:
        env, msg = decode_envelope(message)
    except (codec.CodecError, ValueError):
        return
    raws = msg.view_changes if isinstance(msg, NewView) else [message] if isinstance(msg, ViewChange) else []
    for raw in raws:
        try:
            venv, vc = decode_envelope(raw)
        except (codec.CodecError, ValueError):
            continue
        if not isinstance(vc, ViewChange) or not isinstance(venv.signer, int):
            continue
        for cert in vc.prepared:
            pp = _message(cert[0]) if cert else None
            if isinstance(pp, PrePrepare):
                out.claimed.setdefault(venv.signer, {})[(pp.view, pp.seq)] = pp.digest


def _short(d: bytes) -> str:
    return d.hex()[:12]


def compare(replicas: list[Agreed]) -> list[Violation]:
    """The violations among the correct replicas' stores: per store an executed slot
    without its prepared certificate, per pair the lowest seq executed with different
    digests and the lowest checkpoint with different state digests, and the lowest
    (view, seq) prepared with different digests (each with how many there were)."""
    found: list[Violation] = []
    for a in replicas:
        if a.unprepared:
            v, s = min(a.unprepared, key=lambda vs: vs[1])
            found.append(Violation(
                "agreement",
                f"{a.name} executed seq {s} (view {v}) without a prepared certificate for it in "
                f"its durable store ({len(a.unprepared)} such slot(s) in all): it committed "
                "without being prepared itself",
            ))
    for a, b in combinations(replicas, 2):
        both = sorted(s for s in a.executed.keys() & b.executed.keys() if a.executed[s] != b.executed[s])
        if both:
            s = both[0]
            found.append(Violation(
                "agreement",
                f"{a.name} and {b.name} executed different batches at seq {s} (digests "
                f"{_short(a.executed[s])}... and {_short(b.executed[s])}...; their durable stores, "
                f"{len(both)} such seq in all)",
            ))
        cps = sorted(s for s in a.checkpoints.keys() & b.checkpoints.keys() if a.checkpoints[s] != b.checkpoints[s])
        if cps:
            s = cps[0]
            found.append(Violation(
                "checkpoint-digests",
                f"{a.name} and {b.name} hold different state digests for checkpoint {s} "
                f"({_short(a.checkpoints[s])}... and {_short(b.checkpoints[s])}...; their durable stores)",
            ))
    found.extend(_prepared_uniqueness(replicas))
    return found


def _prepared_uniqueness(replicas: list[Agreed]) -> list[Violation]:
    """No two correct replicas prepared different digests for one (view, seq): from each
    store's PREPARED rows, and from the prepared certificates the VIEW-CHANGEs of correct
    replicas (kept in a stored NEW-VIEW) claim, which outlive those rows."""
    correct = {a.replica for a in replicas if a.replica is not None}
    by_slot: dict[tuple[int, int], dict[bytes, set[str]]] = {}
    for a in replicas:
        for slot, d in a.prepared.items():
            by_slot.setdefault(slot, {}).setdefault(d, set()).add(a.name)
        for signer, certs in a.claimed.items():
            if signer in correct:
                for slot, d in certs.items():
                    by_slot.setdefault(slot, {}).setdefault(d, set()).add(f"replica {signer}")
    split = sorted(slot for slot, ds in by_slot.items() if len(ds) > 1)
    if not split:
        return []
    v, s = split[0]
    shown = "; ".join(f"{', '.join(sorted(who))}: {_short(d)}..." for d, who in sorted(by_slot[(v, s)].items()))
    return [Violation(
        "prepared-uniqueness",
        f"correct replicas prepared different digests for view {v}, seq {s} ({shown}; their "
        f"durable stores and the VIEW-CHANGEs they signed, {len(split)} such slot(s) in all)",
    )]


def figures(replicas: list[Agreed]) -> dict[str, int]:
    """How much `compare` looked at: distinct executed seqs (agreement), stable or voted
    checkpoints (checkpoint-digests) and prepared (view, seq) slots, the VIEW-CHANGEs'
    claims included (prepared-uniqueness), over every store read."""
    executed = set().union(*(a.executed for a in replicas)) if replicas else set()
    checkpoints = set().union(*(a.checkpoints for a in replicas)) if replicas else set()
    prepared: set[tuple[int, int]] = set()
    for a in replicas:
        prepared |= set(a.prepared)
        for certs in a.claimed.values():
            prepared |= set(certs)
    return {"agreement": len(executed), "checkpoint-digests": len(checkpoints),
            "prepared-uniqueness": len(prepared)}


def check_stores(
    dirs: dict[int, str], counts: dict[str, int] | None = None
) -> tuple[list[Violation], list[str]]:
    """Read each correct replica's data directory (id -> path; the processes have
    stopped) and compare them. Returns the violations and one note per store that could not be read
    (missing or damaged: not a violation here, the replica's own start refuses it). With
    `counts`, adds to it what was compared (`figures`)."""
    from ..errors import ConfigError
    from ..node.storage import read_records
    from ..protocol.records import DamagedRecord, from_persist

    agreed: list[Agreed] = []
    notes: list[str] = []
    for rid, path in dirs.items():
        name = f"replica {rid}"
        try:
            records = [from_persist(p) for p in read_records(path)]
        except (ConfigError, DamagedRecord) as exc:
            notes.append(f"{name}: durable store not compared: {exc}")
            continue
        agreed.append(summarise(name, records, rid))
    if counts is not None:
        for check, n in figures(agreed).items():
            counts[check] = counts.get(check, 0) + n
    return compare(agreed), notes
