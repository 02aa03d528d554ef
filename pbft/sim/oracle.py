"""The oracle: the checks of docs/attacks.md, run after every simulated step.

Theory of operation. The oracle never looks inside a replica's log; it judges what correct
replicas *say*: their observation actions (`Executed`, `Prepared`, `Committed`,
`CheckpointTaken`, `CheckpointStable`, `Evidence`) and the envelopes they send. Byzantine
replicas and clients are not judged (they may say anything); twins are Byzantine.

Every start of a replica is a new *incarnation* (`Who`): its execution counter starts at
what it recovered. What it signs is judged per *signer identity*, which survives a durable
restart: a correct replica that restarts from its store must never sign a vote that
conflicts with one an earlier incarnation signed (docs/architecture.md), and a vote it
prepared before the crash may be committed after it. A restart from nothing (amnesia) is
a new identity, and that replica is faulty anyway. On a durable restart `note_recovered`
checks the recovered state against the agreed history: its service data and reply cache
must be the model's replayed to its recovered `last_executed`, and its executions then
continue contiguously from there. Agreement is across everything any correct incarnation
ever committed.

The agreed history is built from the first correct replica to execute each sequence
number; every later `Executed` at that number must match it exactly. Replaying its fresh
requests through a fresh instance of the run's service (`reference.Reference`, the same
class the replicas run) gives the model against which client results are judged: an
ordered request's result must be the model's; a read-only result must be what the
service's query gives on the model's state at some prefix of the history between the
last ordered request any correct client had completed when the read was submitted and the
prefix executed when it completed (linearizability of reads).

Checks (names used in reports): agreement, prepared-uniqueness, validity, exactly-once,
client-correctness, liveness, view-agreement (judged by the simulator at the end of a
run: every live correct replica in one active view once every fault healed), resources;
and `exception` when a core raised from step()
(remote input must never make a replica raise: docs/architecture.md).
A correct replica that reports `Diverged` (its state is not the group's at a checkpoint)
fails exactly-once, as differing checkpoint digests do: with a deterministic service it
never does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import compress
from operator import gt, itemgetter
from typing import Any

from ..protocol import codec
from ..protocol.bounds import sentence
from ..protocol.config import OPERATOR, ClusterConfig
from ..protocol.crypto import NULL_DIGEST
from ..protocol.epochs import epoch_of_view
from ..protocol.events import (
    Action,
    Broadcast,
    CheckpointStable,
    CheckpointTaken,
    Committed,
    Diverged,
    Evidence,
    Executed,
    Note,
    Prepared,
    Reason,
    Rejected,
    Send,
    StateInstalled,
)
from ..protocol.messages import (
    Checkpoint,
    Commit,
    Envelope,
    NewView,
    Prepare,
    PrePrepare,
    decode_envelope,
    envelope_from_bytes,
    from_body,
)
from ..service.api import Service
from ..service.kvservice import KeyValue
from .reference import Reference, same_state

CHECKS = (
    "agreement",
    "prepared-uniqueness",
    "validity",
    "exactly-once",
    "client-correctness",
    "liveness",
    "view-agreement",
    "resources",
    "accounting",
    "exception",
)

_SIZE = itemgetter(1)  # of a protocol.bounds.Bound
_LIMIT = itemgetter(2)

SEEN_SENT = 8192
"""Envelopes already judged (retransmissions resend the same bytes); cleared when full."""

Who = tuple[int, int]
"""(replica id, incarnation)."""


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    detail: str


@dataclass(frozen=True, slots=True)
class Peak:
    """The largest size one bounded structure reached at any correct replica, its bound
    there, and the first replica that reached it (`RunResult.resources`)."""

    peak: int
    bound: int
    replica: int


def report_problem(action: object, sender_known: bool = True) -> str | None:
    """What is incomplete in a refusal or note a correct node reports (the `accounting`
    check), or None. A refusal names who sent what was refused (every message in a run
    has a sender, unless `sender_known` is False: the event itself named none), one of the
    reasons and what was refused: the runtime's metrics, the faulty nodes' tally and the
    trace are kept from these. A note has a text; no action is None."""
    match action:
        case None:
            return "returned None among its actions"
        case Rejected(peer, reason, detail):
            if (peer is None and sender_known) or type(reason) is not Reason or not detail:
                return (f"reported a rejection naming {'no sender' if peer is None else repr(peer)}, "
                        f"reason {reason!r}, detail {detail!r}: each of the three must be given")
        case Note(text):
            if type(text) is not str or not text:
                return f"reported a note without a text: {text!r}"
    return None


def tally_problem(rejects: Counter) -> str | None:
    """What is wrong with a replica's tally of refusals by (sender, reason), or None: every
    entry a positive count under a reason (a count that went down, or a refusal filed
    under something else, misreports what the peers did)."""
    for (peer, reason), count in rejects.items():
        if count < 1 or type(reason) is not Reason:
            return f"counts {count} refusals of {peer!r} for {reason!r}"
    return None


class Oracle:
    def __init__(
        self, config: ClusterConfig, correct_replicas: list[int], correct_clients: list[str],
        service: Callable[[], Service] = KeyValue, configs: list[ClusterConfig] | None = None,
    ):
        self.config = config
        self.configs = configs or [config]
        """Each configuration epoch's (a reconfiguration plan; pbft.protocol.epochs)."""
        self.requesters = frozenset(name for c in self.configs for name in c.requesters)
        self.service = service
        """Makes a fresh instance of the replicated service (the reference's)."""
        self.counts: Counter[str] = Counter()
        """How many times each check looked at something (`RunResult.checks`): prepared
        slots, executed slots (agreement), executed requests (exactly-once), requests
        (validity), stable checkpoints, completed client operations, resource audits."""
        self.correct_replicas = frozenset(correct_replicas)
        self.correct_clients = frozenset(correct_clients)
        self.violations: list[Violation] = []
        self.restarted: set[int] = set()
        # agreement / prepared uniqueness
        self.committed: dict[int, tuple[bytes, Who]] = {}
        self.committed_epoch: dict[int, int] = {}
        self.boundaries: dict[int, int] = {}  # epoch -> the checkpoint after which it began
        self.prepared: dict[tuple[int, int], tuple[bytes, Who]] = {}
        self.signed: dict[tuple[Who, str, int, int], bytes] = {}
        # history and model
        self.history: dict[int, tuple[bytes, tuple]] = {}
        self.model = Reference(service())
        self.model_seq = 0
        self.model_results: dict[tuple[str, int], tuple[bytes, int]] = {}  # -> (result, seq)
        self.fresh_executed: set[tuple[str, int]] = set()
        self.exec_last: dict[Who, int] = {}
        self.checkpoints: dict[int, tuple[bytes, Who]] = {}
        self.null_allowed: set[tuple[int, int]] = set()
        self.fill_to = 0
        """A correct primary also orders null requests up to a pending epoch's boundary
        (epochs.py): the latest boundary an executed operator command set."""
        # clients: (client, ts) -> (operation, read_only, lower bound seq for reads)
        self.submitted: dict[tuple[str, int], tuple[bytes, bool, int]] = {}
        self.completed_max_seq = 0
        self._seen_sent: set[tuple[Who | None, bytes]] = set()
        self.own_prepared: set[tuple[Who, int, int, bytes]] = set()
        self._peaks: dict[int, list] = {}  # rid -> [its last bounds(), peak size by position]
        self._passed: dict[int, list] = {}  # rid -> its last bounds() that were all within
        self._folded: dict[str, Peak] = {}  # peaks by name (`peaks()`)
        self.evidence: dict[str, dict[str, int]] = {}
        """Per culprit, the evidence correct replicas reported against it, by kind."""

    # -- reporting ------------------------------------------------------------------------

    def fail(self, check: str, detail: str) -> None:
        assert check in CHECKS, check
        self.violations.append(Violation(check, detail))

    @property
    def ok(self) -> bool:
        return not self.violations

    # -- replicas -------------------------------------------------------------------------

    def note_restart(self, rid: int) -> None:
        self.restarted.add(rid)

    def observe_sent(self, sender: int, who: Who | None, data: bytes) -> None:
        """An envelope a replica sent. NEW-VIEWs are noted from anyone (they license null
        requests); votes are checked for equivocation only for correct replicas (`who`)."""
        try:
            env, msg = decode_envelope(data)
        except codec.CodecError:
            return
        match msg:
            case NewView():
                self._note_new_view(msg)
            case PrePrepare() | Prepare() | Commit() | Checkpoint() if who is not None:
                if env.signer != sender:
                    return
                phase = type(msg).__name__
                view = 0 if isinstance(msg, Checkpoint) else msg.view
                key = (who, phase, view, msg.seq)
                prior = self.signed.get(key)
                if prior is None:
                    self.signed[key] = msg.digest
                elif prior != msg.digest:
                    self.fail(
                        "prepared-uniqueness",
                        f"correct replica {sender} signed two different {phase} for "
                        f"view {view} seq {msg.seq}: {prior.hex()[:8]} and {msg.digest.hex()[:8]}",
                    )

    def _note_new_view(self, nv: NewView) -> None:
        for data in nv.pre_prepares:
            try:
                pp = from_body(envelope_from_bytes(data).body)
            except codec.CodecError:
                continue
            if isinstance(pp, PrePrepare) and pp.digest == NULL_DIGEST:
                self.null_allowed.add((pp.view, pp.seq))

    def observe_replica(
        self, rid: int, who: Who, now: int, actions: list[Action], identity: Who | None = None
    ) -> None:
        """The actions of one step of a correct replica; `identity` is its signer identity
        (default: the incarnation itself, as for a restart from nothing)."""
        signer = who if identity is None else identity
        for a in actions:
            match a:
                case Broadcast(data) | Send(_, data):
                    self.observe_sent(rid, signer, data)
                case Prepared(view, seq, digest):
                    self._prepared(who, view, seq, digest)
                    self.own_prepared.add((signer, view, seq, digest))
                case Committed(view, seq, digest):
                    if (signer, view, seq, digest) not in self.own_prepared:
                        self.fail(
                            "agreement",
                            f"replica {rid} committed view {view} seq {seq} without being prepared "
                            "itself (committed-local needs prepared, OSDI'99 4.2)",
                        )
                    self.own_prepared.discard((signer, view, seq, digest))
                    self._committed(who, view, seq, digest)
                case Executed():
                    self._executed(who, a)
                case StateInstalled(seq, digest):
                    self._state_installed(who, seq, digest)
                case CheckpointTaken(seq, digest) | CheckpointStable(seq, digest):
                    self._checkpoint(who, seq, digest)
                case Rejected() | Note() | None:
                    self.reported(f"replica {rid}", a)
                case Diverged():
                    # A correct replica's state is not the group's after the same requests:
                    # the digests differ, as `_checkpoint` judges them (the run's service is
                    # not deterministic, or the core broke exactly-once execution).
                    self.fail("exactly-once", a.sentence(rid))
                case Evidence(culprit, kind, _, _):
                    got = self.evidence.setdefault(str(culprit), {})
                    got[kind] = got.get(kind, 0) + 1
                    if culprit in self.correct_replicas and culprit not in self.restarted:
                        self.fail(
                            "prepared-uniqueness",
                            f"replica {rid} holds '{kind}' evidence against correct replica {culprit}",
                        )

    def reported(self, who: str, action: Rejected | Note | None) -> None:
        """A refusal or note of a correct replica or client (`who`): `report_problem`."""
        self.counts["accounting"] += 1
        problem = report_problem(action)
        if problem is not None:
            self.fail("accounting", f"{who} {problem}")

    def check_rejects(self, rid: int, rejects: Counter) -> Violation | None:
        """A correct replica's tally of refusals at the end of a run: `tally_problem`."""
        self.counts["accounting"] += 1
        problem = tally_problem(rejects)
        return None if problem is None else Violation("accounting", f"replica {rid} {problem}")

    def note_recovered(self, rid: int, who: Who, replica: object) -> None:
        """A correct replica restarted from its durable store as incarnation `who`: what it
        recovered must be a prefix of the agreed history, and it executes on from there."""
        last = getattr(replica, "last_executed", 0)
        self.exec_last[who] = last
        if last == 0:
            return
        model = Reference(self.service())
        table: dict[str, tuple[int, bytes]] = {}
        for seq in range(1, last + 1):
            entry = self.history.get(seq)
            if entry is None:
                return  # no correct replica executed it in the open (cannot judge)
            for client, ts, op, result, fresh in entry[1]:
                if fresh:
                    model.execute(seq, op, client)
                    table[client] = (ts, result)
        if same_state(getattr(replica, "service", None), model.snapshot()) is False:
            self.fail(
                "exactly-once",
                f"replica {rid} recovered to seq {last} with service state that differs from the "
                "agreed history replayed to that seq",
            )
            return
        records = replica.replies.records  # type: ignore[attr-defined]  # a core: never a default
        got = {c: (rec.timestamp, rec.result) for c, rec in records.items()}
        if got != table:
            self.fail(
                "exactly-once",
                f"replica {rid} recovered to seq {last} with a reply cache that differs from the "
                "agreed history replayed to that seq",
            )

    def _prepared(self, who: Who, view: int, seq: int, digest: bytes) -> None:
        self.counts["prepared-uniqueness"] += 1
        prior = self.prepared.get((view, seq))
        if prior is None:
            self.prepared[(view, seq)] = (digest, who)
        elif prior[0] != digest:
            self.fail(
                "prepared-uniqueness",
                f"replicas {prior[1][0]} and {who[0]} prepared different digests for view {view} "
                f"seq {seq}: {prior[0].hex()[:8]} and {digest.hex()[:8]}",
            )

    def note_epoch(self, epoch: int, after: int) -> None:
        """Configuration epoch `epoch` began after checkpoint `after` (epochs.py)."""
        self.boundaries.setdefault(epoch, after)

    def _void(self, epoch: int, seq: int, later: int) -> bool:
        """Whether a commit of `epoch` at `seq` is void because epoch `later` began
        below it: nothing above the boundary is executed in the epoch left, and the later
        epoch orders that slot afresh (docs/reconfiguration.md)."""
        return later > epoch and seq > self.boundaries.get(later, seq)

    def _committed(self, who: Who, view: int, seq: int, digest: bytes) -> None:
        epoch = epoch_of_view(view)
        prior = self.committed.get(seq)
        if prior is not None and prior[0] != digest:
            if self._void(self.committed_epoch[seq], seq, epoch):
                prior = None  # the earlier epoch's commit above its boundary: void
            elif self._void(epoch, seq, self.committed_epoch[seq]):
                return  # this one is the void one
        if prior is None:
            self.committed[seq] = (digest, who)
            self.committed_epoch[seq] = epoch
        elif prior[0] != digest:
            whom = (
                f"replica {who[0]} committed different digests at seq {seq} in two of its lives "
                f"(before and after a restart)"
                if prior[1][0] == who[0]
                else f"replicas {prior[1][0]} and {who[0]} committed different digests at seq {seq}"
            )
            self.fail("agreement", f"{whom}: {prior[0].hex()[:8]} and {digest.hex()[:8]} (view {view})")

    def _checkpoint(self, who: Who, seq: int, digest: bytes) -> None:
        self.counts["checkpoint-digests"] += 1
        prior = self.checkpoints.get(seq)
        if prior is None:
            self.checkpoints[seq] = (digest, who)
        elif prior[0] != digest:
            self.fail(
                "exactly-once",
                f"state digests differ at checkpoint {seq}: replica {prior[1][0]} has "
                f"{prior[0].hex()[:8]}, replica {who[0]} has {digest.hex()[:8]}",
            )

    def _state_installed(self, who: Who, seq: int, digest: bytes) -> None:
        # State transfer skips executions up to a checkpoint that must be the agreed one.
        agreed = self.checkpoints.get(seq)
        if agreed is not None and agreed[0] != digest:
            self.fail(
                "exactly-once",
                f"replica {who[0]} installed state {digest.hex()[:8]} at checkpoint {seq}; "
                f"the agreed state there is {agreed[0].hex()[:8]}",
            )
        if seq < self.exec_last.get(who, 0):
            self.fail("exactly-once", f"replica {who[0]} installed checkpoint {seq} behind its own execution")
        self.exec_last[who] = seq

    def _executed(self, who: Who, ex: Executed) -> None:
        rid = who[0]
        last = self.exec_last.get(who, 0)
        if ex.seq != last + 1:
            self.fail(
                "exactly-once",
                f"replica {rid} executed seq {ex.seq} after seq {last} (not contiguous or twice)",
            )
            return
        self.exec_last[who] = ex.seq
        self.counts["agreement"] += 1
        self.counts["exactly-once"] += len(ex.requests)
        reqs = tuple((r.client, r.timestamp, r.operation, r.result, r.fresh) for r in ex.requests)
        entry = self.history.get(ex.seq)
        if entry is not None:
            if entry != (ex.digest, reqs):
                self.fail(
                    "agreement",
                    f"replica {rid} executed seq {ex.seq} differently from another correct replica "
                    f"(digest {ex.digest.hex()[:8]} vs {entry[0].hex()[:8]}, or different results)",
                )
            return
        committed = self.committed.get(ex.seq)
        if committed is not None and committed[0] != ex.digest:
            self.fail("agreement", f"replica {rid} executed seq {ex.seq} with an uncommitted digest")
            return
        self._check_validity(rid, ex)
        self.history[ex.seq] = (ex.digest, reqs)
        self._advance_model()

    def _check_validity(self, rid: int, ex: Executed) -> None:
        self.counts["validity"] += max(1, len(ex.requests))
        if not ex.requests and ex.digest == NULL_DIGEST:
            primary = self._config_of_view(ex.view).primary(ex.view)
            filled = ex.seq <= self.fill_to
            if (ex.view, ex.seq) not in self.null_allowed and primary in self.correct_replicas and not filled:
                self.fail(
                    "validity",
                    f"replica {rid} executed a null request at seq {ex.seq} (view {ex.view}) "
                    "that no NEW-VIEW put there",
                )
        for r in ex.requests:
            if r.client == OPERATOR and r.fresh:
                self._note_command(r.result)
            if r.client not in self.requesters:
                self.fail("validity", f"replica {rid} executed a request of unregistered client {r.client!r}")
                continue
            if r.client not in self.correct_clients:
                continue
            sub = self.submitted.get((r.client, r.timestamp))
            if sub is None or sub[0] != r.operation or sub[1]:
                self.fail(
                    "validity",
                    f"replica {rid} executed seq {ex.seq}: a request client {r.client} never sent "
                    f"(t={r.timestamp})",
                )

    def _advance_model(self) -> None:
        while True:
            entry = self.history.get(self.model_seq + 1)
            if entry is None:
                return
            self.model_seq += 1
            seq = self.model_seq
            for client, ts, op, result, fresh in entry[1]:
                if not fresh or client == OPERATOR:
                    continue  # the operator's commands reconfigure the group, not the service
                if (client, ts) in self.fresh_executed:
                    self.fail("exactly-once", f"request {client} t={ts} executed fresh twice (again at seq {seq})")
                    continue
                self.fresh_executed.add((client, ts))
                expected = self.model.execute(seq, op, client)
                if expected != result:
                    self.fail("agreement", f"seq {seq}: {client} t={ts} result differs from the model")
                self.model_results[(client, ts)] = (expected, seq)

    def check_installed_state(self, rid: int, seq: int, digest: bytes, actual: bytes) -> None:
        """After a state transfer the replica's state must be the checkpoint it installed."""
        if actual != digest:
            self.fail(
                "exactly-once",
                f"replica {rid} installed checkpoint {seq} ({digest.hex()[:8]}) but its state "
                f"digest is {actual.hex()[:8]}",
            )

    def _note_command(self, result: bytes) -> None:
        try:
            answer = codec.decode(result)
        except codec.CodecError:
            return
        if isinstance(answer, dict) and type(answer.get("after")) is int:
            self.fill_to = max(self.fill_to, answer["after"])

    def _config_of_view(self, view: int) -> ClusterConfig:
        return self.configs[min(epoch_of_view(view), len(self.configs) - 1)]

    def add_client(self, name: str) -> None:
        """A client a reconfiguration added: correct, its requests and results checked."""
        self.correct_clients = self.correct_clients | {name}

    def check_stable_proof(
        self, rid: int, seq: int, digest: bytes, proof: tuple[bytes, ...], verify: Callable[[Envelope], bool],
        quorum: int | None = None,
    ) -> None:
        """A stable checkpoint must rest on 2f+1 validly signed matching CHECKPOINTs from
        distinct replicas (OSDI'99 4.3), members of the epoch that ordered `seq`, signed
        under it (`verify` and `quorum` are that epoch's): no removed replica and no
        replaced key ever counts."""
        quorum = self.config.quorum if quorum is None else quorum
        signers: set[int] = set()
        for data in proof:
            try:
                env, msg = decode_envelope(data)
            except codec.CodecError:
                continue
            if (
                isinstance(msg, Checkpoint)
                and msg.seq == seq
                and msg.digest == digest
                and type(env.signer) is int
                and verify(env)
            ):
                signers.add(env.signer)
        if len(signers) < quorum:
            self.fail(
                "exactly-once",
                f"replica {rid} made checkpoint {seq} stable on {len(signers)} valid matching "
                f"CHECKPOINTs; a stable checkpoint needs {quorum}",
            )

    # -- clients --------------------------------------------------------------------------

    def observe_submit(self, client: str, ts: int, op: bytes, read_only: bool) -> None:
        self.submitted[(client, ts)] = (op, read_only, self.completed_max_seq)

    def observe_completed(self, client: str, ts: int, result: bytes) -> None:
        if client not in self.correct_clients:
            return
        self.counts["client-correctness"] += 1
        sub = self.submitted.get((client, ts))
        if sub is None:
            self.fail("client-correctness", f"client {client} completed t={ts}, which it never submitted")
            return
        op, read_only, lower = sub
        if read_only:
            self._check_read(client, ts, op, result, lower)
            return
        got = self.model_results.get((client, ts))
        if got is None:
            self.fail(
                "client-correctness",
                f"client {client} accepted a result for t={ts}, which no correct replica executed",
            )
            return
        if got[0] != result:
            self.fail(
                "client-correctness",
                f"client {client} t={ts} accepted {_show(result)}; the model in sequence order "
                f"gives {_show(got[0])} (seq {got[1]})",
            )
        self.completed_max_seq = max(self.completed_max_seq, got[1])

    def _check_read(self, client: str, ts: int, op: bytes, result: bytes, lower: int) -> None:
        allowed = set()
        for seq in self.model.reads_between(lower, self.model_seq):
            answer = self.model.query_at(seq, op, client)
            if answer is None:
                return  # not a read-only operation of this service: the replicas ordered it
            allowed.add(answer)
        if result not in allowed:
            self.fail(
                "client-correctness",
                f"client {client} read-only t={ts} returned {_show(result)}, which no state of the "
                f"service between seq {lower} and seq {self.model_seq} gives",
            )

    # -- resources ------------------------------------------------------------------------

    def check_resources(self, rid: int, replica: Any) -> None:
        """Every bounded structure of a correct replica within its bound. The bounds live
        with the code that owns each structure (`invariants()` of the replica and of its
        owners): a rename cannot silently retire a check kept by name here."""
        self.counts["resources"] += 1
        bounds = getattr(replica, "bounds", None)
        if bounds is None:  # a core of someone else's making: its assertions only
            try:
                replica.invariants()
            except AssertionError as exc:
                self.fail("resources", f"replica {rid}: {exc}")
            return
        bs = bounds()
        # Most steps change no size and no limit (an idle tick, a duplicate): the same
        # list as the last step that passed gives the same verdict and the same peaks.
        if bs == self._passed.get(rid):
            return
        sizes = list(map(_SIZE, bs))
        # Both comparisons in C; the names are only read for a report.
        if any(map(gt, sizes, map(_LIMIT, bs))):
            for b in bs:
                if b[1] > b[2]:
                    self.fail("resources", f"replica {rid}: {sentence(b)}")
                    break
        else:
            self._passed[rid] = list(bs)  # a copy: a core may hand out one list it refills
        # Peaks by position (a replica lists the same structures in the same order every
        # step): a new list only when a structure grew past its peak; names are attached
        # once at the end (`peaks`).
        seen = self._peaks.get(rid)
        if seen is not None and len(seen[1]) == len(bs):
            peak_bounds, peaks = seen
            # Only the positions that grew past their peak (found in C; usually one, the
            # run's shared verdict memo), each with its bound as of its own peak (a
            # reconfiguration changes n, and with it some bounds, epochs.py).
            for i in compress(range(len(sizes)), map(gt, sizes, peaks)):
                peak_bounds[i] = bs[i]
                peaks[i] = sizes[i]
        else:
            if seen is not None:
                self._fold(rid, *seen)
            self._peaks[rid] = [list(bs), sizes]  # a copy: updated in place

    def _fold(self, rid: int, bs: list, sizes: list[int]) -> None:
        for b, size in zip(bs, sizes, strict=True):
            prior = self._folded.get(b[0])
            if prior is None or size > prior.peak:
                self._folded[b[0]] = Peak(size, b[2], rid)

    def peaks(self) -> dict[str, Peak]:
        """Per bounded structure, its peak over every correct replica (the first replica
        to reach it), by name."""
        for rid, (bs, sizes) in sorted(self._peaks.items()):
            self._fold(rid, bs, sizes)
        self._peaks.clear()
        self._passed.clear()  # a later check starts its peaks afresh: it must not skip
        return dict(sorted(self._folded.items()))


def _show(result: bytes) -> str:
    try:
        return repr(codec.decode(result))
    except codec.CodecError:
        return result.hex()[:16]
