"""Client requests whose signature this replica already checked (OSDI'99 4.1, 4.2).

Theory of operation. A request's signature is checked where it first arrives: on its
own from a client (or relayed by a replica), or inside a PRE-PREPARE's batch, or from a
certificate re-issued by a NEW-VIEW. The same signed bytes usually arrive several times
(the client's copy, then the batch), so each distinct request envelope is verified once
per replica, keyed by the digest of its exact bytes; anything else in the cache would be
another envelope. The cache is an LRU of VERIFIED_CACHE entries: an entry matters from
a request's arrival until its pre-prepare, and forgetting one only costs a verification.
"""

from __future__ import annotations

from collections import OrderedDict

from . import codec
from .crypto import Verifier, digest
from .messages import Envelope, Message, Request, decode_envelope

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

    def invariants(self) -> None:
        assert len(self.cache) <= VERIFIED_CACHE, f"_verified holds {len(self.cache)}, bound {VERIFIED_CACHE}"
