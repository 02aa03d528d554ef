"""Message schema: every type round-trips, and anything a peer could get wrong is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.codec import CodecError
from pbft.protocol.messages import (
    DIGEST_LEN,
    MAX_OPERATION,
    MAX_U64,
    Batch,
    Checkpoint,
    Commit,
    Envelope,
    FetchBatch,
    FetchState,
    Held,
    MsgType,
    NewView,
    Prepare,
    PrePrepare,
    QueryStatus,
    Reply,
    Request,
    SchemaError,
    StableProof,
    StateChunk,
    Status,
    ViewChange,
    attached,
    decode_envelope,
    detached,
    envelope_from_bytes,
    from_body,
    render,
    to_body,
    type_of,
)
from pbft.protocol.messages import (
    Epochs as EpochsMessage,
)

D = b"\x11" * DIGEST_LEN
E = b"\x22" * DIGEST_LEN

EXAMPLES = [
    Request(b"op", 1, "alice"),
    Request(b"", MAX_U64, "a.b-c_9", True),
    PrePrepare(0, 1, D, ()),
    PrePrepare(3, 7, D, (b"env1", b"env2")),
    PrePrepare(3, 7, D),  # without its batch: a certificate's, a NEW-VIEW's
    Prepare(0, 1, D),
    Commit(MAX_U64, MAX_U64, E),
    Reply(2, 5, "bob", 3, b"result"),
    Checkpoint(128, D),
    ViewChange(1, 0, (), ()),
    ViewChange(2, 128, (b"c1", b"c2", b"c3"), ((b"pp", b"p1", b"p2"), (b"pp2",))),
    NewView(1, (b"vc1", b"vc2"), (b"pp1",)),
    FetchState(128, D, 2, 0, 0),
    StateChunk(128, D, 0, 7, 1, 3, b"data"),
    Status(1, 10, 8, 2),
    Status(1, 10, 8, 2, "wrong-digest-vote"),
    QueryStatus(42),
    Held(1, 5, "alice", 2, 9),
    Held(0, 0, "bob", 3, MAX_U64),
    StableProof(128, (b"c1", b"c2", b"c3")),
    FetchBatch(9, D),
    Batch(9, D, (b"env1",)),
    EpochsMessage((b"entry1", b"entry2")),
]


def wire(msg) -> bytes:
    """`msg` in an envelope as it travels: a pre-prepare's batch beside its body."""
    batch = msg.batch if isinstance(msg, PrePrepare) else None
    return Envelope(to_body(msg), 1, b"s" * 64, batch).to_bytes()


def test_every_message_type_has_an_example():
    assert {type_of(m) for m in EXAMPLES} == set(MsgType)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    body = to_body(msg)
    assert decode_envelope(wire(msg))[1] == msg
    assert codec.decode(body)[0] == type_of(msg)
    assert to_body(from_body(body)) == body
    assert render(msg)  # one human-readable line
    assert "\n" not in render(msg)


u64 = st.integers(0, MAX_U64)
digests = st.binary(min_size=32, max_size=32)
names = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")
envs = st.lists(st.binary(max_size=20), max_size=4).map(tuple)

messages = st.one_of(
    st.builds(Request, st.binary(max_size=64), u64, names, st.booleans()),
    st.builds(PrePrepare, u64, u64, digests, st.none() | envs),
    st.builds(Prepare, u64, u64, digests),
    st.builds(Commit, u64, u64, digests),
    st.builds(Reply, u64, u64, names, u64, st.binary(max_size=64)),
    st.builds(Checkpoint, u64, digests),
    st.builds(ViewChange, u64, u64, envs, st.lists(envs, max_size=3).map(tuple)),
    st.builds(NewView, u64, envs, envs),
    st.builds(FetchState, u64, digests, u64, u64, u64),
    st.builds(StateChunk, u64, digests, u64, u64, u64, u64, st.binary(max_size=64)),
    st.builds(Status, u64, u64, u64, u64),
    st.builds(QueryStatus, u64),
    st.builds(Held, u64, u64, names, u64, u64),
    st.builds(FetchBatch, u64, digests),
    st.builds(Batch, u64, digests, envs),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_round_trip_property(msg):
    assert decode_envelope(wire(msg))[1] == msg


def test_a_pre_prepare_signs_its_digest_and_carries_its_batch_beside():
    """OSDI'99 4.2: <<PRE-PREPARE, v, n, d>, m>. The body (what is signed) names the
    batch by digest; the same signed message goes with or without the batch."""
    full = PrePrepare(3, 7, D, (b"env1", b"env2"))
    assert to_body(full) == to_body(PrePrepare(3, 7, D))
    data = wire(full)
    assert decode_envelope(detached(data))[1] == PrePrepare(3, 7, D)
    assert decode_envelope(detached(data))[0].body == decode_envelope(data)[0].body
    assert attached(detached(data), full.batch) == data
    assert data[0] == 0x84 and detached(data)[0] == 0x83  # a 4-item envelope, a 3-item one


def test_only_a_pre_prepare_carries_a_batch_beside_its_body():
    data = Envelope(to_body(Prepare(0, 1, D)), 1, b"s" * 64, (b"x",)).to_bytes()
    envelope_from_bytes(data)  # the envelope's shape is fine
    with pytest.raises(SchemaError):
        decode_envelope(data)
    bad = codec.encode([to_body(PrePrepare(0, 1, D)), 1, b"s" * 64, [1, 2]])
    with pytest.raises(SchemaError):
        decode_envelope(bad)  # a batch is a list of envelopes (byte strings)
    five = codec.encode([to_body(PrePrepare(0, 1, D)), 1, b"s" * 64, [], []])
    with pytest.raises(SchemaError):
        decode_envelope(five)


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_field_mutations_raise_only_codec_errors(msg, data):
    """Replace one field by an arbitrary CBOR value: from_body accepts or raises CodecError."""
    fields = codec.decode(to_body(msg))
    i = data.draw(st.integers(0, len(fields) - 1))
    fields[i] = data.draw(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.binary(max_size=40),
            st.text(max_size=5),
            st.booleans(),
            st.none(),
            st.lists(st.integers(0, 3), max_size=3),
        )
    )
    try:
        out = from_body(codec.encode(fields))
    except CodecError:
        return
    assert to_body(out) == codec.encode(fields)


def body(*fields) -> bytes:
    return codec.encode(list(fields))


BAD_BODIES = {
    "not an array": codec.encode({"type": 3}),
    "empty array": body(),
    "type not int": body("prepare", 0, 1, D),
    "type as bool": body(True, 0, 1, D),
    "unknown type 0": body(0, 0, 1, D),
    "unknown type 99": body(99, 0, 1, D),
    "negative type": body(-3, 0, 1, D),
    "too few fields": body(MsgType.PREPARE, 0, 1),
    "too many fields": body(MsgType.PREPARE, 0, 1, D, 5),
    "view as bytes": body(MsgType.PREPARE, b"\x00", 1, D),
    "seq as text": body(MsgType.COMMIT, 0, "1", D),
    "bool where int expected": body(MsgType.PREPARE, True, 1, D),
    "false where int expected": body(MsgType.CHECKPOINT, False, D),
    "null where int expected": body(MsgType.COMMIT, 0, None, D),
    "negative view": body(MsgType.PREPARE, -1, 1, D),
    "negative seq": body(MsgType.COMMIT, 0, -5, D),
    "negative timestamp": body(MsgType.REQUEST, b"op", -1, "alice", False),
    "digest 31 bytes": body(MsgType.PREPARE, 0, 1, b"\x00" * 31),
    "digest 33 bytes": body(MsgType.COMMIT, 0, 1, b"\x00" * 33),
    "digest empty": body(MsgType.CHECKPOINT, 4, b""),
    "digest as text": body(MsgType.CHECKPOINT, 4, "x" * 32),
    "operation too large": body(MsgType.REQUEST, b"x" * (MAX_OPERATION + 1), 1, "alice", False),
    "operation as text": body(MsgType.REQUEST, "op", 1, "alice", False),
    "client empty": body(MsgType.REQUEST, b"op", 1, "", False),
    "client with space": body(MsgType.REQUEST, b"op", 1, "al ice", False),
    "client with slash": body(MsgType.REQUEST, b"op", 1, "../etc", False),
    "client too long": body(MsgType.REQUEST, b"op", 1, "a" * 65, False),
    "client as int": body(MsgType.REQUEST, b"op", 1, 7, False),
    "client as bytes": body(MsgType.REQUEST, b"op", 1, b"alice", False),
    "read_only as int": body(MsgType.REQUEST, b"op", 1, "alice", 1),
    "reply client bad": body(MsgType.REPLY, 0, 1, "", 0, b"r"),
    "held too few fields": body(MsgType.HELD, 0, 1, "alice", 2),
    "held negative": body(MsgType.HELD, 0, 1, "alice", 2, -1),
    "held as bytes": body(MsgType.HELD, 0, 1, "alice", 2, b"\x09"),
    "held client bad": body(MsgType.HELD, 0, 1, "al ice", 2, 9),
    "batch not a list": body(MsgType.PRE_PREPARE, 0, 1, D, b"env"),
    "batch item not bytes": body(MsgType.PRE_PREPARE, 0, 1, D, [1]),
    "prepared cert not a list": body(MsgType.VIEW_CHANGE, 1, 0, [], [b"x"]),
    "state chunk proof bad digest": body(MsgType.STATE_CHUNK, 1, D, 0, 1, b"", [b"short"]),
    "status behaviour too long": body(MsgType.STATUS, 0, 0, 0, 0, "x" * 201),
    "status behaviour empty": body(MsgType.STATUS, 0, 0, 0, 0, ""),  # none is written as no field
    "status behaviour not printable": body(MsgType.STATUS, 0, 0, 0, 0, "equivocate\x00"),
    "status behaviour a newline": body(MsgType.STATUS, 0, 0, 0, 0, "a\nb"),
    "status behaviour as bytes": body(MsgType.STATUS, 0, 0, 0, 0, b"x"),
}


@pytest.mark.parametrize("name", ["x", "equivocate", "x" * 200])
def test_a_status_behaviour_name_of_up_to_200_printable_characters_is_accepted(name):
    assert from_body(body(MsgType.STATUS, 0, 0, 0, 0, name)) == Status(0, 0, 0, 0, name)
    # None (a correct replica's) is written by leaving the field out.
    assert from_body(body(MsgType.STATUS, 0, 0, 0, 0)) == Status(0, 0, 0, 0, "")


@pytest.mark.parametrize("data", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_schema_rejections(data):
    with pytest.raises(CodecError):
        from_body(data)


def test_client_name_with_trailing_newline_is_rejected():
    with pytest.raises(SchemaError):
        from_body(body(MsgType.REQUEST, b"op", 1, "alice\n", False))


def test_schema_error_is_a_codec_error():
    assert issubclass(SchemaError, CodecError)
    with pytest.raises(SchemaError):
        from_body(body(MsgType.PREPARE, 0, 1, b"\x00" * 31))


def test_operation_at_the_limit_is_accepted():
    msg = Request(b"x" * MAX_OPERATION, 1, "alice")
    assert from_body(to_body(msg)) == msg


def test_non_canonical_body_rejected():
    # PREPARE view 0 seq 1 with a non-minimal head for the seq.
    good = to_body(Prepare(0, 1, D))
    assert good[:3] == bytes.fromhex("840300") and good[3] == 0x01
    bad = good[:3] + bytes.fromhex("1801") + good[4:]
    with pytest.raises(CodecError):
        from_body(bad)


# -- envelopes ------------------------------------------------------------------------------


def test_envelope_round_trip():
    for signer in (0, 3, "alice"):
        env = Envelope(to_body(Prepare(0, 1, D)), signer, b"s" * 64)
        assert envelope_from_bytes(env.to_bytes()) == env
    empty = Envelope(b"", 1, b"")
    assert envelope_from_bytes(empty.to_bytes()) == empty


BAD_ENVELOPES = {
    "signature of 65 bytes": codec.encode([b"body", 1, b"s" * 65]),
    "not an array": codec.encode({"body": b"x"}),
    "arity 2": codec.encode([b"body", 1]),
    "arity 4": codec.encode([b"body", 1, b"sig", b"extra"]),
    "arity 0": codec.encode([]),
    "body as text": codec.encode(["body", 1, b"sig"]),
    "signature as text": codec.encode([b"body", 1, "sig"]),
    "signer as bytes": codec.encode([b"body", b"alice", b"sig"]),
    "signer as bool": codec.encode([b"body", True, b"sig"]),
    "signer as null": codec.encode([b"body", None, b"sig"]),
    "signer as list": codec.encode([b"body", [1], b"sig"]),
    "signer negative": codec.encode([b"body", -1, b"sig"]),
    "signer bad name": codec.encode([b"body", "not a name!", b"sig"]),
    "signer empty name": codec.encode([b"body", "", b"sig"]),
    "garbage": b"\xff\x00garbage",
    "truncated": codec.encode([b"body", 1, b"s" * 64])[:-3],
    "trailing byte": codec.encode([b"body", 1, b"s" * 64]) + b"\x00",
}


@pytest.mark.parametrize("data", BAD_ENVELOPES.values(), ids=BAD_ENVELOPES.keys())
def test_envelope_rejections(data):
    with pytest.raises(CodecError):
        envelope_from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_envelope_from_arbitrary_bytes_raises_only_codec_error(data):
    try:
        envelope_from_bytes(data)
    except CodecError:
        pass


@pytest.mark.parametrize(
    ("index", "value", "sentence"),
    [(3, "a b", "expected a client name"), (4, 1, "expected a boolean")],
    ids=["client", "read_only"],
)
def test_a_field_of_the_wrong_shape_says_what_was_expected(index, value, sentence):
    # Word for word: the sentence reaches the refusal's detail (a mutation test found
    # these two unread).
    fields = codec.decode(to_body(Request(b"op", 1, "alice", False)))
    fields[index] = value
    with pytest.raises(SchemaError) as caught:
        from_body(codec.encode(fields))
    assert str(caught.value) == sentence
