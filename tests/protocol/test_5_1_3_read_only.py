"""Read-only requests (OSDI'99 section 5.1.3): answered from the current state without
ordering; only queries may take that path.

Init, act, check against one replica of a 4-replica f=1 cluster (tests/conftest.py, "one
replica under test").
"""

from __future__ import annotations

import pytest
from conftest import (
    actions_of,
    feed,
    make_replica,
    rejections,
    replies,
    sign_request,
    snapshot,
)

from pbft.protocol.events import (
    Broadcast,
    Reason,
    Send,
)
from pbft.service.kv import decode_result, op_get, op_put

# -- 5.1.3: read-only ------------------------------------------------------------------------


@pytest.mark.parametrize("who", [0, 1])
def test_read_only_is_answered_from_current_state_without_ordering(cfg, who):
    rep = make_replica(cfg, who)
    rep.service.data[b"k"] = b"v"
    before = snapshot(rep)
    actions = feed(rep, "alice", sign_request("alice", op_get(b"k"), 7, read_only=True))
    assert actions_of(actions, Broadcast) == [] and actions_of(actions, Send) == []
    [reply] = replies(actions)
    assert (reply.timestamp, reply.client, reply.replica) == (7, "alice", who)
    assert decode_result(reply.result) == b"v"
    assert snapshot(rep) == before


def test_read_only_that_is_not_a_query_is_rejected(backup):
    before = snapshot(backup)
    actions = feed(backup, "alice", sign_request("alice", op_put(b"k", b"v"), 1, read_only=True))
    assert rejections(actions) == [Reason.BAD_REQUEST]
    assert snapshot(backup) == before
