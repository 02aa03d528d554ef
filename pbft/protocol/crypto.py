"""Ed25519 signatures with domain separation, and digests.

A signature covers `DOMAIN || len(cluster_id) || cluster_id || body`, so a message signed
for one cluster cannot be replayed in another (docs/attacks.md `replay`), and because the
body starts with its message type, not as another kind of message either.

Verification is a pure function of (key, payload, signature), which is what lets the
simulator memoise it (`Verifier(memo=...)`) without weakening what is checked: every
receiver still asks, and a forged signature is still refused.

One set of rules, two implementations (docs/protocol.md, "Signatures"). Replicas must
accept exactly the same signatures, or a Byzantine signer could craft one that some
correct replicas count and others refuse. Ed25519 libraries differ at the edges (RFC 8032
leaves them some freedom): OpenSSL, under pyca/cryptography, accepts a signature whose R
is a point of small order, which libsodium refuses. So pbft checks the edges itself,
before any library is asked (`signature_shape_ok`, `public_key_problem`):
* S must be reduced (S < L): no second encoding of one signature;
* R must be canonically encoded (y < p) and not of small order;
* a public key must be a canonical encoding of a point of the prime-order subgroup, not
  of small order (checked when a cluster file is loaded and when a Verifier is made);
and then both libraries agree on every input (tests/protocol/test_ed25519_rules.py). With
torsion-free keys the cofactored and cofactorless equations agree too. Which library
does the arithmetic is then only a matter of speed: libsodium (PyNaCl) by default,
measured faster here, OpenSSL (cryptography) on request (`use`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from enum import Enum
from functools import lru_cache

import nacl.bindings as sodium
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError

from . import codec
from .messages import Envelope, Message, PrePrepare, Signer, to_body

DOMAIN = b"pbft/v1"
SIGNATURE_LEN = 64

_memo: Memo | None = None
"""The memo signing, verifying and `batch_digest` consult while one is installed
(`memoised`); None, the default, computes every time (a replica process)."""


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def batch_digest(batch: tuple[bytes, ...] | list[bytes]) -> bytes:
    """The digest d of a pre-prepare: over the canonical array of request envelopes."""
    memo = _memo
    if memo is not None and type(batch) is tuple:
        return memo.batch_digest(batch)
    return digest(codec.encode(list(batch)))


NULL_DIGEST = batch_digest(())
"""Digest of the null request (an empty batch), OSDI'99 section 4.4."""


def signing_payload(cluster_id: str, body: bytes) -> bytes:
    cid = cluster_id.encode()
    return DOMAIN + len(cid).to_bytes(2, "big") + cid + body


# -- Ed25519: the rules and the implementation -------------------------------------------

_P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
"""The order of the prime-order subgroup (RFC 8032 section 5.1)."""
_Y_MASK = (1 << 255) - 1
SMALL_ORDER_Y = frozenset(
    {
        0,  # (+-sqrt(-1), 0), order 4
        1,  # the identity
        _P - 1,  # (0, -1), order 2
        0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,  # order 8
        0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,  # order 8
    }
)
"""The y coordinates of the eight points of small order (either sign of x). Encodings
with y >= p are refused as non-canonical before this is looked at."""


class Ed25519(Enum):
    LIBSODIUM = "libsodium"
    OPENSSL = "openssl"

    @property
    def library(self) -> str:
        """What does the arithmetic, with its version (for bench reports)."""
        if self is Ed25519.LIBSODIUM:
            import nacl

            return f"libsodium via PyNaCl {nacl.__version__}"
        import cryptography

        return f"OpenSSL via cryptography {cryptography.__version__}"


_impl = Ed25519.LIBSODIUM


def use(impl: Ed25519) -> Ed25519:
    """Choose the implementation for keys and Verifiers made from now on; the previous
    one. Results are the same either way (module docstring); only the speed differs."""
    global _impl
    previous, _impl = _impl, impl
    return previous


def implementation() -> Ed25519:
    return _impl


def signature_shape_ok(signature: bytes) -> bool:
    """pbft's own checks of a 64-byte signature, before any library's: S < L, and R a
    canonical encoding (y < p) of a point not of small order."""
    if len(signature) != SIGNATURE_LEN:
        return False
    y = int.from_bytes(signature[:32], "little") & _Y_MASK
    if y >= _P or y in SMALL_ORDER_Y:
        return False
    return int.from_bytes(signature[32:], "little") < L


def public_key_problem(key: bytes) -> str | None:
    """Why `key` cannot be an identity key in pbft, or None. libsodium's
    crypto_core_ed25519_is_valid_point: canonical, on the curve, in the prime-order
    subgroup, not of small order."""
    if len(key) != 32:
        return "not 32 bytes"
    return _point_problem(bytes(key))


@lru_cache(maxsize=1024)
def _point_problem(key: bytes) -> str | None:
    """`public_key_problem` of 32 bytes: a pure function of them, asked again for the same
    few keys (every Verifier made, every reconfiguration command read)."""
    if not sodium.crypto_core_ed25519_is_valid_point(key):
        return "not a valid Ed25519 public key (non-canonical, off the curve, of small order or with a torsion component)"
    return None


def _sodium_verify(key: bytes, signature: bytes, payload: bytes) -> bool:
    try:
        sodium.crypto_sign_open(signature + payload, key)
        return True
    except BadSignatureError:
        return False


def _openssl_verify(key: Ed25519PublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        key.verify(signature, payload)
        return True
    except InvalidSignature:
        return False


class KeyPair:
    """An Ed25519 identity key. Only `safety.SafetyRules` signs protocol votes with it.
    Signing is deterministic (RFC 8032): both implementations give the same bytes."""

    __slots__ = ("_seed", "_sodium_secret", "_openssl", "public", "signed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 private key is 32 bytes")
        self._seed = seed
        self.public, self._sodium_secret = sodium.crypto_sign_seed_keypair(seed)
        self._openssl = Ed25519PrivateKey.from_private_bytes(seed) if _impl is Ed25519.OPENSSL else None
        self.signed = 0
        """Signatures made (the bench's CPU split; metrics `pbft_signatures_total`)."""

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """Deterministic key from any byte string (the simulator derives keys from its seed)."""
        return cls(digest(b"pbft-key/" + seed))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        return cls(raw)

    def private_bytes_raw(self) -> bytes:
        return self._seed

    def sign(self, payload: bytes) -> bytes:
        self.signed += 1
        memo = _memo
        if memo is not None:
            known = memo.signature(self._seed, payload)
            if known is not None:
                return known
        if self._openssl is not None:
            signature = self._openssl.sign(payload)
        else:
            signature = sodium.crypto_sign(payload, self._sodium_secret)[:SIGNATURE_LEN]
        if memo is not None:
            memo.made(self._seed, self.public, payload, signature)
        return signature


def seal(key: KeyPair, cluster_id: str, signer: Signer, msg: Message) -> Envelope:
    """Encode and sign `msg` as `signer`."""
    body = to_body(msg)
    # A pre-prepare's batch rides beside the signed body (messages.py): it is bound to it
    # by the digest the body holds.
    batch = msg.batch if type(msg) is PrePrepare else None
    return Envelope(body, signer, key.sign(signing_payload(cluster_id, body)), batch)


VERDICTS = 16384
"""Verdicts a replica's Verifier keeps when its runtime verifies on a pool of threads
(`[[replica]] verify_threads`, pbft.node.preverify): each is kept from the pre-verifying
of its message until the core steps it, which is at most a group being stepped plus one
forwarded (64 frames each, a PRE-PREPARE of 256 requests at most 257 signatures); ~150
bytes each. Forgetting one early only costs a verification on the event loop."""

VerifyJob = tuple[bytes, bytes, bytes, bytes]
"""(memo key, public key, signature, signing payload): one signature to check off the
event loop (`Verifier.jobs`, `check_jobs`, `Verifier.admit`)."""


def verdict_key(public: bytes, signature: bytes, payload: bytes) -> bytes:
    """The key of a verdict: a digest of public key (32 bytes) || signature (64 bytes,
    shape-checked first) || signing payload. The first two have fixed lengths, so two
    different byte triples never give the same input."""
    h = hashlib.sha256(public)
    h.update(signature)
    h.update(payload)
    return h.digest()


def check_jobs(jobs: list[VerifyJob], impl: Ed25519) -> list[bool]:
    """The verdict on each job, in order, with `impl`'s library. Pure and thread-safe:
    touches no Verifier (a worker thread runs it; the library releases the GIL)."""
    if impl is Ed25519.OPENSSL:
        return [_openssl_verify(Ed25519PublicKey.from_public_bytes(k), sig, payload) for _, k, sig, payload in jobs]
    return [_sodium_verify(k, sig, payload) for _, k, sig, payload in jobs]


class Verifier:
    """Checks envelope signatures against the cluster's member keys.

    `memo` bounds a cache of verdicts keyed by the exact bytes a verdict is about: the
    signer's public key, the signature and the signing payload (`memo_key`). The simulator
    uses it because one broadcast is verified by every receiver in one process; a replica
    process uses it (VERDICTS) when its runtime verifies on worker threads and hands the
    verdicts in (`jobs`, `check_jobs`, `admit`), so the core asks `verify` as always and
    finds the verdict. A verdict can only ever answer for the bytes it was reached on.
    """

    def __init__(
        self, cluster_id: str, keys: dict[Signer, bytes], memo: int = 0, replica_domain: str | None = None
    ) -> None:
        self.cluster_id = cluster_id
        # A key that breaks the rules verifies nothing (the cluster file check refuses
        # it earlier, with a sentence; a Verifier never raises on one).
        valid = {s: k for s, k in keys.items() if public_key_problem(k) is None}
        self._members = frozenset(keys)
        self._raw: dict[Signer, bytes] = valid
        self.implementation = _impl
        if _impl is Ed25519.OPENSSL:
            self._keys: dict[Signer, object] = {s: Ed25519PublicKey.from_public_bytes(k) for s, k in valid.items()}
            self._check = _openssl_verify
        else:
            self._keys = dict(valid)
            self._check = _sodium_verify
        self.memo_size = memo
        self._memo: OrderedDict[bytes, bool] = OrderedDict()
        self._prefix = signing_payload(cluster_id, b"")  # the same for every client envelope
        # Replicas (integer signers) sign under their configuration's epoch from epoch 1 on
        # (ClusterConfig.replica_domain); clients under the cluster's domain.
        self._replica_prefix = signing_payload(replica_domain or cluster_id, b"")
        self.checked = 0
        """Signatures handed to the library, here or on a worker thread (memoised
        verdicts and shape refusals are not)."""

    def is_member(self, signer: Signer) -> bool:
        return signer in self._members

    def memo_key(self, public: bytes, env: Envelope) -> bytes:
        """The key of a verdict on `env` (`verdict_key` of its exact bytes)."""
        h = hashlib.sha256(public)
        h.update(env.signature)
        h.update(self.prefix_of(env.signer))
        h.update(env.body)
        return h.digest()

    def prefix_of(self, signer: Signer) -> bytes:
        """The signing payload's prefix for `signer`'s messages."""
        return self._replica_prefix if type(signer) is int else self._prefix

    def verify(self, env: Envelope) -> bool:
        key = self._keys.get(env.signer)
        if key is None or not signature_shape_ok(env.signature):
            return False
        if self.memo_size:
            mkey = self.memo_key(self._raw[env.signer], env)
            hit = self._memo.get(mkey)
            if hit is not None:
                return hit
        self.checked += 1
        payload = self.prefix_of(env.signer) + env.body
        memo = _memo
        if memo is not None and memo.vouches(self._raw[env.signer], env.signature, payload):
            ok = True  # made by KeyPair.sign in this process: the library would say so too
        else:
            ok = self._check(key, env.signature, payload)  # type: ignore[arg-type]
        if self.memo_size:
            self._remember(mkey, ok)
        return ok

    def _remember(self, mkey: bytes, ok: bool) -> None:
        self._memo[mkey] = ok
        if len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)

    def jobs(self, envs: list[Envelope]) -> list[VerifyJob]:
        """What `verify` would hand the library for these envelopes and has no verdict on
        yet (nothing without a memo): unknown signers and bad shapes are left to `verify`
        to refuse, duplicates are asked once."""
        if not self.memo_size:
            return []
        out: list[VerifyJob] = []
        seen: set[bytes] = set()
        for env in envs:
            public = self._raw.get(env.signer)
            if public is None or not signature_shape_ok(env.signature):
                continue
            mkey = self.memo_key(public, env)
            if mkey in self._memo or mkey in seen:
                continue
            seen.add(mkey)
            out.append((mkey, public, env.signature, self.prefix_of(env.signer) + env.body))
        return out

    def admit(self, jobs: list[VerifyJob], verdicts: list[bool]) -> None:
        """Keep the verdicts `check_jobs` reached on `jobs` (from `jobs` of this
        Verifier): each under the key of the bytes it was reached on."""
        for (_, public, signature, payload), ok in zip(jobs, verdicts, strict=True):
            if len(signature) != SIGNATURE_LEN:
                continue  # never made by `jobs`; `verify` refuses such a shape anyway
            # Keyed anew by the bytes the verdict was reached on, not by what the job
            # carries: a job whose key and bytes disagree cannot answer for other bytes.
            self._remember(verdict_key(public, signature, payload), ok)
        self.checked += len(jobs)

    def bounds(self) -> list[tuple[str, int, int]]:
        return [("verdicts", len(self._memo), self.memo_size)]


class Memo:
    """Signature work memoised across the cores of one process (the simulator's run):
    pure functions of their inputs, so every core gets the answer it would have computed.

    * A signature: Ed25519 signing is deterministic (RFC 8032), so the signature of one
      key over one payload is the same bytes every time it is asked for (a retransmission
      re-signed, a behaviour signing the same request again).
    * A verdict on a signature this process made (`vouches`): `KeyPair.sign` gives a
      signature that verifies under its public key over exactly that payload, so the
      library is not asked again. Anything else (another key, payload or signature: a
      forgery, a mutation) goes to the library as before; the shape checks and the
      Verifier's own verdict memo run as before, so what a core asks and what it is told
      are unchanged.
    * A batch's digest, by the batch (a tuple of bytes: every backup hashes the same
      pre-prepare's batch).

    Bounded in entries and in the bytes of the payloads it holds (oldest first out).
    """

    __slots__ = ("_signatures", "_made", "_digests", "_bytes", "max_entries", "max_bytes")

    def __init__(self, max_entries: int = 65536, max_bytes: int = 64 << 20) -> None:
        self._signatures: dict[tuple[bytes, bytes], bytes] = {}  # (seed, payload) -> signature
        self._made: dict[bytes, tuple[bytes, bytes]] = {}  # signature -> (public key, payload)
        self._digests: dict[tuple[bytes, ...], bytes] = {}  # batch -> batch_digest
        self._bytes = [0, 0, 0]  # payload bytes held by each table, in that order
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def signature(self, seed: bytes, payload: bytes) -> bytes | None:
        return self._signatures.get((seed, payload))

    def made(self, seed: bytes, public: bytes, payload: bytes, signature: bytes) -> None:
        size = len(payload)
        if self._room(self._signatures, 0, size, lambda k: len(k[1])):
            self._signatures[(seed, payload)] = signature
            self._bytes[0] += size
        if self._room(self._made, 1, size, lambda k: len(self._made[k][1])):
            self._made[signature] = (public, payload)
            self._bytes[1] += size

    def vouches(self, public: bytes, signature: bytes, payload: bytes) -> bool:
        """Whether `signature` is one this process made with `public`'s key over `payload`."""
        made = self._made.get(signature)
        return made is not None and made[0] == public and made[1] == payload

    def batch_digest(self, batch: tuple[bytes, ...]) -> bytes:
        d = self._digests.get(batch)
        if d is None:
            d = digest(codec.encode(list(batch)))
            size = sum(map(len, batch))
            if self._room(self._digests, 2, size, lambda k: sum(map(len, k))):
                self._digests[batch] = d
                self._bytes[2] += size
        return d

    def _room(self, table: dict, i: int, size: int, size_of) -> bool:
        """Make room for `size` more bytes in `table` (oldest entries out); False if it
        could never fit."""
        if size > self.max_bytes:
            return False
        while table and (len(table) >= self.max_entries or self._bytes[i] + size > self.max_bytes):
            oldest = next(iter(table))
            self._bytes[i] -= size_of(oldest)
            del table[oldest]
        return True


class memoised:  # noqa: N801 - used as a context manager, like a function
    """`with memoised(): ...` installs a fresh Memo for the block and puts back whatever
    was installed before."""

    def __init__(self, memo: Memo | None = None) -> None:
        self.memo = memo if memo is not None else Memo()
        self._before: Memo | None = None

    def __enter__(self) -> Memo:
        global _memo
        self._before, _memo = _memo, self.memo
        return self.memo

    def __exit__(self, *exc: object) -> None:
        global _memo
        _memo = self._before
