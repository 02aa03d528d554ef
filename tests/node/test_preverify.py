"""The pre-verification stage (pbft.node.preverify): which signatures of a group go to the
worker threads, that every input is forwarded in order once its group's verdicts are in,
and that the core then finds them instead of verifying on the event loop."""

from __future__ import annotations

import pytest
import trio
from conftest import make_config, make_replica, sign_pre_prepare, sign_prepare, sign_request

from pbft.node.node import ReplicaNode
from pbft.node.preverify import MIN_JOBS, PreVerify
from pbft.protocol.crypto import Verifier, batch_digest
from pbft.protocol.events import Received, Tick

pytestmark = pytest.mark.timeout(30)

CFG = make_config(clients=tuple(f"c{i}" for i in range(2 * MIN_JOBS)))


def _verifier() -> Verifier:
    return Verifier(CFG.signing_domain, CFG.member_keys(), memo=1000)


def test_a_pre_prepare_brings_its_batch_and_a_client_counts_once_per_group():
    batch = tuple(sign_request(f"c{i}", b"op", 1) for i in range(MIN_JOBS))
    pp = sign_pre_prepare(1, batch)
    pool = PreVerify(_verifier(), 2)
    parts = pool.plan([Received(0, pp), Tick()])
    assert sum(map(len, parts)) == MIN_JOBS + 1 and len(parts) == 1  # too few for two parts
    flood = [Received("c0", sign_request("c0", b"op", t)) for t in range(1, 20)]
    others = [Received(f"c{i}", sign_request(f"c{i}", b"op", 1)) for i in range(1, 2 * MIN_JOBS)]
    parts = pool.plan(flood + others)
    assert sum(map(len, parts)) == 2 * MIN_JOBS and len(parts) == 2  # c0's 19 requests: one
    assert pool.plan([Received(1, sign_prepare(1, 1, batch_digest(batch)))] * (MIN_JOBS - 1)) == []
    assert pool.plan([Received(1, b"garbage")] * 10) == []


async def test_inputs_are_forwarded_in_order_with_the_verdicts_in():
    v = _verifier()
    pool = PreVerify(v, 2)
    inputs = [Received(f"c{i}", sign_request(f"c{i}", b"op", 1)) for i in range(2 * MIN_JOBS)]
    inputs.insert(3, Tick())
    src_send, src = trio.open_memory_channel(100)
    out, out_recv = trio.open_memory_channel(100)
    for x in inputs:
        src_send.send_nowait(x)
    src_send.close()
    with trio.fail_after(10):
        await pool.run(src, out)
    assert [out_recv.receive_nowait() for _ in inputs] == inputs
    assert pool.offloaded == v.checked == 2 * MIN_JOBS and pool.hops == 2
    core = make_replica(CFG, 0, v)
    for x in inputs:
        if type(x) is Received:
            core.step(x)
    assert v.checked == 2 * MIN_JOBS  # the core found every verdict


def test_without_a_memo_the_node_verifies_inline():
    node = ReplicaNode(CFG, make_replica(CFG, 1), server_context=None, client_context=None, identify=None,
                       verify_threads=2)
    assert node.preverify is None
    node = ReplicaNode(CFG, make_replica(CFG, 1, _verifier()), server_context=None, client_context=None,
                       identify=None, verify_threads=2)
    assert node.preverify is not None and node.preverify.threads == 2
