"""The durable records, one frozen type each, and their exact on-disk shape.

A replica's store holds `Persist` rows keyed by (record, view, seq, tag) with an opaque
CBOR value. This module is the one place that knows what each value holds: every record
the core writes is built here (`to_persist`) and every row it reads back on restart is
checked here (`from_persist`), field by field, in both directions. A row that does not
have the shape of its record is a `DamagedRecord`, never a `TypeError` three calls later:
the storage layer checksums each row, so a damaged one means a bug or a store from
another program, and recovery refuses it with one sentence.

The bytes are those of storage format 2 (see docs/formats.md): changing a record here is
a change of the on-disk format.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec
from .epochs import epoch_of_view, first_view
from .events import Persist, Record

ACCEPTED = "accepted-pre-prepare"
"""VOTE tag of a pre-prepare this replica accepted from the primary (not one it signed):
after a restart a conflicting pre-prepare for that slot is evidence (OSDI'99 4.2)."""

QUORUM_TAG = "new-view-timer"
"""VIEW tag of the record saying 2f+1 replicas were in our pending view (TOCS 4.5.2)."""

VOTE_PHASES = frozenset({"pre-prepare", "prepare", "commit", "checkpoint"})
"""The tags of votes this replica signed (`safety.vote_slot`)."""


class DamagedRecord(ValueError):
    """A stored row does not have the shape of its record."""


def _expect(ok: bool, what: str, p: Persist) -> None:
    if not ok:
        raise DamagedRecord(f"the stored {p.record.value} record at view {p.view}, n={p.seq} "
                            f"(tag {p.tag!r}) is damaged: {what}")


def _decode(p: Persist) -> object:
    try:
        return codec.decode(p.value)
    except codec.CodecError as exc:
        raise DamagedRecord(f"the stored {p.record.value} record at view {p.view}, n={p.seq} "
                            f"is not canonical CBOR: {exc}") from None


def _is_u64(x: object) -> bool:
    return type(x) is int and 0 <= x < 2**64


def _is_bytes_list(x: object) -> bool:
    return isinstance(x, list) and all(type(b) is bytes for b in x)


@dataclass(frozen=True, slots=True)
class SignedVote:
    """A PRE-PREPARE, PREPARE, COMMIT or CHECKPOINT this replica signed (the safety rules
    reload them so a restart never signs a second digest for one slot)."""

    phase: str
    view: int
    seq: int
    envelope: bytes

    def to_persist(self) -> Persist:
        assert self.phase in VOTE_PHASES, self.phase
        return Persist(Record.VOTE, self.seq, self.view, self.phase, self.envelope)


@dataclass(frozen=True, slots=True)
class AcceptedPrePrepare:
    """The primary's PRE-PREPARE this backup accepted for (view, seq)."""

    view: int
    seq: int
    envelope: bytes

    def to_persist(self) -> Persist:
        return Persist(Record.VOTE, self.seq, self.view, ACCEPTED, self.envelope)


@dataclass(frozen=True, slots=True)
class PreparedCertificate:
    """A pre-prepare and 2f matching prepares (OSDI'99 4.2), for view changes after a
    restart."""

    view: int
    seq: int
    pre_prepare: bytes
    prepares: tuple[bytes, ...]

    def to_persist(self) -> Persist:
        return Persist(Record.PREPARED, self.seq, self.view, "",
                       codec.encode([self.pre_prepare, *self.prepares]))


@dataclass(frozen=True, slots=True)
class ExecutedBatch:
    """Sequence number `seq`, accepted in `view`, was executed. Older stores hold the
    pre-prepare itself in `pre_prepare`; new records name the slot only (b"")."""

    view: int
    seq: int
    pre_prepare: bytes = b""

    def to_persist(self) -> Persist:
        return Persist(Record.EXECUTED, self.seq, self.view, "", self.pre_prepare)


@dataclass(frozen=True, slots=True)
class StableCheckpoint:
    """The latest stable checkpoint and 2f+1 signatures on its digest. Its state is in the
    replica's store, which keeps that checkpoint (store.py)."""

    seq: int
    digest: bytes
    proof: tuple[bytes, ...]

    def to_persist(self) -> Persist:
        return Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([self.seq, self.digest, list(self.proof)]))


@dataclass(frozen=True, slots=True)
class WindowJump:
    """A stable checkpoint we moved our window to before holding its state (the state
    transfer resumes after a restart)."""

    seq: int
    digest: bytes
    proof: tuple[bytes, ...]

    def to_persist(self) -> Persist:
        return Persist(Record.WINDOW, 0, 0, "", codec.encode([self.seq, self.digest, list(self.proof)]))


@dataclass(frozen=True, slots=True)
class ViewState:
    """Our view, whether it is active, and our VIEW-CHANGE for it while it is not, or the
    NEW-VIEW that installed it once it is (b"" for view 0)."""

    view: int
    active: bool
    message: bytes

    def to_persist(self) -> Persist:
        # One per epoch: a restart that takes the replica back to an earlier epoch (a
        # window jump it was still fetching) must not overwrite the later epoch's
        # (recovery.py, "held over"). Epoch 0's key is the (0, 0) of older stores.
        return Persist(Record.VIEW, 0, first_view(epoch_of_view(self.view)), "",
                       codec.encode([self.view, self.active, self.message]))


@dataclass(frozen=True, slots=True)
class ViewQuorum:
    """2f+1 replicas were in `view`: its new-view timer runs again after a restart."""

    view: int

    def to_persist(self) -> Persist:
        return Persist(Record.VIEW, 0, first_view(epoch_of_view(self.view)), QUORUM_TAG, codec.encode(self.view))


DurableRecord = (
    SignedVote | AcceptedPrePrepare | PreparedCertificate | ExecutedBatch | StableCheckpoint
    | WindowJump | ViewState | ViewQuorum
)


def from_persist(p: Persist) -> DurableRecord:
    """The typed record a stored row holds; `DamagedRecord` when it has another shape."""
    _expect(_is_u64(p.view) and _is_u64(p.seq), "bad key", p)
    match p.record:
        case Record.VOTE if p.tag == ACCEPTED:
            return AcceptedPrePrepare(p.view, p.seq, p.value)
        case Record.VOTE:
            _expect(p.tag in VOTE_PHASES, "unknown vote phase", p)
            return SignedVote(p.tag, p.view, p.seq, p.value)
        case Record.PREPARED:
            v = _decode(p)
            _expect(_is_bytes_list(v) and len(v) >= 1, "not a list of envelopes", p)  # type: ignore[arg-type]
            assert isinstance(v, list)
            return PreparedCertificate(p.view, p.seq, v[0], tuple(v[1:]))
        case Record.EXECUTED:
            return ExecutedBatch(p.view, p.seq, p.value)
        case Record.CHECKPOINT:
            v = _decode(p)
            _expect(isinstance(v, list) and len(v) == 3, "not [seq, digest, proof]", p)
            assert isinstance(v, list)
            seq, digest, proof = v
            _expect(_is_u64(seq) and type(digest) is bytes and _is_bytes_list(proof),
                    "a field has the wrong type", p)
            return StableCheckpoint(seq, digest, tuple(proof))
        case Record.WINDOW:
            v = _decode(p)
            _expect(isinstance(v, list) and len(v) == 3, "not [seq, digest, proof]", p)
            assert isinstance(v, list)
            seq, digest, proof = v
            _expect(_is_u64(seq) and type(digest) is bytes and _is_bytes_list(proof),
                    "a field has the wrong type", p)
            return WindowJump(seq, digest, tuple(proof))
        case Record.VIEW if p.tag == QUORUM_TAG:
            v = _decode(p)
            _expect(_is_u64(v), "not a view number", p)
            assert isinstance(v, int)
            _expect(p.view in (0, first_view(epoch_of_view(v))), "keyed under another epoch", p)
            return ViewQuorum(v)
        case Record.VIEW:
            v = _decode(p)
            _expect(isinstance(v, list) and len(v) == 3, "not [view, active, message]", p)
            assert isinstance(v, list)
            view, active, message = v
            _expect(_is_u64(view) and type(active) is bool and type(message) is bytes,
                    "a field has the wrong type", p)
            _expect(p.view in (0, first_view(epoch_of_view(view))), "keyed under another epoch", p)
            return ViewState(view, active, message)
    raise DamagedRecord(f"unknown record kind {p.record!r}")


def epoch_of(r: DurableRecord) -> int | None:
    """The configuration epoch a record was written in (epochs.py), or None for those that
    outlive epochs: checkpoint votes, stable checkpoints, window jumps, executed slots."""
    match r:
        case SignedVote(phase="checkpoint") | StableCheckpoint() | WindowJump() | ExecutedBatch():
            return None
        case SignedVote(view=v) | AcceptedPrePrepare(view=v) | PreparedCertificate(view=v) \
                | ViewState(view=v) | ViewQuorum(view=v):
            return epoch_of_view(v)
    raise TypeError(r)
