"""Signatures with domain separation (docs/formats.md, "The wire") and the memoised Verifier."""

from __future__ import annotations

import pytest
from conftest import CLUSTER_ID, client_key, make_config, replica_key
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol.crypto import (
    DOMAIN,
    NULL_DIGEST,
    KeyPair,
    Verifier,
    batch_digest,
    digest,
    seal,
    signing_payload,
)
from pbft.protocol.messages import Commit, Envelope, Prepare, Request, from_body

D = b"\x33" * 32


@pytest.fixture
def verifier():
    return Verifier(CLUSTER_ID, make_config().member_keys())


def test_from_seed_is_deterministic_and_distinct():
    assert KeyPair.from_seed(b"x").public == KeyPair.from_seed(b"x").public
    assert KeyPair.from_seed(b"x").public != KeyPair.from_seed(b"y").public
    assert len(KeyPair.from_seed(b"x").public) == 32
    raw = KeyPair.from_seed(b"x").private_bytes_raw()
    assert KeyPair.from_private_bytes(raw).public == KeyPair.from_seed(b"x").public


def test_signatures_verify(verifier):
    for signer, key in ((0, replica_key(0)), (3, replica_key(3)), ("alice", client_key("alice"))):
        env = seal(key, CLUSTER_ID, signer, Prepare(0, 1, D))
        assert len(env.signature) == 64
        assert verifier.verify(env)
        assert from_body(env.body) == Prepare(0, 1, D)


def test_signing_payload_has_domain_and_length_prefixed_cluster_id():
    assert signing_payload("ab", b"body") == DOMAIN + b"\x00\x02ab" + b"body"
    # The length prefix keeps ("ab", "c...") and ("abc", "...") apart.
    assert signing_payload("ab", b"cx") != signing_payload("abc", b"x")


def test_signature_for_another_cluster_fails(verifier):
    env = seal(replica_key(1), "other-cluster", 1, Prepare(0, 1, D))
    assert not verifier.verify(env)


def test_cluster_id_boundary_cannot_be_shifted():
    # Same concatenation without the length prefix: "test-cluste" + "r..." body.
    env = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    other = Verifier(CLUSTER_ID[:-1], {1: replica_key(1).public})
    shifted = Envelope(CLUSTER_ID[-1:].encode() + env.body, 1, env.signature)
    assert not other.verify(shifted)


def test_signature_does_not_transfer_to_another_message_type(verifier):
    prepare = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    commit_body = seal(replica_key(1), CLUSTER_ID, 1, Commit(0, 1, D)).body
    assert commit_body != prepare.body
    assert not verifier.verify(Envelope(commit_body, 1, prepare.signature))


def test_signature_does_not_transfer_to_another_signer(verifier):
    env = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    assert not verifier.verify(Envelope(env.body, 2, env.signature))
    req = seal(client_key("alice"), CLUSTER_ID, "alice", Request(b"op", 1, "alice"))
    assert not verifier.verify(Envelope(req.body, "bob", req.signature))


def test_unknown_signer_fails(verifier):
    mallory = KeyPair.from_seed(b"mallory")
    env = seal(mallory, CLUSTER_ID, "mallory", Request(b"op", 1, "mallory"))
    assert not verifier.is_member("mallory")
    assert not verifier.verify(env)
    assert not verifier.verify(seal(mallory, CLUSTER_ID, 4, Prepare(0, 1, D)))


def test_wrong_length_or_tampered_signature_fails(verifier):
    env = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    assert not verifier.verify(Envelope(env.body, 1, env.signature[:-1]))
    assert not verifier.verify(Envelope(env.body, 1, b""))
    flipped = bytes([env.signature[0] ^ 1]) + env.signature[1:]
    assert not verifier.verify(Envelope(env.body, 1, flipped))
    assert not verifier.verify(Envelope(env.body + b"\x00", 1, env.signature))


def test_digests():
    assert digest(b"") == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert NULL_DIGEST == batch_digest(()) == batch_digest([])
    assert batch_digest((b"a", b"b")) != batch_digest((b"b", b"a"))
    assert batch_digest((b"ab",)) != batch_digest((b"a", b"b"))


# -- the memoised verifier gives the plain verdicts ------------------------------------------

SIGNERS = [0, 1, 2, 3, "alice", "bob"]


def _envelope(kind: int, signer, seq: int, sig_from) -> Envelope:
    key = replica_key(sig_from) if type(sig_from) is int else client_key(sig_from)
    msg = Prepare(0, seq, D) if kind == 0 else Request(b"op%d" % seq, seq, "alice")
    env = seal(key, CLUSTER_ID, sig_from, msg)
    return Envelope(env.body, signer, env.signature)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 1),
            st.sampled_from(SIGNERS),
            st.integers(0, 3),
            st.sampled_from(SIGNERS),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_memoised_verifier_agrees_with_plain(script):
    keys = make_config().member_keys()
    plain = Verifier(CLUSTER_ID, keys)
    memo = Verifier(CLUSTER_ID, keys, memo=4)
    for kind, signer, seq, sig_from, tamper in script:
        env = _envelope(kind, signer, seq, sig_from)
        if tamper:
            env = Envelope(env.body, env.signer, env.signature[:-1] + b"\x00")
        # Ask twice: the second answer may come from the memo.
        assert memo.verify(env) == plain.verify(env)
        assert memo.verify(env) == plain.verify(env)


def test_memoised_verifier_refuses_a_forgery_after_the_genuine_one():
    keys = make_config().member_keys()
    memo = Verifier(CLUSTER_ID, keys, memo=100)
    good = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    assert memo.verify(good)
    assert not memo.verify(Envelope(good.body, 2, good.signature))
    assert not memo.verify(Envelope(good.body + b"\x00", 1, good.signature))
    assert memo.verify(good)


def _collide(good: Envelope, signer) -> Envelope:
    """An envelope for `signer` whose memo key text equals `good`'s: the memo key is
    repr(signer) + signature + body with no separators, so moving bytes across the
    boundaries keeps the concatenation (and hence its digest) the same."""
    joined = repr(good.signer).encode() + good.signature + good.body
    prefix = repr(signer).encode()
    assert joined.startswith(prefix)
    rest = joined[len(prefix) :]
    return Envelope(rest[64:], signer, rest[:64])


# Needs replica ids >= 10 (f >= 4): repr(1) is a prefix of repr(12). Client names cannot
# collide this way (repr quotes them and names contain no quote).
def test_memo_key_is_injective_across_replica_ids():
    keys = {1: replica_key(1).public, 12: replica_key(12).public}
    plain = Verifier(CLUSTER_ID, keys)
    memo = Verifier(CLUSTER_ID, keys, memo=100)
    good = seal(replica_key(12), CLUSTER_ID, 12, Prepare(0, 1, D))
    forged = _collide(good, 1)
    assert memo.verify(good) and plain.verify(good)
    assert not plain.verify(forged)
    assert memo.verify(forged) == plain.verify(forged)


def test_memo_key_cannot_collide_between_client_names():
    keys = {"a": client_key("a").public, "ab": client_key("ab").public}
    plain = Verifier(CLUSTER_ID, keys)
    memo = Verifier(CLUSTER_ID, keys, memo=100)
    good = seal(client_key("ab"), CLUSTER_ID, "ab", Request(b"op", 1, "ab"))
    assert memo.verify(good)
    for cut in range(0, 8):
        forged = Envelope(good.signature[64 - cut :] + good.body, "a", b"b'" + good.signature[:62])
        assert memo.verify(forged) == plain.verify(forged) is False


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_private_key_of_another_size_is_refused_with_its_sentence(size):
    with pytest.raises(ValueError) as info:
        KeyPair(b"\x01" * size)
    assert str(info.value) == "an Ed25519 private key is 32 bytes"


def test_a_key_made_under_openssl_signs_with_openssl_and_the_same_bytes():
    """`crypto.use` chooses the library keys sign with from then on; both give the same
    signature (RFC 8032 signing is deterministic), so only the speed differs."""
    from pbft.protocol import crypto

    sodium_key = KeyPair(b"\x07" * 32)
    previous = crypto.use(crypto.Ed25519.OPENSSL)
    try:
        openssl_key = KeyPair(b"\x07" * 32)
    finally:
        crypto.use(previous)
    assert sodium_key._openssl is None and openssl_key._openssl is not None
    assert openssl_key.sign(b"payload") == sodium_key.sign(b"payload")


def test_a_key_counts_the_signatures_it_made():
    key = KeyPair(b"\x08" * 32)
    assert key.signed == 0
    key.sign(b"a")
    key.sign(b"a")
    assert key.signed == 2


def test_the_verdict_memo_forgets_the_oldest_verdict_first():
    """A bounded memo of verdicts keeps the latest ones (its bound is the `verdicts`
    bound): when full, the verdict first remembered goes, not the one just made."""
    keys = {0: replica_key(0).public}
    v = Verifier(CLUSTER_ID, keys, memo=2)
    envs = [seal(replica_key(0), CLUSTER_ID, 0, Prepare(0, n, b"\x11" * 32)) for n in (1, 2, 3)]
    for env in envs:
        assert v.verify(env)
    assert list(v._memo) == [v.memo_key(keys[0], envs[1]), v.memo_key(keys[0], envs[2])]
