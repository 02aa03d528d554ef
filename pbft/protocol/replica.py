"""One PBFT replica as a pure state machine: `Replica.step(event) -> list[Action]`.

Theory of operation (OSDI'99 section 4; TOCS 2002 for refinements):

* Normal case (4.2). The primary of view v (v mod n) assigns sequence numbers to batches
  of client requests and multicasts PRE-PREPARE. A backup accepts a pre-prepare that is
  signed by the primary, in its view, within the water marks, carries a digest that
  matches its batch of validly signed requests, and does not conflict with one it already
  accepted; it then multicasts PREPARE. A replica is *prepared* once it holds the
  pre-prepare and 2f matching PREPAREs from distinct backups; it then multicasts COMMIT.
  It is *committed-local* once prepared with 2f+1 matching COMMITs, and executes batches
  strictly in sequence order. Several sequence numbers are in flight at once (up to
  `pipeline`), so under load requests queue at the primary and ride in larger batches.
* Checkpoints (4.3). After executing a multiple of K the replica multicasts CHECKPOINT
  with the digest of its state (service state plus the reply cache, which is what makes
  exactly-once survive a state transfer). 2f+1 matching CHECKPOINTs make it stable: the
  low water mark moves up and the log below it is discarded; the proof is kept.
* Clients (4.1). Each replica keeps the last timestamp and reply per client; an older
  request is never executed again, a retransmission of the latest gets the cached reply.
  Read-only requests (5.1.3) are answered from current state without ordering.
* Retransmission. Messages may be lost; every `retransmit_ms` without progress a replica
  resends its own messages for the slots it has not executed.

Input is checked cheapest first (DESIGN.md section 2): decode, schema, signer is a member
of the right role, view and water marks, then the signature, then protocol state. Nothing
a peer sends raises: it is dropped and counted (`Rejected`) and, when one replica signed
two conflicting messages, the pair is kept as `Evidence`.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import assert_never

from ..service.base import StateMachine
from . import codec
from .config import ClusterConfig
from .crypto import KeyPair, Verifier, batch_digest, digest
from .events import (
    Action,
    Broadcast,
    CheckpointStable,
    CheckpointTaken,
    Committed,
    Event,
    Evidence,
    Executed,
    ExecutedRequest,
    Note,
    Prepared,
    Reason,
    Received,
    Rejected,
    Send,
    SendClient,
    Tick,
)
from .log import MessageLog, Slot
from .messages import (
    Checkpoint,
    Commit,
    Envelope,
    Message,
    Prepare,
    PrePrepare,
    QueryStatus,
    Reply,
    Request,
    Signer,
    Status,
    envelope_from_bytes,
    from_body,
    render,
    to_body,
)
from .safety import SafetyRules

VERIFIED_CACHE = 65536
"""Client requests whose signature this replica already checked (verify each once)."""


@dataclass(slots=True)
class ClientRecord:
    """The last executed request of a client and its result (section 4.1)."""

    timestamp: int
    result: bytes


class Replica:
    def __init__(
        self,
        config: ClusterConfig,
        replica_id: int,
        key: KeyPair,
        service: StateMachine,
        verifier: Verifier | None = None,
    ) -> None:
        assert 0 <= replica_id < config.n
        self.config = config
        self.id = replica_id
        self.service = service
        self.verifier = verifier or Verifier(config.cluster_id, config.member_keys())
        self.safety = SafetyRules(key, config.cluster_id, replica_id)
        self.view = 0
        self.log = MessageLog(config.log_window)
        self.last_executed = 0
        self.next_seq = 1
        # The primary's queue: one request per client, the newest (clients have one
        # request outstanding, section 4.1), so it is bounded by the number of clients.
        self.pending: OrderedDict[str, tuple[Request, bytes]] = OrderedDict()
        self.relayed: dict[str, int] = {}
        self.clients: dict[str, ClientRecord] = {}
        # Checkpoints: seq -> signer -> (digest, envelope); own digests and snapshots.
        self.checkpoint_votes: dict[int, dict[int, tuple[bytes, bytes]]] = {}
        self.own_checkpoints: dict[int, tuple[bytes, bytes]] = {}
        self.stable_digest = b""
        self.stable_proof: tuple[bytes, ...] = ()
        self.rejects: Counter[tuple[Signer | None, Reason]] = Counter()
        self._verified: OrderedDict[bytes, Request] = OrderedDict()
        self.ticks = 0
        self._last_progress = 0
        self._retransmit_ticks = max(1, config.retransmit_ms // config.tick_ms)
        self._out: list[Action] = []

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

    def step(self, event: Event) -> list[Action]:
        self._out = []
        match event:
            case Received(peer, data):
                self._on_received(peer, data)
            case Tick():
                self._on_tick()
            case _:
                assert_never(event)
        if self.is_primary:
            self._maybe_propose()
        out, self._out = self._out, []
        return out

    def state_digest(self) -> bytes:
        """Digest of everything a checkpoint covers: service state and reply cache."""
        table = sorted([c, r.timestamp, r.result] for c, r in self.clients.items())
        return digest(self.service.digest() + codec.encode(table))

    # -- helpers ------------------------------------------------------------------------

    def _reject(self, peer: Signer | None, reason: Reason, detail: str = "") -> None:
        self.rejects[(peer, reason)] += 1
        self._out.append(Rejected(peer, reason, detail))

    def _broadcast(self, env: Envelope) -> bytes:
        data = env.to_bytes()
        self._out.append(Broadcast(data))
        return data

    def _check_replica_signed(self, peer: Signer | None, env: Envelope) -> bool:
        if type(env.signer) is not int or not 0 <= env.signer < self.config.n:
            self._reject(peer, Reason.WRONG_ROLE, "protocol message not signed by a replica")
            return False
        return True

    def _verify(self, peer: Signer | None, env: Envelope) -> bool:
        if not self.verifier.verify(env):
            self._reject(peer, Reason.BAD_SIGNATURE, f"signer {env.signer!r}")
            return False
        return True

    def _request_from_envelope(self, data: bytes) -> Request | str:
        """Decode and verify a signed client request; the reason it is bad otherwise.
        Each distinct request envelope is verified once per replica (LRU-bounded)."""
        key = digest(data)
        hit = self._verified.get(key)
        if hit is not None:
            self._verified.move_to_end(key)
            return hit
        try:
            env = envelope_from_bytes(data)
            msg = from_body(env.body)
        except codec.CodecError as exc:
            return f"malformed request: {exc}"
        if not isinstance(msg, Request):
            return "not a request"
        if env.signer != msg.client or not self.verifier.is_member(env.signer):
            return f"request not signed by its client {msg.client!r}"
        if not self.verifier.verify(env):
            return f"bad client signature from {msg.client!r}"
        self._verified[key] = msg
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return msg

    # -- dispatch -----------------------------------------------------------------------

    def _on_received(self, peer: Signer | None, data: bytes) -> None:
        try:
            env = envelope_from_bytes(data)
            msg: Message = from_body(env.body)
        except codec.CodecError as exc:
            self._reject(peer, Reason.MALFORMED, str(exc))
            return
        if not self.verifier.is_member(env.signer):
            self._reject(peer, Reason.UNKNOWN_SIGNER, f"signer {env.signer!r}")
            return
        match msg:
            case Request():
                self.on_request(peer, data, msg)
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
            case _:
                self._reject(peer, Reason.WRONG_ROLE, f"unexpected {render(msg)}")

    # -- requests (section 4.1, 5.1.3) ----------------------------------------------------

    def _reply(self, client: str, timestamp: int, result: bytes) -> None:
        body = to_body(Reply(self.view, timestamp, client, self.id, result))
        self._out.append(SendClient(client, Envelope(body, self.id, b"").to_bytes()))

    def on_request(self, peer: Signer | None, data: bytes, msg: Request) -> None:
        checked = self._request_from_envelope(data)
        if isinstance(checked, str):
            self._reject(peer, Reason.BAD_REQUEST, checked)
            return
        req = checked
        if req.read_only:
            # Section 5.1.3: answer from current state; the client needs 2f+1 matching
            # replies and falls back to the ordered path when they do not match.
            result = self.service.query(req.operation, req.client)
            if result is None:
                self._reject(peer, Reason.BAD_REQUEST, "read-only request is not a query")
            else:
                self._reply(req.client, req.timestamp, result)
            return
        rec = self.clients.get(req.client)
        if rec is not None and req.timestamp <= rec.timestamp:
            if req.timestamp == rec.timestamp:
                self._reply(req.client, rec.timestamp, rec.result)
            else:
                self._reject(peer, Reason.STALE, f"{req.client} t={req.timestamp}")
            return
        if self.is_primary:
            queued = self.pending.get(req.client)
            if queued is not None and queued[0].timestamp >= req.timestamp:
                return
            if self._in_flight(req):
                return
            self.pending[req.client] = (req, data)
            self.pending.move_to_end(req.client)
        elif self.relayed.get(req.client, -1) < req.timestamp:
            # Section 4.1: a backup relays a request it has not seen to the primary.
            self.relayed[req.client] = req.timestamp
            self._out.append(Send(self.primary, data))

    def on_query_status(self, peer: Signer | None, env: Envelope) -> None:
        """Answer a client's status query with a signed `Status` (for `pbft status`)."""
        if type(env.signer) is not str:
            self._reject(peer, Reason.WRONG_ROLE, "status queries come from clients")
            return
        if not self._verify(peer, env):
            return
        status = Status(self.view, self.last_executed, self.log.low, len(self.log))
        data = self.safety.sign_other(status).to_bytes()
        self._out.append(SendClient(env.signer, data))

    def _in_flight(self, req: Request) -> bool:
        for seq in range(self.last_executed + 1, self.next_seq):
            slot = self.log.get(seq)
            if slot is not None and any(
                r.client == req.client and r.timestamp == req.timestamp for r, _ in slot.requests
            ):
                return True
        return False

    # -- primary: proposing (section 4.2) -------------------------------------------------

    def _maybe_propose(self) -> None:
        cfg = self.config
        self.next_seq = max(self.next_seq, self.last_executed + 1)
        while (
            self.pending
            and self.next_seq - 1 - self.last_executed < cfg.pipeline
            and self.log.in_window(self.next_seq)
        ):
            batch: list[tuple[Request, bytes]] = []
            while self.pending and len(batch) < cfg.batch_max:
                batch.append(self.pending.popitem(last=False)[1])
            envs = tuple(d for _, d in batch)
            pp = PrePrepare(self.view, self.next_seq, batch_digest(envs), envs)
            data = self._broadcast(self.safety.sign_vote(pp))
            slot = self.log.slot(pp.seq, self.view)
            self._accept_pre_prepare(slot, pp, data, tuple(batch))
            self.next_seq += 1

    # -- pre-prepare, prepare, commit (section 4.2) -------------------------------------

    def _accept_pre_prepare(
        self, slot: Slot, pp: PrePrepare, data: bytes, requests: tuple[tuple[Request, bytes], ...]
    ) -> None:
        slot.view = pp.view
        slot.pre_prepare = pp
        slot.pre_prepare_env = data
        slot.requests = requests
        # Votes received before the pre-prepare may now match; re-evaluate.
        self._maybe_prepared(slot)

    def on_pre_prepare(self, peer: Signer | None, env: Envelope, data: bytes, pp: PrePrepare) -> None:
        if not self._check_replica_signed(peer, env):
            return
        if env.signer != self.config.primary(pp.view):
            self._reject(peer, Reason.NOT_PRIMARY, f"pre-prepare by {env.signer} for view {pp.view}")
            return
        if pp.view != self.view:
            self._reject(peer, Reason.WRONG_VIEW, f"pre-prepare for view {pp.view}")
            return
        if not self.log.in_window(pp.seq):
            self._reject(peer, Reason.OUT_OF_WINDOW, f"pre-prepare n={pp.seq}")
            return
        if len(pp.batch) > self.config.batch_max:
            self._reject(peer, Reason.BATCH_TOO_LARGE, f"{len(pp.batch)} requests")
            return
        slot = self.log.get(pp.seq)
        if slot is not None and slot.pre_prepare is not None and slot.view == pp.view:
            if slot.pre_prepare.digest == pp.digest:
                return  # retransmission
            if not self._verify(peer, env):
                return
            # The primary signed two pre-prepares for one (v, n): keep both as evidence.
            self._out.append(Evidence(env.signer, "equivocate", slot.pre_prepare_env, data))
            self._reject(peer, Reason.CONFLICT, f"second pre-prepare for n={pp.seq}")
            return
        if not self._verify(peer, env):
            return
        if batch_digest(pp.batch) != pp.digest:
            self._reject(peer, Reason.BAD_DIGEST, f"pre-prepare n={pp.seq}")
            return
        requests: list[tuple[Request, bytes]] = []
        for req_data in pp.batch:
            checked = self._request_from_envelope(req_data)
            if isinstance(checked, str):
                self._reject(peer, Reason.BAD_REQUEST, f"in pre-prepare n={pp.seq}: {checked}")
                return
            if checked.read_only:
                self._reject(peer, Reason.BAD_REQUEST, "read-only request in a batch")
                return
            requests.append((checked, req_data))
        slot = self.log.slot(pp.seq, pp.view)
        self._accept_pre_prepare(slot, pp, data, tuple(requests))
        prepare = Prepare(pp.view, pp.seq, pp.digest)
        slot.my_prepare = self._broadcast(self.safety.sign_vote(prepare))
        slot.prepares[self.id] = (pp.digest, slot.my_prepare)
        self._maybe_prepared(slot)

    def _vote_filter(self, peer: Signer | None, env: Envelope, view: int, seq: int) -> bool:
        """Cheap checks shared by PREPARE and COMMIT, before the signature."""
        if not self._check_replica_signed(peer, env):
            return False
        if view != self.view:
            self._reject(peer, Reason.WRONG_VIEW, f"vote for view {view}")
            return False
        if not self.log.in_window(seq):
            self._reject(peer, Reason.OUT_OF_WINDOW, f"vote n={seq}")
            return False
        return True

    def _record_vote(
        self,
        peer: Signer | None,
        env: Envelope,
        data: bytes,
        votes: dict[int, tuple[bytes, bytes]],
        vote_digest: bytes,
        kind: str,
    ) -> bool:
        """One vote per authenticated signer and phase; a second, different one is evidence."""
        prior = votes.get(env.signer)  # type: ignore[arg-type]
        if prior is not None:
            if prior[0] != vote_digest and self._verify(peer, env):
                self._out.append(Evidence(env.signer, f"double-{kind}", prior[1], data))  # type: ignore[arg-type]
                self._reject(peer, Reason.CONFLICT, f"second {kind} from {env.signer}")
            return False
        if not self._verify(peer, env):
            return False
        votes[env.signer] = (vote_digest, data)  # type: ignore[index]
        return True

    def on_prepare(self, peer: Signer | None, env: Envelope, data: bytes, p: Prepare) -> None:
        if not self._vote_filter(peer, env, p.view, p.seq):
            return
        if env.signer == self.config.primary(p.view):
            # The primary's vote is its pre-prepare; a PREPARE from it never counts.
            self._reject(peer, Reason.WRONG_ROLE, "prepare from the primary")
            return
        slot = self.log.slot(p.seq, p.view)
        if self._record_vote(peer, env, data, slot.prepares, p.digest, "prepare"):
            self._maybe_prepared(slot)

    def on_commit(self, peer: Signer | None, env: Envelope, data: bytes, c: Commit) -> None:
        if not self._vote_filter(peer, env, c.view, c.seq):
            return
        slot = self.log.slot(c.seq, c.view)
        if self._record_vote(peer, env, data, slot.commits, c.digest, "commit"):
            self._maybe_committed(slot)

    def _maybe_prepared(self, slot: Slot) -> None:
        # prepared(m, v, n, i): the pre-prepare plus 2f matching prepares from distinct
        # backups (section 4.2). Fires once.
        if slot.prepared or slot.pre_prepare is None:
            return
        if slot.matching_prepares() < 2 * self.config.f:
            return
        slot.prepared = True
        d = slot.pre_prepare.digest
        self._out.append(Prepared(slot.view, slot.seq, d))
        slot.my_commit = self._broadcast(self.safety.sign_vote(Commit(slot.view, slot.seq, d)))
        slot.commits[self.id] = (d, slot.my_commit)
        self._maybe_committed(slot)

    def _maybe_committed(self, slot: Slot) -> None:
        # committed-local(m, v, n, i): prepared plus 2f+1 matching commits (section 4.2).
        if slot.committed or not slot.prepared:
            return
        if slot.matching_commits() < self.config.quorum:
            return
        slot.committed = True
        assert slot.pre_prepare is not None
        self._out.append(Committed(slot.view, slot.seq, slot.pre_prepare.digest))
        self._maybe_execute()

    # -- execution (section 4.2, 4.1) -----------------------------------------------------

    def _maybe_execute(self) -> None:
        while True:
            slot = self.log.get(self.last_executed + 1)
            if slot is None or not slot.committed:
                return
            self._execute(slot)

    def _execute(self, slot: Slot) -> None:
        assert slot.pre_prepare is not None and slot.seq == self.last_executed + 1
        done: list[ExecutedRequest] = []
        for req, _ in slot.requests:
            rec = self.clients.get(req.client)
            if rec is not None and req.timestamp <= rec.timestamp:
                # Exactly-once: an old or repeated request is a deterministic no-op; the
                # latest one gets its cached reply again.
                if req.timestamp == rec.timestamp:
                    self._reply(req.client, rec.timestamp, rec.result)
                done.append(ExecutedRequest(req.client, req.timestamp, req.operation, b"", False))
                continue
            result = self.service.execute(req.operation, req.client)
            self.clients[req.client] = ClientRecord(req.timestamp, result)
            self._reply(req.client, req.timestamp, result)
            done.append(ExecutedRequest(req.client, req.timestamp, req.operation, result, True))
            if self.relayed.get(req.client, -1) <= req.timestamp:
                self.relayed.pop(req.client, None)
        self.last_executed = slot.seq
        self._last_progress = self.ticks
        self._out.append(Executed(slot.view, slot.seq, slot.pre_prepare.digest, tuple(done)))
        if slot.seq % self.config.checkpoint_interval == 0:
            self._take_checkpoint(slot.seq)

    # -- checkpoints (section 4.3) --------------------------------------------------------

    def _take_checkpoint(self, seq: int) -> None:
        d = self.state_digest()
        snapshot = codec.encode(
            [self.service.snapshot(), sorted([c, r.timestamp, r.result] for c, r in self.clients.items())]
        )
        self.own_checkpoints[seq] = (d, snapshot)
        self._out.append(CheckpointTaken(seq, d))
        data = self._broadcast(self.safety.sign_vote(Checkpoint(seq, d)))
        self.checkpoint_votes.setdefault(seq, {})[self.id] = (d, data)
        self._maybe_stable(seq)

    def on_checkpoint(self, peer: Signer | None, env: Envelope, data: bytes, c: Checkpoint) -> None:
        if not self._check_replica_signed(peer, env):
            return
        if c.seq <= self.log.low:
            self.rejects[(peer, Reason.STALE)] += 1  # late vote for a checkpoint already stable
            return
        if c.seq % self.config.checkpoint_interval or not self.log.in_window(c.seq):
            self._reject(peer, Reason.OUT_OF_WINDOW, f"checkpoint n={c.seq}")
            return
        votes = self.checkpoint_votes.setdefault(c.seq, {})
        if self._record_vote(peer, env, data, votes, c.digest, "checkpoint"):
            self._maybe_stable(c.seq)

    def _maybe_stable(self, seq: int) -> None:
        own = self.own_checkpoints.get(seq)
        if own is None or seq <= self.log.low:
            return
        matching = [d for dg, d in self.checkpoint_votes.get(seq, {}).values() if dg == own[0]]
        if len(matching) < self.config.quorum:
            return
        # Stable: 2f+1 replicas (one of them correct) vouch for this state (section 4.3).
        self.stable_digest = own[0]
        self.stable_proof = tuple(sorted(matching)[: self.config.quorum])
        self.log.advance(seq)
        self.safety.forget_below(seq)
        self.own_checkpoints = {s: v for s, v in self.own_checkpoints.items() if s >= seq}
        self.checkpoint_votes = {s: v for s, v in self.checkpoint_votes.items() if s > seq}
        self._out.append(CheckpointStable(seq, own[0]))
        self._out.append(Note(f"checkpoint {seq} stable, log window now ({seq}, {self.log.high}]"))

    # -- time ---------------------------------------------------------------------------

    def _on_tick(self) -> None:
        self.ticks += 1
        if self.ticks - self._last_progress < self._retransmit_ticks:
            return
        self._last_progress = self.ticks
        # Resend our own messages for slots not yet executed, in case they were lost.
        for seq in range(self.last_executed + 1, self.log.high + 1):
            slot = self.log.get(seq)
            if slot is None:
                continue
            for data in (
                slot.pre_prepare_env if self.is_primary and slot.view == self.view else b"",
                slot.my_prepare if slot.view == self.view else b"",
                slot.my_commit if slot.view == self.view else b"",
            ):
                if data:
                    self._out.append(Broadcast(data))
        for seq, votes in self.checkpoint_votes.items():
            mine = votes.get(self.id)
            if mine is not None and seq > self.log.low:
                self._out.append(Broadcast(mine[1]))
