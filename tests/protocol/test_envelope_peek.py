"""Reading an envelope's type and first fields from its CBOR heads, without decoding it
(`messages.envelope_fields`, `envelope_type`, `envelope_slot`, `codec.read_head`): what the
runtime's per-frame counters use. A misreading would count one kind of message as
another, so each is held to what a full decode says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.crypto import KeyPair, seal
from pbft.protocol.messages import (
    Checkpoint,
    MsgType,
    Prepare,
    PrePrepare,
    Request,
    Status,
    envelope_fields,
    envelope_slot,
    envelope_type,
)

KEY = KeyPair.from_seed(b"peek")


def sealed(msg) -> bytes:
    return seal(KEY, "c", 0, msg).to_bytes()


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_read_head_reads_every_size_of_head(n):
    for major in (0, 2, 4):
        data = codec._head(major, n) + b"\x00"
        assert codec.read_head(data, 0) == (major, n, len(data) - 1)
        # The same head later in a buffer.
        assert codec.read_head(b"\xff\xff" + data, 2) == (major, n, len(data) + 1)


@pytest.mark.parametrize("bad", [b"\x1c", b"\x1f", b"\x5f", b"\x18", b"\x19\x01", b"\x1b" + b"\x00" * 7])
def test_read_head_refuses_a_reserved_indefinite_or_short_head(bad):
    with pytest.raises((ValueError, IndexError)):
        codec.read_head(bad, 0)


def test_envelope_fields_are_the_first_integers_of_the_message():
    pp = sealed(PrePrepare(3, 70000, b"d" * 32, (b"r" * 300,)))
    assert envelope_fields(pp, 1) == [MsgType.PRE_PREPARE]
    assert envelope_fields(pp, 3) == [MsgType.PRE_PREPARE, 3, 70000]
    prepare = sealed(Prepare(2**40, 5, b"d" * 32))
    assert envelope_fields(prepare, 3) == [MsgType.PREPARE, 2**40, 5]
    # A field that is not an unsigned integer ends the reading: None, not a guess.
    assert envelope_fields(sealed(Checkpoint(4, b"d" * 32)), 3) is None
    # More fields than the message has.
    assert envelope_fields(sealed(Checkpoint(4, b"d" * 32)), 9) is None


def test_envelope_fields_give_none_for_any_other_shape():
    good = sealed(Prepare(1, 5, b"d" * 32))
    assert envelope_fields(good[:-70], 3) == [MsgType.PREPARE, 1, 5]  # cut after the heads: they still read
    assert envelope_fields(good[:3], 3) is None  # cut short inside the message
    assert envelope_fields(codec.encode([b"x", 0]), 1) is None  # two items, not three or four
    assert envelope_fields(codec.encode([b"x", 0, b"s", b"b", 1]), 1) is None  # five
    # The same with a body that reads: only the envelope's count refuses them.
    body = codec.encode([7, 1])
    assert envelope_fields(codec.encode([body, 0, b"s"]), 2) == [7, 1]
    assert envelope_fields(codec.encode([body, 0]), 2) is None
    assert envelope_fields(codec.encode([body, 0, b"s", b"b", 1]), 2) is None
    assert envelope_fields(codec.encode([body]), 2) is None
    assert envelope_fields(codec.encode({"a": 1}), 1) is None  # not an array
    assert envelope_fields(codec.encode(["x", 0, b"s"]), 1) is None  # the body a text, not bytes
    assert envelope_fields(codec.encode([codec.encode({"a": 1}), 0, b"s"]), 1) is None  # body not an array
    assert envelope_fields(codec.encode([codec.encode([-1]), 0, b"s"]), 1) is None  # a negative type
    assert envelope_fields(b"", 1) is None and envelope_fields(b"\x9f", 1) is None
    # Four items (a pre-prepare's batch) are an envelope too.
    assert envelope_fields(codec.encode([codec.encode([7, 1]), 0, b"s", b"b"]), 2) == [7, 1]


def test_envelope_slot_is_a_pre_prepares_view_and_seq_only():
    assert envelope_slot(sealed(PrePrepare(3, 9, b"d" * 32, ()))) == (3, 9)
    assert envelope_slot(sealed(Prepare(3, 9, b"d" * 32))) is None
    assert envelope_slot(sealed(Request(b"op", 1, "alice"))) is None
    assert envelope_slot(b"garbage") is None


def test_envelope_type_agrees_with_the_full_head_walk():
    """The fixed-offset fast path must read the same type as walking the heads, for
    bodies of every head size (one-byte to four-byte lengths) and for garbage."""
    for size in (0, 10, 30, 300, 70000):
        pp = sealed(PrePrepare(1, 2, b"d" * 32, (b"r" * size,)))
        assert envelope_type(pp) == envelope_fields(pp, 1)[0] == MsgType.PRE_PREPARE
    for msg in (Prepare(1, 2, b"d" * 32), Checkpoint(4, b"d" * 32), Status(0, 0, 0, 0, ""),
                Request(b"op", 1, "alice")):
        data = sealed(msg)
        assert envelope_type(data) == envelope_fields(data, 1)[0]

    @given(st.binary(max_size=40))
    def garbage(data: bytes) -> None:
        code = envelope_type(data)  # never a misreading (it may give up where the walk reads on)
        if code != -1:
            fields = envelope_fields(data, 1)
            assert fields is not None and fields[0] == code

    garbage()
    assert envelope_type(bytes([0x83, 0x42, 0x80, 0x05])) == -1  # an empty body array
    # A body whose head is reserved (28 to 30) or indefinite (31) has no length to skip:
    # unreadable, whatever bytes follow where a length would have ended.
    for info in (28, 29, 30, 31):
        for at in range(2, 40):
            frame = bytearray(64)
            frame[0], frame[1] = 0x83, 0x40 | info
            frame[at], frame[at + 1] = 0x81, 0x05
            assert envelope_type(bytes(frame)) == -1, (info, at)
    assert envelope_type(b"") == -1
