"""The memos a simulator installs for its run (issue 21, item 1): decoding, signing,
verdicts on signatures made in this process and batch digests. Each must give exactly what
the computation gives, refuse exactly what it refuses, and stay within its bounds."""

from __future__ import annotations

import pytest
from conftest import CLUSTER_ID, make_config, replica_key

from pbft.protocol import codec, crypto, messages
from pbft.protocol.codec import CodecError
from pbft.protocol.crypto import Memo, Verifier, batch_digest, seal
from pbft.protocol.messages import (
    DecodeMemo,
    Envelope,
    Prepare,
    SchemaError,
    decode_envelope,
    memoised_decoding,
)

D = b"\x11" * 32


def _prepare(seq: int = 1) -> bytes:
    return seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, seq, D)).to_bytes()


def _error(data: bytes) -> tuple[type, str]:
    with pytest.raises(CodecError) as info:
        decode_envelope(data)
    return type(info.value), str(info.value)


def test_memoised_decoding_gives_what_decoding_gives_and_refuses_what_it_refuses():
    good, garbage = _prepare(), b"\x83\x41"
    not_a_message = Envelope(b"\x82\x63abc\x01", 1, bytes(64)).to_bytes()  # CBOR, no schema
    plain = [decode_envelope(good), _error(garbage), _error(not_a_message)]
    with memoised_decoding() as memo:
        for _ in range(2):  # the miss, then the hit
            assert decode_envelope(good) == plain[0]
            assert _error(garbage) == plain[1]
            assert _error(not_a_message) == plain[2] and plain[2][0] is SchemaError
        assert decode_envelope(bytearray(good)) == plain[0]  # not a key: decoded, not kept
        assert len(memo._entries) == 3
    assert messages._memo is None  # put back


def test_decode_memo_is_bounded_in_entries_and_bytes():
    memo = DecodeMemo(max_entries=2, max_bytes=1 << 20)
    frames = [_prepare(seq) for seq in range(1, 4)]
    for f in frames:
        memo.decode(f)
    assert list(memo._entries) == frames[1:]  # oldest first out
    memo = DecodeMemo(max_entries=100, max_bytes=2 * len(frames[0]))
    for f in frames:
        memo.decode(f)
    assert list(memo._entries) == frames[1:] and memo._bytes == 2 * len(frames[0])
    big = DecodeMemo(max_entries=100, max_bytes=len(frames[0]) - 1)
    assert big.decode(frames[0]) == decode_envelope(frames[0]) and not big._entries  # never fits


def test_a_memoised_signature_is_the_signature():
    key = replica_key(2)
    payload = b"pbft/v1 payload"
    before = key.signed
    fresh = key.sign(payload)
    with crypto.memoised() as memo:
        assert key.sign(payload) == fresh and memo.signature(key.private_bytes_raw(), payload) == fresh
        assert key.sign(payload) == fresh  # from the memo
        signed = key.signed
    assert signed == before + 3  # every request counted, as a real replica's would be
    assert crypto._memo is None


def test_a_signature_made_here_is_vouched_for_only_over_its_bytes_and_key():
    v = Verifier(CLUSTER_ID, make_config().member_keys())  # no verdict memo: every call decides
    with crypto.memoised() as memo:
        good = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
        checked = v.checked
        assert v.verify(good) and v.checked == checked + 1
        public = make_config().member_keys()[1]
        assert memo.vouches(public, good.signature, v.prefix_of(1) + good.body)
        # The same signature on other bytes or under another signer is asked of the
        # library, which refuses it, as it would without the memo.
        other = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 2, D))
        assert not v.verify(Envelope(other.body, 1, good.signature))
        assert not v.verify(Envelope(good.body, 2, good.signature))
        assert not memo.vouches(make_config().member_keys()[2], good.signature, v.prefix_of(1) + good.body)
        assert not memo.vouches(public, good.signature, v.prefix_of(1) + good.body + b"x")
        assert not v.verify(Envelope(good.body, 1, bytes(64)))  # a forgery


def test_memoised_batch_digest_is_the_digest_and_bounded():
    batch = (b"a" * 100, b"b" * 50)
    plain = batch_digest(batch)
    with crypto.memoised(Memo(max_entries=1, max_bytes=1000)) as memo:
        assert batch_digest(batch) == plain and batch_digest(batch) == plain
        assert batch_digest(list(batch)) == plain  # a list is not a key: computed
        other = (b"c",)
        assert batch_digest(other) == crypto.digest(codec.encode([b"c"]))
        assert list(memo._digests) == [other] and memo._bytes[2] == 1  # one entry at most
