"""Each deliberately broken replica differs from the honest one on a crafted input (so
none is a no-op), and the scenario named in its docstring makes the breakage visible to
the checks in test_behaviours.assert_safe (or the extra check the docstring names)."""

from __future__ import annotations

import pytest
from test_behaviours import Cluster, assert_safe

from pbft.adversary.broken import BROKEN
from pbft.protocol.crypto import batch_digest, seal
from pbft.protocol.events import Committed, Executed, Prepared, Received
from pbft.protocol.messages import Checkpoint, Commit, Prepare, PrePrepare, Request
from pbft.protocol.replica import Replica
from pbft.service.kv import op_put


def make(cls):
    c = Cluster()
    ckey = __import__("pbft.protocol.crypto", fromlist=["KeyPair"]).KeyPair.from_seed(b"alice")
    rep = cls(c.cfg, 1, c.keys[1], type(c.cores[1].service)(), c.cores[1].verifier)
    return c, rep, ckey


def signed(c, signer, msg):
    return seal(c.keys[signer], "t", signer, msg).to_bytes()


def request(ckey, ts=1, op=b"v"):
    return seal(ckey, "t", "alice", Request(op_put(b"k", op), ts, "alice")).to_bytes()


def feed(rep, src, data):
    return rep.step(Received(src, data))


def pre_prepare(c, seq, batch, digest=None, view=0):
    return signed(c, 0, PrePrepare(view, seq, digest or batch_digest(batch), batch))


def drive_slot(c, rep, seq, batch):
    """Pre-prepare from 0, prepares from 2 and 3, commits from 0, 2, 3: a full slot."""
    d = batch_digest(batch)
    out = feed(rep, 0, pre_prepare(c, seq, batch))
    for r in (2, 3):
        out += feed(rep, r, signed(c, r, Prepare(0, seq, d)))
    for r in (0, 2, 3):
        out += feed(rep, r, signed(c, r, Commit(0, seq, d)))
    return out


def kinds(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_every_variant_is_documented_and_distinct():
    assert len(BROKEN) >= 7
    for name, cls in BROKEN.items():
        assert issubclass(cls, Replica) and cls is not Replica
        assert "Caught by" in cls.__doc__ and "Scenario" in cls.__doc__, name


def test_weak_prepare_quorum_prepares_on_its_own_vote():
    for cls, expect in ((Replica, 0), (BROKEN["weak-prepare-quorum"], 1)):
        c, rep, ck = make(cls)
        out = feed(rep, 0, pre_prepare(c, 1, (request(ck),)))
        assert len(kinds(out, Prepared)) == expect


def test_no_digest_check_accepts_a_mismatched_digest():
    for cls, expect in ((Replica, 0), (BROKEN["no-digest-check"], 1)):
        c, rep, ck = make(cls)
        a, b = (request(ck, 1, b"a"),), (request(ck, 1, b"b"),)
        feed(rep, 0, pre_prepare(c, 1, b, digest=batch_digest(a)))
        assert (rep.log.get(1) is not None and rep.log.get(1).pre_prepare is not None) == expect
    # ...and the module-level digest function is restored afterwards.
    from pbft.protocol import replica

    assert replica.batch_digest is batch_digest


def test_count_duplicate_votes_counts_an_echo_of_its_own_prepare():
    for cls, expect in ((Replica, 0), (BROKEN["count-duplicate-votes"], 1)):
        c, rep, ck = make(cls)
        batch = (request(ck),)
        feed(rep, 0, pre_prepare(c, 1, batch))
        echo = signed(c, 1, Prepare(0, 1, batch_digest(batch)))
        assert len(kinds(feed(rep, 0, echo), Prepared)) == expect


def test_no_exactly_once_executes_a_reordered_request_again():
    for cls, fresh in ((Replica, [True, False]), (BROKEN["no-exactly-once"], [True, True])):
        c, rep, ck = make(cls)
        batch = (request(ck),)
        out = drive_slot(c, rep, 1, batch) + drive_slot(c, rep, 2, batch)
        assert [r.fresh for e in kinds(out, Executed) for r in e.requests] == fresh


def test_no_watermark_check_accepts_far_ahead():
    for cls, expect in ((Replica, False), (BROKEN["no-watermark-check"], True)):
        c, rep, ck = make(cls)
        feed(rep, 0, pre_prepare(c, 1000, (request(ck),)))
        assert (rep.log.get(1000) is not None) == expect


def test_commit_unprepared_commits_without_prepares():
    for cls, expect in ((Replica, 0), (BROKEN["commit-unprepared"], 1)):
        c, rep, ck = make(cls)
        batch = (request(ck),)
        out = feed(rep, 0, pre_prepare(c, 1, batch))
        for r in (0, 2, 3):
            out += feed(rep, r, signed(c, r, Commit(0, 1, batch_digest(batch))))
        assert len(kinds(out, Committed)) == expect and not kinds(out, Prepared)


def test_weak_checkpoint_quorum_is_stable_with_f_plus_one():
    for cls, expect in ((Replica, 0), (BROKEN["weak-checkpoint-quorum"], 4)):
        c, rep, _ = make(cls)
        d = bytes(range(32))
        for r in (2, 3):
            feed(rep, r, signed(c, r, Checkpoint(4, d)))
        assert rep.stable_seq == expect


# -- the scenarios of the docstrings make each breakage visible ---------------------------


@pytest.mark.parametrize(
    "variant,byz,rounds",
    [
        ("weak-prepare-quorum", (0, "equivocate", {}), 1),
        ("no-digest-check", (0, "bad-digest", {"mode": "swap", "to": [2, 3]}), 1),
        ("count-duplicate-votes", (0, "equivocate", {"reflect": True}), 1),
        ("no-exactly-once", (0, "duplicate-request", {}), 2),
        ("no-watermark-check", (0, "out-of-window", {"mode": "high", "keep_honest": True}), 12),
    ],
)
def test_scenario_exposes_variant(variant, byz, rounds):
    honest = Cluster(byz=byz)
    honest.workload(rounds, clients=("alice",))
    assert_safe(honest, same_state=False)
    broken = Cluster(byz=byz, replica_cls=BROKEN[variant])
    broken.workload(rounds, clients=("alice",))
    with pytest.raises(AssertionError):
        assert_safe(broken, same_state=False)


def test_weak_checkpoint_quorum_proof_is_short():
    c = Cluster(replica_cls=BROKEN["weak-checkpoint-quorum"])
    c.workload(2)
    assert all(r.stable_seq == 4 for r in c.cores)
    assert any(len(r.checkpoints.stable_proof) < c.cfg.quorum for r in c.cores)
    h = Cluster()
    h.workload(2)
    assert all(len(r.checkpoints.stable_proof) == h.cfg.quorum for r in h.cores)
