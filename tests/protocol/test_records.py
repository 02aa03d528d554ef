"""Durable records: each typed record survives its on-disk shape both ways, and a row of
the wrong shape is refused with `DamagedRecord` (never a TypeError later in recovery)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.events import Persist, Record
from pbft.protocol.records import (
    ACCEPTED,
    QUORUM_TAG,
    AcceptedPrePrepare,
    DamagedRecord,
    ExecutedBatch,
    PreparedCertificate,
    SignedVote,
    StableCheckpoint,
    ViewQuorum,
    ViewState,
    WindowJump,
    from_persist,
)

pytestmark = pytest.mark.timeout(60)

u64 = st.integers(0, 2**64 - 1)
blob = st.binary(max_size=64)
proof = st.lists(blob, max_size=5).map(tuple)

records = st.one_of(
    st.builds(SignedVote, st.sampled_from(["pre-prepare", "prepare", "commit", "checkpoint"]), u64, u64, blob),
    st.builds(AcceptedPrePrepare, u64, u64, blob),
    st.builds(PreparedCertificate, u64, u64, blob, proof),
    st.builds(ExecutedBatch, u64, u64, blob),
    st.builds(StableCheckpoint, u64, blob, proof),
    st.builds(WindowJump, u64, blob, proof),
    st.builds(ViewState, u64, st.booleans(), blob),
    st.builds(ViewQuorum, u64),
)


@given(records)
def test_every_record_round_trips_through_its_row(rec):
    row = rec.to_persist()
    assert from_persist(row) == rec
    assert from_persist(row).to_persist() == row


def test_rows_have_the_shape_of_storage_format_3():
    # The bytes the core wrote before records were typed (a store written by an older
    # build must still load, and this build's rows must load there).
    assert PreparedCertificate(2, 5, b"pp", (b"p1", b"p2")).to_persist() == Persist(
        Record.PREPARED, 5, 2, "", codec.encode([b"pp", b"p1", b"p2"]))
    # Format 3: a stable checkpoint's state is in the state store, not in its record.
    assert StableCheckpoint(8, b"d", (b"a",)).to_persist() == Persist(
        Record.CHECKPOINT, 0, 0, "", codec.encode([8, b"d", [b"a"]]))
    assert ViewState(3, False, b"vc").to_persist() == Persist(
        Record.VIEW, 0, 0, "", codec.encode([3, False, b"vc"]))
    assert ViewQuorum(3).to_persist() == Persist(Record.VIEW, 0, 0, QUORUM_TAG, codec.encode(3))
    assert AcceptedPrePrepare(1, 4, b"e").to_persist() == Persist(Record.VOTE, 4, 1, ACCEPTED, b"e")
    assert SignedVote("commit", 1, 4, b"e").to_persist() == Persist(Record.VOTE, 4, 1, "commit", b"e")


@pytest.mark.parametrize(
    "row",
    [
        Persist(Record.CHECKPOINT, 0, 0, "", b"\xff"),  # not CBOR
        Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([1, b"d"])),  # a field short
        Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([1, b"d", [b"a"], b"s"])),  # format 2's state
        Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([1, "d", [b"a"]])),  # text digest
        Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([-1, b"d", []])),  # negative seq
        Persist(Record.WINDOW, 0, 0, "", codec.encode([1, b"d", [7]])),  # proof of ints
        Persist(Record.PREPARED, 3, 1, "", codec.encode([])),  # no pre-prepare
        Persist(Record.PREPARED, 3, 1, "", codec.encode(b"pp")),  # not a list
        Persist(Record.VIEW, 0, 0, "", codec.encode([1, 1, b""])),  # active not a bool
        Persist(Record.VIEW, 0, 0, QUORUM_TAG, codec.encode(b"1")),
        Persist(Record.VOTE, 3, 1, "vote-for-me", b"e"),  # unknown phase
        Persist(Record.VOTE, -3, 1, "commit", b"e"),  # bad key
    ],
)
def test_a_row_of_the_wrong_shape_is_damaged(row):
    with pytest.raises(DamagedRecord, match="damaged|not canonical|bad key"):
        from_persist(row)
