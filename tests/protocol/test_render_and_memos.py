"""What the traces and logs print of a message (`messages.render`), and the simulator's
memos of decoding and signing (`messages.DecodeMemo`, `crypto.Memo`): they answer as a
core computing for itself would, from bounded tables.

Found by a sampled mutation run (docs/mutation.md): the other tests only asked that a
rendered line be one line, and ran the memos far below their bounds."""

from __future__ import annotations

import pytest

from pbft.protocol import codec
from pbft.protocol.crypto import KeyPair, Memo, memoised, seal
from pbft.protocol.messages import (
    Batch,
    Checkpoint,
    Commit,
    DecodeMemo,
    Epochs,
    FetchBatch,
    FetchState,
    Held,
    NewView,
    Prepare,
    PrePrepare,
    QueryStatus,
    Reply,
    Request,
    StableProof,
    StateChunk,
    Status,
    ViewChange,
    envelope_type,
    render,
)

D = b"\x11" * 32

RENDERED = [
    (Request(b"op", 1, "alice"), "REQUEST c=alice t=1 op=2B"),
    (Request(b"", 5, "bob", True), "REQUEST c=bob t=5 op=0B ro"),
    (PrePrepare(3, 7, D, (b"a", b"b")), "PRE-PREPARE v=3 n=7 d=11111111 batch=2"),
    (PrePrepare(3, 7, D), "PRE-PREPARE v=3 n=7 d=11111111 batch=detached"),
    (Prepare(0, 1, D), "PREPARE v=0 n=1 d=11111111"),
    (Commit(2, 9, D), "COMMIT v=2 n=9 d=11111111"),
    (Reply(2, 5, "bob", 3, b"result"), "REPLY v=2 t=5 c=bob r=3 result=6B"),
    (Checkpoint(128, D), "CHECKPOINT n=128 d=11111111"),
    (ViewChange(1, 0, (b"x",), ()), "VIEW-CHANGE v=1 n=0 proof=1 P=0"),
    (NewView(2, (b"a", b"b"), ()), "NEW-VIEW v=2 V=2 O=0"),
    (FetchState(4, D, 2, 17, 3), "FETCH-STATE n=4 d=11111111 node=2/17 part=3"),
    (StateChunk(4, D, 0, 5, 1, 3, b"abcd"), "STATE-CHUNK n=4 d=11111111 node=0/5 2/3 4B"),
    (Status(1, 9, 8, 2, "equivocate"), "STATUS v=1 last=9 stable=8 log=2"),
    (QueryStatus(77), "QUERY-STATUS nonce=77"),
    (Held(0, 1, "alice", 2, 500), "HELD v=0 t=1 c=alice r=2 held=500"),
    (StableProof(8, (b"a", b"b", b"c")), "STABLE-PROOF n=8 proof=3"),
    (FetchBatch(3, D), "FETCH-BATCH n=3 d=11111111"),
    (Batch(3, D, (b"r",)), "BATCH n=3 d=11111111 requests=1"),
    (Epochs(()), "EPOCHS entries=0"),
]


@pytest.mark.parametrize(("msg", "line"), RENDERED, ids=[line.split()[0] for _, line in RENDERED])
def test_each_message_renders_as_its_line(msg, line):
    assert render(msg) == line


def test_envelope_type_reads_a_one_item_body_and_refuses_a_type_above_23():
    # [type] alone: the smallest array a message body can be.
    assert envelope_type(codec.encode([codec.encode([7]), 0, b"s"])) == 7
    # Types are below 24 (one-byte heads); a larger one is not a type this reads.
    assert envelope_type(codec.encode([codec.encode([24, 1]), 0, b"s"])) == -1
    assert envelope_type(codec.encode([codec.encode([23, 1]), 0, b"s"])) == 23


def test_the_decode_memo_answers_from_what_it_decoded():
    key = KeyPair.from_seed(b"memo")
    data = seal(key, "c", 0, Prepare(0, 1, D)).to_bytes()
    memo = DecodeMemo()
    first = memo.decode(data)
    assert memo.decode(data)[1] is first[1]  # the same objects: decoded once
    assert memo.decode(bytearray(data)) == first  # not a key: decoded, not kept


def test_the_decode_memo_stays_within_its_bounds():
    key = KeyPair.from_seed(b"memo")
    frames = [seal(key, "c", 0, Prepare(0, n, D)).to_bytes() for n in range(1, 6)]
    memo = DecodeMemo(max_entries=2)
    for f in frames:
        memo.decode(f)
    assert len(memo._entries) == 2 and list(memo._entries) == frames[-2:]
    memo = DecodeMemo(max_bytes=2 * len(frames[0]))
    for f in frames:
        memo.decode(f)
    assert len(memo._entries) == 2 and memo._bytes == sum(map(len, frames[-2:]))


def test_the_signature_memo_stays_within_its_bounds_table_by_table():
    keys = [KeyPair.from_seed(b"k%d" % i) for i in range(5)]
    memo = Memo(max_entries=2)
    with memoised(memo):
        for k in keys:
            seal(k, "c", 0, Prepare(0, 1, D))
    assert len(memo._signatures) == 2 and len(memo._made) == 2
    probe = Memo()
    with memoised(probe):
        seal(keys[0], "c", 0, Prepare(0, 1, D))
    payload = probe._bytes[0]  # the bytes one signature's payload holds (all alike here)
    assert payload > 0 and probe._bytes[1] == payload
    memo = Memo(max_bytes=3 * payload)
    with memoised(memo):
        for k in keys:
            seal(k, "c", 0, Prepare(0, 1, D))
    # Each table counts the bytes of its own payloads: the signatures' and the made's.
    assert len(memo._signatures) == len(memo._made) == 3
    assert memo._bytes[0] == memo._bytes[1] <= 3 * payload and memo._bytes[2] == 0
