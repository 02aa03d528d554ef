"""A step's output says what must be durable before which of its sends (protocol/ready.py),
and joining the outputs of several steps gives what one step with all their actions would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbft.protocol.events import Broadcast, Note, Persist, Record, Send, SendClient, Truncate
from pbft.protocol.ready import Durability, Ready

pytestmark = pytest.mark.timeout(60)

actions = st.sampled_from([
    Persist(Record.VOTE, 1, 0, "prepare", b"v"),
    Persist(Record.PREPARED, 1, 0, "", b"c"),
    Persist(Record.EXECUTED, 1, 0, "", b""),
    Persist(Record.CHECKPOINT, 0, 0, "", b"s"),
    Persist(Record.VIEW, 0, 0, "", b"w"),
    Truncate(4),
    Send(2, b"m"),
    Broadcast(b"b"),
    SendClient("c0", b"r"),
    Note("n"),
])


def test_the_three_cases():
    assert Ready.of([Note("x"), SendClient("c0", b"r")]).durability is Durability.NONE
    assert Ready.of([Persist(Record.EXECUTED, 1, 0, "", b""), SendClient("c0", b"r")]).durability \
        is Durability.MAY_FOLLOW_REPLIES
    assert Ready.of([Persist(Record.EXECUTED, 1, 0, "", b""), Broadcast(b"ckpt")]).durability \
        is Durability.BEFORE_SENDS  # a checkpoint vote leaves: the writes go first
    assert Ready.of([Persist(Record.PREPARED, 1, 0, "", b"c"), SendClient("c0", b"r")]).durability \
        is Durability.BEFORE_SENDS  # a reply rests on the prepared certificate
    # A view change's VIEW record precedes its VIEW-CHANGE on the wire whatever the order
    # the core listed them in: the whole output's writes come before any of its sends.
    r = Ready.of([Broadcast(b"view-change"), Persist(Record.VIEW, 0, 0, "", b"w")])
    assert r.durability is Durability.BEFORE_SENDS and r.writes == (Persist(Record.VIEW, 0, 0, "", b"w"),)


@given(st.lists(st.lists(actions, max_size=5), min_size=1, max_size=4))
def test_joining_outputs_is_one_output_with_all_their_actions(steps):
    joined = Ready.join(Ready.of(s) for s in steps)
    whole = Ready.of(a for s in steps for a in s)
    assert joined == whole
    assert list(joined) == [a for s in steps for a in s]
