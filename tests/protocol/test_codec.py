"""Strict canonical CBOR (docs/formats.md, "The wire"), with cbor2 as the reference encoder."""

from __future__ import annotations

import datetime
import struct

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.codec import (
    MAX_DEPTH,
    CodecError,
    FrameError,
    FrameReader,
    decode,
    encode,
    frame,
)

I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# The full range the codec supports: major types 0 and 1 with a 64-bit argument.
U64_FULL = st.integers(min_value=-(2**64), max_value=2**64 - 1)

scalars = st.one_of(I64, st.binary(max_size=40), st.text(max_size=20), st.booleans(), st.none())


def nested(base, max_leaves: int = 25):
    """Lists and text-keyed maps of `base`, at most MAX_DEPTH containers deep."""

    def extend(children):
        return st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        )

    return st.recursive(base, extend, max_leaves=max_leaves).filter(lambda v: depth(v) <= MAX_DEPTH)


def depth(v) -> int:
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 0


# Maps whose keys are scalars of mixed kinds: our order is RFC 8949 bytewise, cbor2's is
# RFC 7049 length-first, so these are checked for round trip only, not against cbor2.
mixed_keys = st.one_of(I64, st.binary(max_size=8), st.text(max_size=8), st.booleans(), st.none())


def nested_mixed_keys():
    def extend(children):
        return st.one_of(
            st.lists(children, max_size=4), st.dictionaries(mixed_keys, children, max_size=4)
        )

    return st.recursive(scalars, extend, max_leaves=20).filter(lambda v: depth(v) <= MAX_DEPTH)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(nested(scalars))
def test_encoding_matches_cbor2_canonical_and_round_trips(value):
    data = encode(value)
    assert data == cbor2.dumps(value, canonical=True)
    assert decode(data) == value
    assert type(decode(data)) is type(value)


@SETTINGS
@given(U64_FULL)
def test_full_64_bit_integers_round_trip(n):
    data = encode(n)
    assert data == cbor2.dumps(n, canonical=True)
    assert decode(data) == n


@pytest.mark.parametrize("n", [2**64, -(2**64) - 1, 2**100])
def test_integers_beyond_64_bits_are_not_encoded(n):
    with pytest.raises(CodecError):
        encode(n)


@SETTINGS
@given(nested_mixed_keys())
def test_maps_with_mixed_scalar_keys_round_trip_in_bytewise_order(value):
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


def test_map_key_order_is_rfc8949_bytewise_not_length_first():
    # 24 encodes as 18 18, -1 as 20: bytewise puts 24 first (cbor2 would put -1 first).
    assert encode({-1: 0, 24: 0}) == bytes.fromhex("a21818002000")


def test_tuples_encode_as_arrays():
    assert encode((1, b"x")) == encode([1, b"x"])


@SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_codec_error_and_accepted_ones_reencode(data):
    try:
        value = decode(data)
    except CodecError:
        return
    assert encode(value) == data


@settings(max_examples=300, deadline=None)
@given(nested(scalars, max_leaves=10), st.data())
def test_mutated_encodings_raise_only_codec_error_or_reencode(value, data):
    raw = bytearray(encode(value))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            decoded = decode(candidate)
        except CodecError:
            continue
        assert encode(decoded) == candidate


# -- explicit rejections --------------------------------------------------------------------

REJECTED = {
    "tag datetime (cbor2)": cbor2.dumps(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)),
    "tag 2 bignum (cbor2)": cbor2.dumps(2**70),
    "tag 1 epoch": bytes.fromhex("c11a5e0be100"),
    "tag 55799 self-describe": bytes.fromhex("d9d9f701"),
    "duplicate map keys": bytes.fromhex("a2616101616102"),
    "unsorted map keys": bytes.fromhex("a2616201616102"),
    "unsorted int keys": bytes.fromhex("a202010102"),
    "map with array key": bytes.fromhex("a18001"),
    "map with map key": bytes.fromhex("a1a001"),
    "indefinite array": bytes.fromhex("9f01ff"),
    "indefinite byte string": bytes.fromhex("5f4101ff"),
    "indefinite text string": bytes.fromhex("7f6161ff"),
    "indefinite map": bytes.fromhex("bf616101ff"),
    "lone break": bytes.fromhex("ff"),
    "non-minimal 1-byte head": bytes.fromhex("1805"),
    "non-minimal 2-byte head": bytes.fromhex("190005"),
    "non-minimal 2-byte head for 255": bytes.fromhex("1900ff"),
    "non-minimal 4-byte head": bytes.fromhex("1a0000ffff"),
    "non-minimal 8-byte head": bytes.fromhex("1b00000000ffffffff"),
    "non-minimal negative": bytes.fromhex("3817"),
    "non-minimal byte string length": bytes.fromhex("580161"),
    "non-minimal array length": bytes.fromhex("980101"),
    "reserved additional info 28": bytes.fromhex("1c"),
    "half float": bytes.fromhex("f93c00"),
    "single float": bytes.fromhex("fa3fc00000"),
    "double float": cbor2.dumps(1.5),
    "undefined": bytes.fromhex("f7"),
    "simple value 16": bytes.fromhex("f0"),
    "simple value 255": bytes.fromhex("f8ff"),
    "trailing bytes": bytes.fromhex("0101"),
    "two values": encode([1]) + encode([2]),
    "empty input": b"",
    "truncated uint": bytes.fromhex("1a0000"),
    "truncated byte string": bytes.fromhex("4501020304"),
    "truncated array": bytes.fromhex("830102"),
    "truncated map": bytes.fromhex("a16161"),
    "invalid UTF-8": bytes.fromhex("62c328"),
    "UTF-8 surrogate": bytes.fromhex("63eda080"),
    "overlong UTF-8": bytes.fromhex("62c0af"),
    "depth 9 arrays": bytes.fromhex("81" * 9 + "01"),
    "depth 9 maps": bytes.fromhex("a16161" * 9 + "01"),
    "array of 2**32-1 items in 5 bytes": bytes.fromhex("9affffffff"),
    "array of 2**32 items, 8-byte head": bytes.fromhex("9b0000000100000000"),
    "map of 2**63 items": bytes.fromhex("bb8000000000000000"),
    "byte string of 2**64-1 bytes": bytes.fromhex("5bffffffffffffffff"),
}


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_rejected(data):
    with pytest.raises(CodecError):
        decode(data)


def test_nesting_depth_8_is_accepted():
    assert decode(bytes.fromhex("81" * 8 + "01")) == [[[[[[[[1]]]]]]]]
    nested_maps: object = 1
    for _ in range(8):
        nested_maps = {"a": nested_maps}
    assert decode(bytes.fromhex("a16161" * 8 + "01")) == nested_maps


def test_huge_array_count_fails_fast_without_allocation():
    # 0x9a = array, 4-byte count: 2**32-1 items claimed by a 5-byte input.
    data = bytes.fromhex("9affffffff")
    assert len(data) == 5
    with pytest.raises(CodecError):
        decode(data)
    import tracemalloc

    tracemalloc.start()
    try:
        for _ in range(100):
            with pytest.raises(CodecError):
                decode(bytes.fromhex("9b0000000100000000") + b"\x00")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_simple_values_and_bools_decode():
    assert decode(b"\xf4") is False
    assert decode(b"\xf5") is True
    assert decode(b"\xf6") is None


def test_cannot_encode_foreign_types():
    for v in (1.5, {1, 2}, object(), datetime.date(2020, 1, 1)):
        with pytest.raises(CodecError):
            encode(v)


# -- framing --------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_frame_reader_splits_frames_fed_byte_by_byte(bodies):
    stream = b"".join(frame(b) for b in bodies)
    reader = FrameReader()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += reader.feed(stream[i : i + 1])
    assert out == bodies
    assert reader.buffered == 0


def test_frame_reader_splits_frames_fed_at_once():
    bodies = [b"", b"a", b"bc" * 100]
    assert FrameReader().feed(b"".join(frame(b) for b in bodies)) == bodies


def test_frame_reader_keeps_a_partial_frame():
    reader = FrameReader()
    assert reader.feed(frame(b"hello")[:6]) == []
    assert reader.buffered == 6
    assert reader.feed(frame(b"hello")[6:]) == [b"hello"]


def test_frame_reader_rejects_oversize_prefix_before_body():
    reader = FrameReader(max_frame=1000)
    with pytest.raises(FrameError):
        reader.feed(struct.pack(">I", 1001))
    with pytest.raises(CodecError):
        FrameReader().feed(struct.pack(">I", codec.MAX_FRAME + 1))


def test_frame_reader_accepts_exactly_the_limit():
    reader = FrameReader(max_frame=10)
    assert reader.feed(frame(b"x" * 10)) == [b"x" * 10]


def test_frame_prefix_is_big_endian():
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"


class _Number(int):
    """An int subclass (as an IntEnum is): it takes the encoder's general path."""


@SETTINGS
@given(I64)
def test_an_int_subclass_encodes_exactly_as_its_value(n):
    """Found by mutation testing (the third sample): the general path's negative integers
    were reached by no test, and a mutant that encoded -1 + n survived."""
    assert encode(_Number(n)) == encode(n) == cbor2.dumps(n, canonical=True)
    assert encode([_Number(n)]) == encode([n])


def test_a_non_canonical_head_is_refused_word_for_word():
    with pytest.raises(CodecError, match=r"^non-canonical head$"):
        decode(bytes.fromhex("1805"))
