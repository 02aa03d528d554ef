"""View-change attacks against a 4-replica in-memory cluster (docs/attacks.md rows
`fake-prepared-cert`, `drop-cert`, `bad-new-view`, `view-change-storm`).

Each test shows that the attack really happens (what honest replicas received and the
reason they counted when they refused it), that honest replicas stay safe
(test_behaviours.assert_safe), and, where the attack targets liveness, that progress
resumes. View changes are provoked with network faults only (a cut replica, lost
messages), so at most one replica is faulty. The deliberately broken variants of
pbft.adversary.broken that these attacks exploit are shown to break agreement here.
"""

from __future__ import annotations

import random

import pytest
from test_behaviours import Cluster, assert_safe

from pbft.adversary.broken import BROKEN
from pbft.adversary.catalogue import REGISTRY
from pbft.adversary.wire import open_envelope
from pbft.protocol.crypto import NULL_DIGEST, batch_digest, seal
from pbft.protocol.events import Executed, Reason, Received, Rejected, ViewInstalled
from pbft.protocol.messages import (
    Commit,
    NewView,
    Prepare,
    PrePrepare,
    Request,
    ViewChange,
)
from pbft.protocol.replica import Replica
from pbft.protocol.viewchange import ViewStatus
from pbft.service.kv import op_put

FAST = dict(view_change_timeout_ms=100, retransmit_ms=50)  # 10 ticks, 5 ticks


class Net(Cluster):
    """The FIFO cluster of test_behaviours with network faults: `cut` replicas lose every
    link, and `drop(src, dst, msg)` loses matching messages."""

    def __init__(self, *args, drop=None, **kw):
        super().__init__(*args, **(FAST | kw))
        self.cut: set[int] = set()
        self.drop = drop or (lambda src, dst, msg: False)
        self.lost = 0

    def run(self, limit=200_000):
        while self.q:
            limit -= 1
            assert limit > 0, "message storm"
            src, dst, data = self.q.popleft()
            opened = open_envelope(data)
            msg = opened[1] if opened else None
            if src in self.cut or dst in self.cut or self.drop(src, dst, msg):
                self.lost += 1
                continue
            self.delivered.append((src, dst, data))
            node = self.nodes[dst] if isinstance(dst, int) else self.clients[dst]
            self.perform(dst, node.step(Received(src, data)))

    def settle(self, ticks=200, clients=("alice", "bob")):
        for _ in range(ticks):
            if all(self.clients[c].outstanding is None for c in clients):
                return
            self.tick()

    def behaviour(self, rid):
        return self.nodes[rid].behaviour

    def details(self, reason, peer=None):
        return [
            a.detail
            for i in range(4)
            if i not in self.byz
            for a in self.actions[i]
            if isinstance(a, Rejected) and a.reason == reason and (peer is None or a.peer == peer)
        ]

    def views(self):
        return {r.view for r in self.honest}


def commit_lost(seq, to):
    """Loses the view-0 COMMITs for `seq` on their way to the replicas in `to`."""
    return lambda s, d, m: isinstance(m, Commit) and (m.view, m.seq) == (0, seq) and d in to


# -- registry and parameters -------------------------------------------------------------


NAMES = ("fake-prepared-cert", "drop-cert", "bad-new-view", "view-change-storm", "lying-state-transfer")


def test_registered_with_summaries():
    for name in NAMES:
        assert REGISTRY[name].name == name and REGISTRY[name].summary


@pytest.mark.parametrize(
    "name,params",
    [
        ("fake-prepared-cert", {"modes": ["bogus"]}),
        ("fake-prepared-cert", {"modes": []}),
        ("drop-cert", {"checkpoint": 1}),
        ("bad-new-view", {"modes": "sideways"}),
        ("view-change-storm", {"every": 0}),
        ("view-change-storm", {"jump": "1"}),
        ("lying-state-transfer", {"modes": ["truthful"]}),
        ("lying-state-transfer", {"delay_ms": -1}),
        ("lying-state-transfer", {"speed": 3}),
    ],
)
def test_bad_parameters_fail_with_one_sentence(name, params):
    c = Cluster()
    with pytest.raises(ValueError, match=name):
        REGISTRY[name](c.cores[1], c.keys[1], params, random.Random(0))


# -- fake-prepared-cert ----------------------------------------------------------------------


def isolate_primary_and_change_view(c: Net, rounds=2):
    """Some committed traffic, then the primary 0 is cut off while a request waits, so the
    backups time out and send VIEW-CHANGEs for view 1."""
    c.workload(rounds)
    c.cut.add(0)
    c.submit("alice", op_put(b"after", b"cut"))
    c.run()
    c.tick(15)  # client retransmits to all (2 ticks); the request is never ordered (5 more)


@pytest.mark.parametrize(
    "mode,rounds,why",
    [
        ("not-primary", 2, "not signed by its primary"),
        ("few-prepares", 1, "has 1 prepares, needs 2"),
        ("other-digest", 1, "does not match"),
        ("below-stable", 3, "outside the water marks"),
    ],
)
def test_fake_prepared_cert_is_rejected_and_not_counted(mode, rounds, why):
    c = Net(byz=(3, "fake-prepared-cert", {"modes": [mode]}))
    isolate_primary_and_change_view(c, rounds)
    assert c.behaviour(3).made and set(c.behaviour(3).made) == {mode}
    sent = [vc for _, vc in c.received(1, ViewChange, src=3)]
    assert sent and all(vc.new_view == 1 for vc in sent)
    assert any(why in d for d in c.details(Reason.BAD_CERTIFICATE, peer=3))
    # Three VIEW-CHANGEs for view 1 exist (1, 2 and the liar's), but the liar's does not
    # count: no NEW-VIEW while the primary is cut off.
    assert all(3 not in r.view_changes.received for r in c.cores[1:3])
    assert not any(c.of(i, ViewInstalled) for i in (1, 2))
    c.cut.clear()
    c.settle()
    assert c.views() == {1} and c.done("alice") == rounds + 1
    c.workload(2)
    assert c.done("alice") == rounds + 3
    assert_safe(c)


def own_view_attack(replica_cls):
    """Slot 1 commits at replica 3 only (COMMITs to 0, 1, 2 are lost; the pre-prepare to
    1 too, so the new primary 1 never prepared it). The faulty old primary 0 then sends a
    VIEW-CHANGE whose certificate for slot 1 is a null pre-prepare it signed, with no
    prepares. Returns the cluster once the request completed (or gave up)."""

    def drop(s, d, m):
        lost_pp = isinstance(m, PrePrepare) and (m.view, m.seq) == (0, 1) and d == 1
        return lost_pp or commit_lost(1, {0, 1, 2})(s, d, m)

    c = Net(byz=(0, "fake-prepared-cert", {"modes": ["own-view"]}), replica_cls=replica_cls, drop=drop)
    c.submit("alice", op_put(b"k", b"v"))
    c.run()
    assert [r.last_executed for r in c.cores[1:]] == [0, 0, 1]
    c.settle(clients=("alice",))
    return c


def test_fake_prepared_cert_own_view_equivocation_is_rejected():
    # The old primary dresses a null pre-prepare it signs for its own view (0) as a
    # certificate for a slot that committed elsewhere; it has no prepares.
    c = own_view_attack(Replica)
    assert set(c.behaviour(0).made) == {"own-view"}
    assert any("has 0 prepares" in d for d in c.details(Reason.BAD_CERTIFICATE, peer=0))
    assert c.views() == {1} and c.done("alice") == 1
    assert_safe(c)


def test_unchecked_prepared_cert_lets_a_fake_certificate_break_agreement():
    broken = own_view_attack(BROKEN["unchecked-prepared-cert"])
    # The new view re-issued slot 1 as the faulty null pre-prepare: replicas 1 and 2
    # execute nothing where replica 3 executed alice's put.
    ex = {i: {e.seq: e.digest for e in broken.of(i, Executed)} for i in (1, 2, 3)}
    assert ex[3][1] != NULL_DIGEST and ex[2][1] == NULL_DIGEST
    with pytest.raises(AssertionError, match="disagree at seq 1"):
        assert_safe(broken, same_state=False)


def test_unchecked_prepared_cert_differs_on_a_certificate_without_prepares():
    c = Cluster()
    req = seal(c.keys[0], "t", 0, Request(op_put(b"k", b"v"), 1, "alice")).to_bytes()
    pp = seal(c.keys[0], "t", 0, PrePrepare(0, 1, batch_digest((req,)))).to_bytes()  # as certificates carry it
    vc = seal(c.keys[2], "t", 2, ViewChange(1, 0, (), ((pp,),))).to_bytes()
    for cls, stored in ((Replica, False), (BROKEN["unchecked-prepared-cert"], True)):
        c = Cluster(replica_cls=cls)
        c.cores[1].step(Received(2, vc))
        assert (2 in c.cores[1].view_changes.received) == stored
    # One prepare (from a backup) is still too few for the honest core.
    prep = seal(c.keys[3], "t", 3, Prepare(0, 1, batch_digest((req,)))).to_bytes()
    vc = seal(c.keys[2], "t", 2, ViewChange(1, 0, (), ((pp, prep),))).to_bytes()
    c = Cluster()
    c.cores[1].step(Received(2, vc))
    assert 2 not in c.cores[1].view_changes.received and c.rejects(Reason.BAD_CERTIFICATE, peer=2) == 1


# -- drop-cert -----------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", [False, True])
def test_drop_cert_loses_nothing_prepared(checkpoint):
    # Slot 3 prepares everywhere but its COMMITs are lost: no one executes it. The view
    # change must carry it into view 1 although the faulty replica's VIEW-CHANGE omits it.
    c = Net(byz=(2, "drop-cert", {"checkpoint": checkpoint}), drop=commit_lost(3, {0, 1, 2, 3}))
    c.workload(1)
    c.submit("alice", op_put(b"slot", b"3"))
    c.run()
    assert all(r.last_executed == 2 for r in c.honest)
    digest3 = c.cores[1].log.get(3).pre_prepare.digest
    c.settle()
    vcs = [vc for _, vc in c.received(1, ViewChange, src=2)]
    assert vcs and all(vc.prepared == () for vc in vcs)
    assert all(vc.stable_seq == 0 and vc.checkpoint_proof == () for vc in vcs) or not checkpoint
    assert all(len(r.prepared_certs) for r in c.honest)
    nv = [m for _, m in c.received(3, NewView)]
    assert nv and nv[-1].view == 1
    # The faulty VIEW-CHANGE was valid and may be one of the 2f+1 in the NEW-VIEW.
    assert c.rejects(Reason.BAD_CERTIFICATE) == 0
    for i in (0, 1, 3):
        ex = {e.seq: e.digest for e in c.of(i, Executed)}
        assert ex[3] == digest3
    assert c.views() == {1} and c.done("alice") == 2
    assert_safe(c)


# -- bad-new-view --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,why", [
    ("omit", "pre-prepares where"),
    ("alter", "differs from the recomputed"),
    ("replace", "differs from the recomputed"),
    ("extra", "pre-prepares where"),
    ("bad-view-change", "bad signature on the view-change"),
    ("duplicate-view-change", "two view-changes from replica"),
    ("short", "only 2 view-changes"),
])  # fmt: skip
def test_bad_new_view_is_recomputed_rejected_and_the_next_view_works(mode, why):
    # Replica 1 is the primary of view 1. Slot 3 is prepared but uncommitted when the
    # view changes, so its NEW-VIEW has a batch to lie about.
    c = Net(byz=(1, "bad-new-view", {"modes": [mode]}), drop=commit_lost(3, {0, 1, 2, 3}))
    c.workload(1)
    c.submit("alice", op_put(b"slot", b"3"))
    c.run()
    c.settle(300)
    assert c.behaviour(1).made[:1] == [mode]
    assert any(why in d for d in c.details(Reason.BAD_CERTIFICATE, peer=1)), c.details(Reason.BAD_CERTIFICATE)
    assert not any(v.view == 1 for i in (0, 2, 3) for v in c.of(i, ViewInstalled))
    assert c.views() == {2} and c.done("alice") == 2
    c.workload(2)
    assert c.done("alice") == 4 and c.done("bob") == 3
    assert_safe(c)


def replace_attack(replica_cls):
    """Slot 1 commits at replica 3 only; the faulty primary of view 1 re-issues it as a
    null request in its NEW-VIEW."""
    c = Net(
        byz=(1, "bad-new-view", {"modes": ["replace"]}),
        replica_cls=replica_cls,
        drop=commit_lost(1, {0, 1, 2}),
    )
    c.submit("alice", op_put(b"k", b"v"))
    c.run()
    assert [r.last_executed for r in c.cores] == [0, 0, 0, 1]
    c.settle(300, clients=("alice",))
    return c


def test_new_view_not_recomputed_lets_a_replaced_slot_break_agreement():
    honest = replace_attack(Replica)
    assert honest.views() == {2} and honest.done("alice") == 1
    assert_safe(honest)
    broken = replace_attack(BROKEN["new-view-not-recomputed"])
    ex = {i: {e.seq: e.digest for e in broken.of(i, Executed)} for i in (0, 2, 3)}
    assert ex[3][1] != NULL_DIGEST and ex[0][1] == NULL_DIGEST
    with pytest.raises(AssertionError, match="disagree at seq 1"):
        assert_safe(broken, same_state=False)


def test_new_view_not_recomputed_differs_on_a_replaced_pre_prepare():
    for cls, installed in ((Replica, False), (BROKEN["new-view-not-recomputed"], True)):
        c = Net(byz=(1, "bad-new-view", {"modes": ["extra"]}), replica_cls=cls)
        c.cut.add(0)
        c.submit("alice", op_put(b"k", b"v"))
        c.run()
        c.tick(40)
        assert any(v.view == 1 for v in c.of(2, ViewInstalled)) == installed


# -- view-change-storm -----------------------------------------------------------------------------


def test_view_change_storm_moves_no_one_and_costs_one_entry_per_peer():
    c = Net(byz=(2, "view-change-storm", {"every": 1, "jump": 3}))
    for _ in range(6):
        c.workload(1, ticks=5)
    views = sorted({vc.new_view for _, vc in c.received(1, ViewChange, src=2)})
    assert len(views) >= 25 and views[-1] >= 75
    assert c.done("alice") == c.done("bob") == 6
    for r in c.honest:
        assert r.view == 0 and r.status is ViewStatus.NORMAL and r.view_changes.started == 0
        assert set(r.view_changes.received) <= {2} and len(r.view_changes.received) <= c.cfg.n
    assert_safe(c)


def test_view_change_storm_does_not_hijack_a_real_view_change():
    # A genuine view change (primary cut off) goes to view 1, or on by the new-view timer
    # to view 2 (the storming replica's own core is in view 1 too, so 2f+1 were there,
    # 4.5.2), never to the storm's views (5, 10, ... up to 100): join the (f+1)-th
    # highest view seen, which a correct replica vouches for.
    c = Net(byz=(2, "view-change-storm", {"every": 2, "jump": 5}))
    c.workload(1)
    c.cut.add(0)
    c.submit("alice", op_put(b"k", b"v"))
    c.run()
    c.tick(40)
    c.cut.clear()
    c.settle()
    c.tick(60)  # the old primary learns the view from a peer's NEW-VIEW (STATUS)
    assert len(c.views()) == 1 and c.views() <= {1, 2} and c.done("alice") == 2
    c.workload(2, ticks=2)
    assert c.done("alice") == 4
    assert_safe(c)


def test_storm_messages_are_valid_view_changes():
    c = Net(byz=(2, "view-change-storm", {"every": 1}))
    c.tick(3)
    for _, vc in c.received(0, ViewChange, src=2):
        assert vc.prepared == () and vc.stable_seq == 0
    assert c.rejects(Reason.BAD_CERTIFICATE) == 0



# -- replay across views ---------------------------------------------------------------------------


def test_replay_of_old_view_messages_after_a_view_change_is_ignored():
    # `replay` (wire.py) re-sends what it saw; after a view change that includes view-0
    # pre-prepares, votes and view-changes for view 1, all old by then.
    c = Net(byz=(3, "replay", {"rate": 8, "history": 512}))
    c.workload(2)
    c.cut.add(0)
    c.submit("alice", op_put(b"k", b"v"))
    c.run()
    c.tick(40)
    c.cut.clear()
    c.settle()
    c.tick(20)  # the old primary learns view 1 from a peer's NEW-VIEW (STATUS)
    assert c.views() == {1}
    before = c.rejects(Reason.WRONG_VIEW, peer=3) + c.rejects(Reason.STALE, peer=3)
    c.workload(3, ticks=3)
    replayed_old = [
        m
        for s, _, data in c.delivered
        if s == 3 and open_envelope(data)[0].signer != 3
        for m in [open_envelope(data)[1]]
        if isinstance(m, PrePrepare | Prepare | Commit) and m.view == 0
    ]
    assert replayed_old
    assert c.rejects(Reason.WRONG_VIEW, peer=3) + c.rejects(Reason.STALE, peer=3) > before
    assert c.views() == {1} and c.done("alice") == 6 and c.done("bob") == 5
    assert_safe(c)
