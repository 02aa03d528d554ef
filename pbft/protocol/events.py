"""Events into the core and actions out of it.

The runtime (or the simulator) feeds `Event`s to `Replica.step` / `ClientCore.step` and
performs the returned `Action`s in order. A replica's step returns them in a `Ready`
(ready.py), which also says which of them are durable writes and whether those must be
on disk before the step's sends (always, except that EXECUTED and CHECKPOINT records may
follow replies, which never depend on them). The client keeps no durable state: its step
returns a plain list.

Observation actions (`Executed`, `Prepared`, `Committed`, `CheckpointStable`, `Note`,
`Rejected`, `Diverged`) change nothing outside the core; the runtime logs and counts them,
the simulator's oracle checks them (a correct replica never reports `Diverged` with a
deterministic service). A fatal `Diverged` also stops the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .messages import Signer

# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """A frame body from the network. `peer` is who the channel says sent it (TLS
    identity), or None when unknown; the envelope's signer is what the protocol trusts."""

    peer: Signer | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Tick:
    """One unit of abstract time (cluster `tick_ms` in the runtime)."""


@dataclass(frozen=True, slots=True)
class Load:
    """The runtime's measure of its own load, given when it changes. `busy`: the
    replica's event loop is mostly at work, so the primary batches for throughput; not
    busy: it proposes as soon as its pipeline has room, for latency (batching.py). A
    core starts busy, which is the policy it always had; the simulator's replicas cost
    nothing and report idle only where a scenario says so."""

    busy: bool


Event = Received | Tick | Load


# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send an envelope to one replica."""

    to: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send an envelope to every other replica."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendClient:
    """Send an envelope to a client (replies)."""

    client: str
    data: bytes


class Record(Enum):
    """What a `Persist` action stores (docs/formats.md "The durable store")."""

    VOTE = "vote"  # a signed PRE-PREPARE/PREPARE/COMMIT/CHECKPOINT, keyed by phase/view/seq
    PREPARED = "prepared"  # a prepared certificate, for view changes after a restart
    EXECUTED = "executed"  # (view, seq) of an executed batch, replayed on restart
    CHECKPOINT = "checkpoint"  # the latest stable checkpoint: seq, digest, proof, state
    VIEW = "view"  # the current view, whether it is active, our VIEW-CHANGE
    WINDOW = "window"  # a stable checkpoint we jumped to before holding its state


TRUNCATED = frozenset({Record.VOTE, Record.PREPARED, Record.EXECUTED})
"""The records a `Truncate` drops at or below its seq."""


@dataclass(frozen=True, slots=True)
class Persist:
    """Durably store a record before performing the actions that follow it.

    Records are keyed by (record, view, seq, tag); a later record with the same key
    replaces the earlier one. CHECKPOINT and WINDOW are singletons (view = seq = 0); VIEW
    records are one per epoch (view = the epoch's first view, records.py)."""

    record: Record
    seq: int
    view: int
    tag: str
    value: bytes

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.record.value, self.view, self.seq, self.tag)


@dataclass(frozen=True, slots=True)
class Truncate:
    """VOTE, PREPARED and EXECUTED records at or below `seq` are no longer needed: a
    stable checkpoint (already persisted) covers them.

    With `below_view`, only those of views below it go, VIEW records among them: a
    switch to a new epoch voids what was recorded in the epochs before it, never what
    the replica recorded in that epoch or a later one before a restart took it back to
    an earlier epoch (recovery.py, "held over")."""

    seq: int
    below_view: int | None = None

    def drops(self, record: Record, seq: int, view: int) -> bool:
        """Whether this truncation deletes a record with this key."""
        if self.below_view is None:
            return record in TRUNCATED and seq <= self.seq
        if view >= self.below_view:
            return False
        return record is Record.VIEW or (record in TRUNCATED and seq <= self.seq)


@dataclass(frozen=True, slots=True)
class ExecutedRequest:
    client: str
    timestamp: int
    operation: bytes
    result: bytes
    fresh: bool
    """False when the request was a duplicate and only its cached reply was resent."""


@dataclass(frozen=True, slots=True)
class Executed:
    """Sequence number `seq` was executed, with the requests of its batch in order."""

    view: int
    seq: int
    digest: bytes
    requests: tuple[ExecutedRequest, ...]


@dataclass(frozen=True, slots=True)
class Prepared:
    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Committed:
    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class CheckpointTaken:
    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class CheckpointStable:
    """Checkpoint `seq` became stable on `proof`: the 2f+1 matching signed CHECKPOINTs."""

    seq: int
    digest: bytes
    proof: tuple[bytes, ...] = field(default=(), compare=False)


class Divergence(Enum):
    """How a replica found that its state is not the group's (`Diverged`)."""

    STABLE = "stable"
    """2f+1 replicas signed another digest for a checkpoint than our own state there."""
    SPLIT = "split"
    """The CHECKPOINTs for one sequence number show that correct replicas disagree."""
    REPLAY = "replay"
    """Re-executing after a restart gave a checkpoint another digest than the one this
    replica signed before it: it stops (signing the new one would equivocate)."""


@dataclass(frozen=True, slots=True)
class Diverged:
    """This replica's replicated state at checkpoint `seq` is not the group's: correct
    replicas that executed the same requests in the same order hold different states, so
    the service is not deterministic (or its code changed without a new `version`):
    docs/services.md. `own_digest` is ours (b"" if we have none at `seq`);
    `other_digest` the stable one (STABLE), the one we signed before a restart (REPLAY),
    b"" for SPLIT, where `digests` counts the different digests the CHECKPOINTs carry.

    STABLE: the replica also fetches the stable state, as before. SPLIT: no checkpoint
    at `seq` may ever become stable, and ordering stops at the end of the log window.
    REPLAY is fatal: the core does nothing more (`Replica.halted`), the runtime stops."""

    seq: int
    own_digest: bytes
    other_digest: bytes
    kind: Divergence = Divergence.STABLE
    digests: int = 0

    @property
    def fatal(self) -> bool:
        return self.kind is Divergence.REPLAY

    def sentence(self, replica: int) -> str:
        """One sentence for the operator, naming the likely cause."""
        own, other = self.own_digest.hex()[:8], self.other_digest.hex()[:8]
        cause = "the service is not deterministic, or its code changed without a new `version` (docs/services.md)"
        if self.kind is Divergence.REPLAY:
            return (f"replica {replica} re-executed the requests up to checkpoint {self.seq} after its "
                    f"restart and got the state digest {own}, not the {other} it signed before: {cause}")
        if self.kind is Divergence.SPLIT:
            return (f"replica {replica}: the replicas disagree on the state at checkpoint {self.seq} "
                    f"({self.digests} different "
                    f"digests), so it can never become stable and ordering stops at the end of the log "
                    f"window: {cause}")
        return (f"replica {replica}'s state at checkpoint {self.seq} ({own}) differs from the stable one "
                f"({other}) that 2f+1 replicas signed, so it fetches that state: {cause}")


DIVERGED_LABEL = "state-diverged:"
"""How a replica's answer to a status query (`Status.behaviour`) says that its state
diverged and has not matched a stable checkpoint since: `state-diverged:KIND:SEQ` after
the behaviour's name, if any (`status_label`, read back by `split_status_label`)."""


def status_label(behaviour: str, diverged: Diverged | None) -> str:
    """What a replica says in `Status.behaviour`: its Byzantine behaviour, if any, and
    its divergence, if any (at most 200 printable characters, the field's limit)."""
    if diverged is None:
        return behaviour
    mark = f"{DIVERGED_LABEL}{diverged.kind.value}:{diverged.seq}"
    return f"{behaviour[: 199 - len(mark)]} {mark}" if behaviour else mark


def split_status_label(text: str) -> tuple[str, tuple[str, int] | None]:
    """`Status.behaviour` read back: (the behaviour's name or "", (kind, seq) of a
    divergence or None). A label that does not parse is all behaviour."""
    head, sep, tail = text.rpartition(DIVERGED_LABEL)
    if not sep:
        return text, None
    kind, _, seq = tail.partition(":")
    if not seq.isdigit() or kind not in {d.value for d in Divergence}:
        return text, None
    return head.rstrip(), (kind, int(seq))


class Reason(Enum):
    """Why an input was dropped; counted per peer (issue 2, 'Bad input')."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_SIGNER = "unknown-signer"
    WRONG_ROLE = "wrong-role"
    WRONG_VIEW = "wrong-view"
    OUT_OF_WINDOW = "out-of-window"
    BAD_DIGEST = "bad-digest"
    BAD_REQUEST = "bad-request"
    BATCH_TOO_LARGE = "batch-too-large"
    CONFLICT = "conflict"
    STALE = "stale"
    DUPLICATE = "duplicate"
    NOT_PRIMARY = "not-primary"
    OVERLOAD = "overload"
    BAD_CERTIFICATE = "bad-certificate"


Ignored = tuple[Reason, str | None]
"""Why an `ignore_*` guard refuses a message: the reason it is counted under, and the
detail of the `Rejected` action it is reported with (None: counted only, for what correct
peers also send, such as retransmissions and late votes)."""


@dataclass(frozen=True, slots=True)
class StateTransferStarted:
    """This replica is behind the stable checkpoint `seq` and fetches its state."""

    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class StateInstalled:
    """State transfer installed the checkpoint `seq`: executions up to it were skipped."""

    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class EpochStarted:
    """This replica entered configuration epoch `epoch` after stable checkpoint `after`
    (pbft.protocol.epochs): n replicas, f faulty; `retired` if it is not a member of it
    (removed, or replaced by another key) and takes no part any more."""

    epoch: int
    after: int
    n: int
    f: int
    retired: bool


@dataclass(frozen=True, slots=True)
class Departed:
    """A replica removed by epoch `epoch` has lingered for the replicas left behind as
    long as it may (Replica._on_received_retired): its runtime stops it now."""

    epoch: int


@dataclass(frozen=True, slots=True)
class ViewChangeStarted:
    """This replica sent VIEW-CHANGE for `view`."""

    view: int


@dataclass(frozen=True, slots=True)
class ViewInstalled:
    """This replica entered `view` (by sending or accepting its NEW-VIEW)."""

    view: int
    primary: int


@dataclass(frozen=True, slots=True)
class Rejected:
    peer: Signer | None
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Note:
    """A protocol event worth one info-level log line."""

    text: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two conflicting envelopes signed by one replica: transferable proof of a fault."""

    culprit: int
    kind: str
    first: bytes
    second: bytes


# -- client-side actions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completed:
    """The client's outstanding request got f+1 (2f+1 for read-only) matching replies."""

    timestamp: int
    result: bytes


@dataclass(frozen=True, slots=True)
class Failed:
    """The client's outstanding request cannot be made: the timestamp f+1 replicas hold
    for this client leaves no larger one to continue from (`ClientCore` explains). The
    request is abandoned; `detail` is one sentence for the caller."""

    timestamp: int
    detail: str
    disagreed: bool = False
    """The replicas answered with results no f+1 of them can agree on any more (the
    service is not deterministic), rather than a timestamp problem."""


Action = (
    Send
    | Broadcast
    | SendClient
    | Persist
    | Truncate
    | Executed
    | Prepared
    | Committed
    | CheckpointTaken
    | CheckpointStable
    | StateTransferStarted
    | StateInstalled
    | ViewChangeStarted
    | EpochStarted
    | Departed
    | ViewInstalled
    | Rejected
    | Note
    | Evidence
    | Diverged
    | Completed
    | Failed
)
