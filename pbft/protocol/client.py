"""The sans-IO client (OSDI'99 section 4.1).

A client has one request outstanding at a time, stamped with a timestamp larger than
any before (the runtime seeds it from the wall clock, so a restarted client normally
starts above every timestamp it used; when its clock is behind, it catches up with the
replicas, see below). It sends the signed request to the primary of the view it believes current; when
its timer expires it sends it to every replica, doubling the timeout each time, so a
faulty primary cannot hide the request (backups relay it and, with view changes, time
out the primary).

It accepts a result once f+1 distinct replicas sent matching replies (one of them is
correct). Read-only requests (section 5.1.3) go to every replica and need 2f+1 matching
replies; if they do not arrive in time, or all replicas answered without agreement, the
operation is resubmitted on the ordered path with a fresh timestamp. An ordered request
whose replies show that correct replicas answered it differently (no result can reach
f+1 any more, counting every replica yet to answer) fails at once (`Failed` with
`disagreed`): the service is not deterministic, and waiting would only end in a timeout.

Writes complete with f+1 matching replies. Reads on the read-only path stay linearizable
because a replica answers a read only once it has executed every slot it has prepared
(see Replica.on_read_only). `strong_writes=True` makes writes wait for 2f+1 replies as
well, for callers that want a write acknowledged by a quorum of executions. Replies are not
signed: the channel they arrive on says which replica sent them (`Received.peer`).

Catching up with the timestamp the replicas hold. A replica never executes a request
older than the last one it executed for this client, and answers one with a HELD naming
the timestamp it holds (held.py). A client whose first timestamp came from a clock that
is behind (or that once ran far ahead and was corrected) learns from those answers where
to continue: once f+1 replicas report the same held timestamp h, at least one correct
replica holds it, so h is a timestamp this client really used and nothing below h + 1
can ever execute. The client then re-signs the same operation with timestamp
h + CATCH_UP_GAP (not h + 1: an earlier process of this identity may still have a request
in flight there) and sends it again; from there timestamps go up by one per request. Fewer than f+1 matching
answers move nothing, so up to f faulty replicas cannot push the client's timestamps
towards the end of their range (and lock it out) or make it skip any.
The first HELD for a request also sends it to every replica (once), so the other
replicas' answers do not wait for the retransmission timer. A request catches up at most
MAX_CATCH_UPS times, each to a larger timestamp; when it cannot continue (the replicas
hold the largest timestamp there is, or keep holding newer ones, as when another process
uses this identity) the core gives up on it with `Failed` and one sentence saying why.

Size. A replica drops a request whose operation is over MAX_OPERATION bytes (the schema
refuses it), so it would never be answered and the caller would wait out its whole
timeout. `submit` refuses such an operation at once instead (`OversizedRequest`, naming
the limit), and likewise a signed request over the frame limit, before anything is sent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import codec
from .config import ClusterConfig
from .crypto import KeyPair, seal
from .epochs import epoch_of_view, first_view
from .events import Action, Completed, Event, Failed, Reason, Received, Rejected, Send, Tick
from .held import client_retransmit_ticks
from .messages import MAX_OPERATION, MAX_U64, Envelope, Held, Reply, Request, decode_envelope
from .quorum import VoteSet

MAX_CATCH_UPS = 3
"""Times one operation may continue from a timestamp f+1 replicas hold, each larger than
the last. One is the rule; more covers f+1 replicas that lagged behind the others (one of
them faulty, replaying an old held timestamp). Beyond that, something else keeps using
this client's identity."""


CATCH_UP_GAP = 1 << 20
"""How far past a held timestamp h a client continues (h + CATCH_UP_GAP). A previous process
of the same identity can have at most one request in flight, at h + 1 when it counted by
one from its own catch-up; a gap far larger than any lag between the replicas that
reported h keeps the new request from taking that timestamp (at 2**20 per catch-up, 2**44
catch-ups fit in the timestamp range)."""


class ClientBusy(RuntimeError):
    """A second request while one is outstanding: the caller's bug."""


class OversizedRequest(ValueError):
    """An operation (or the signed request carrying it) larger than a replica accepts:
    the caller's mistake, refused before anything is sent. The message names the limit."""


def operation_size_problem(operation: bytes) -> str | None:
    """Why no replica would accept `operation`, or None."""
    if len(operation) > MAX_OPERATION:
        return (
            f"the operation encodes to {len(operation)} bytes, over the limit of "
            f"{MAX_OPERATION} bytes ({MAX_OPERATION // 1024} KiB) a request may carry"
        )
    return None


@dataclass(slots=True)
class Outstanding:
    timestamp: int
    operation: bytes
    read_only: bool
    data: bytes
    # replica -> (result, reply bytes): its latest reply, which replaces an earlier one.
    replies: VoteSet = field(default_factory=VoteSet)
    views: dict[int, int] = field(default_factory=dict)
    waited: int = 0
    timeout: int = 0
    held: dict[int, int] = field(default_factory=dict)
    """Replica -> the newer timestamp it holds for us (its HELD for this request)."""
    asked_all: bool = False
    catch_ups: int = 0


class ClientCore:
    MAX_BACKOFF = 8
    """Cap on the retransmission timeout, as a multiple of the first."""

    def __init__(
        self,
        config: ClusterConfig,
        client_id: str,
        key: KeyPair,
        start_timestamp: int = 0,
        retransmit_ticks: int | None = None,
        strong_writes: bool = False,
    ) -> None:
        self.config = config
        self.id = client_id
        self._key = key
        self.view = first_view(config.epoch)
        self.newer_epoch = 0
        """The newest epoch a reply came from, when it is above our configuration's: the
        replies of an epoch we do not know are not counted (its f may be larger); the
        caller reloads the cluster file (`reconfigure`)."""
        self.timestamp = start_timestamp
        self.outstanding: Outstanding | None = None
        self.retransmit_ticks = retransmit_ticks or client_retransmit_ticks(config)
        self.retransmissions = 0  # timer expiries that resent a request, over all requests
        self.strong_writes = strong_writes
        self.write_quorum = config.quorum if strong_writes else config.weak_quorum

    def reconfigure(self, config: ClusterConfig) -> list[Action]:
        """Adopt a later epoch's configuration (pbft.protocol.epochs): its replicas and f
        from now on. An outstanding request starts counting afresh and goes to all."""
        if config.epoch <= self.config.epoch:
            return []
        self.config = config
        self.view = max(self.view, first_view(config.epoch))
        self.write_quorum = config.quorum if self.strong_writes else config.weak_quorum
        out = self.outstanding
        if out is None:
            return []
        out.replies = type(out.replies)()
        out.views.clear()
        out.held.clear()
        return self._to_all(out.data)

    def submit(self, operation: bytes, read_only: bool = False) -> list[Action]:
        if self.outstanding is not None:
            raise ClientBusy("a request is already outstanding")
        problem = operation_size_problem(operation)
        if problem is not None:
            raise OversizedRequest(problem)
        actions = self._issue(operation, read_only)
        out = self.outstanding
        if out is not None and len(out.data) > codec.MAX_FRAME:
            # Unreachable with MAX_OPERATION far below MAX_FRAME; checked because the
            # transport would drop the frame and the caller would wait for nothing.
            self.outstanding = None
            raise OversizedRequest(
                f"the signed request is {len(out.data)} bytes, over the frame limit of "
                f"{codec.MAX_FRAME} bytes"
            )
        return actions

    def _issue(self, operation: bytes, read_only: bool, catch_ups: int = 0) -> list[Action]:
        if self.timestamp >= MAX_U64:
            return [Failed(self.timestamp, f"client {self.id} has used the largest timestamp a "
                           "request can carry: this identity can make no more requests")]
        self.timestamp += 1
        req = Request(operation, self.timestamp, self.id, read_only)
        data = seal(self._key, self.config.signing_domain, self.id, req).to_bytes()
        self.outstanding = Outstanding(
            self.timestamp, operation, read_only, data, timeout=self.retransmit_ticks,
            catch_ups=catch_ups,
        )
        if read_only:
            return self._to_all(data)
        return [Send(self.config.primary(self.view), data)]

    def cancel(self) -> None:
        """Give up on the outstanding request (the caller timed out). Its timestamp is
        spent: the next request gets a larger one, so a late execution of this one can
        never be mistaken for the next."""
        self.outstanding = None

    def ticks_until_due(self) -> int | None:
        """Ticks before the outstanding request's timer fires (None: nothing outstanding).
        A runtime may sleep that long and then deliver that many ticks at once instead of
        waking every tick: nothing happens in between."""
        out = self.outstanding
        return None if out is None else max(1, out.timeout - out.waited)

    def _to_all(self, data: bytes) -> list[Action]:
        return [Send(r, data) for r in self.config.replica_ids()]

    def step(self, event: Event) -> list[Action]:
        match event:
            case Received(peer, data):
                return self._on_reply(peer, data)
            case Tick():
                return self._on_tick()
        return []

    def _reject(self, peer, reason: Reason, detail: str) -> list[Action]:
        return [Rejected(peer, reason, detail)]

    def _on_reply(self, peer, data: bytes) -> list[Action]:
        try:
            env, msg = decode_envelope(data)
        except codec.CodecError as exc:
            return self._reject(peer, Reason.MALFORMED, str(exc))
        if not isinstance(msg, Reply | Held):
            return self._reject(peer, Reason.WRONG_ROLE, "clients accept only replies")
        rejected = self._check_channel(peer, env, msg)
        if rejected:
            return rejected
        assert type(peer) is int
        out = self.outstanding
        if out is None or msg.timestamp != out.timestamp:
            return []  # late answer to an earlier request
        if epoch_of_view(msg.view) > self.config.epoch:
            # From a configuration we do not know: not counted (its f may be larger than
            # ours, and f+1 of our count could then all be faulty).
            self.newer_epoch = max(self.newer_epoch, epoch_of_view(msg.view))
            return []
        if isinstance(msg, Held):
            return self._on_held(peer, out, msg)
        out.replies[peer] = (msg.result, data)
        self._learn_view(out, peer, msg.view)
        need = self.config.quorum if out.read_only else self.write_quorum
        if out.replies.reached(msg.result, need):
            self.outstanding = None
            return [Completed(out.timestamp, msg.result)]
        if out.read_only:
            if len(out.replies) == self.config.n:
                return self._fall_back(out)
            return []
        return self._disagreement(out, need)

    def _disagreement(self, out: Outstanding, need: int) -> list[Action]:
        """`Failed` once the replies of an ordered request show that correct replicas
        answered it differently, so that it may never complete: a correct replica's reply
        to a timestamp is its cached result and never changes, so no result can reach
        `need` when even the replicas yet to answer would not bring the commonest one
        there. That never happens while the correct replicas (n - f of them) agree on R:
        those that answered R plus those yet to answer are at least n - f >= need, and f
        faulty replicas cannot change that. So it says the service is not deterministic."""
        answered = len(out.replies)
        if self.config.n - answered >= need:  # those yet to answer could still agree
            return []
        counts = Counter(result for result, _ in out.replies.values())
        if max(counts.values()) + (self.config.n - answered) >= need:
            return []
        self.outstanding = None
        return [Failed(
            out.timestamp,
            f"the replicas answered with {len(counts)} different results for this request "
            f"({answered} of {self.config.n} answered, {need} matching needed): "
            "the service is not deterministic? (docs/services.md)",
            disagreed=True,
        )]

    def _check_channel(self, peer, env: Envelope, msg: Reply | Held) -> list[Action]:
        """Replies and HELDs are authenticated by the channel: the sender is who the
        channel says. Nothing if that holds, else the rejection."""
        if type(peer) is not int or env.signer != peer or msg.replica != peer:
            return self._reject(peer, Reason.UNKNOWN_SIGNER, "reply not from its channel's replica")
        if not 0 <= peer < self.config.n or msg.client != self.id:
            return self._reject(peer, Reason.WRONG_ROLE, "reply for someone else")
        return []

    def _learn_view(self, out: Outstanding, peer: int, view: int) -> None:
        """Learn the current primary from the answers (section 4.1), but only a view that
        f+1 replicas report: one liar cannot send us to a primary that does not exist."""
        out.views[peer] = view
        if len(out.views) > self.config.f:
            vouched = sorted(out.views.values(), reverse=True)[self.config.f]
            self.view = max(self.view, vouched)

    def _on_held(self, peer: int, out: Outstanding, msg: Held) -> list[Action]:
        """A replica refused our request as older than the timestamp it holds for us."""
        if msg.held <= out.timestamp:
            return self._reject(peer, Reason.MALFORMED, "held timestamp not above the request's")
        out.held[peer] = msg.held
        self._learn_view(out, peer, msg.view)
        if sum(1 for h in out.held.values() if h == msg.held) > self.config.f:
            return self._catch_up(out, msg.held)
        if out.asked_all:
            return []
        # Ask the others now rather than at the next retransmission: if it is true, f+1
        # must say so before we may act on it. Once per request, whoever says it.
        out.asked_all = True
        return self._to_all(out.data)

    def _catch_up(self, out: Outstanding, held: int) -> list[Action]:
        """f+1 replicas hold `held` for us: one of them is correct, so nothing with a
        timestamp up to `held` can execute any more. Continue from the next one."""
        self.outstanding = None
        self.timestamp = max(self.timestamp, held)
        if held >= MAX_U64:
            return [Failed(out.timestamp, f"the replicas hold timestamp {held} for client {self.id}, "
                           "the largest a request can carry: this identity can make no more requests")]
        if out.catch_ups >= MAX_CATCH_UPS:
            return [Failed(out.timestamp, f"the replicas still hold a newer timestamp ({held}) for "
                           f"client {self.id} after it caught up {out.catch_ups} times: is another "
                           "process using this client identity?")]
        # Continue CATCH_UP_GAP past it, not at held + 1: an earlier process of this
        # identity may have a request in flight at held + 1 (it counted by one after its
        # own catch-up), and the replicas would take ours, with the same timestamp, for a
        # retransmission of it and answer with its result.
        self.timestamp = max(self.timestamp, min(held + CATCH_UP_GAP, MAX_U64) - 1)
        return self._issue(out.operation, out.read_only, out.catch_ups + 1)

    def _fall_back(self, out: Outstanding) -> list[Action]:
        """Read-only replies disagreed or were too few: order the operation instead."""
        self.outstanding = None
        return self.submit(out.operation, read_only=False)

    def _on_tick(self) -> list[Action]:
        out = self.outstanding
        if out is None:
            return []
        out.waited += 1
        if out.waited < out.timeout:
            return []
        if out.read_only:
            return self._fall_back(out)
        out.waited = 0
        self.retransmissions += 1
        out.timeout = min(out.timeout * 2, self.retransmit_ticks * self.MAX_BACKOFF)
        return self._to_all(out.data)
