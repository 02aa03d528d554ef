"""The node's inbox is bounded in bytes as well as in inputs (issue 13, item 8): frames of
up to 16 MiB in a queue of 4096 inputs were bounded only by the product of two maxima."""

from __future__ import annotations

import pytest
import trio

from pbft.node.node import INBOX_BYTES, BoundedInbox, ReplicaNode
from pbft.protocol.events import Received, Tick

pytestmark = pytest.mark.timeout(30)


async def test_a_frame_that_does_not_fit_waits_until_the_step_loop_takes_one():
    send, recv = trio.open_memory_channel(100)
    inbox = BoundedInbox(send, limit=100)
    inbox.send_nowait(Received(1, b"x" * 60))
    inbox.send_nowait(Tick())  # ticks cost nothing
    with pytest.raises(trio.WouldBlock):
        inbox.send_nowait(Received(1, b"y" * 60))
    got = []

    async def sender():
        await inbox.send(Received(2, b"z" * 60))
        got.append("sent")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.sleep(0.05)
        assert got == [] and inbox.bytes == 60  # waiting for room
        inbox.taken(recv.receive_nowait())
        inbox.taken(recv.receive_nowait())
    assert got == ["sent"] and inbox.bytes == 60


def test_one_frame_larger_than_the_bound_still_gets_in():
    send, _ = trio.open_memory_channel(10)
    inbox = BoundedInbox(send, limit=10)
    inbox.send_nowait(Received(1, b"x" * 50))  # an empty inbox takes any one frame
    assert inbox.bytes == 50


def test_the_node_hands_its_bounded_inbox_to_the_transport_and_releases_what_it_steps():
    from conftest import make_config, make_replica

    cfg = make_config()
    node = ReplicaNode(cfg, make_replica(cfg, 1), server_context=None, client_context=None, identify=None)
    inbox = node.transport.inbox
    assert isinstance(inbox, BoundedInbox) and inbox.limit == INBOX_BYTES
    inbox.send_nowait(Received(0, b"garbage" * 10))
    assert inbox.bytes == 70
    node._step(node._recv.receive_nowait())  # a malformed frame: rejected and released
    assert inbox.bytes == 0
