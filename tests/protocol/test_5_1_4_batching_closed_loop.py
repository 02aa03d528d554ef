"""Batching under a closed loop, end to end on four cores connected in memory.

C clients, each submitting its next put as soon as the last one completed (one request
outstanding each, OSDI'99 4.1). Without the primary's wait for the clients of the batch it
just executed (Batching.expect_returns), the clients split into two groups whose batches
alternate, and batches hold C/2 requests on average; with it, nearly all C.
"""

from __future__ import annotations

import statistics

from conftest import Router, decoded, make_config

from pbft.protocol.events import Broadcast, Completed, Tick
from pbft.protocol.messages import PrePrepare
from pbft.service.kv import op_put


def test_closed_loop_batches_hold_nearly_every_client():
    clients = tuple(f"c{i:02}" for i in range(16))
    net = Router.build(make_config(clients=clients, batch_max=256, pipeline=8, log_window=64,
                                   checkpoint_interval=32))
    sizes: list[int] = []
    rounds = 30
    perform = net.perform

    def closed_loop(src, actions):
        perform(src, actions)
        for a in actions:
            if src == 0 and isinstance(a, Broadcast):
                msg = decoded(a.data)[1]
                if isinstance(msg, PrePrepare):
                    sizes.append(len(msg.batch))
            if isinstance(a, Completed) and a.timestamp < rounds:
                net.submit(src, op_put(src.encode(), b"%d" % a.timestamp))

    net.perform = closed_loop
    for c in clients:
        net.submit(c, op_put(c.encode(), b"0"))
    for _ in range(200):
        net.run()
        if len(net.completed) == len(clients) * rounds:
            break
        for r, rep in enumerate(net.replicas):  # quiet: time passes
            net.perform(r, rep.step(Tick()))
    assert len(net.completed) == len(clients) * rounds
    # The median: the first batches and the last ones (clients finishing) are smaller.
    assert statistics.median(sizes) >= 0.8 * len(clients), sizes
