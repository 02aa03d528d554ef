"""The default replicated service: a deterministic key-value store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.service.kv import (
    MAX_KEY,
    MAX_VALUE,
    KeyValueStore,
    decode_result,
    is_read_only,
    op_delete,
    op_get,
    op_put,
)


def run(kv, op):
    return decode_result(kv.execute(op, "alice"))


def test_put_get_delete():
    kv = KeyValueStore()
    assert run(kv, op_get(b"k")) is None
    assert run(kv, op_put(b"k", b"v")) is True
    assert run(kv, op_get(b"k")) == b"v"
    assert run(kv, op_put(b"k", b"w")) is True
    assert run(kv, op_get(b"k")) == b"w"
    assert run(kv, op_delete(b"k")) is True
    assert run(kv, op_delete(b"k")) is False
    assert run(kv, op_get(b"k")) is None
    assert run(kv, op_put(b"", b"")) is True and run(kv, op_get(b"")) == b""


def test_query_answers_gets_only():
    kv = KeyValueStore()
    kv.execute(op_put(b"k", b"v"), "alice")
    assert decode_result(kv.query(op_get(b"k"), "bob")) == b"v"
    assert kv.query(op_put(b"k", b"x"), "bob") is None
    assert kv.query(b"\xff", "bob") is None
    assert kv.data == {b"k": b"v"}
    assert is_read_only(op_get(b"k")) and not is_read_only(op_put(b"k", b"v"))
    assert not is_read_only(b"\xff")


MALFORMED = {
    "not CBOR": b"\xff\xff",
    "not canonical": bytes.fromhex("1805"),
    "not a list": codec.encode({"put": [b"k"]}),
    "empty list": codec.encode([]),
    "name not text": codec.encode([b"put", b"k", b"v"]),
    "unknown name": codec.encode(["frobnicate", b"k"]),
    "put missing value": codec.encode(["put", b"k"]),
    "get extra argument": codec.encode(["get", b"k", b"x"]),
    "delete no key": codec.encode(["delete"]),
    "text key": codec.encode(["put", "k", b"v"]),
    "int value": codec.encode(["put", b"k", 5]),
    "key too long": op_put(b"k" * (MAX_KEY + 1), b"v"),
    "value too long": op_put(b"k", b"v" * (MAX_VALUE + 1)),
}


@pytest.mark.parametrize("op", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_operations_give_error_results(op):
    kv = KeyValueStore()
    kv.execute(op_put(b"k", b"v"), "alice")
    result = run(kv, op)
    assert isinstance(result, dict) and isinstance(result["error"], str)
    assert kv.data == {b"k": b"v"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_operations_never_raise(op):
    kv = KeyValueStore()
    codec.decode(kv.execute(op, "alice"))
    kv.query(op, "alice")


ops = st.lists(
    st.one_of(
        st.builds(op_put, st.binary(max_size=3), st.binary(max_size=5)),
        st.builds(op_delete, st.binary(max_size=3)),
        st.builds(op_get, st.binary(max_size=3)),
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_snapshot_restore_round_trip_and_digest(script):
    kv = KeyValueStore()
    for op in script:
        kv.execute(op, "alice")
    other = KeyValueStore()
    other.restore(kv.snapshot())
    assert other.data == kv.data
    assert other.digest() == kv.digest() and len(kv.digest()) == 32
    assert other.snapshot() == kv.snapshot()


@settings(max_examples=100, deadline=None)
@given(ops)
def test_deterministic_across_replicas(script):
    a, b = KeyValueStore(), KeyValueStore()
    assert [a.execute(op, "x") for op in script] == [b.execute(op, "y") for op in script]
    assert a.digest() == b.digest()


def test_digest_depends_on_state_not_history():
    a, b = KeyValueStore(), KeyValueStore()
    a.execute(op_put(b"x", b"1"), "c")
    a.execute(op_put(b"y", b"2"), "c")
    b.execute(op_put(b"y", b"2"), "c")
    b.execute(op_put(b"x", b"0"), "c")
    assert a.digest() != b.digest()
    b.execute(op_put(b"x", b"1"), "c")
    assert a.digest() == b.digest()


GARBAGE = {
    "not CBOR": b"\xff",
    "empty": b"",
    "not a list": codec.encode({"k": b"v"}),
    "pair too short": codec.encode([[b"k"]]),
    "pair too long": codec.encode([[b"k", b"v", b"x"]]),
    "text key": codec.encode([["k", b"v"]]),
    "int value": codec.encode([[b"k", 1]]),
    "trailing bytes": codec.encode([]) + b"\x00",
}


@pytest.mark.parametrize("snap", GARBAGE.values(), ids=GARBAGE.keys())
def test_restore_rejects_garbage_with_value_error(snap):
    kv = KeyValueStore()
    kv.execute(op_put(b"k", b"v"), "alice")
    with pytest.raises(ValueError):
        kv.restore(snap)
    assert kv.data == {b"k": b"v"}
