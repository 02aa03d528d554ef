"""The sans-IO client (OSDI'99 section 4.1).

A client has one request outstanding at a time, stamped with a timestamp larger than
any before (the runtime seeds it from the wall clock so a restarted client never reuses
one). It sends the signed request to the primary of the view it believes current; when
its timer expires it sends it to every replica, doubling the timeout each time, so a
faulty primary cannot hide the request (backups relay it and, with view changes, time
out the primary).

It accepts a result once f+1 distinct replicas sent matching replies (one of them is
correct). Read-only requests (section 5.1.3) go to every replica and need 2f+1 matching
replies; if they do not arrive in time, or all replicas answered without agreement, the
operation is resubmitted on the ordered path with a fresh timestamp.

Writes complete with f+1 matching replies. Reads on the read-only path stay linearizable
because a replica answers a read only once it has executed every slot it has prepared
(see Replica.on_read_only). `strong_writes=True` makes writes wait for 2f+1 replies as
well, for callers that want a write acknowledged by a quorum of executions. Replies are not
signed: the channel they arrive on says which replica sent them (`Received.peer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import codec
from .config import ClusterConfig
from .crypto import KeyPair, seal
from .events import Action, Completed, Event, Reason, Received, Rejected, Send, Tick
from .messages import Reply, Request, decode_envelope


class ClientBusy(RuntimeError):
    """A second request while one is outstanding: the caller's bug."""


@dataclass(slots=True)
class Outstanding:
    timestamp: int
    operation: bytes
    read_only: bool
    data: bytes
    replies: dict[int, bytes] = field(default_factory=dict)
    views: dict[int, int] = field(default_factory=dict)
    waited: int = 0
    timeout: int = 0
    retransmissions: int = 0


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
        self.view = 0
        self.timestamp = start_timestamp
        self.outstanding: Outstanding | None = None
        # A quarter of the view-change timeout: the backups then learn of a request early
        # enough for their ordering timer (half of it) to catch a primary that sits on it.
        self.retransmit_ticks = retransmit_ticks or max(
            1, config.view_change_timeout_ms // (4 * config.tick_ms)
        )
        self.rejected = 0
        self.retransmissions = 0  # timer expiries that resent a request, over all requests
        self.write_quorum = config.quorum if strong_writes else config.weak_quorum

    def submit(self, operation: bytes, read_only: bool = False) -> list[Action]:
        if self.outstanding is not None:
            raise ClientBusy("a request is already outstanding")
        self.timestamp += 1
        req = Request(operation, self.timestamp, self.id, read_only)
        data = seal(self._key, self.config.cluster_id, self.id, req).to_bytes()
        self.outstanding = Outstanding(
            self.timestamp, operation, read_only, data, timeout=self.retransmit_ticks
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
        self.rejected += 1
        return [Rejected(peer, reason, detail)]

    def _on_reply(self, peer, data: bytes) -> list[Action]:
        try:
            env, msg = decode_envelope(data)
        except codec.CodecError as exc:
            return self._reject(peer, Reason.MALFORMED, str(exc))
        if not isinstance(msg, Reply):
            return self._reject(peer, Reason.WRONG_ROLE, "clients accept only replies")
        # Replies are authenticated by the channel: the sender is who the channel says.
        if type(peer) is not int or env.signer != peer or msg.replica != peer:
            return self._reject(peer, Reason.UNKNOWN_SIGNER, "reply not from its channel's replica")
        if not 0 <= peer < self.config.n or msg.client != self.id:
            return self._reject(peer, Reason.WRONG_ROLE, "reply for someone else")
        out = self.outstanding
        if out is None or msg.timestamp != out.timestamp:
            return []  # late reply to an earlier request
        out.replies[peer] = msg.result
        out.views[peer] = msg.view
        # Learn the current primary from the replies (section 4.1), but only a view that
        # f+1 replicas report: one liar cannot send us to a primary that does not exist.
        if len(out.views) > self.config.f:
            vouched = sorted(out.views.values(), reverse=True)[self.config.f]
            self.view = max(self.view, vouched)
        need = self.config.quorum if out.read_only else self.write_quorum
        matching = sum(1 for r in out.replies.values() if r == msg.result)
        if matching >= need:
            self.outstanding = None
            return [Completed(out.timestamp, msg.result)]
        if out.read_only and len(out.replies) == self.config.n:
            return self._fall_back(out)
        return []

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
        out.retransmissions += 1
        self.retransmissions += 1
        out.timeout = min(out.timeout * 2, self.retransmit_ticks * self.MAX_BACKOFF)
        return self._to_all(out.data)
