"""What the correct replicas of a real run agreed, read back from their durable stores.

Theory of operation. `pbft scenario run --real` judges what clients saw; the simulator's
oracle also compares what the correct replicas agreed. After a real run the replica
processes are stopped and their data directories are still there, so this module reads
each correct replica's store (`storage.read_records`, read-only; every row decoded by
`pbft.protocol.records`) and compares them, two by two:

- `agreement`: a sequence number both executed (its `executed` row is still in the log
  window: rows at or below the stable checkpoint are truncated) carries the same batch
  digest, the PRE-PREPARE digest of the executed slot's prepared certificate (else the
  pre-prepare it accepted or signed, else the COMMIT it signed for that slot);
- `checkpoint-digests`: a state digest one replica holds for a checkpoint seq (its
  latest stable checkpoint, its window jump, or a CHECKPOINT it signed and still holds)
  is the one every other replica holds for that seq;
- `prepared-uniqueness`: no two correct replicas hold prepared certificates with
  different digests for one (view, seq);
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
from ..protocol.messages import Checkpoint, Commit, PrePrepare, decode_envelope
from ..protocol.records import (
    AcceptedPrePrepare,
    DurableRecord,
    ExecutedBatch,
    PreparedCertificate,
    SignedVote,
    StableCheckpoint,
    WindowJump,
)
from ..sim.oracle import Violation


@dataclass
class Agreed:
    """What one replica process's store says it agreed."""

    name: str
    executed: dict[int, bytes] = field(default_factory=dict)
    """seq -> batch digest of each executed slot still in the window (highest view)."""
    prepared: dict[tuple[int, int], bytes] = field(default_factory=dict)
    """(view, seq) -> digest of each prepared certificate."""
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    """seq -> state digest: the stable checkpoint, a window jump, own CHECKPOINT votes."""
    stable: int | None = None
    """The latest stable checkpoint's seq (None: none recorded)."""
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


def summarise(name: str, records: list[DurableRecord]) -> Agreed:
    """One store's records (in the order they were written) reduced to what it agreed."""
    out = Agreed(name)
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
    for seq, (view, old) in executed.items():
        if not old and (view, seq) not in out.prepared:
            out.unprepared.append((view, seq))
        d = (_pp_digest(old) if old else None) or out.prepared.get((view, seq)) \
            or proposals.get((view, seq)) or commits.get((view, seq))
        if d is not None:
            out.executed[seq] = d
    return out


def _short(d: bytes) -> str:
    return d.hex()[:12]


def compare(replicas: list[Agreed]) -> list[Violation]:
    """The violations between every pair of correct replica processes (at most one per
    check and pair, the lowest seq)."""
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
        pre = sorted(k for k in a.prepared.keys() & b.prepared.keys() if a.prepared[k] != b.prepared[k])
        if pre:
            v, s = pre[0]
            found.append(Violation(
                "prepared-uniqueness",
                f"{a.name} and {b.name} hold prepared certificates with different digests for "
                f"view {v}, seq {s} ({_short(a.prepared[(v, s)])}... and {_short(b.prepared[(v, s)])}...; "
                "their durable stores)",
            ))
    return found


def check_stores(dirs: dict[str, str]) -> tuple[list[Violation], list[str]]:
    """Read each named data directory (name -> path; the processes have stopped) and
    compare them. Returns the violations and one note per store that could not be read
    (missing or damaged: not a violation here, the replica's own start refuses it)."""
    from ..errors import ConfigError
    from ..node.storage import read_records
    from ..protocol.records import DamagedRecord, from_persist

    agreed: list[Agreed] = []
    notes: list[str] = []
    for name, path in dirs.items():
        try:
            records = [from_persist(p) for p in read_records(path)]
        except (ConfigError, DamagedRecord) as exc:
            notes.append(f"{name}: durable store not compared: {exc}")
            continue
        agreed.append(summarise(name, records))
    return compare(agreed), notes
