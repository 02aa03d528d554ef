"""One PBFT replica as a pure state machine: `Replica.step(event) -> Ready`.

The handlers follow Castro & Liskov (OSDI'99, refinements from TOCS 2002) in the paper's
order: requests (4.1), the normal case (4.2), checkpoints (4.3), view changes (4.4,
4.5.2), state transfer, time. The protocol as implemented, rule by rule, is in
docs/protocol.md; the state lives in narrow owners (docs/architecture.md, "Who owns what
inside a replica"), each listing its bounded structures (`bounds()`), which
`Replica.bounds()` gathers and `Replica.invariants()` checks.

Input is checked cheapest first (docs/architecture.md, "One request, end to end"): decode,
schema, signer is a member of the right role, view and water marks, then the signature,
then protocol state. Nothing a peer sends raises: it is dropped and counted (`Rejected`)
and, when one replica signed two conflicting messages, the pair is kept as `Evidence`.
"""

from __future__ import annotations

from collections import Counter
from typing import assert_never

from . import codec, recovery
from .batchfetch import BatchAnswers, HeldBatches
from .batching import Batching
from .bounds import Bound, check
from .catchup import CatchUp
from .checkpoints import Checkpoints
from .config import LINGER_MAX_MS, OPERATOR, ClusterConfig
from .crypto import NULL_DIGEST, KeyPair, Verifier, batch_digest
from .crypto import digest as bytes_digest
from .epochs import (
    CONFIG_PREFIX,
    MAX_F,
    EpochEntry,
    Epochs,
    epoch_of_view,
    first_view,
    parse_operation,
)
from .events import (
    Action,
    Broadcast,
    CheckpointStable,
    CheckpointTaken,
    Committed,
    Departed,
    Diverged,
    Divergence,
    EpochStarted,
    Event,
    Evidence,
    Executed,
    ExecutedRequest,
    Ignored,
    Load,
    Note,
    Persist,
    Prepared,
    Reason,
    Received,
    Rejected,
    Send,
    SendClient,
    StateInstalled,
    StateTransferStarted,
    Tick,
    Truncate,
    ViewChangeStarted,
    ViewInstalled,
    status_label,
)
from .evidence import EvidenceMemory
from .future import FutureViews
from .held import ClientAnswers, ReplyCache, WaitingReads
from .log import SURPLUS, MessageLog, Slot
from .messages import (
    MAX_BATCH_BYTES,
    Batch,
    Checkpoint,
    Commit,
    Envelope,
    FetchBatch,
    FetchState,
    Message,
    MsgType,
    NewView,
    Prepare,
    PrePrepare,
    QueryStatus,
    Request,
    Signer,
    StableProof,
    StateChunk,
    Status,
    ViewChange,
    attached,
    decode_envelope,
    detached,
    envelope_from_bytes,
    message_of,
    render,
)
from .messages import (
    Epochs as EpochsMessage,
)
from .ready import Ready
from .records import (
    AcceptedPrePrepare,
    ExecutedBatch,
    PreparedCertificate,
    SignedVote,
    StableCheckpoint,
    ViewQuorum,
    ViewState,
    WindowJump,
)
from .safety import SafetyRules, Vote, vote_slot
from .service import REPLY_PREFIX, StateMachine
from .statetransfer import (
    IDLE_TRANSFER,
    KNOWN_NODES,
    ChunkBudget,
    Transfer,
    Verdict,
    encode_page,
    pages,
)
from .store import Namespace
from .timeouts import Expired, RequestTimers, Timeout
from .verified import DeferredRequests, VerifiedRequests
from .viewchange import (
    CheckedNewView,
    CheckedViewChange,
    InvalidCertificate,
    PreparedCert,
    ViewChanges,
    ViewStatus,
    certificates_to_send,
    check_new_view,
    check_prepared_cert,
    check_view_change,
    next_seq_after,
    plan_new_view,
)

STATUS_PER_PERIOD = 8
"""QUERY-STATUS answers per client and retransmission period (`on_query_status`)."""

ALL_CHECKPOINTS = (1 << 63) - 1
"""`store.release(ALL_CHECKPOINTS)` forgets every checkpoint (the largest seq a store
keeps, SQLite's integers included)."""

CATCH_UP_SLOTS = 16
"""Committed slots resent per STATUS to a peer that lags inside our log."""


_REPLY = int(MsgType.REPLY)
_REASONS = len(Reason)  # the enum's len() is a Python call: once, not in every bounds()

MAX_BACKOFF_SHIFT = 6
"""The view-change timeout doubles per failed view change, up to 2**6 times (4.5.2)."""


class Replica:
    def __init__(
        self,
        config: ClusterConfig,
        replica_id: int,
        key: KeyPair,
        service: StateMachine,
        verifier: Verifier | None = None,
        epochs: Epochs | None = None,
    ) -> None:
        assert 0 <= replica_id < config.n
        self.config = config
        self.id = replica_id
        self.service = service
        # Every epoch's configuration (epochs.py); `config` is the current one's.
        self.epochs = epochs or Epochs(config)
        if verifier is not None:
            self.epochs.use_verifier(config.epoch, verifier)
        self.retired = False
        """Not a member of the current epoch (removed, or replaced by another key): this
        core takes no part any more (`step` ignores its input)."""
        self.linger_until: int | None = None
        """Retired: the tick at which we have lingered long enough (`_on_received_retired`);
        None once `Departed` is out."""
        self._linger_end = 0
        """Retired: the tick after which no answer extends the lingering."""
        self.held_over = recovery.HeldOver([])
        """Records of a later epoch than the one a restart brought us back to, restored
        when we re-enter it (recovery.py)."""
        self.epoch_deadline: int | None = None
        """While a change is pending and its boundary not executed: the tick by which the
        boundary must be reached, or the backups change the view (epochs.py)."""
        self.store = service.root
        """The replicated state: the service's entries and the reply cache, checkpointed
        and transferred as one partition tree (store.py, TOCS 2002 5.3)."""
        self.verifier = self.epochs.verifier(config.epoch)
        self.safety = SafetyRules(key, config.replica_domain, replica_id)
        self.view = first_view(config.epoch)
        self.log = MessageLog(config.log_window)
        self.last_executed = 0
        self.next_seq = 1
        self._retransmit_ticks = max(1, config.retransmit_ms // config.tick_ms)
        self._vc_timeout_ticks = max(1, config.view_change_timeout_ms // config.tick_ms)
        self.batching = Batching(config, self._vc_timeout_ticks)
        self.requests = RequestTimers(len(config.requesters))
        self.reads = WaitingReads(config)
        self.status = ViewStatus.NORMAL
        self.view_changes = ViewChanges(config, self._retransmit_ticks, self._vc_timeout_ticks)
        self.prepared_certs: dict[int, tuple[int, bytes, tuple[bytes, ...]]] = {}
        self.new_view_data = b""
        self.future = FutureViews(config)
        self.catch_up = CatchUp(config, self._retransmit_ticks)
        self.transfer: Transfer | None = None
        self.chunks_served = ChunkBudget(self._retransmit_ticks, config.n)
        self.batch_answers = BatchAnswers(self._retransmit_ticks, config.n, config.log_window)
        self.held_batches = HeldBatches(config.log_window)
        self.epochs_sent: dict[int, int] = {}  # replica -> tick we last sent it EPOCHS
        self.status_answered: dict[str, tuple[int, int]] = {}  # client -> (period start, answers)
        self.transfers_completed = 0
        self.tree_nodes: dict[tuple[int, bytes], tuple[bytes, ...]] = {}
        """Internal nodes of partition trees verified by our transfers (`Transfer.known`)."""
        self.replies = ReplyCache(config, Namespace(self.store, REPLY_PREFIX))
        self.read_answers = ClientAnswers(config)  # when each client's read was last answered
        if not self.store.kept:
            # Genesis is a checkpoint too: what a restart goes back to before any is stable.
            self.store.checkpoint(0)
        self.checkpoints = Checkpoints(config)
        self.rejects: Counter[tuple[Signer | None, Reason]] = Counter()
        self.surplus_votes = 0
        """Votes for an already complete certificate, dropped unverified (`Slot.completes`)."""
        self.verified = VerifiedRequests(self.verifier)
        self.deferred = DeferredRequests(self.batching, self.requests, self.replies)
        self.evidence = EvidenceMemory()
        self.ticks = 0
        # Timeouts (timeouts.py), fired in this order at every tick. `requests` and
        # `lone` have a deadline per request and per replica: they are looked at every
        # tick (0 ticks, never stopped) and fire what is due.
        self.new_view_timeout = Timeout("new-view", self._vc_timeout_ticks)
        self.request_timeout = Timeout("requests", 0)
        self.lone_timeout = Timeout("lone", 0)
        self.retransmit_timeout = Timeout("retransmit", self._retransmit_ticks)
        self.request_timeout.start(0)
        self.lone_timeout.start(0)
        self.retransmit_timeout.start(0)
        self.timeouts = (
            (self.batching.hold, self.on_hold_timeout),
            (self.new_view_timeout, self.on_new_view_timeout),
            (self.request_timeout, self.on_request_timeout),
            (self.lone_timeout, self.on_lone_timeout),
            (self.retransmit_timeout, self.on_retransmit_timeout),
        )
        self._out: list[Action] = []
        self.behaviour_label = ""
        """The Byzantine behaviour wrapped around this core, if any (adversary.base sets
        it): said in answers to a client's status query, never used by the protocol."""
        self.diverged: Diverged | None = None
        """The latest divergence of our state from the group's (`Diverged`), until one of
        our own checkpoints matches a stable one again: said in answers to a client's
        status query (`pbft status`), never used by the protocol."""
        self.halted: Diverged | None = None
        """A fatal divergence (a re-execution contradicts a checkpoint we signed before a
        restart): from then on every step does nothing; the runtime stops."""

    # -- public surface ---------------------------------------------------------------

    @property
    def primary(self) -> int:
        return self.config.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.id

    @property
    def stable_seq(self) -> int:
        return self.log.low

    def step(self, event: Event) -> Ready:
        """Take one input; hand out what follows from it, in order, with the writes that
        must be durable before its sends (`ready.Ready`). Once `halted` (a fatal
        `Diverged`), nothing: the step that halts sends nothing, the runtime stops."""
        self._out = []
        if self.halted is not None:
            return Ready.of([])
        match event:
            case Received(peer, data) if self.retired:
                self._on_received_retired(peer, data)
            case Tick() if self.retired:
                self.ticks += 1
                if self.linger_until is not None and self.ticks >= self.linger_until:
                    self.linger_until = None
                    self._out.append(Departed(self.epochs.current))
            case Received(peer, data):
                self._on_received(peer, data)
            case Tick():
                self._on_tick()
            case Load(busy):
                self._on_load(busy)
            case _:
                assert_never(event)
        if self.is_primary and self.status is ViewStatus.NORMAL and not self.retired:
            self._maybe_propose()
        out, self._out = self._out, []
        if self.halted is not None:
            # Halted in this step: nothing it computed with the diverging service goes out.
            out = [a for a in out if not isinstance(a, Send | Broadcast | SendClient)]
        return Ready.of(out)

    def invariants(self) -> None:
        """Every bounded structure within its named limit (docs/robustness.md), as listed
        by the owner of each (`bounds()`); the simulator checks them after every step of a
        correct replica, the replica itself never does (it costs a pass over its state)."""
        check(self.bounds())

    def bounds(self) -> list[Bound]:
        """Each bounded structure's size against its limit, owner by owner (read-only):
        always the same structures in the same order."""
        cfg = self.config
        return [
            *self.log.bounds(), *self.checkpoints.bounds(), *self.future.bounds(), *self.requests.bounds(),
            *self.view_changes.bounds(), *self.chunks_served.bounds(), *self.batch_answers.bounds(),
            *self.held_batches.bounds(),
            *self.verified.bounds(),
            *self.deferred.bounds(), *self.batching.bounds(), *self.replies.bounds(), *self.reads.bounds(),
            *self.evidence.bounds(), *self.catch_up.bounds(), *self.verifier.bounds(),
            *(IDLE_TRANSFER if self.transfer is None else self.transfer.bounds()),
            ("prepared_certs", len(self.prepared_certs), cfg.log_window),
            ("epochs_sent", len(self.epochs_sent), 3 * MAX_F + 1),
            ("status_answered", len(self.status_answered), cfg.requester_count),
            ("read_answers", len(self.read_answers), cfg.requester_count),
            ("tree_nodes", len(self.tree_nodes), KNOWN_NODES),
            # Keyed by (channel peer, reason): replicas, clients and an unauthenticated None.
            ("rejects", len(self.rejects), (cfg.n + cfg.requester_count + 1) * _REASONS),
        ]

    def state_digest(self) -> bytes:
        """The checkpoint digest of the current state: the root of its partition tree
        over the service's entries and the reply cache (what keeps exactly-once across a
        state transfer, section 4.1)."""
        return self.store.digest()

    # -- helpers ------------------------------------------------------------------------

    def _evidence(self, culprit: int, kind: str, first: bytes, second: bytes) -> None:
        """Report a pair of conflicting signed messages once (retransmissions repeat them)."""
        if self.evidence.first_time(culprit, kind, first, second):
            self._out.append(Evidence(culprit, kind, first, second))

    def _reject(self, peer: Signer | None, reason: Reason, detail: str = "") -> None:
        self.rejects[(peer, reason)] += 1
        self._out.append(Rejected(peer, reason, detail))

    def _broadcast(self, env: Envelope) -> bytes:
        data = env.to_bytes()
        self._out.append(Broadcast(data))
        return data

    def _sign_vote(self, msg: Vote) -> bytes:
        """Sign a vote through the safety rules; a new one is persisted before anything
        that follows it is sent, so a restart can never make us contradict it."""
        slot = vote_slot(msg)
        fresh = slot not in self.safety.signed
        data = self.safety.sign_vote(msg).to_bytes()
        if fresh:
            self._out.append(SignedVote(slot[0], slot[1], slot[2], data).to_persist())
        return data

    def _broadcast_vote(self, msg: Vote) -> bytes:
        data = self._sign_vote(msg)
        self._out.append(Broadcast(data))
        return data

    def _ignore(self, peer: Signer | None, why: Ignored) -> None:
        """Count a message an `ignore_*` guard refused (and report it, unless quiet)."""
        reason, detail = why
        if detail is None:
            self.rejects[(peer, reason)] += 1
        else:
            self._reject(peer, reason, detail)

    def ignore_unsigned(self, env: Envelope) -> Ignored | None:
        """Protocol messages come from replicas only."""
        if type(env.signer) is not int or not 0 <= env.signer < self.config.n:
            return Reason.WRONG_ROLE, "protocol message not signed by a replica"
        return None

    def _status(self, behaviour: str = "") -> bytes:
        """Our signed STATUS: view, last executed, stable checkpoint, log size (TOCS 5.3)."""
        status = Status(self.view, self.last_executed, self.log.low, len(self.log), behaviour)
        return self.safety.sign_other(status).to_bytes()

    def _verify(self, peer: Signer | None, env: Envelope) -> bool:
        if not self.verifier.verify(env):
            self._reject(peer, Reason.BAD_SIGNATURE, f"signer {env.signer!r}")
            return False
        return True

    def _verify_any(self, peer: Signer | None, env: Envelope) -> int | None:
        """The configuration epoch under which `env` verifies, for the messages that help
        a replica catch up across epochs (epochs.py); None (rejected) if none."""
        epoch = self.epochs.verify_any(env)
        if epoch is None:
            self._reject(peer, Reason.BAD_SIGNATURE, f"signer {env.signer!r}")
        return epoch

    # Seams: the quorum sizes (section 4.2, 4.3), the digest check of a batch (4.2), the
    # checks of a prepared certificate and of a NEW-VIEW (4.4) and of a state chunk (TOCS
    # 5.3) are methods, so that each broken core of pbft/adversary/broken.py overrides one
    # of them to prove the oracle notices.

    def _prepare_quorum(self) -> int:
        """Matching PREPAREs from distinct backups, beside the pre-prepare: 2f."""
        return 2 * self.config.f

    def _commit_quorum(self) -> int:
        return self.config.quorum

    def _checkpoint_quorum(self) -> int:
        return self.config.quorum

    def _batch_matches(self, pp: PrePrepare) -> bool:
        return pp.batch is not None and batch_digest(pp.batch) == pp.digest

    # -- dispatch -----------------------------------------------------------------------

    def _decode_input(self, peer: Signer | None, data: bytes) -> tuple[Envelope, Message] | None:
        """The envelope and message of an input, or None (rejected as malformed)."""
        if len(data) > codec.MAX_FRAME:  # the transport enforces this too; the core is sure
            self._reject(peer, Reason.MALFORMED, f"{len(data)}-byte message exceeds the frame limit")
            return None
        try:
            return decode_envelope(data)
        except codec.CodecError as exc:
            self._reject(peer, Reason.MALFORMED, str(exc))
            return None

    def _on_received(self, peer: Signer | None, data: bytes) -> None:
        if (decoded := self._decode_input(peer, data)) is None:
            return
        env, msg = decoded
        if not self.verifier.is_member(env.signer):
            self._reject(peer, Reason.UNKNOWN_SIGNER, f"signer {env.signer!r}")
            return
        match msg:
            case Request():
                self.on_request(peer, data, msg, env)
            case PrePrepare():
                self.on_pre_prepare(peer, env, data, msg)
            case Prepare():
                self.on_prepare(peer, env, data, msg)
            case Commit():
                self.on_commit(peer, env, data, msg)
            case Checkpoint():
                self.on_checkpoint(peer, env, data, msg)
            case QueryStatus():
                self.on_query_status(peer, env)
            case ViewChange():
                self.on_view_change(peer, env, data, msg)
            case NewView():
                self.on_new_view(peer, env, data, msg)
            case Status():
                self.on_status(peer, env, msg)
            case FetchState():
                self.on_fetch_state(peer, env, msg)
            case StateChunk():
                self.on_state_chunk(peer, env, msg)
            case StableProof():
                self.on_stable_proof(peer, env, msg)
            case FetchBatch():
                self.on_fetch_batch(peer, env, msg)
            case Batch():
                self.on_batch(peer, env, msg)
            case EpochsMessage():
                self.on_epochs(peer, env, msg)
            case _:
                self._reject(peer, Reason.WRONG_ROLE, f"unexpected {render(msg)}")

    # -- requests (section 4.1, 5.1.3) ----------------------------------------------------

    def _reply(self, client: str, timestamp: int, result: bytes) -> None:
        # Exactly to_body(Reply(...)) and its unsigned Envelope(...).to_bytes(), encoded
        # without building the two frozen objects (one reply per request per replica).
        body = codec.encode([_REPLY, self.view, timestamp, client, self.id, result])
        self._out.append(SendClient(client, codec.encode([body, self.id, b""])))

    def on_request(
        self,
        peer: Signer | None,
        data: bytes,
        msg: Request,
        env: Envelope | None = None,
        verified: bool = False,
    ) -> None:
        if not verified and not msg.read_only:
            # A flooding client's budget (issue 13, item 9; verified.DeferredRequests):
            # while a verified write of its client waits here, a newer one waits
            # unverified for the next tick and an older one is dropped unverified.
            deferred = self.deferred.defer(peer, data, msg)
            if deferred is not None:
                if not deferred:
                    self.rejects[(peer, Reason.STALE)] += 1  # superseded
                return
        checked = msg if verified else self.verified.check(data, None if env is None else (env, msg))
        if isinstance(checked, str):
            self._reject(peer, Reason.BAD_REQUEST, checked)
            return
        req = checked
        self.batching.returned(req.client)
        if req.read_only:
            self.on_read_only(peer, req)
            return
        rec = self.replies.settled(req.client, req.timestamp)
        if rec is not None:
            if req.timestamp == rec.timestamp:  # our reply was lost: again, rationed
                if not self.replies.resent.due(req.client, req.timestamp, self.ticks):
                    self.rejects[(peer, Reason.DUPLICATE)] += 1
                    return
                self._reply(req.client, rec.timestamp, rec.result)
            else:
                self._reject(peer, Reason.STALE, f"{req.client} t={req.timestamp}")
                self._send_held(req, rec.timestamp)
            return
        if self.is_primary and self.status is ViewStatus.NORMAL:
            self._enqueue(req, data)
            return
        # Section 4.1/4.4: a backup relays the request to the primary and waits for it to
        # execute; its view-change timer runs from the first time it saw it.
        if not self.requests.wait(req.client, req.timestamp, data, self.ticks):
            return  # superseded by a newer request of that client
        if isinstance(peer, str) or peer is None:
            self._out.append(Send(self.primary, data))

    def _send_held(self, req: Request, held: int) -> None:
        """Tell the client of a refused, validly signed request which timestamp we hold
        for it, so it can continue from there once f+1 replicas say the same (held.py);
        at most once per client per `HeldAnswers.period`, as the request may be a replay."""
        data = self.replies.held.answer(self.view, self.id, req, held, self.ticks)
        if data is not None:
            self._out.append(SendClient(req.client, data))

    def on_read_only(self, peer: Signer | None, req: Request) -> None:
        """Section 5.1.3: answer from current state; the client needs 2f+1 matching
        replies and falls back to the ordered path when they do not match.

        Linearizability: a write a client saw completed (f+1 replies) is committed at a
        correct replica, so at least f+1 correct replicas have *prepared* it, and any 2f+1
        matching read replies include one of them. We therefore answer a read only when
        everything we have prepared is executed; until then it waits (one per client).

        A read comes over its client's own channel (replicas do not relay reads), and one
        request is answered at most once per `ClientAnswers.period`: the query runs again
        and its reply (up to MAX_RESULT) goes out for each copy, so a replay was a way to
        make every replica compute and send it again and again."""
        if peer is not None and peer != req.client:
            self._reject(peer, Reason.WRONG_ROLE, f"read of {req.client!r} relayed by {peer!r}")
            return
        if not self.read_answers.due(req.client, req.timestamp, self.ticks):
            self.rejects[(peer, Reason.DUPLICATE)] += 1
            return
        if self.service.query(req.operation, req.client) is None:
            self._reject(peer, Reason.BAD_REQUEST, "read-only request is not a query")
            return
        self.reads.hold(req)
        self._answer_reads()

    def _answer_reads(self) -> None:
        stale = self.transfer is not None or self.last_executed < self.log.low
        for client, req in self.reads.answerable(stale, self.last_executed, self.prepared_certs):
            result = self.service.query(req.operation, client)
            assert result is not None
            self._reply(client, req.timestamp, result)

    def _enqueue(self, req: Request, data: bytes) -> None:
        if self.batching.queued_ts(req.client) >= req.timestamp or self.log.holds_request(
            req.client, req.timestamp, self.last_executed + 1, self.next_seq
        ):
            return
        self.batching.enqueue(req, data)

    def on_query_status(self, peer: Signer | None, env: Envelope) -> None:
        """Answer a client's status query with a signed `Status` (for `pbft status`), over
        its own channel, at most STATUS_PER_PERIOD times per retransmission period: each
        answer costs a verification and a signature, so unmetered queries were a way for
        one client to spend every replica's CPU (a query costs it one signature). A few
        per period leave room for an operator running `pbft status` twice in a row.
        Checked before the signature, which only the client itself can get past on its
        own channel."""
        client = env.signer
        if type(client) is not str:
            self._reject(peer, Reason.WRONG_ROLE, "status queries come from clients")
            return
        if peer is not None and peer != client:
            self._reject(peer, Reason.WRONG_ROLE, f"status query of {client!r} relayed by {peer!r}")
            return
        start, answered = self.status_answered.get(client, (self.ticks, 0))
        if self.ticks - start >= self._retransmit_ticks:
            start, answered = self.ticks, 0
        if answered >= STATUS_PER_PERIOD:
            self._reject(peer, Reason.OVERLOAD, f"status queries of {client!r} this period")
            return
        if not self._verify(peer, env):
            return
        self.status_answered[client] = (start, answered + 1)
        data = self._status(status_label(self.behaviour_label, self.diverged))
        self._out.append(SendClient(client, data))

    # -- primary: proposing (section 4.2) -------------------------------------------------

    def _maybe_propose(self) -> None:
        self.next_seq = max(self.next_seq, self.last_executed + 1)
        while self._reinstate_own_pre_prepare():
            self.next_seq += 1
        boundary = self.epochs.boundary()
        if boundary is not None:
            self._fill_to_boundary(boundary)
            return
        # Batching policy (batching.py): when to propose, and which requests.
        while self.log.in_window(self.next_seq) and self.batching.ready(
            self.next_seq - 1 - self.last_executed
        ):
            self._propose(self.batching.take())

    def _propose(self, batch: list[tuple[Request, bytes]]) -> None:
        """Pre-prepare `batch` at the next sequence number (4.2; empty: a null request)."""
        envs = tuple(d for _, d in batch)
        pp = PrePrepare(self.view, self.next_seq, batch_digest(envs), envs)
        data = self._broadcast_vote(pp)
        slot = self.log.slot(pp.seq, self.view)
        self._accept_pre_prepare(slot, pp, data, tuple(batch))
        self.next_seq += 1

    def _reinstate_own_pre_prepare(self) -> bool:
        """A PRE-PREPARE we already signed for (view, next_seq) that the log lost (a
        restart whose records did not put it back): it goes back into the log and out
        again, instead of the safety rules refusing a second one for the same number
        (which would raise out of step)."""
        if not self.log.in_window(self.next_seq):
            return False
        signed = self.safety.signed.get(("pre-prepare", self.view, self.next_seq))
        if signed is None:
            return False
        if self.log.pre_prepared(self.next_seq, self.view) is None:
            env = signed[1]
            pp = message_of(env)
            assert isinstance(pp, PrePrepare)
            data = env.to_bytes()
            if pp.batch is None and (known := self._known_batch(pp.seq, pp.digest)) is not None:
                pp, data = PrePrepare(pp.view, pp.seq, pp.digest, known), attached(data, known)
            checked, _ = self.verified.batch(pp.batch or ())
            slot = self.log.reopen(pp.seq, self.view)
            self._accept_pre_prepare(slot, pp, data, checked)
            if pp.batch is not None:  # without it, of no use to anyone (we fetch it too)
                self._out.append(Broadcast(data))
        return True

    # -- pre-prepare, prepare, commit (section 4.2) -------------------------------------

    def _accept_pre_prepare(
        self,
        slot: Slot,
        pp: PrePrepare,
        data: bytes,
        requests: tuple[tuple[Request, bytes], ...],
        prepare: bool = False,
    ) -> None:
        slot.view = pp.view
        slot.pre_prepare = pp
        slot.pre_prepare_env = data
        slot.requests = requests
        if pp.batch is not None:
            self.held_batches.keep(pp.seq, pp.digest, pp.batch)
        for req, _ in requests:
            self.requests.saw_ordered(req.client, req.timestamp)
        if prepare:
            # A backup's own PREPARE goes out before the slot is re-evaluated: votes that
            # arrived before the pre-prepare may complete it, execute it and collect it.
            slot.my_prepare = self._broadcast_vote(Prepare(pp.view, pp.seq, pp.digest))
            slot.prepares[self.id] = (pp.digest, slot.my_prepare)
        # Votes received before the pre-prepare may now match; re-evaluate.
        self._maybe_prepared(slot)

    def ignore_pre_prepare(self, env: Envelope, pp: PrePrepare) -> Ignored | None:
        """Before the view: signed by the primary of its view, and not our own."""
        if (why := self.ignore_unsigned(env)) is not None:
            return why
        if env.signer != self.config.primary(pp.view):
            return Reason.NOT_PRIMARY, f"pre-prepare by {env.signer} for view {pp.view}"
        if env.signer == self.id:
            # Our own pre-prepare relayed back: the primary never prepares (section 4.2).
            return Reason.DUPLICATE, None
        return None

    def ignore_in_view(self, seq: int, what: str) -> Ignored | None:
        """A message of our view for a sequence number outside the water marks (4.2)."""
        if not self.log.in_window(seq):
            return Reason.OUT_OF_WINDOW, f"{what} n={seq}"
        boundary = self.epochs.boundary()
        if boundary is not None and seq > boundary:
            # The next epoch orders what follows its boundary (epochs.py).
            return Reason.OUT_OF_WINDOW, f"{what} n={seq} after the epoch boundary {boundary}"
        return None

    def on_pre_prepare(self, peer: Signer | None, env: Envelope, data: bytes, pp: PrePrepare) -> None:
        if (why := self.ignore_pre_prepare(env, pp)) is not None:
            self._ignore(peer, why)
            return
        if pp.batch is None:
            # Only certificates and NEW-VIEWs carry a pre-prepare without its batch (4.4).
            self._reject(peer, Reason.MALFORMED, f"pre-prepare n={pp.seq} without its batch")
            return
        if pp.view > self.view and not self._batch_matches(pp):
            # Kept for a view to come only if its batch is its own: the signature does not
            # cover the batch, and copies with other batches would fill the primary's budget.
            self._reject(peer, Reason.BAD_DIGEST, f"pre-prepare n={pp.seq} of view {pp.view}")
            return
        if self._outside_view(peer, env, data, pp.view, "pre-prepare"):
            return
        if (why := self.ignore_in_view(pp.seq, "pre-prepare")) is not None:
            self._ignore(peer, why)
            return
        slot = self.log.get(pp.seq)
        if slot is not None and slot.pre_prepare is not None and slot.view == pp.view:
            if slot.pre_prepare.digest == pp.digest:
                if slot.pre_prepare.batch is None and self._batch_matches(pp):
                    self._attach_batch(slot, pp.batch)  # the batch a NEW-VIEW named, resent whole
                return  # retransmission
            if not self._verify(peer, env):
                return
            # The primary signed two pre-prepares for one (v, n): keep both as evidence.
            self._evidence(env.signer, "equivocate", slot.pre_prepare_env, data)  # type: ignore[arg-type]
            self._reject(peer, Reason.CONFLICT, f"second pre-prepare for n={pp.seq}")
            return
        if len(pp.batch) > self.config.batch_max:
            self._reject(peer, Reason.BATCH_TOO_LARGE, f"{len(pp.batch)} requests")
            return
        if sum(map(len, pp.batch)) > MAX_BATCH_BYTES:
            self._reject(peer, Reason.BATCH_TOO_LARGE, f"over {MAX_BATCH_BYTES} bytes")
            return
        if not self._verify(peer, env):
            return
        if not self._batch_matches(pp):
            self._reject(peer, Reason.BAD_DIGEST, f"pre-prepare n={pp.seq}")
            return
        requests: list[tuple[Request, bytes]] = []
        for req_data in pp.batch:
            checked = self.verified.check(req_data)
            if isinstance(checked, str):
                self._reject(peer, Reason.BAD_REQUEST, f"in pre-prepare n={pp.seq}: {checked}")
                return
            if checked.read_only:
                self._reject(peer, Reason.BAD_REQUEST, "read-only request in a batch")
                return
            requests.append((checked, req_data))
        signed = self.safety.signed.get(("prepare", pp.view, pp.seq))
        if signed is not None and signed[0] != pp.digest:
            # We prepared another digest here before a restart (and the pre-prepare we
            # answered is not in the log): refuse; the safety rules would anyway.
            self._reject(peer, Reason.CONFLICT, f"pre-prepare n={pp.seq} conflicts with our prepare")
            return
        # The pre-prepare we answer is stored with our vote, so that after a restart we
        # still recognise a conflicting one as equivocation.
        self._out.append(AcceptedPrePrepare(pp.view, pp.seq, data).to_persist())
        slot = self.log.slot(pp.seq, pp.view)
        self._accept_pre_prepare(slot, pp, data, tuple(requests), prepare=True)

    def _outside_view(
        self, peer: Signer | None, env: Envelope, data: bytes, view: int, what: str
    ) -> bool:
        """Whether a replica's message is for another view than our active one; then it
        is handled here. Messages of old views are ignored; a bounded amount is kept for
        views to come (future.py), only once the signature holds, so nobody fills
        another's budget. Between the guards before and after the view (4.2, 4.4)."""
        if view == self.view and self.status is ViewStatus.NORMAL:
            return False
        self._old_or_future(peer, env, data, view, what)
        return True

    def _old_or_future(
        self, peer: Signer | None, env: Envelope, data: bytes, view: int, what: str
    ) -> None:
        signer: int = env.signer  # type: ignore[assignment]  # a replica: checked by callers
        if (why := self.future.ignore(view, self.view, signer, data, what)) is not None:
            self._ignore(peer, why)
            return
        if not self._verify(peer, env):
            return
        self.future.add(peer, signer, data)

    def _admit_vote(
        self,
        peer: Signer | None,
        env: Envelope,
        data: bytes,
        prior: tuple[bytes, bytes] | None,
        vote_digest: bytes,
        kind: str,
    ) -> bool:
        """One vote per authenticated signer and phase; a second, different one is
        evidence. True for a new vote whose signature holds; the caller stores it, so
        nothing is allocated for a vote before its signature is checked."""
        if prior is not None:
            if prior[0] == vote_digest:
                self.rejects[(peer, Reason.DUPLICATE)] += 1  # a retransmission or a replay
            elif self._verify(peer, env):
                self._evidence(env.signer, f"double-{kind}", prior[1], data)  # type: ignore[arg-type]
                self._reject(peer, Reason.CONFLICT, f"second {kind} from {env.signer}")
            return False
        return self._verify(peer, env)

    def ignore_prepare(self, env: Envelope, p: Prepare) -> Ignored | None:
        """After the view: within the water marks, and not from the primary, whose vote
        is its pre-prepare (a PREPARE from it never counts, 4.2)."""
        if (why := self.ignore_in_view(p.seq, "vote")) is not None:
            return why
        if env.signer == self.config.primary(p.view):
            return Reason.WRONG_ROLE, "prepare from the primary"
        return None

    def on_prepare(self, peer: Signer | None, env: Envelope, data: bytes, p: Prepare) -> None:
        if (why := self.ignore_unsigned(env)) is not None:
            self._ignore(peer, why)
            return
        if self._outside_view(peer, env, data, p.view, "vote"):
            return
        if (why := self.ignore_prepare(env, p)) is not None:
            self._ignore(peer, why)
            return
        slot = self._take_vote(peer, env, data, p.view, p.seq, p.digest, "prepare")
        if slot is not None:
            self._maybe_prepared(slot)

    def on_commit(self, peer: Signer | None, env: Envelope, data: bytes, c: Commit) -> None:
        if (why := self.ignore_unsigned(env)) is not None:
            self._ignore(peer, why)
            return
        if self._outside_view(peer, env, data, c.view, "vote"):
            return
        if (why := self.ignore_in_view(c.seq, "vote")) is not None:
            self._ignore(peer, why)
            return
        slot = self._take_vote(peer, env, data, c.view, c.seq, c.digest, "commit")
        if slot is not None:
            self._maybe_committed(slot)

    def _take_vote(
        self, peer: Signer | None, env: Envelope, data: bytes, view: int, seq: int,
        digest: bytes, kind: str,
    ) -> Slot | None:
        """Store a PREPARE or COMMIT that passed the cheap checks; the slot it went into,
        or None (a duplicate, a conflict, a bad signature, or a surplus vote)."""
        signer: int = env.signer  # type: ignore[assignment]
        known = self.log.get(seq)
        prior = None
        if known is not None:
            prior = known.prior_vote(kind, signer, view, digest, data, self.verifier)
            if prior is SURPLUS:
                # The certificate is complete: nothing left to verify this vote for.
                self.surplus_votes += 1
                return None
        if not self._admit_vote(peer, env, data, prior, digest, kind):
            return None
        slot = self.log.slot(seq, view)
        (slot.prepares if kind == "prepare" else slot.commits).add(signer, digest, data)
        return slot

    def _maybe_prepared(self, slot: Slot) -> None:
        # prepared(m, v, n, i): the pre-prepare plus 2f matching prepares from distinct
        # backups (section 4.2). Fires once.
        if slot.pre_prepare is None:
            return
        d = slot.pre_prepare.digest
        if not slot.prepares.reached(d, self._prepare_quorum()):
            return
        self._out.append(Prepared(slot.view, slot.seq, d))
        # Keep the certificate for view changes: pre-prepare + 2f matching prepares.
        proof = slot.prepares.proof(d, 2 * self.config.f)
        self.prepared_certs[slot.seq] = (slot.view, slot.pre_prepare_env, proof)
        cert = PreparedCertificate(slot.view, slot.seq, slot.pre_prepare_env, proof)
        self._out.append(cert.to_persist())
        slot.my_commit = self._broadcast_vote(Commit(slot.view, slot.seq, d))
        slot.commits[self.id] = (d, slot.my_commit)
        self._maybe_committed(slot)

    def _maybe_committed(self, slot: Slot) -> None:
        # committed-local(m, v, n, i): prepared plus 2f+1 matching commits (section 4.2).
        if not slot.prepared:
            return
        assert slot.pre_prepare is not None
        if not slot.commits.reached(slot.pre_prepare.digest, self._commit_quorum()):
            return
        self._out.append(Committed(slot.view, slot.seq, slot.pre_prepare.digest))
        self._maybe_execute()

    # -- execution (section 4.2, 4.1) -----------------------------------------------------

    def _maybe_execute(self) -> None:
        while True:
            slot = self.log.get(self.last_executed + 1)
            if slot is None or not slot.committed:
                break
            if slot.pre_prepare is None or slot.pre_prepare.batch is None:
                break  # committed by digest; its batch is being fetched (FETCH-BATCH)
            boundary = self.epochs.boundary()
            if boundary is not None and slot.seq > boundary:
                break  # the next epoch executes what follows its boundary
            self._execute(slot)
        self._answer_reads()

    def _execute(self, slot: Slot) -> None:
        assert slot.pre_prepare is not None and slot.seq == self.last_executed + 1
        # Which slots were executed, so a restart replays them (docs/architecture.md "The durability contract"). The
        # record names the slot only: its pre-prepare is in the PREPARED record of the same
        # (view, seq), which is always durable first (execution needs prepared). Replies
        # do not wait for this record: what a client saw acknowledged by f+1 replicas rests
        # on the prepared certificates of 2f+1 replicas, and a lost EXECUTED record costs
        # only a re-execution after a restart (runtime.node._writes_to_commit).
        self._out.append(ExecutedBatch(slot.view, slot.seq).to_persist())
        done: list[ExecutedRequest] = []
        for req, data in slot.requests:
            rec = self.replies.settled(req.client, req.timestamp)
            if rec is not None:  # exactly-once: a deterministic no-op
                if req.timestamp == rec.timestamp:
                    self._reply(req.client, rec.timestamp, rec.result)
                done.append(ExecutedRequest(req.client, req.timestamp, req.operation, b"", False))
                continue
            if req.client == OPERATOR:
                result = self._operator_command(req, data, slot.seq)
            else:
                result = self.service.execute(req.operation, req.client)
            self.replies.record(req.client, req.timestamp, result)
            self._reply(req.client, req.timestamp, result)
            done.append(ExecutedRequest(req.client, req.timestamp, req.operation, result, True))
            self.requests.executed(req.client, req.timestamp)
            self.view_changes.attempts = 0  # progress in this view (4.5.2)
        self.last_executed = slot.seq
        if self.epoch_deadline is not None:
            self.epoch_deadline = self.ticks + self._vc_timeout_ticks  # progress toward the boundary
        self.retransmit_timeout.start(self.ticks)
        if self.is_primary:
            self.batching.expect_returns({req.client for req, _ in slot.requests}, self.ticks)
        self._out.append(Executed(slot.view, slot.seq, slot.pre_prepare.digest, tuple(done)))
        if slot.seq % self.config.checkpoint_interval == 0 and self.halted is None:
            self._take_checkpoint(slot.seq)

    # -- checkpoints (section 4.3) --------------------------------------------------------

    def _take_checkpoint(self, seq: int) -> None:
        # Costs the leaves written since the last checkpoint (TOCS 5.3.1); the store keeps
        # this state readable, copy on write, while we execute on.
        d = self.store.checkpoint(seq)
        signed = self.safety.signed.get(vote_slot(Checkpoint(seq, d)))
        if signed is not None and signed[0] != d:
            # We signed another digest for this checkpoint before a restart and executed
            # the same committed batches again: the service is not deterministic, or its
            # code changed. Signing this one would equivocate (the safety rules refuse);
            # running on would answer clients from a history we did not vouch for. Stop.
            self._diverge(Diverged(seq, d, signed[0], Divergence.REPLAY))
            self.halted = self.diverged
            return
        self.checkpoints.own[seq] = d
        self._out.append(CheckpointTaken(seq, d))
        data = self._broadcast_vote(Checkpoint(seq, d))
        self.checkpoints.vote_set(seq)[self.id] = (d, data)  # our own vote, by construction
        self._check_checkpoint_quorum(seq)
        self._check_split(seq, self.id)

    def _diverge(self, d: Diverged) -> None:
        """Report that our state is not the group's (`Diverged`); `pbft status` says so
        until one of our own checkpoints matches a stable one."""
        self.diverged = d
        self._out.append(d)

    def _check_split(self, seq: int, added: int) -> None:
        """Report once that the CHECKPOINTs for `seq` prove that correct replicas disagree
        on the state there (OSDI'99 4.3: each replica signs the digest of its own state
        after executing `seq`, and correct ones executed the same requests in the same
        order, so they sign the same digest). When, for every digest, more than f signers
        signed another one, at least one of those is correct whatever the digest: correct
        replicas disagree. With all n in and none at 2f+1 this always holds (n - 2f =
        f + 1 signed another). The f faulty signers alone can never make it hold (with
        every correct one at X, at most f signed another), so it never fires with a
        deterministic service; and never once `seq` is stable (2f+1 at X leave at most f).
        It only grows with more votes, so it is reported when the vote of `added` makes
        it hold."""
        votes = self.checkpoints.votes.get(seq)
        if seq <= self.log.low or votes is None:
            return

        def split(without: int | None) -> bool:
            counts = Counter(d for s, (d, _) in votes.items() if s != without)
            return bool(counts) and sum(counts.values()) - max(counts.values()) > self.config.f

        if not split(None) or split(added):
            return
        digests = len({d for d, _ in votes.values()})
        own = self.checkpoints.own.get(seq, b"")
        self._diverge(Diverged(seq, own, b"", Divergence.SPLIT, digests))

    def ignore_checkpoint(self, env: Envelope, c: Checkpoint) -> Ignored | None:
        if (why := self.ignore_unsigned(env)) is not None:
            return why
        return self.checkpoints.ignore(c.seq, self.log.low)

    def on_checkpoint(self, peer: Signer | None, env: Envelope, data: bytes, c: Checkpoint) -> None:
        if (why := self.ignore_checkpoint(env, c)) is not None:
            self._ignore(peer, why)
            return
        if not self.log.in_window(c.seq):
            self._on_checkpoint_claim(peer, env, data, c)
            return
        signer: int = env.signer  # type: ignore[assignment]
        prior = self.checkpoints.prior(c.seq, signer)
        if self._admit_vote(peer, env, data, prior, c.digest, "checkpoint"):
            self.checkpoints.vote_set(c.seq).add(signer, c.digest, data)
            self._check_checkpoint_quorum(c.seq)
            self._check_split(c.seq, signer)

    def _on_checkpoint_claim(self, peer: Signer | None, env: Envelope, data: bytes, c: Checkpoint) -> None:
        """A CHECKPOINT beyond our window: we may be behind. Keep the latest two per
        replica (bounded, `fake-stable-checkpoint`); 2f+1 matching ones start a transfer."""
        if not self._verify(peer, env):
            return
        matching = self.checkpoints.claim(env.signer, c.seq, c.digest, data)  # type: ignore[arg-type]
        if len(matching) >= self._checkpoint_quorum():
            self._learn_stable(c.seq, c.digest, tuple(sorted(matching)[: self.config.quorum]))

    def ignore_stable_proof(self, env: Envelope, sp: StableProof) -> Ignored | None:
        if (why := self.ignore_unsigned(env)) is not None:
            return why
        return (Reason.STALE, None) if sp.seq <= self.log.low else None

    def on_stable_proof(self, peer: Signer | None, env: Envelope, sp: StableProof) -> None:
        """2f+1 CHECKPOINTs judged together: valid signatures of distinct replicas for one
        (seq, digest) prove the checkpoint stable, whatever else their signers sent us
        (a far-future claim or a conflicting vote cannot hide a genuine signature)."""
        if (why := self.ignore_stable_proof(env, sp)) is not None:
            self._ignore(peer, why)
            return
        if self._verify_any(peer, env) is None:
            return
        try:
            state_digest = self.epochs.check_proof(sp.seq, sp.proof)
        except InvalidCertificate as exc:
            self._reject(peer, Reason.BAD_CERTIFICATE, f"stable proof of {sp.seq}: {exc}")
            return
        self._learn_stable(sp.seq, state_digest, sp.proof)

    def _check_checkpoint_quorum(self, seq: int) -> None:
        votes = self.checkpoints.votes.get(seq)
        if seq <= self.log.low or votes is None:
            return
        dg = votes.quorum_value(self._checkpoint_quorum())
        if dg is None:
            return
        # Stable: 2f+1 replicas (one of them correct) vouch for this state (4.3). Whoever
        # signed another digest for it lied (`bad-checkpoint`): flag it.
        for signer, (other, _) in sorted(votes.items()):
            if other != dg:
                self._reject(signer, Reason.BAD_DIGEST, f"checkpoint {seq} digest differs")
                self._out.append(Note(f"replica {signer} signed a wrong state digest at {seq}"))
        self._learn_stable(seq, dg, votes.proof(dg, self.config.quorum))

    def _learn_stable(self, seq: int, state_digest: bytes, proof: tuple[bytes, ...]) -> None:
        """A checkpoint proven stable by 2f+1 signatures. If it is our own state, collect
        garbage; if we lack that state (or ours differs), jump the window and fetch it."""
        if seq <= self.log.low:
            return
        own = self.checkpoints.own.get(seq)
        if own == state_digest:
            self.diverged = None  # our own state is the group's again
            self._make_stable(seq, state_digest, proof)
            return
        if self.last_executed >= seq:
            self._out.append(Note(f"our state at {seq} differs from the stable checkpoint"))
            if own is not None:
                # 2f+1 signed another state than ours after the same requests (4.3): not
                # a fault of the protocol's; our service diverged. Said, then fetched.
                self._diverge(Diverged(seq, own, state_digest, Divergence.STABLE))
        self._make_stable(seq, state_digest, proof)
        self._start_transfer(seq, state_digest, proof)

    def _start_transfer(self, seq: int, state_digest: bytes, proof: tuple[bytes, ...]) -> None:
        """Fetch the state at stable checkpoint `seq`: walk its partition tree from the
        signed root, fetching what differs from ours (TOCS 5.3.2; statetransfer.py)."""
        sources = sorted(
            {envelope_from_bytes(d).signer for d in proof} - {self.id}  # type: ignore[type-var]
        )
        # Of those, the replicas still in the newest group we know of: a change of
        # configuration may have removed some signers, who ask nothing of us any more
        # and answer nothing (fuzz seed 19001222: most of a transfer's requests went to
        # replicas the group had removed).
        newest = self.epochs.configs[max(self.epochs.configs)]
        staying = [s for s in sources if s < newest.n]
        # And of those, the ones whose answers reach us: a message signed by a replica that
        # is not a member of our current epoch is refused at dispatch (`is_member`), so a
        # replica still in an old epoch that asked one wasted a retransmission period per
        # ask (fuzz seed 28058015: three of five sources were replicas 4-6 of epoch 3,
        # and the transfer of a replica back in epoch 0 missed the settle bound).
        reachable = [s for s in staying if self.verifier.is_member(s)]
        sources = reachable or staying or sources
        # Our checkpoints are below it or not the agreed state: none is served any more,
        # and the store keeps none (nothing to copy on write while leaves are installed).
        self.checkpoints.own.clear()
        self.store.release(ALL_CHECKPOINTS)
        mine = self.store.tree_now().levels
        self.transfer = Transfer(
            seq, state_digest, proof, sources, mine, known=self.tree_nodes
        )
        self._out.append(StateTransferStarted(seq, state_digest))
        self._request_chunks()

    def _make_stable(self, seq: int, state_digest: bytes, proof: tuple[bytes, ...]) -> None:
        if self.checkpoints.own.get(seq) == state_digest:
            self._persist_checkpoint(seq, state_digest, proof)
            # The store keeps the previous stable checkpoint too: this one's record may
            # follow replies (ready.Durability.MAY_FOLLOW_REPLIES) and be lost in a crash,
            # and a restart must then find the one before it in the store (recovery.py);
            # with every replica restarting at once, nobody could serve it otherwise.
            self.store.release(self.log.low)
        else:
            # A window jump to a state we do not hold yet. It is durable before any vote
            # we sign above it, so a restart comes back to this window (with its votes
            # and certificates inside it) and resumes the transfer, instead of to the old
            # one with votes it cannot account for (issue 13, item 1). What lies at or
            # below it is covered by the 2f+1 signatures of the proof.
            self._out.append(WindowJump(seq, state_digest, proof).to_persist())
            self._out.append(Truncate(seq))
        self.log.advance(seq)
        self.held_batches.collect(seq)
        self.batch_answers.collect(seq)
        self.safety.forget_below(seq)
        self.prepared_certs = {s: c for s, c in self.prepared_certs.items() if s > seq}
        self.checkpoints.collect(seq, state_digest, proof)
        self._out.append(CheckpointStable(seq, state_digest, proof))
        if self.checkpoints.own.get(seq) == state_digest:
            self._maybe_switch_epoch()

    # -- view changes (section 4.4, 4.5.2) ------------------------------------------------

    def become_view_change(self, new_view: int) -> None:
        """Move to view-change status for `new_view` and multicast VIEW-CHANGE."""
        assert new_view > self.view
        self.requests.adopt(self.batching.drain(), self.ticks)
        self.view = new_view
        self.status = ViewStatus.VIEW_CHANGE
        self.view_changes.started += 1
        self.new_view_data = b""
        self.view_changes.attempts += 1
        self.new_view_timeout.stop()
        certs, left_out = certificates_to_send(
            self.config, self.verifier, new_view, self.prepared_certs, self.log
        )
        for why in left_out:
            self._out.append(Note(why))
        vc = ViewChange(new_view, self.log.low, self.checkpoints.stable_proof, tuple(certs))
        data = self._broadcast(self.safety.sign_other(vc))
        try:
            self.view_changes.received[self.id] = check_view_change(
                self.config, self.verifier, self.id, vc, data, self._check_cert, self.epochs.check_proof
            )
        except InvalidCertificate as exc:  # only from a damaged store: never out of step()
            self._out.append(Note(f"our own view-change for {new_view} does not check: {exc}"))
        self._persist_view(data)
        self.view_changes.sent_own(new_view, data)
        self._out.append(ViewChangeStarted(new_view))
        self._after_view_change_input()

    def on_view_change(self, peer: Signer | None, env: Envelope, data: bytes, vc: ViewChange) -> None:
        if (why := self.ignore_unsigned(env)) is not None:
            self._ignore(peer, why)
            return
        signer: int = env.signer  # type: ignore[assignment]
        if epoch_of_view(vc.new_view) != self.epochs.current:
            # Another configuration's view (epochs.py): not ours to count.
            self.rejects[(peer, Reason.STALE)] += 1
            return
        if vc.new_view < self.view or (vc.new_view == self.view and self.status is ViewStatus.NORMAL):
            if vc.new_view == self.view and self.is_primary and self.new_view_data:
                # The sender missed our NEW-VIEW: send it again. A NEW-VIEW is large, so
                # only for a VIEW-CHANGE its signer really signed, and once per
                # retransmission period per replica (a replayed one cannot make us flood).
                if self.view_changes.new_view_too_soon(signer, self.ticks):
                    self.rejects[(peer, Reason.DUPLICATE)] += 1
                elif self._verify(peer, env):
                    self.view_changes.new_view_resent[signer] = self.ticks
                    self._out.append(Send(signer, self.new_view_data))
            elif vc.new_view in self.view_changes.own and signer != self.id:
                self._resend_own_view_change(peer, env, signer, vc.new_view)
            else:
                self.rejects[(peer, Reason.STALE)] += 1
            return
        prior = self.view_changes.received.get(signer)
        if prior is not None and prior.msg.new_view >= vc.new_view:
            self.view_changes.repeated(signer, vc.new_view, data, self.ticks)
            # A retransmission, or older than what we hold from that replica (which already
            # counts toward our new-view timer if it is for our view or later).
            return
        refused = bytes_digest(data)
        if self.view_changes.refused.get(signer) == refused:
            # The same bytes its signer's VIEW-CHANGE had when we refused it: replayed
            # (by anyone, it is signed), it would cost the whole check again.
            self.rejects[(peer, Reason.DUPLICATE)] += 1
            return
        if not self._verify(peer, env):
            return
        try:
            checked = check_view_change(
                self.config, self.verifier, signer, vc, data, self._check_cert, self.epochs.check_proof
            )
        except InvalidCertificate as exc:
            self.view_changes.refused[signer] = refused
            self._reject(peer, Reason.BAD_CERTIFICATE, str(exc))
            return
        self.view_changes.add(checked, self.view, self.ticks)
        self._compare_certificates(vc)
        # Section 4.5.2: f+1 view-changes for higher views from others: join the lowest
        # view that f+1 of them reached.
        target = self.view_changes.join_target(self.view, self.id)
        if target is not None:
            self.become_view_change(target)
            return
        self._after_view_change_input()

    def _resend_own_view_change(self, peer: Signer | None, env: Envelope, to: int, view: int) -> None:
        """A replica still waits in a view we have left (we timed it out, it never got
        2f+1 VIEW-CHANGEs for it, so it has no new-view timer): resend it our VIEW-CHANGE
        for that view, the same signed bytes as before, so that it learns 2f+1 were
        there, times the view out and follows us. Without this, replicas split between
        v and v+1 each wait for the others for ever (issue 13, item 2; the stall of fuzz
        seed 1501933). Once per retransmission period per replica, signed senders only."""
        if (why := self.view_changes.ignore_resend(to, view, self.ticks)) is not None:
            self._ignore(peer, why)
            return
        if not self._verify(peer, env):
            return
        self._out.append(Send(to, self.view_changes.resend(to, view, self.ticks)))

    def _compare_certificates(self, vc: ViewChange) -> None:
        """A prepared certificate carries the old primary's signed pre-prepare: if ours
        for the same (view, seq) has another digest, the pair proves it equivocated
        (docs/attacks.md `equivocate`), which no single backup sees in the normal case."""
        for cert in vc.prepared:
            theirs = decode_envelope(cert[0])[1]  # checked already
            assert isinstance(theirs, PrePrepare)
            ours = self._own_pre_prepare(theirs.view, theirs.seq)
            if ours is not None and ours[0] != theirs.digest:
                primary = self.config.primary(theirs.view)
                self._evidence(primary, "equivocate", ours[1], cert[0])

    def _own_pre_prepare(self, view: int, seq: int) -> tuple[bytes, bytes] | None:
        """The (digest, envelope) of the pre-prepare we accepted for (view, seq), if known."""
        slot = self.log.get(seq)
        if slot is not None and slot.pre_prepare is not None and slot.view == view:
            return slot.pre_prepare.digest, slot.pre_prepare_env
        cert = self.prepared_certs.get(seq)
        if cert is not None and cert[0] == view:
            pp = decode_envelope(cert[1])[1]
            assert isinstance(pp, PrePrepare)
            return pp.digest, cert[1]
        return None

    def _known_batch(self, seq: int, digest: bytes) -> tuple[bytes, ...] | None:
        """The requests of the batch with `digest` for slot `seq`, if we hold them: in the
        slot (of any view) or in our prepared certificate for it. A NEW-VIEW names batches
        by digest only (4.4); those we lack are fetched (FETCH-BATCH)."""
        if digest == NULL_DIGEST:
            return ()
        held = self.held_batches.get(seq, digest)
        if held is not None:
            return held
        slot = self.log.get(seq)
        if slot is not None and slot.pre_prepare is not None and slot.pre_prepare.digest == digest:
            if slot.pre_prepare.batch is not None:
                return slot.pre_prepare.batch
        cert = self.prepared_certs.get(seq)
        if cert is not None:
            pp = decode_envelope(cert[1])[1]
            if isinstance(pp, PrePrepare) and pp.digest == digest and pp.batch is not None:
                return pp.batch
        return None

    def _after_view_change_input(self) -> None:
        if self.status is ViewStatus.NORMAL:
            return
        votes = self.view_changes.for_view(self.view)
        if self.view_changes.in_view(self.view) < self.config.quorum:
            return
        if not self.new_view_timeout.running:
            # Section 4.5.2: the timer for the new view starts once 2f+1 replicas are in
            # it, so a replica does not race ahead alone.
            shift = min(self.view_changes.attempts, MAX_BACKOFF_SHIFT)
            self.new_view_timeout.start(self.ticks, self._vc_timeout_ticks << shift)
            # Remembered across a restart: the VIEW-CHANGEs that started it are not
            # persisted, and peers that have moved on to a later view never resend them,
            # so a restarted replica could otherwise wait in this view for ever.
            self._out.append(ViewQuorum(self.view).to_persist())
        if self.is_primary and self.id in {c.signer for c in votes} and len(votes) >= self.config.quorum:
            self._send_new_view(votes)

    def _send_new_view(self, votes: list[CheckedViewChange]) -> None:
        chosen = self.view_changes.chosen(votes, self.id)
        plan = plan_new_view(chosen)
        if plan.contradicts(self.safety.signed, self.view):
            # A NEW-VIEW for this view went out before a restart, built from other
            # view-changes: never contradict it; the timer moves everyone on.
            self._out.append(Note(f"not re-issuing view {self.view}: it would conflict"))
            return
        pre_prepares = []
        for seq, d in plan.slots:
            pp = PrePrepare(self.view, seq, d, self._known_batch(seq, d))
            pre_prepares.append((pp, self._sign_vote(pp)))
        # The re-issued pre-prepares go without their batches: whoever lacks one fetches it.
        nv = NewView(self.view, tuple(c.data for c in chosen), tuple(detached(e) for _, e in pre_prepares))
        self.new_view_data = self._broadcast(self.safety.sign_other(nv))
        self.become_normal(plan.min_s, plan.stable_digest, plan.checkpoint_proof, pre_prepares)

    def ignore_new_view(self, env: Envelope, nv: NewView) -> Ignored | None:
        if (why := self.ignore_unsigned(env)) is not None:
            return why
        if env.signer != self.config.primary(nv.view):
            return Reason.NOT_PRIMARY, f"new-view for {nv.view} by {env.signer}"
        if nv.view < self.view or (nv.view == self.view and self.status is ViewStatus.NORMAL):
            return Reason.STALE, None
        if epoch_of_view(nv.view) != self.epochs.current:
            return Reason.STALE, f"new-view {nv.view} of another epoch"
        # No bound on how far ahead: a NEW-VIEW is checked in full (2f+1 signed
        # view-changes), and it is how a replica that was down for many views catches up.
        return None

    def on_new_view(self, peer: Signer | None, env: Envelope, data: bytes, nv: NewView) -> None:
        if (why := self.ignore_new_view(env, nv)) is not None:
            self._ignore(peer, why)
            return
        refused = bytes_digest(data)
        if self.view_changes.refused_new_view.get(env.signer) == refused:  # type: ignore[arg-type]
            # Replayed (by anyone: it is signed), a NEW-VIEW we refused would cost the
            # check of its 2f+1 VIEW-CHANGEs again.
            self.rejects[(peer, Reason.DUPLICATE)] += 1
            return
        if not self._verify(peer, env):
            return
        try:
            checked = self._check_new_view(nv)
        except InvalidCertificate as exc:
            # A NEW-VIEW that does not recompute is proof the new primary is faulty:
            # reject it and move on to the next view (section 4.4).
            self.view_changes.refused_new_view[env.signer] = refused  # type: ignore[index]
            self._reject(peer, Reason.BAD_CERTIFICATE, f"new-view {nv.view}: {exc}")
            if nv.view == self.view and self.status is ViewStatus.VIEW_CHANGE:
                # We were waiting for exactly this view: its primary is faulty. A bad
                # NEW-VIEW for a view we have not joined moves nothing (f cannot push us).
                self.become_view_change(nv.view + 1)
            return
        plan = checked.plan
        self.view = nv.view
        self.new_view_data = data
        self.become_normal(plan.min_s, plan.stable_digest, plan.checkpoint_proof, checked.pre_prepares)

    def _check_new_view(self, nv: NewView) -> CheckedNewView:
        """Seam: recompute a NEW-VIEW (viewchange.check_new_view); raises InvalidCertificate."""
        return check_new_view(self.config, self.verifier, nv, self._check_cert, self.epochs.check_proof)

    def _check_cert(
        self, config: ClusterConfig, verifier: Verifier, new_view: int, cert: tuple[bytes, ...]
    ) -> PreparedCert:
        """Seam: how a prepared certificate in a VIEW-CHANGE is checked (section 4.4)."""
        return check_prepared_cert(config, verifier, new_view, cert)

    def become_normal(
        self,
        min_s: int,
        stable_digest: bytes,
        proof: tuple[bytes, ...],
        pre_prepares: list[tuple[PrePrepare, bytes]],
    ) -> None:
        """Enter the new view with the re-issued pre-prepares O (section 4.4)."""
        self.status = ViewStatus.NORMAL
        self.requests.ordered.clear()  # what O re-issues is ordered again below; the rest is not
        self.new_view_timeout.stop()
        # The NEW-VIEW is kept with the view: a primary restarted in it must still be able
        # to send it to a replica that missed it (on_view_change), or that replica waits
        # in view-change status for ever (fuzz seed 120835).
        self._persist_view(self.new_view_data)
        if min_s > self.log.low:
            self._learn_stable(min_s, stable_digest, proof)
        # The batches O names by digest that we hold, before the old slots go.
        known = {pp.seq: self._known_batch(pp.seq, pp.digest) for pp, _ in pre_prepares}
        # Slots of the old view are superseded by O; only prepared certificates survive.
        self.log.supersede()
        for pp, raw in pre_prepares:
            if not self.log.in_window(pp.seq):
                continue
            batch = known[pp.seq]
            if batch is not None:
                pp, raw = PrePrepare(pp.view, pp.seq, pp.digest, batch), attached(raw, batch)
            requests, bad = self.verified.batch(batch or ())
            for why in bad:  # a prepared batch was checked by a correct replica
                self._out.append(Note(f"unverifiable request in re-issued n={pp.seq}: {why}"))
            slot = self.log.slot(pp.seq, self.view)
            self._accept_pre_prepare(slot, pp, raw, requests, prepare=not self.is_primary)
        self.next_seq = next_seq_after(pre_prepares, min_s, self.log.low, self.last_executed)
        self.view_changes.installed(self.view)
        # Waiting requests get a fresh timer in the new view; the new primary orders them,
        # backups hand them to it.
        for data in self.requests.new_view(self.ticks):
            if self.is_primary:
                req = self.verified.check(data)
                if not isinstance(req, str):
                    self._enqueue(req, data)
            else:
                self._out.append(Send(self.primary, data))
        if self.is_primary:
            self.requests.waiting.clear()
        self._out.append(ViewInstalled(self.view, self.primary))
        self._fetch_batches()
        for peer, data in self.future.take():
            self._on_received(peer, data)
        self._answer_reads()

    # -- batches a NEW-VIEW named by digest only (4.4) --------------------------------------

    def _fetch_batches(self) -> None:
        """Ask every other replica for each batch we lack of a slot still to execute: a
        correct replica among the 2f+1 that prepared it holds it (at least f+1 do)."""
        for seq in sorted(self.log.slots):
            slot = self.log.slots[seq]
            pp = slot.pre_prepare
            if seq > self.last_executed and pp is not None and pp.batch is None:
                self._broadcast(self.safety.sign_other(FetchBatch(seq, pp.digest)))

    def on_fetch_batch(self, peer: Signer | None, env: Envelope, fb: FetchBatch) -> None:
        if (why := self.ignore_unsigned(env)) is not None:
            self._ignore(peer, why)
            return
        asker: int = env.signer  # type: ignore[assignment]
        if asker == self.id:
            self._ignore(peer, (Reason.DUPLICATE, None))
            return
        if peer is not None and peer != asker:
            # Answers go to the signer: a relayed or replayed FETCH-BATCH would make us
            # send a batch to a replica that did not ask.
            self._reject(peer, Reason.WRONG_ROLE, f"fetch-batch of {asker} relayed by {peer!r}")
            return
        batch = self._known_batch(fb.seq, fb.digest)
        if batch is None or not batch:
            self.rejects[(peer, Reason.STALE)] += 1  # not ours to give (or the null request)
            return
        if self.batch_answers.too_soon(asker, fb.seq, self.ticks):
            self.rejects[(peer, Reason.DUPLICATE)] += 1
            return
        if not self._verify(peer, env):
            return
        self.batch_answers.answered(asker, fb.seq, self.ticks)
        self._out.append(Send(asker, self.safety.sign_other(Batch(fb.seq, fb.digest, batch)).to_bytes()))

    def on_batch(self, peer: Signer | None, env: Envelope, b: Batch) -> None:
        # The signature is not checked: the digest, which the NEW-VIEW carried and 2f+1
        # replicas prepared, is what says these are the right requests.
        if (why := self.ignore_unsigned(env)) is not None:
            self._ignore(peer, why)
            return
        slot = self.log.get(b.seq)
        pp = slot.pre_prepare if slot is not None else None
        if slot is None or pp is None or pp.batch is not None or pp.digest != b.digest:
            self.rejects[(peer, Reason.STALE)] += 1  # not missing here (any more)
            return
        if batch_digest(b.requests) != b.digest:
            self._reject(peer, Reason.BAD_DIGEST, f"batch n={b.seq}")
            return
        self._attach_batch(slot, b.requests)

    def _attach_batch(self, slot: Slot, batch: tuple[bytes, ...]) -> None:
        """The batch of a slot held by digest only arrived (its digest checked): attach
        it, record it, and execute what it allows."""
        pp = slot.pre_prepare
        assert pp is not None
        requests, bad = self.verified.batch(batch)
        for why in bad:  # a prepared batch was checked by a correct replica
            self._out.append(Note(f"unverifiable request in fetched n={pp.seq}: {why}"))
        slot.pre_prepare = PrePrepare(pp.view, pp.seq, pp.digest, batch)
        slot.pre_prepare_env = attached(slot.pre_prepare_env, batch)
        slot.requests = requests
        self.held_batches.keep(pp.seq, pp.digest, batch)
        for req, _ in requests:
            self.requests.saw_ordered(req.client, req.timestamp)
        cert = self.prepared_certs.get(pp.seq)
        if cert is not None and cert[0] == slot.view:
            # Our PREPARED record held the pre-prepare without the batch; a restart must
            # be able to replay the execution that may now follow.
            self.prepared_certs[pp.seq] = (cert[0], slot.pre_prepare_env, cert[2])
            record = PreparedCertificate(cert[0], pp.seq, slot.pre_prepare_env, cert[2])
            self._out.append(record.to_persist())
        self._maybe_execute()
        self._answer_reads()

    # -- status and state transfer (TOCS 2002 5.3) --------------------------------------

    def ignore_status(self, peer: Signer | None, env: Envelope) -> Ignored | None:
        if (why := self.ignore_unsigned(env)) is not None:
            return why
        return self.catch_up.ignore(peer, env.signer, self.ticks)  # type: ignore[arg-type]

    def on_status(self, peer: Signer | None, env: Envelope, st: Status) -> None:
        """A peer's progress report: help it catch up with what proves where we are."""
        if type(env.signer) is int and env.signer == self.id:
            return  # our own, relayed back: nothing to tell ourselves
        if (why := self.ignore_status(peer, env)) is not None:
            self._ignore(peer, why)
            return
        epoch = self._verify_any(peer, env)
        if epoch is None:
            return
        to: int = env.signer  # type: ignore[assignment]
        if epoch < self.epochs.current:
            # It is in an epoch we have left: first the commands that made the later
            # ones, so that it can check what proves where we are.
            self._send_epochs(to, epoch)
        self.view_changes.saw(to, st.view)
        if self.catch_up.report(to, st.view, st.last_executed, self.ticks):
            self._locate()
        if st.view < self.view or st.last_executed < self.last_executed or st.stable_seq < self.log.low:
            # It is behind us: tell it where we are too, so a replica that just restarted
            # learns it is behind before it judges the primary (on_request_timeout).
            self._out.append(Send(to, self._status()))
        # Behind our stable checkpoint, in execution or only in collecting its 2f+1
        # CHECKPOINTs (lost ones are never resent otherwise, and without the proof it
        # cannot truncate its log, section 4.3): send the proof.
        if st.stable_seq < self.log.low and self.checkpoints.stable_proof:
            proof = StableProof(self.log.low, self.checkpoints.stable_proof)
            self._out.append(Send(to, self.safety.sign_other(proof).to_bytes()))
        if st.view < self.view and self.status is ViewStatus.NORMAL and self.new_view_data:
            self._out.append(Send(to, self.new_view_data))
        if st.view == self.view and self.status is ViewStatus.NORMAL:
            self._resend_committed(to, max(st.last_executed, self.log.low))

    # -- a removed replica (epochs.py) ------------------------------------------------------

    def _on_received_retired(self, peer: Signer | None, data: bytes) -> None:
        """Not a member of the current epoch any more: we order nothing, but we may hold
        what nobody else left does, the proof that the boundary is stable (2f+1 CHECKPOINTs
        of the old epoch) and the state at it. If the replicas that stay crashed before
        they collected that proof and fewer than 2f+1 of the old members remain, only the
        removed ones can hand it over, or the new epoch never begins (fuzz seed 28055746).
        So a removed replica lingers (`linger_ms` after its last answer, at most LINGER_MAX_MS;
        then `Departed` tells its runtime to stop it) and answers two questions of a
        replica left behind in an old epoch: a STATUS behind our stable checkpoint
        gets the epochs after its own and the proof; a FETCH-STATE gets the state at our
        stable checkpoint. Both rationed as for a member; everything else is refused."""
        if (decoded := self._decode_input(peer, data)) is None:
            return
        env, msg = decoded
        signer = env.signer
        if type(signer) is not int or not 0 <= signer < self.chunks_served.replicas or signer == self.id:
            self.rejects[(peer, Reason.STALE)] += 1
            return
        match msg:
            case Status() if msg.stable_seq < self.log.low and self.checkpoints.stable_proof:
                if (why := self.catch_up.ignore(peer, signer, self.ticks)) is not None:
                    self._ignore(peer, why)
                    return
                epoch = self._verify_any(peer, env)
                if epoch is None:
                    return
                self.catch_up.answered[signer] = self.ticks
                self._send_epochs(signer, epoch)
                proof = StableProof(self.log.low, self.checkpoints.stable_proof)
                self._out.append(Send(signer, self.safety.sign_other(proof).to_bytes()))
                self._still_of_help()
            case FetchState():
                key = (signer, msg.seq, msg.level, msg.index, msg.part)
                why = self.chunks_served.ignore(peer, key, msg.digest, self.checkpoints.own, self.ticks)
                if why is not None:
                    self._ignore(peer, why)
                    return
                if self._verify_any(peer, env) is None:
                    return
                self._serve_state(peer, env, msg)
                self._still_of_help()
            case _:
                # Not a member any more (a STATUS not behind us needs nothing from us).
                self.rejects[(peer, Reason.STALE)] += 1

    def _still_of_help(self) -> None:
        """We answered one left behind: linger `linger_ms` more, up to LINGER_MAX_MS after we
        retired, so that neither a slow catch-up nor a peer that keeps asking (a faulty one
        can, forever) decides how long an old key stays on line."""
        if self.linger_until is not None:
            self.linger_until = min(self._linger_end, max(self.linger_until, self.ticks + self._ms_ticks(self.config.linger_ms)))

    def _resend_committed(self, to: int, after: int) -> None:
        """Give a peer that lags inside our log what proves our committed slots: the
        pre-prepare, 2f prepares and 2f+1 commits. Without this, a replica that lost
        messages for slots everyone else executed would wait for the next checkpoint,
        which never comes when the clients are waiting on it."""
        last = min(self.last_executed, after + CATCH_UP_SLOTS)
        for data in self.log.committed_proof(to, after + 1, last, self.view):
            self._out.append(Send(to, data))

    def _request_chunks(self) -> None:
        t = self.transfer
        if t is None:
            return
        asks, every_source_lied = t.next_requests()
        for level, index, part, source in asks:
            msg = FetchState(t.seq, t.digest, level, index, part)
            self._out.append(Send(source, self.safety.sign_other(msg).to_bytes()))
        if every_source_lied:
            self._out.append(Note(f"state transfer to {t.seq}: every source lied"))

    def ignore_fetch_state(self, peer: Signer | None, env: Envelope, fs: FetchState) -> Ignored | None:
        if (why := self.ignore_unsigned(env)) is not None:
            return why
        key = (env.signer, fs.seq, fs.level, fs.index, fs.part)
        return self.chunks_served.ignore(peer, key, fs.digest, self.checkpoints.own, self.ticks)  # type: ignore[arg-type]

    def on_fetch_state(self, peer: Signer | None, env: Envelope, fs: FetchState) -> None:
        """TOCS 2002 5.3.2: serve one node of a checkpoint's partition tree: an internal
        node's children's digests, or a page of a leaf's entries."""
        if (why := self.ignore_fetch_state(peer, env, fs)) is not None:
            self._ignore(peer, why)
            return
        if self._verify_any(peer, env) is None:
            return
        self._serve_state(peer, env, fs)

    def _serve_state(self, peer: Signer | None, env: Envelope, fs: FetchState) -> None:
        if fs.level >= 1:
            children = self.store.children_at(fs.seq, fs.level, fs.index)
            if children is None:
                self._reject(peer, Reason.STALE, f"checkpoint {fs.seq} not kept")
                return
            data, parts = b"".join(children), 1
        else:
            entries = self.store.bucket_at(fs.seq, fs.index)
            if entries is None:
                self._reject(peer, Reason.STALE, f"checkpoint {fs.seq} not kept")
                return
            leaf = pages(entries)
            if fs.part >= len(leaf):
                self._reject(peer, Reason.OUT_OF_WINDOW, f"page {fs.part} of {len(leaf)}")
                return
            data, parts = encode_page(leaf[fs.part]), len(leaf)
        asker: int = env.signer  # type: ignore[assignment]
        self.chunks_served.record((asker, fs.seq, fs.level, fs.index, fs.part), self.ticks)
        reply = StateChunk(fs.seq, fs.digest, fs.level, fs.index, fs.part, parts, data)
        self._out.append(Send(asker, self.safety.sign_other(reply).to_bytes()))

    def ignore_state_chunk(self, env: Envelope, sc: StateChunk) -> Ignored | None:
        if (why := self.ignore_unsigned(env)) is not None:
            return why
        t = self.transfer
        if t is None or not t.wants(sc.seq, sc.digest, sc.level, sc.index, sc.part, env.signer):  # type: ignore[arg-type]
            return Reason.STALE, None  # not fetching it (any more), or not from this source
        return None

    def on_state_chunk(self, peer: Signer | None, env: Envelope, sc: StateChunk) -> None:
        if (why := self.ignore_state_chunk(env, sc)) is not None:
            self._ignore(peer, why)
            return
        t = self.transfer
        assert t is not None
        if self._verify_any(peer, env) is None:
            return
        source: int = env.signer  # type: ignore[assignment]
        verdict, entries = t.received(sc.level, sc.index, sc.part, sc.parts, sc.data, source,
                                      verify=self._transfer_verifies())
        if verdict is Verdict.LIED:
            # Every answer is checked against a digest 2f+1 replicas signed (through its
            # parents); a source whose answer does not verify is never asked again.
            self._reject(peer, Reason.BAD_DIGEST, f"state node {sc.level}/{sc.index} of {sc.seq}")
        elif verdict is Verdict.LEAF:
            assert entries is not None
            self.store.install_bucket(sc.index, entries)
        if t.complete():
            self._install_state(t)
        else:
            self._request_chunks()

    def _transfer_verifies(self) -> bool:
        """Seam: every fetched node and leaf is checked against the digest 2f+1 signed
        (TOCS 5.3.2); a broken variant skips it."""
        return True

    def _install_state(self, t: Transfer) -> None:
        """Every leaf that differed is installed: the store now holds the state at t.seq."""
        self.transfer = None
        d = self.store.checkpoint(t.seq)
        if d != t.digest and self._transfer_verifies():
            # Cannot happen while the walk compared with a tree nothing else changed; if it
            # does, walk again rather than run on a state 2f+1 did not sign.
            self._out.append(Note(f"state at {t.seq} installed but its digest differs: fetching again"))
            self._start_transfer(t.seq, t.digest, t.proof)
            return
        for problem in self.replies.load():
            self._out.append(Note(f"state at {t.seq}: {problem}"))
        for problem in self.epochs.load(Namespace(self.store, CONFIG_PREFIX).get):
            self._out.append(Note(f"state at {t.seq}: {problem}"))
        self.last_executed = t.seq
        self.next_seq = max(self.next_seq, t.seq + 1)
        self.checkpoints.own[t.seq] = d
        self.transfers_completed += 1
        self.retransmit_timeout.start(self.ticks)
        self._persist_checkpoint(t.seq, t.digest, t.proof)
        self.requests.drop_executed(self.replies.executed_ts)
        self.requests.restart(self.ticks)  # a fresh timer once caught up
        self._out.append(StateInstalled(t.seq, t.digest))
        self._maybe_switch_epoch()
        boundary = self.epochs.boundary()
        if boundary is not None and self.last_executed < boundary and self.epoch_deadline is None:
            self.epoch_deadline = self.ticks + self._vc_timeout_ticks  # as if we had executed the command
        self._maybe_execute()

    # -- configuration epochs (epochs.py) ------------------------------------------------

    def _fill_to_boundary(self, boundary: int) -> None:
        """A change of configuration is pending: order what waits up to its boundary B,
        and null requests when nothing does, so that even an idle group reaches B; never
        anything beyond B in this epoch."""
        while (
            self.next_seq <= boundary
            and self.log.in_window(self.next_seq)
            and self.next_seq - 1 - self.last_executed < self.config.pipeline
        ):
            self._propose(self.batching.take() if self.batching.pending else [])

    def _operator_command(self, req: Request, data: bytes, seq: int) -> bytes:
        """Execute an operator command (epochs.py): the next epoch's membership, in force
        after the checkpoint at or after `seq`. Every correct replica decides the same
        here; the result says what (CBOR: {"epoch", "after"} or {"error"})."""
        try:
            epoch, membership = parse_operation(req.operation)
        except ValueError as exc:
            return codec.encode({"error": str(exc)})
        nxt = self.epochs.current + 1
        # Decided on the replicated state only: an epoch heard of from a peer (EPOCHS)
        # is known here and not elsewhere (fuzz seed 17100576, f=2: a replica that had
        # learnt one refused a command the others took).
        config_ns = Namespace(self.store, CONFIG_PREFIX)
        if config_ns.get(EpochEntry.key(nxt)) is not None:
            return codec.encode({"error": f"epoch {nxt} is already pending"})
        if epoch != nxt:
            return codec.encode({"error": f"the next epoch is {nxt}, not {epoch}"})
        k = self.config.checkpoint_interval
        entry = EpochEntry(epoch, -(-seq // k) * k, data)
        self.epochs.add(entry)
        # In the replicated state: digested with it, transferred with it, found again
        # after a restart.
        config_ns.put(EpochEntry.key(epoch), entry.encode())
        self.epoch_deadline = self.ticks + self._vc_timeout_ticks
        self._out.append(Note(
            f"epoch {epoch} (f={membership.f}, n={3 * membership.f + 1}, {len(membership.clients)} clients) "
            f"begins after checkpoint {entry.after}"
        ))
        return codec.encode({"epoch": epoch, "after": entry.after})

    def _send_epochs(self, to: int, epoch: int) -> None:
        """The entries of the epochs after `epoch` that we know, once per retransmission
        period per replica (they are small, but a STATUS must not buy an answer each)."""
        last = self.epochs_sent.get(to)
        if last is not None and self.ticks - last < self._retransmit_ticks:
            return
        self.epochs_sent[to] = self.ticks
        entries = tuple(
            codec.encode([e, entry.after, entry.command])
            for e, entry in sorted(self.epochs.entries.items()) if e > epoch
        )
        if entries:
            self._out.append(Send(to, self.safety.sign_other(EpochsMessage(entries)).to_bytes()))

    def on_epochs(self, peer: Signer | None, env: Envelope, msg: EpochsMessage) -> None:
        """Configuration epochs a peer says followed ours: each command is checked against
        the operator's key, so who sent them does not matter (its envelope is not)."""
        if (why := self.ignore_unsigned(env)) is not None:
            self._ignore(peer, why)
            return
        learnt = 0
        for raw in msg.entries:
            try:
                epoch, _, command = codec.decode(raw)
            except (codec.CodecError, TypeError, ValueError):
                self._reject(peer, Reason.MALFORMED, "an epoch entry")
                return
            if type(epoch) is not int or type(command) is not bytes:
                continue
            known = self.epochs.entries.get(epoch)
            if epoch in self.epochs.configs and (not self.epochs.heard_only(epoch) or (known and known.command == command)):
                continue  # the state's (or the file's), or the same one again
            why = self.epochs.learn(epoch, command, self.verifier)
            if why is not None:
                self._reject(peer, Reason.BAD_CERTIFICATE, f"epoch {epoch}: {why}")
                return
            learnt += 1
        if learnt:
            self._out.append(Note(f"learnt of epochs up to {max(self.epochs.configs)} from replica {env.signer}"))
            # A VIEW-CHANGE or NEW-VIEW refused for a proof of an epoch we had not heard
            # of may check now: its retransmission is no longer a duplicate (review).
            self.view_changes.refused.clear()
            self.view_changes.refused_new_view.clear()

    def _on_epoch_deadline(self) -> None:
        """A pending change of configuration makes no progress: the boundary B is not
        reached in time (the primary is not filling up to it: a backup's view), or B is
        executed here but not stable (the others cannot get there: fuzz seed 18000931,
        where every replica had restarted and the ones that had committed a slot below B
        lost it with their logs, so nobody could prove it to the rest, and no client
        waited to time the primary out). Either way a view change: the NEW-VIEW
        re-issues what was prepared (OSDI'99 4.4). The deadline restarts with progress."""
        boundary = self.epochs.boundary()
        if boundary is None:
            self.epoch_deadline = None
            return
        self.epoch_deadline = self.ticks + (self._vc_timeout_ticks << min(self.view_changes.attempts, MAX_BACKOFF_SHIFT))
        if self.status is not ViewStatus.NORMAL or self.transfer is not None:
            return
        if self.last_executed < boundary and not self.is_primary:
            self._out.append(Note(f"the boundary {boundary} of epoch {self.epochs.current + 1} is not reached"))
            self.become_view_change(self.view + 1)
        elif self.last_executed >= boundary:
            self._out.append(Note(f"the boundary {boundary} of epoch {self.epochs.current + 1} is not stable"))
            self.become_view_change(self.view + 1)

    def _maybe_switch_epoch(self) -> None:
        """Move to the newest epoch whose boundary is our stable checkpoint or below it,
        once we hold that state (epochs.py: the old group stops at a stable checkpoint,
        the new one starts from it)."""
        epoch = self.epochs.due(self.log.low)
        if epoch is not None and self.transfer is None and self.last_executed >= self.log.low:
            self._switch_epoch(epoch)

    def _member_of(self, config: ClusterConfig) -> bool:
        me = config.replicas[self.id] if self.id < config.n else None
        return me is not None and me.public_key == self.safety.public_key

    def left_config(self) -> ClusterConfig | None:
        """Retired: the configuration of the latest epoch before the current one that we
        were a member of (whose replicas a removed replica still answers), if we know it."""
        for e in sorted((e for e in self.epochs.configs if e < self.epochs.current), reverse=True):
            if self._member_of(self.epochs.configs[e]):
                return self.epochs.configs[e]
        return None

    def _ms_ticks(self, ms: int) -> int:
        return max(1, ms // self.config.tick_ms)

    def _switch_epoch(self, epoch: int) -> None:
        config = self.epochs.configs[epoch]
        boundary = self.log.low
        self.epochs.current = epoch
        self.config = config
        self.verifier = self.epochs.verifier(epoch)
        self.retired = not self._member_of(config)
        if self.retired:
            # A removed replica signs as the member it last was, so that what it hands to
            # the replicas left behind verifies there, and signs nothing else
            # (`_on_received_retired`); it lingers for them, then departs.
            left = self.left_config()
            self.safety.retire((left or config).replica_domain)
            self.linger_until = self.ticks + self._ms_ticks(config.linger_ms)
            self._linger_end = self.ticks + self._ms_ticks(LINGER_MAX_MS)
        else:
            self.safety.rebind(config.replica_domain)
        # Nothing of the old epoch above its boundary counts: slots, certificates, votes
        # and view changes start afresh, in the new epoch's first view, with no view change.
        self.requests.adopt(self.batching.drain(), self.ticks)
        waiting = self.requests.new_view(self.ticks)
        self.view = first_view(epoch)
        self.status = ViewStatus.NORMAL
        self.new_view_data = b""
        self.new_view_timeout.stop()
        self.log.slots.clear()
        self.prepared_certs = {}
        self.view_changes = ViewChanges(config, self._retransmit_ticks, self._vc_timeout_ticks)
        self.future = FutureViews(config)
        # A removed replica answers the replicas of every epoch it knows (`_on_received_retired`).
        widest = max(self.epochs.configs.values(), key=lambda c: c.n) if self.retired else config
        self.catch_up = CatchUp(widest, self._retransmit_ticks)
        self.checkpoints.config = config
        self.checkpoints.votes = {s: v for s, v in self.checkpoints.votes.items() if s <= boundary}
        self.checkpoints.claims = {}  # signed under the old epoch: none is above its boundary
        self.batching.config = config
        self.requests = RequestTimers(len(config.requesters))
        self.reads = WaitingReads(config)
        self.replies = ReplyCache(config, Namespace(self.store, REPLY_PREFIX))
        self.read_answers = ClientAnswers(config)  # when each client's read was last answered
        self.replies.load()
        self.verified = VerifiedRequests(self.verifier)
        self.deferred = DeferredRequests(self.batching, self.requests, self.replies)
        self.chunks_served = ChunkBudget(self._retransmit_ticks, widest.n)
        self.batch_answers = BatchAnswers(self._retransmit_ticks, config.n, config.log_window)
        self.status_answered = {}  # the new epoch's clients
        self.next_seq = boundary + 1
        self.epoch_deadline = None
        # The old epochs' votes above B are void; what we recorded in this epoch or a later
        # one before a restart took us back is not, and comes back now (recovery.HeldOver).
        self._out.append(Truncate(ALL_CHECKPOINTS, below_view=first_view(epoch)))
        held = self.held_over.take(epoch)
        if not self.retired and held:
            recovery.load_votes(self, held)
            recovery.load_view(self, held)
        # Our view record of this epoch: the one held over, written again (an older store
        # keeps it under the key the truncation above just dropped), else the first view.
        views = [r for kind in (ViewState, ViewQuorum) for r in [h for h in held if isinstance(h, kind)][-1:]]
        if not any(isinstance(r, ViewState) for r in views):
            self._persist_view(b"")
        self._out.extend(r.to_persist() for r in views)
        self._out.append(EpochStarted(epoch, boundary, config.n, config.f, self.retired))
        if self.retired:
            return
        # Requests that waited go to the new primary, or into its queue.
        for data in waiting:
            req = self.verified.check(data)
            if isinstance(req, str):
                continue  # a client the new epoch does not have, or a key it replaced
            if self.is_primary:
                self._enqueue(req, data)
            else:
                self.requests.adopt([(req.client, req, data)], self.ticks)
                self._out.append(Send(self.primary, data))

    # -- durability (docs/architecture.md "The durability contract") ----------------------

    def _persist_checkpoint(self, seq: int, state_digest: bytes, proof: tuple[bytes, ...]) -> None:
        # The state itself is in the store, which keeps checkpoint `seq` (store.py).
        self._out.append(StableCheckpoint(seq, state_digest, proof).to_persist())
        self._out.append(Truncate(seq))

    def _persist_view(self, message: bytes) -> None:
        """The view, whether it is active, and our VIEW-CHANGE for it while it is not, or
        the NEW-VIEW that installed it once it is (b"" for view 0)."""
        active = self.status is ViewStatus.NORMAL
        self._out.append(ViewState(self.view, active, message).to_persist())

    def recover(self, records: list[Persist]) -> list[Action]:
        """Rebuild this replica from what an earlier run persisted, before any step
        (recovery.py); the notes it made on the way."""
        return recovery.recover(self, records)

    # -- time ---------------------------------------------------------------------------

    def _on_load(self, busy: bool) -> None:
        # The runtime's load changes only how the primary batches (batching.py); the
        # step's end proposes whatever the new policy lets through.
        self.batching.set_busy(busy)

    def _on_tick(self) -> None:
        self.ticks += 1
        if self.deferred.held:
            for peer, data, checked in self.deferred.take(self.verified):
                if isinstance(checked, str):
                    self._reject(peer, Reason.BAD_REQUEST, checked)
                else:
                    self.on_request(peer, data, checked, verified=True)
        for timeout, fire in self.timeouts:
            if timeout.fired(self.ticks):
                fire()
        if self.epoch_deadline is not None and self.ticks >= self.epoch_deadline:
            self._on_epoch_deadline()

    def on_hold_timeout(self) -> None:
        # The wait for returning clients ran out (batching.py).
        self.batching.on_hold_timeout(idle=self.next_seq - 1 == self.last_executed)

    def on_new_view_timeout(self) -> None:
        # No NEW-VIEW in time: try the next view, waiting twice as long (4.5.2).
        assert self.status is ViewStatus.VIEW_CHANGE
        self.become_view_change(self.view + 1)

    def on_lone_timeout(self) -> None:
        if self.status is ViewStatus.NORMAL:
            self._maybe_join_lone_view_change()

    def on_retransmit_timeout(self) -> None:
        self.retransmit_timeout.start(self.ticks)
        self._retransmit()

    def _maybe_join_lone_view_change(self) -> None:
        """A replica that went into a view change alone (partitioned, or it timed out just
        before the others installed the view) waits in view v+1 for ever: it cannot come
        back to v, because its signed VIEW-CHANGE may yet be used in a NEW-VIEW for v+1
        and it would then have voted in v after promising not to (OSDI'99 4.4). So the
        others go to it: a VIEW-CHANGE for exactly our view + 1 that a replica has kept
        sending (it is retransmitted, so still current) for LONE_FACTOR view-change
        timeouts makes us join it; our VIEW-CHANGE and its make f+1, so everyone follows
        (4.5.2) and the group is whole again (issue 13, item 2). Joining a view change
        is always safe; a Byzantine replica that keeps sending VIEW-CHANGEs buys one view
        change per period, and the period doubles each time the same replica does it."""
        for signer, view, due in self.view_changes.lone_deadlines(self.view, self.ticks):
            if self.ticks >= due:
                self.view_changes.joined_lone(signer)
                self._out.append(Note(f"replica {signer} is alone in view {view}: joining it"))
                self.become_view_change(view)
                return

    def next_view_move(self) -> int | None:
        """The tick at which this replica will leave its view on its own (its new-view
        timer runs, or it will join a replica alone in the next view), or None. For
        checkers deciding whether replicas in different views may still converge."""
        if self.status is ViewStatus.VIEW_CHANGE:
            return self.new_view_timeout.deadline
        deadlines = self.view_changes.lone_deadlines(self.view, self.ticks)
        return min((due for _, _, due in deadlines), default=None)

    def on_request_timeout(self) -> None:
        """A backup's timers on the requests it waits for (4.4): view change when one is
        not executed within the view-change timeout or not ordered within a fraction of it."""
        if self.status is ViewStatus.VIEW_CHANGE:
            return
        if self.is_primary or not self.requests.waiting or self.transfer is not None:
            # A replica fetching state is behind: it cannot judge the primary by requests
            # it has not caught up to, and must not leave the view alone for that.
            return
        if not self.catch_up.located:  # restarted: not before the others say where they are
            if self.ticks >= self.catch_up.located_by:
                self._locate()
            return
        behind = self.catch_up.behind(self.view, self.last_executed)
        timeout = self._vc_timeout_ticks << min(self.view_changes.attempts, MAX_BACKOFF_SHIFT)
        expired = self.requests.check(self.ticks, behind, self.replies.executed_ts, timeout)
        if expired is Expired.VIEW_CHANGE:
            self.become_view_change(self.view + 1)
        elif expired is Expired.NUDGE:
            # Half-way through the ordering timer: the request to the primary again, our
            # STATUS to everyone, so a pre-prepare that was merely lost costs no view.
            for data in self.requests.unordered():
                self._out.append(Send(self.primary, data))
            self._out.append(Broadcast(self._status()))

    def _locate(self) -> None:
        """We know where the others are (or waited long enough): judge the primary from
        now on, with fresh timers for what we were waiting for."""
        self.catch_up.locate()
        self.requests.restart(self.ticks)

    def _retransmit(self) -> None:
        """Resend our own messages that may have been lost (no progress for a while), and
        tell the others where we are so that they can help us catch up."""
        self._out.append(Broadcast(self._status()))
        if self.transfer is not None:
            self.transfer.stalled()  # a slow source: ask the next one
            self._request_chunks()
        if self.status is ViewStatus.VIEW_CHANGE:
            own = self.view_changes.retransmission(self.id, self.view)
            if own is not None:
                self._out.append(Broadcast(own))
            return
        for data in self.log.own_messages(self.view, self.last_executed, self.is_primary):
            self._out.append(Broadcast(data))
        self._fetch_batches()
        for data in self.checkpoints.own_votes(self.id, self.log.low):
            self._out.append(Broadcast(data))
