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
requests through a `KeyValueStore` gives the model against which client results are
judged: an ordered request's result must be the model's; a read-only result must be the
model's value of that key at some prefix of the history between the last ordered request
any correct client had completed when the read was submitted and the prefix executed when
it completed (linearizability of reads).

Checks (names used in reports): agreement, prepared-uniqueness, validity, exactly-once,
client-correctness, liveness, view-agreement (judged by the simulator at the end of a
run: every live correct replica in one active view once every fault healed), resources;
and `exception` when a core raised from step()
(remote input must never make a replica raise: docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..protocol import codec
from ..protocol.config import ClusterConfig
from ..protocol.crypto import NULL_DIGEST
from ..protocol.events import (
    Action,
    Broadcast,
    CheckpointStable,
    CheckpointTaken,
    Committed,
    Evidence,
    Executed,
    Prepared,
    Reason,
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
from ..protocol.replica import (
    CHUNKS_REMEMBERED,
    EVIDENCE_MEMORY,
    FUTURE_SIGNER_BYTES,
    VERIFIED_CACHE,
)
from ..protocol.statetransfer import IN_FLIGHT
from ..service.kv import KeyValueStore

CHECKS = (
    "agreement",
    "prepared-uniqueness",
    "validity",
    "exactly-once",
    "client-correctness",
    "liveness",
    "view-agreement",
    "resources",
    "exception",
)

SEEN_SENT = 8192
"""Envelopes already judged (retransmissions resend the same bytes); cleared when full."""

Who = tuple[int, int]
"""(replica id, incarnation)."""


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    detail: str


class Oracle:
    def __init__(self, config: ClusterConfig, correct_replicas: list[int], correct_clients: list[str]):
        self.config = config
        self.correct_replicas = frozenset(correct_replicas)
        self.correct_clients = frozenset(correct_clients)
        self.violations: list[Violation] = []
        self.restarted: set[int] = set()
        # agreement / prepared uniqueness
        self.committed: dict[int, tuple[bytes, Who]] = {}
        self.prepared: dict[tuple[int, int], tuple[bytes, Who]] = {}
        self.signed: dict[tuple[Who, str, int, int], bytes] = {}
        # history and model
        self.history: dict[int, tuple[bytes, tuple]] = {}
        self.model = KeyValueStore()
        self.model_seq = 0
        self.model_results: dict[tuple[str, int], tuple[bytes, int]] = {}  # -> (result, seq)
        self.versions: dict[bytes, list[tuple[int, bytes | None]]] = {}
        self.fresh_executed: set[tuple[str, int]] = set()
        self.exec_last: dict[Who, int] = {}
        self.checkpoints: dict[int, tuple[bytes, Who]] = {}
        self.null_allowed: set[tuple[int, int]] = set()
        # clients: (client, ts) -> (operation, read_only, lower bound seq for reads)
        self.submitted: dict[tuple[str, int], tuple[bytes, bool, int]] = {}
        self.completed_max_seq = 0
        self._seen_sent: set[tuple[Who | None, bytes]] = set()
        self.own_prepared: set[tuple[Who, int, int, bytes]] = set()
        self._bounds: list[tuple[Tracked, int | None]] | None = None

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
            if isinstance(pp, PrePrepare) and not pp.batch:
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
                case Evidence(culprit, kind, _, _):
                    if culprit in self.correct_replicas and culprit not in self.restarted:
                        self.fail(
                            "prepared-uniqueness",
                            f"replica {rid} holds '{kind}' evidence against correct replica {culprit}",
                        )

    def note_recovered(self, rid: int, who: Who, replica: object) -> None:
        """A correct replica restarted from its durable store as incarnation `who`: what it
        recovered must be a prefix of the agreed history, and it executes on from there."""
        last = getattr(replica, "last_executed", 0)
        self.exec_last[who] = last
        if last == 0:
            return
        model = KeyValueStore()
        table: dict[str, tuple[int, bytes]] = {}
        for seq in range(1, last + 1):
            entry = self.history.get(seq)
            if entry is None:
                return  # no correct replica executed it in the open (cannot judge)
            for client, ts, op, result, fresh in entry[1]:
                if fresh:
                    model.execute(op, client)
                    table[client] = (ts, result)
        service = getattr(replica, "service", None)
        if service is not None and getattr(service, "data", None) != model.data:
            self.fail(
                "exactly-once",
                f"replica {rid} recovered to seq {last} with service state that differs from the "
                "agreed history replayed to that seq",
            )
            return
        clients = getattr(replica, "clients", {})
        got = {c: (rec.timestamp, rec.result) for c, rec in clients.items()}
        if got != table:
            self.fail(
                "exactly-once",
                f"replica {rid} recovered to seq {last} with a reply cache that differs from the "
                "agreed history replayed to that seq",
            )

    def _prepared(self, who: Who, view: int, seq: int, digest: bytes) -> None:
        prior = self.prepared.get((view, seq))
        if prior is None:
            self.prepared[(view, seq)] = (digest, who)
        elif prior[0] != digest:
            self.fail(
                "prepared-uniqueness",
                f"replicas {prior[1][0]} and {who[0]} prepared different digests for view {view} "
                f"seq {seq}: {prior[0].hex()[:8]} and {digest.hex()[:8]}",
            )

    def _committed(self, who: Who, view: int, seq: int, digest: bytes) -> None:
        prior = self.committed.get(seq)
        if prior is None:
            self.committed[seq] = (digest, who)
        elif prior[0] != digest:
            self.fail(
                "agreement",
                f"replicas {prior[1][0]} and {who[0]} committed different digests at seq {seq}: "
                f"{prior[0].hex()[:8]} and {digest.hex()[:8]} (view {view})",
            )

    def _checkpoint(self, who: Who, seq: int, digest: bytes) -> None:
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
        if not ex.requests and ex.digest == NULL_DIGEST:
            primary = self.config.primary(ex.view)
            if (ex.view, ex.seq) not in self.null_allowed and primary in self.correct_replicas:
                self.fail(
                    "validity",
                    f"replica {rid} executed a null request at seq {ex.seq} (view {ex.view}) "
                    "that no NEW-VIEW put there",
                )
        for r in ex.requests:
            if r.client not in self.config.client_index:
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
                if not fresh:
                    continue
                if (client, ts) in self.fresh_executed:
                    self.fail("exactly-once", f"request {client} t={ts} executed fresh twice (again at seq {seq})")
                    continue
                self.fresh_executed.add((client, ts))
                expected = self.model.execute(op, client)
                if expected != result:
                    self.fail("agreement", f"seq {seq}: {client} t={ts} result differs from the model")
                self.model_results[(client, ts)] = (expected, seq)
                self._note_version(op, seq)

    def _note_version(self, op: bytes, seq: int) -> None:
        try:
            parsed = codec.decode(op)
        except codec.CodecError:
            return
        if isinstance(parsed, list) and len(parsed) >= 2 and parsed[0] in ("put", "delete"):
            key = parsed[1]
            if isinstance(key, bytes):
                self.versions.setdefault(key, []).append((seq, self.model.data.get(key)))

    def check_installed_state(self, rid: int, seq: int, digest: bytes, actual: bytes) -> None:
        """After a state transfer the replica's state must be the checkpoint it installed."""
        if actual != digest:
            self.fail(
                "exactly-once",
                f"replica {rid} installed checkpoint {seq} ({digest.hex()[:8]}) but its state "
                f"digest is {actual.hex()[:8]}",
            )

    def check_stable_proof(
        self, rid: int, seq: int, digest: bytes, proof: tuple[bytes, ...], verify: Callable[[Envelope], bool]
    ) -> None:
        """A stable checkpoint must rest on 2f+1 validly signed matching CHECKPOINTs from
        distinct replicas (OSDI'99 4.3)."""
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
        if len(signers) < self.config.quorum:
            self.fail(
                "exactly-once",
                f"replica {rid} made checkpoint {seq} stable on {len(signers)} valid matching "
                f"CHECKPOINTs; a stable checkpoint needs {self.config.quorum}",
            )

    # -- clients --------------------------------------------------------------------------

    def observe_submit(self, client: str, ts: int, op: bytes, read_only: bool) -> None:
        self.submitted[(client, ts)] = (op, read_only, self.completed_max_seq)

    def observe_completed(self, client: str, ts: int, result: bytes) -> None:
        if client not in self.correct_clients:
            return
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
        try:
            parsed = codec.decode(op)
            key = parsed[1]
        except (codec.CodecError, IndexError, TypeError):
            return
        versions = self.versions.get(key, [])
        allowed: list[bytes | None] = []
        at_lower: bytes | None = None
        for seq, value in versions:
            if seq <= lower:
                at_lower = value
            elif seq <= self.model_seq:
                allowed.append(value)
        allowed.append(at_lower)
        if not any(codec.encode(v) == result for v in allowed):
            self.fail(
                "client-correctness",
                f"client {client} read-only t={ts} returned {_show(result)}, which the key never held "
                f"between seq {lower} and seq {self.model_seq}",
            )

    # -- resources ------------------------------------------------------------------------

    def check_resources(self, rid: int, replica: object) -> None:
        """Every bounded structure of a correct replica within its bound. A
        structure the table names that the replica does not have is itself a violation:
        a rename must not silently retire the check (as it did for `waiting`)."""
        if hasattr(replica, "resource_usage"):
            usage = resource_usage(replica, self.config)
            over = [u for u in usage if u.bound is not None and u.size > u.bound]
            if over:
                u = over[0]
                self.fail("resources", f"replica {rid}: {u.name} holds {u.size} {u.unit}, bound {u.bound}")
            return
        if self._bounds is None:
            self._bounds = [(row, row.bound(self.config)) for row in RESOURCES]
        for row, bound in self._bounds:
            try:
                value = getattr(replica, row.attr)
            except AttributeError:
                self.fail("resources", f"replica {rid}: {_missing(row.attr)}")
                return
            size = row.size(value)
            if bound is not None and size > bound:
                self.fail("resources", f"replica {rid}: {row.name} holds {size} {row.unit}, bound {bound}")
                return


# -- bounded structures ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """One bounded structure's size against its bound."""

    name: str
    size: int
    bound: int | None  # None: measured, not bounded
    unit: str = "entries"


class MissingResource(Exception):
    """The oracle tracks a structure the replica does not have (renamed or removed)."""


@dataclass(frozen=True, slots=True)
class Tracked:
    """A row of the resource table: the replica attribute, how to size it (entries or
    bytes) and its bound as a function of the cluster configuration."""

    attr: str
    size: Callable[[Any], int]
    bound: Callable[[ClusterConfig], int | None]
    unit: str = "entries"
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.attr


REQUEST_BYTES = 1024
"""Largest signed REQUEST a correct client of the simulator sends (~100 bytes; keys and
values are short), with room to spare."""
MESSAGE_BYTES = 512
"""Largest vote, CHECKPOINT or STATUS envelope (~110 bytes), with room to spare."""


def _checkpoints(cfg: ClusterConfig) -> int:
    """Checkpoints a replica may hold: those inside the window, the stable one, one above."""
    return cfg.log_window // cfg.checkpoint_interval + 2


def _future_per_peer(cfg: ClusterConfig) -> int:
    """Future-view messages buffered per peer: one view's traffic (DESIGN: a named limit)."""
    return 3 * cfg.log_window + 4 * cfg.n


def _peers(cfg: ClusterConfig) -> int:
    """Distinct channel peers (replicas, clients, and an unauthenticated `None`)."""
    return cfg.n + len(cfg.clients) + 1


def _inner(d: Any) -> int:
    return sum(len(v) for v in d.values())


def _inner_bytes(d: Any) -> int:
    return sum(len(data) for v in d.values() for _, data in v.values())


def _max_value(counts: Any) -> int:
    return max(counts.values(), default=0)


def _transfer_chunks(t: Any) -> int:
    return 0 if t is None else len(t.chunks)


def _transfer_bound_ok(t: Any) -> int:
    """Chunks held beyond what the transfer announced (0 when within it)."""
    if t is None or t.total is None:
        return 0 if t is None else len(t.chunks)
    return max(0, len(t.chunks) - t.total)


def _transfer_bytes(t: Any) -> int:
    return 0 if t is None else sum(len(c) for c in t.chunks.values())


def _transfer_asked(t: Any) -> int:
    return 0 if t is None else len(t.asked)


def _served(s: Any) -> int:
    return 0 if s is None else 1


def _snapshot_bytes(d: Any) -> int:
    return sum(len(snapshot) for _, snapshot in d.values())


RESOURCES: tuple[Tracked, ...] = (
    Tracked("log", len, lambda c: c.log_window),
    Tracked("pending", len, lambda c: len(c.clients)),
    Tracked("waiting", len, lambda c: len(c.clients)),
    Tracked("ordered", len, lambda c: len(c.clients)),
    Tracked("deferred_reads", len, lambda c: len(c.clients)),
    Tracked("clients", len, lambda c: len(c.clients)),
    Tracked("view_changes", len, lambda c: c.n),
    Tracked("_new_view_resent", len, lambda c: c.n),
    Tracked("prepared_certs", len, lambda c: c.log_window),
    Tracked("checkpoint_votes", len, _checkpoints),
    Tracked("checkpoint_votes", _inner, lambda c: _checkpoints(c) * c.n, label="checkpoint_votes (votes)"),
    Tracked(
        "checkpoint_votes",
        _inner_bytes,
        lambda c: _checkpoints(c) * c.n * MESSAGE_BYTES,
        "bytes",
        "checkpoint_votes (bytes)",
    ),
    Tracked("own_checkpoints", len, _checkpoints),
    Tracked("claims", len, lambda c: c.n),
    Tracked("claims", _inner, lambda c: 2 * c.n, label="claims (checkpoints)"),
    Tracked("claims", _inner_bytes, lambda c: 2 * c.n * MESSAGE_BYTES, "bytes", "claims (bytes)"),
    # The buffer is bounded per *signer* (a channel may carry several signers' messages,
    # e.g. the certificates a peer resends us), in count and bytes, and in total bytes.
    Tracked("_future", len, lambda c: c.n * _future_per_peer(c)),
    Tracked("_future_count", _max_value, _future_per_peer, label="_future (one signer)"),
    # A Byzantine signer may fill its whole budget (FUTURE_SIGNER_BYTES): that, not one
    # view's correct traffic, is what the core promises per signer.
    Tracked("_future_bytes", _max_value, lambda c: FUTURE_SIGNER_BYTES, "bytes", "_future (one signer's bytes)"),
    Tracked("transfer", _transfer_bound_ok, lambda c: 0, "chunks beyond its total", "transfer"),
    Tracked("transfer", _transfer_asked, lambda c: IN_FLIGHT, "chunk requests", "transfer (asked)"),
    Tracked("_served", _served, lambda c: 1),
    Tracked("_future_count", len, lambda c: c.n, label="_future (signers)"),
    Tracked("_future_total", int, lambda c: (c.f + 2) * FUTURE_SIGNER_BYTES, "bytes", "_future (total bytes)"),
    Tracked("_status_answered", len, lambda c: c.n),
    Tracked("_replies_resent", len, lambda c: len(c.clients)),
    Tracked("_chunks_sent", len, lambda c: CHUNKS_REMEMBERED),
    Tracked("_own_vcs", len, lambda c: c.n),
    Tracked("_vc_resent", len, lambda c: c.n),
    Tracked("_heard", len, lambda c: c.n),
    Tracked("_peer_progress", len, lambda c: c.n),
    Tracked("_held_answers", len, lambda c: len(c.clients)),
    Tracked("_lone_since", len, lambda c: c.n),
    Tracked("_lone_joins", len, lambda c: c.n),
    Tracked("_peer_view", len, lambda c: c.n),
    Tracked("_chunk_budget", len, lambda c: c.n),
    Tracked("_future_seen", len, lambda c: c.n * _future_per_peer(c)),
    Tracked("_timers_restarted", len, lambda c: len(c.clients)),
    Tracked("_verified", len, lambda c: VERIFIED_CACHE),
    Tracked("_evidence_seen", len, lambda c: EVIDENCE_MEMORY),
    Tracked("rejects", len, lambda c: _peers(c) * len(Reason)),
)
"""The replica's bounded structures (a named limit on every queue and window,
docs/robustness.md). Byte counts where they are cheap and a peer controls them: the future-view
buffer, checkpoint votes and claims. A core accessor `Replica.resource_usage() ->
list[Usage]` would let each structure report itself; until then this table does, and a
missing attribute fails loudly."""

MEASURED: tuple[Tracked, ...] = (
    Tracked("own_checkpoints", _snapshot_bytes, lambda c: None, "bytes", "own_checkpoints (snapshot bytes)"),
    Tracked("transfer", _transfer_bytes, lambda c: None, "bytes", "transfer (chunk bytes)"),
)
"""Sizes reported without a bound of their own (they follow the service state's size)."""


def _missing(attr: str) -> str:
    return f"the resource check tracks '{attr}', which the replica does not have (renamed? update oracle.RESOURCES)"


def resource_usage(replica: object, cfg: ClusterConfig, measured: bool = False) -> list[Usage]:
    """Each tracked structure's size against its bound; `measured` adds the byte counts
    that have no bound of their own (bound None)."""
    accessor = getattr(replica, "resource_usage", None)
    if callable(accessor):
        return list(accessor())
    out: list[Usage] = []
    for row in RESOURCES + (MEASURED if measured else ()):
        try:
            value = getattr(replica, row.attr)
        except AttributeError:
            raise MissingResource(_missing(row.attr)) from None
        out.append(Usage(row.name, row.size(value), row.bound(cfg), row.unit))
    return out


def _show(result: bytes) -> str:
    try:
        return repr(codec.decode(result))
    except codec.CodecError:
        return result.hex()[:16]
