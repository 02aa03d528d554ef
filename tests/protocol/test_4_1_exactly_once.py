"""Exactly once (OSDI'99 section 4.1): an old timestamp is not executed again, the latest
one's retransmission gets the cached reply, a duplicate inside a batch executes once.

Init, act, check against one replica of a 4-replica f=1 cluster (tests/conftest.py, "one
replica under test").
"""

from __future__ import annotations

import pytest
from conftest import (
    actions_of,
    decoded,
    execute_batch,
    feed,
    make_replica,
    put,
    rejections,
    replies,
)

from pbft.protocol import codec
from pbft.protocol.events import (
    Executed,
    Reason,
    Send,
    SendClient,
)
from pbft.protocol.messages import (
    Held,
)
from pbft.service.kv import KeyValueStore

# -- 4.1: exactly once ------------------------------------------------------------------------


class CountingKV(KeyValueStore):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def execute(self, operation, client):
        self.calls += 1
        return super().execute(operation, client)


@pytest.fixture
def counting_backup(cfg):
    rep = make_replica(cfg, 1)
    rep.service = CountingKV()
    return rep


def test_old_timestamp_is_not_executed_again(counting_backup):
    rep = counting_backup
    execute_batch(rep, 1, (put("alice", 1, value=b"one"),))
    execute_batch(rep, 2, (put("alice", 2, value=b"two"),))
    assert rep.service.calls == 2
    # Sent directly: refused as stale; no reply, only the timestamp we hold (held.py).
    actions = feed(rep, "alice", put("alice", 1, value=b"one"))
    assert rejections(actions) == [Reason.STALE]
    [told] = actions_of(actions, SendClient)
    assert decoded(told.data)[1] == Held(0, 1, "alice", 1, 2)
    # Ordered again by a faulty primary: a no-op.
    actions = execute_batch(rep, 3, (put("alice", 1, value=b"one"),))
    [ex] = actions_of(actions, Executed)
    assert [r.fresh for r in ex.requests] == [False]
    assert replies(actions) == []  # the client has moved on: nothing to answer
    assert rep.service.calls == 2 and rep.service.data == {b"k": b"two"}
    assert rep.replies.records["alice"].timestamp == 2


def test_retransmission_of_the_latest_gets_the_cached_reply(counting_backup):
    rep = counting_backup
    first = execute_batch(rep, 1, (put("alice", 1),))
    [original] = replies(first)
    actions = feed(rep, "alice", put("alice", 1))
    assert replies(actions) == [original]
    assert rep.service.calls == 1
    assert actions_of(actions, Send) == []  # not relayed for ordering again


def test_duplicate_inside_a_batch_executes_once(counting_backup):
    rep = counting_backup
    data = put("alice", 1)
    actions = execute_batch(rep, 1, (data, data))
    [ex] = actions_of(actions, Executed)
    assert [r.fresh for r in ex.requests] == [True, False]
    assert rep.service.calls == 1
    # Each is answered, the second with the cached reply (the latest timestamp's).
    assert [(r.timestamp, r.result) for r in replies(actions)] == [(1, codec.encode(True))] * 2
