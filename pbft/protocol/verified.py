"""Client requests whose signature this replica already checked (OSDI'99 4.1, 4.2).

Theory of operation. A request's signature is checked where it first arrives: on its
own from a client (or relayed by a replica), or inside a PRE-PREPARE's batch, or from a
certificate re-issued by a NEW-VIEW. The same signed bytes usually arrive several times
(the client's copy, then the batch), so each distinct request envelope is verified once
per replica, keyed by the digest of its exact bytes; anything else in the cache would be
another envelope. The cache is an LRU of VERIFIED_CACHE entries: an entry matters from
a request's arrival until its pre-prepare, and forgetting one only costs a verification.

A flooding client's newer writes wait unverified while one of its requests waits here
(`DeferredRequests`: `defer` on arrival, `take` at the next tick; docs/robustness.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import codec
from .bounds import Bound, check
from .crypto import Verifier, digest
from .messages import Envelope, Message, Request, Signer, decode_envelope

if TYPE_CHECKING:
    from .batching import Batching
    from .held import ReplyCache
    from .timeouts import RequestTimers

VERIFIED_CACHE = 4096
"""Client requests whose signature this replica already checked (verify each once). An
entry matters from a request's arrival until its pre-prepare (batch_max x pipeline = 2048
in flight by default); each costs ~380 bytes, so a larger cache is only memory."""


class VerifiedRequests:
    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.cache: OrderedDict[bytes, Request] = OrderedDict()

    def check(self, data: bytes, decoded: tuple[Envelope, Message] | None = None) -> Request | str:
        """Decode and verify a signed client request; the reason it is bad otherwise.
        `decoded` is `data` already strictly decoded by the caller (a request that
        arrived on its own), so it is not decoded twice."""
        key = digest(data)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            return hit
        if decoded is not None:
            env, msg = decoded
        else:
            try:
                env, msg = decode_envelope(data)
            except codec.CodecError as exc:
                return f"malformed request: {exc}"
        if not isinstance(msg, Request):
            return "not a request"
        if env.signer != msg.client or not self.verifier.is_member(env.signer):
            return f"request not signed by its client {msg.client!r}"
        if not self.verifier.verify(env):
            return f"bad client signature from {msg.client!r}"
        self.cache[key] = msg
        if len(self.cache) > VERIFIED_CACHE:
            self.cache.popitem(last=False)
        return msg

    def batch(self, batch: tuple[bytes, ...]) -> tuple[tuple[tuple[Request, bytes], ...], list[str]]:
        """The requests of a batch that verify, with their bytes, in order; and why each
        other one does not (a batch re-issued or reloaded from our store was checked by a
        correct replica already, so those are only noted)."""
        good: list[tuple[Request, bytes]] = []
        bad: list[str] = []
        for data in batch:
            checked = self.check(data)
            if isinstance(checked, str):
                bad.append(checked)
            else:
                good.append((checked, data))
        return tuple(good), bad

    def bounds(self) -> list[Bound]:
        return [("_verified", len(self.cache), VERIFIED_CACHE)]

    def invariants(self) -> None:
        check(self.bounds())


DEFERRED_REQUESTS = 4096
"""Deferred client requests kept at most (one per client and channel); beyond it a
request is verified on arrival, as it would be without deferral."""


class DeferredRequests:
    """A flooding client's budget (issue 13, item 9): while a verified write of a client
    waits at a replica (not yet proposed, or not yet executed at a backup), a newer one is
    not verified on arrival. The newest per client and channel is kept here unverified and
    taken at the next tick; an older one than the waiting request is superseded and
    dropped (by the replica). So a client costs at most one verification per channel and
    tick, however fast it sends, and a Byzantine replica relaying forged requests for it
    fills only its own channel's place. A client with one request outstanding (section
    4.1) never waits here."""

    def __init__(self, batching: Batching, requests: RequestTimers, replies: ReplyCache) -> None:
        self.held: dict[tuple[str, Signer | None], tuple[Signer | None, bytes, Request]] = {}
        self.batching = batching
        self.requests = requests
        self.replies = replies

    def queued_ts(self, client: str) -> int:
        """The timestamp of `client`'s verified request this replica holds and has not
        executed or proposed yet (the primary's `pending`, a backup's `waiting`), or -1."""
        queued = self.batching.queued_ts(client)
        if queued >= 0:
            return queued
        known = self.requests.waiting.get(client)
        if known is not None and known[0] > self.replies.executed_ts(client):
            return known[0]
        return -1

    def defer(self, peer: Signer | None, data: bytes, msg: Request) -> bool | None:
        """Whether the write `msg` skips verification on arrival: None when it is checked
        now (nothing of its client waits here, a retransmission of what waits, or no room);
        True when kept for the next tick (`take`); False when older than what waits, so
        superseded and to be dropped unverified."""
        queued = self.queued_ts(msg.client)
        if queued < 0 or msg.timestamp == queued:
            return None  # nothing waiting, or a retransmission (its bytes are verified)
        if msg.timestamp < queued:
            return False
        key = (msg.client, peer)
        held = self.held.get(key)
        if held is None and len(self.held) >= DEFERRED_REQUESTS:
            return None  # full: verify at once, as without the budget
        if held is None or held[2].timestamp < msg.timestamp:
            self.held[key] = (peer, data, msg)
        return True

    def take(self, verified: VerifiedRequests) -> Iterator[tuple[Signer | None, bytes, Request | str]]:
        """Per client in client order, its newest held request that is still newer than
        what waits here, verified; when it does not verify (the reason is given), the
        next newest. The caller handles each before the next is looked at (handling one
        can supersede the rest); none is kept."""
        by_client: dict[str, list[tuple[Signer | None, bytes, Request]]] = {}
        for (client, _), item in self.held.items():
            by_client.setdefault(client, []).append(item)
        self.held = {}
        for client in sorted(by_client):
            for peer, data, msg in sorted(by_client[client], key=lambda i: -i[2].timestamp):
                if msg.timestamp <= self.queued_ts(client):
                    break  # superseded meanwhile
                checked = verified.check(data)
                yield peer, data, checked
                if not isinstance(checked, str):
                    break

    def bounds(self) -> list[Bound]:
        return [("_deferred", len(self.held), DEFERRED_REQUESTS)]

    def invariants(self) -> None:
        check(self.bounds())
