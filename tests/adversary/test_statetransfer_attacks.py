"""`lying-state-transfer` against a 4-replica in-memory cluster, and the broken variant
`unverified-chunk` it exposes (docs/attacks.md; TOCS 2002 section 5.3).

A replica cut off while the others move two checkpoints ahead must, once it is back,
fetch the stable state, walking the partition tree from the signed root. The faulty
replica is one of its sources; whatever it serves (corrupted, forged, stale, late,
nothing) the lagging replica verifies every node and leaf, uses the other sources, and
ends with the same state as the others. A replica that skips the checks installs the lie.
"""

from __future__ import annotations

import hashlib

import pytest
from test_viewchange_attacks import Net

from pbft.adversary.broken import BROKEN
from pbft.protocol.events import Executed, Reason, Received, StateInstalled
from pbft.protocol.messages import StateChunk
from pbft.protocol.partition import DEPTH, EMPTY, FANOUT
from pbft.protocol.replica import Replica
from pbft.protocol.statetransfer import Transfer


def assert_safe(c: Net) -> None:
    """test_behaviours.assert_safe, for replicas that may skip ahead by state transfer:
    no two honest replicas execute different batches at one seq, each executes in order
    (contiguously, except for a jump to an installed checkpoint), each (client, timestamp)
    executes fresh at most once, and all end at the same point with the same state."""
    honest = [i for i in range(4) if i not in c.byz]
    by_seq: dict[int, tuple] = {}
    fresh: dict[int, set] = {}
    for i in honest:
        last = 0
        for a in c.actions[i]:
            if isinstance(a, StateInstalled):
                assert a.seq >= last, f"replica {i} installed {a.seq} behind {last}"
                last = a.seq
            elif isinstance(a, Executed):
                key = (a.digest, tuple((r.client, r.timestamp, r.operation) for r in a.requests))
                assert by_seq.setdefault(a.seq, key) == key, f"replicas disagree at seq {a.seq}"
                assert a.seq == last + 1, f"replica {i} executed {a.seq} after {last}"
                last = a.seq
                for r in a.requests:
                    if r.fresh:
                        assert (r.client, r.timestamp) not in fresh.setdefault(i, set())
                        fresh[i].add((r.client, r.timestamp))
    assert len({c.cores[i].last_executed for i in honest}) == 1
    assert len({c.cores[i].state_digest() for i in honest}) == 1, "state digests differ"


def lagging_replica_catches_up(params, replica_cls=Replica, rounds=6):
    """Replica 3 misses `rounds` rounds (two clients each: a batch per request), the
    faulty replica 1 serves state transfer; then 3 comes back and the run settles."""
    c = Net(byz=(1, "lying-state-transfer", params), replica_cls=replica_cls)
    c.cut.add(3)
    c.workload(rounds)
    assert c.cores[0].stable_seq >= 8 and c.cores[3].last_executed == 0
    c.cut.clear()
    c.tick(60)
    return c


@pytest.mark.parametrize("mode", ["corrupt", "forge", "stale"])
def test_wrong_chunks_are_rejected_and_other_sources_used(mode):
    c = lagging_replica_catches_up({"modes": [mode]})
    beh = c.behaviour(1)
    assert beh.made and set(beh.made) == {mode}
    served = [sc for _, sc in c.received(3, StateChunk, src=1)]
    assert served
    assert c.rejects(Reason.BAD_DIGEST, peer=1) >= 1
    assert any("state node" in d for d in c.details(Reason.BAD_DIGEST, peer=1))
    lag = c.cores[3]
    assert lag.transfers_completed >= 1 and lag.transfer is None
    assert [a.seq for a in c.of(3, StateInstalled)] and lag.stable_seq == c.cores[0].stable_seq
    assert lag.state_digest() == c.cores[0].state_digest() == c.cores[2].state_digest()
    c.workload(2)
    assert c.done("alice") == c.done("bob") == 8
    assert_safe(c)


@pytest.mark.parametrize("mode", ["slow", "silent"])
def test_slow_or_silent_source_is_routed_around(mode):
    c = lagging_replica_catches_up({"modes": [mode], "delay_ms": 2000})
    assert set(c.behaviour(1).made) == {mode}
    assert not c.received(3, StateChunk, src=1) or mode == "slow"
    lag = c.cores[3]
    assert lag.transfers_completed >= 1
    assert lag.state_digest() == c.cores[0].state_digest()
    c.workload(2)
    assert c.done("alice") == c.done("bob") == 8
    assert_safe(c)


def test_every_mode_at_once_is_survived():
    c = lagging_replica_catches_up({})
    assert c.cores[3].state_digest() == c.cores[0].state_digest()
    assert_safe(c)


def test_lying_state_transfer_is_harmless_without_a_lagging_replica():
    c = Net(byz=(1, "lying-state-transfer", {}))
    c.workload(6)
    assert c.done("alice") == c.done("bob") == 6 and not c.behaviour(1).made
    assert_safe(c)


# -- the broken variant --------------------------------------------------------------------------


def test_unverified_chunk_differs_on_an_answer_that_does_not_verify():
    trusted = hashlib.sha256(b"the agreed state").digest()
    empty = EMPTY[DEPTH - 1] * FANOUT  # the root's children of an empty state, not `trusted`'s
    for cls, installed in ((Replica, False), (BROKEN["unverified-chunk"], True)):
        c = Net(replica_cls=cls)
        rep = c.cores[3]
        rep.transfer = Transfer(4, trusted, (), [0], rep.store.tree_now().levels)
        sc = StateChunk(4, trusted, DEPTH, 0, 0, 1, empty)
        out = rep.step(Received(0, c.cores[0].safety.sign_other(sc).to_bytes()))
        assert any(isinstance(a, StateInstalled) for a in out) == installed
        assert (rep.last_executed == 4) == installed


@pytest.mark.parametrize("mode", ["forge", "stale"])
def test_unverified_chunk_installs_the_lie(mode):
    honest = lagging_replica_catches_up({"modes": [mode]})
    assert_safe(honest)
    broken = lagging_replica_catches_up({"modes": [mode]}, BROKEN["unverified-chunk"])
    lag = broken.cores[3]
    assert lag.transfers_completed >= 1 and broken.rejects(Reason.BAD_DIGEST, peer=1) == 0
    assert lag.last_executed >= broken.cores[0].stable_seq
    assert lag.state_digest() != broken.cores[0].state_digest()
    with pytest.raises(AssertionError):
        assert_safe(broken)
