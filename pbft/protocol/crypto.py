"""Ed25519 signatures with domain separation, and digests.

A signature covers `DOMAIN || len(cluster_id) || cluster_id || body`, so a message signed
for one cluster cannot be replayed in another (docs/attacks.md `replay`), and because the
body starts with its message type, not as another kind of message either.

Verification is a pure function of (key, payload, signature), which is what lets the
simulator memoise it (`Verifier(memo=...)`) without weakening what is checked: every
receiver still asks, and a forged signature is still refused.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import codec
from .messages import Envelope, Message, Signer, to_body

DOMAIN = b"pbft/v1"
SIGNATURE_LEN = 64


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def batch_digest(batch: tuple[bytes, ...] | list[bytes]) -> bytes:
    """The digest d of a pre-prepare: over the canonical array of request envelopes."""
    return digest(codec.encode(list(batch)))


NULL_DIGEST = batch_digest(())
"""Digest of the null request (an empty batch), OSDI'99 section 4.4."""


def signing_payload(cluster_id: str, body: bytes) -> bytes:
    cid = cluster_id.encode()
    return DOMAIN + len(cid).to_bytes(2, "big") + cid + body


class KeyPair:
    """An Ed25519 identity key. Only `safety.SafetyRules` signs protocol votes with it."""

    __slots__ = ("_key", "public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """Deterministic key from any byte string (the simulator derives keys from its seed)."""
        return cls(Ed25519PrivateKey.from_private_bytes(digest(b"pbft-key/" + seed)))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes_raw(self) -> bytes:
        return self._key.private_bytes_raw()

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)


def seal(key: KeyPair, cluster_id: str, signer: Signer, msg: Message) -> Envelope:
    """Encode and sign `msg` as `signer`."""
    body = to_body(msg)
    return Envelope(body, signer, key.sign(signing_payload(cluster_id, body)))


class Verifier:
    """Checks envelope signatures against the cluster's member keys.

    `memo` bounds a cache of verdicts keyed by the exact (signer, body, signature); it is
    for the simulator, where one broadcast is verified by every receiver in one process.
    """

    def __init__(self, cluster_id: str, keys: dict[Signer, bytes], memo: int = 0) -> None:
        self.cluster_id = cluster_id
        self._keys = {s: Ed25519PublicKey.from_public_bytes(k) for s, k in keys.items()}
        self._memo_size = memo
        self._memo: OrderedDict[bytes, bool] = OrderedDict()
        self._prefix = signing_payload(cluster_id, b"")  # the same for every envelope

    def is_member(self, signer: Signer) -> bool:
        return signer in self._keys

    def verify(self, env: Envelope) -> bool:
        key = self._keys.get(env.signer)
        if key is None or len(env.signature) != SIGNATURE_LEN:
            return False
        if self._memo_size:
            # Canonical encoding keeps the key injective: no (signer, signature, body)
            # can collide with another by shifting bytes between fields.
            mkey = digest(codec.encode([env.signer, env.signature, env.body]))
            hit = self._memo.get(mkey)
            if hit is not None:
                return hit
        try:
            key.verify(env.signature, self._prefix + env.body)
            ok = True
        except InvalidSignature:
            ok = False
        if self._memo_size:
            self._memo[mkey] = ok
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return ok
