"""pbft.node.client: the timer task sleeps until the outstanding request's
retransmission is due, and a new request is timed from its own submit (virtual time,
no sockets: a recorder stands in for the transport)."""

from __future__ import annotations

import trio
import trio.testing
from conftest import client_key, make_config

from pbft.node.client import Client
from pbft.protocol.messages import Request, envelope_from_bytes, from_body
from pbft.service.kv import op_put


class Recorder:
    """The transport's sending side: (virtual time, replica, request timestamp)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, int, int]] = []

    def send(self, to: int, data: bytes) -> bool:
        req = from_body(envelope_from_bytes(data).body)
        assert isinstance(req, Request)
        self.sent.append((trio.current_time(), to, req.timestamp))
        return True

    def flush(self) -> None:
        pass


def retransmissions(sent, timestamp: int) -> list[float]:
    """When the request with `timestamp` went to every replica (n sends at one instant)."""
    times = [t for t, _, ts in sent if ts == timestamp]
    return sorted({t for t in times if times.count(t) > 1})


async def test_a_new_request_is_not_timed_by_the_previous_ones_backed_off_timer(autojump_clock):
    # view_change_timeout 1000 ms, tick 10 ms: retransmit after 250 ms, doubling, capped.
    cfg = make_config()
    rec = Recorder()
    client = Client(cfg, "alice", client_key("alice"), rec, timeout=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._timer_loop)
        start = trio.current_time()
        with trio.move_on_after(2.0):  # a silent cluster: A backs off, then is given up
            await client.execute(op_put(b"k", b"a"))
        first = rec.sent[0][2]
        assert [round(t - start, 2) for t in retransmissions(rec.sent, first)] == [0.25, 0.75, 1.75]
        nursery.start_soon(client.execute, op_put(b"k", b"b"))
        await trio.sleep(0.3)
        second = rec.sent[-1][2]
        assert second > first
        # B goes to everyone 250 ms after its own submit, not when A's next retry was due.
        assert [round(t - start, 2) for t in retransmissions(rec.sent, second)] == [2.25]
        nursery.cancel_scope.cancel()
