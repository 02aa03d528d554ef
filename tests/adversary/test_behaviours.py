"""Each Byzantine behaviour against a small in-memory cluster (f = 1, four replicas).

For every behaviour: (a) it really mounts its attack (what the honest replicas received,
and the reasons they counted when they refused it), and (b) the honest replicas stay safe:
no two execute different batches at one sequence number, none prepares two digests for one
slot, each (client, timestamp) executes at most once, and states agree. Where no view
change is needed, the correct clients' requests complete.
"""

from __future__ import annotations

import base64
import random
from collections import Counter, deque

import pytest

from pbft.adversary.catalogue import (
    CLIENT_REGISTRY,
    REGISTRY,
    ByzantineClient,
    ByzantineReplica,
)
from pbft.adversary.wire import open_envelope
from pbft.cluster.evidence import verify_evidence
from pbft.protocol import codec
from pbft.protocol.client import ClientCore
from pbft.protocol.config import ClientInfo, ClusterConfig, ReplicaInfo
from pbft.protocol.crypto import KeyPair, Verifier, batch_digest
from pbft.protocol.events import (
    Broadcast,
    Committed,
    Completed,
    Evidence,
    Executed,
    Prepared,
    Reason,
    Received,
    Send,
    SendClient,
    Tick,
)
from pbft.protocol.messages import Checkpoint, Commit, Prepare, PrePrepare, Request
from pbft.protocol.replica import Replica
from pbft.service.kv import KeyValueStore, op_put

CLIENTS = ("alice", "bob")


class Cluster:
    """Four replicas and two clients on a FIFO in-memory network that, like the real
    transport, refuses frames over MAX_FRAME."""

    def __init__(self, byz=None, byz_client=None, replica_cls=Replica, seed=1, **cfg_kw):
        self.keys = [KeyPair.from_seed(b"r%d" % i) for i in range(4)]
        ckeys = {c: KeyPair.from_seed(c.encode()) for c in CLIENTS}
        # batch_max 8: any waiting request is a worthwhile batch, so proposals stay eager
        kw = dict(checkpoint_interval=4, log_window=8, batch_max=8) | cfg_kw
        self.cfg = ClusterConfig(
            "t",
            1,
            tuple(ReplicaInfo(i, "127.0.0.1", 7000 + i, self.keys[i].public) for i in range(4)),
            tuple(ClientInfo(c, k.public) for c, k in ckeys.items()),
            **kw,
        )
        ver = Verifier("t", self.cfg.member_keys(), memo=100_000)
        self.cores = [
            replica_cls(self.cfg, i, self.keys[i], KeyValueStore(), ver) for i in range(4)
        ]
        self.nodes = list(self.cores)
        self.byz = set()
        if byz is not None:
            rid, name, params = byz
            beh = REGISTRY[name](self.cores[rid], self.keys[rid], params, random.Random(seed))
            self.nodes[rid] = ByzantineReplica(self.cores[rid], beh)
            self.byz.add(rid)
        self.clients = {c: ClientCore(self.cfg, c, k) for c, k in ckeys.items()}
        self.byz_clients = set()
        if byz_client is not None:
            name, bname, params = byz_client
            beh = CLIENT_REGISTRY[bname](
                self.clients[name], ckeys[name], params, random.Random(seed), self.cfg
            )
            self.clients[name] = ByzantineClient(self.clients[name], beh)
            self.byz_clients.add(name)
        self.q: deque = deque()
        self.delivered: list[tuple[object, object, bytes]] = []
        self.actions: dict[object, list] = {i: [] for i in range(4)}
        self.completed: dict[str, list] = {c: [] for c in CLIENTS}
        self.oversize_dropped = 0

    @property
    def honest(self):
        return [r for i, r in enumerate(self.cores) if i not in self.byz]

    def perform(self, src, acts):
        for a in acts:
            match a:
                case Send(to, data):
                    self.q.append((src, to, data))
                case Broadcast(data):
                    self.q.extend((src, r, data) for r in range(4) if r != src)
                case SendClient(c, data):
                    self.q.append((src, c, data))
                case Completed(ts, res):
                    self.completed[src].append((ts, res))
                case _:
                    if src in self.actions:
                        self.actions[src].append(a)

    def run(self, limit=200_000):
        while self.q:
            limit -= 1
            assert limit > 0, "message storm"
            src, dst, data = self.q.popleft()
            if len(data) > codec.MAX_FRAME:
                self.oversize_dropped += 1
                continue
            self.delivered.append((src, dst, data))
            node = self.nodes[dst] if isinstance(dst, int) else self.clients[dst]
            self.perform(dst, node.step(Received(src, data)))

    def tick(self, n=1):
        for _ in range(n):
            for i, node in enumerate(self.nodes):
                self.perform(i, node.step(Tick()))
            for c, cl in self.clients.items():
                self.perform(c, cl.step(Tick()))
            self.run()

    def submit(self, client, op):
        self.perform(client, self.clients[client].submit(op))

    def workload(self, rounds=3, clients=CLIENTS, ticks=0):
        for i in range(rounds):
            for c in clients:
                if self.clients[c].outstanding is None:
                    self.submit(c, op_put(c.encode(), b"v%d" % i))
            self.run()
            self.tick(ticks)

    # -- observations -------------------------------------------------------------------

    def of(self, rid, kind):
        return [a for a in self.actions[rid] if isinstance(a, kind)]

    def received(self, dst, kind, src=None):
        out = []
        for s, d, data in self.delivered:
            if d == dst and (src is None or s == src):
                opened = open_envelope(data)
                if opened and isinstance(opened[1], kind):
                    out.append(opened)
        return out

    def rejects(self, reason, peer=None):
        return sum(
            n
            for r in self.honest
            for (p, why), n in r.rejects.items()
            if why == reason and (peer is None or p == peer)
        )

    def done(self, client):
        return len(self.completed[client])


def assert_safe(c: Cluster, same_state=True):
    honest = [i for i in range(4) if i not in c.byz]
    by_seq: dict[int, tuple] = {}
    prepared: dict[tuple[int, int], bytes] = {}
    committed: dict[int, bytes] = {}
    for i in honest:
        seqs = []
        fresh = Counter()
        for e in c.of(i, Executed):
            key = (e.digest, tuple((r.client, r.timestamp, r.operation) for r in e.requests))
            assert by_seq.setdefault(e.seq, key) == key, f"replicas disagree at seq {e.seq}"
            seqs.append(e.seq)
            fresh.update((r.client, r.timestamp) for r in e.requests if r.fresh)
        assert seqs == list(range(1, len(seqs) + 1)), f"replica {i} executed {seqs}"
        assert all(n == 1 for n in fresh.values()), f"replica {i} executed a request twice"
        for p in c.of(i, Prepared):
            assert prepared.setdefault((p.view, p.seq), p.digest) == p.digest
        for m in c.of(i, Committed):
            assert committed.setdefault(m.seq, m.digest) == m.digest
        assert len(c.cores[i].log) <= c.cfg.log_window
    if same_state:
        last = {c.cores[i].last_executed for i in honest}
        assert len(last) == 1, f"honest replicas at different points: {last}"
        assert len({c.cores[i].state_digest() for i in honest}) == 1


def test_registries_are_complete_and_named():
    wanted = {
        "equivocate", "silent", "censor", "slow-primary", "skip-seq", "out-of-window",
        "duplicate-request", "wrong-view", "bad-digest", "forge-request", "reorder-batch",
        "oversize", "wrong-digest-vote", "double-vote", "vote-stuffing", "bad-signature",
        "future-flood", "premature-commit", "amnesia", "selective-send", "flood", "replay",
        "bad-checkpoint", "fake-stable-checkpoint",
    }  # fmt: skip
    assert wanted <= set(REGISTRY)
    assert set(CLIENT_REGISTRY) == {
        "client-equivocate", "client-replay", "client-partial-signature", "client-abuse"
    }  # fmt: skip
    for name, cls in {**REGISTRY, **CLIENT_REGISTRY}.items():
        assert cls.name == name and cls.summary


@pytest.mark.parametrize(
    "name,params",
    [
        ("equivocate", {"from_seq": -1}),
        ("equivocate", {"reflect": "yes"}),
        ("equivocate", {"nonsense": 1}),
        ("censor", {"client": "mallory"}),
        ("selective-send", {"to": [9]}),
        ("bad-signature", {"modes": ["loud"]}),
        ("out-of-window", {"mode": "sideways"}),
        ("flood", {"rate": 0}),
    ],
)
def test_bad_parameters_fail_with_one_sentence(name, params):
    c = Cluster()
    with pytest.raises(ValueError, match=name):
        REGISTRY[name](c.cores[0], c.keys[0], params, random.Random(0))


def test_scenario_keys_are_tolerated():
    c = Cluster()
    REGISTRY["silent"](
        c.cores[0], c.keys[0], {"replica": 0, "behaviour": "silent"}, random.Random(0)
    )


def test_honest_baseline():
    c = Cluster()
    c.workload(6)
    assert c.done("alice") == c.done("bob") == 6
    assert_safe(c)


# -- primary ------------------------------------------------------------------------------


def test_equivocate_splits_backups_and_nothing_conflicting_commits():
    c = Cluster(byz=(0, "equivocate", {}))
    c.workload(1)
    for seq in (1, 2):
        d1 = {pp.digest for _, pp in c.received(1, PrePrepare) if pp.seq == seq}
        d23 = {pp.digest for r in (2, 3) for _, pp in c.received(r, PrePrepare) if pp.seq == seq}
        assert len(d1) == 1 and len(d23) == 1 and d1 != d23
    assert_safe(c, same_state=False)
    assert c.done("alice") == 0


def test_equivocate_with_reflection_is_harmless_to_correct_vote_counting():
    c = Cluster(byz=(0, "equivocate", {"reflect": True}))
    c.workload(1)
    c.tick(30)
    # The primary echoed votes back to their own signers: counted once, if at all.
    assert any(
        s == 0 and d == 1 for s, d, data in c.delivered if open_envelope(data)[0].signer == 1
    )
    assert not c.of(1, Prepared)
    assert_safe(c, same_state=False)


def test_silent_primary_sends_nothing():
    c = Cluster(byz=(0, "silent", {}))
    c.workload(2)
    assert not [1 for s, _, _ in c.delivered if s == 0]
    assert all(r.last_executed == 0 for r in c.honest)
    assert_safe(c)


def test_silent_from_seq_and_silent_backup():
    c = Cluster(byz=(0, "silent", {"from_seq": 3}))
    c.workload(4, clients=("alice",))
    assert [r.last_executed for r in c.honest] == [2, 2, 2]
    c = Cluster(byz=(1, "silent", {}))
    c.workload(4)
    assert c.done("alice") == c.done("bob") == 4
    assert_safe(c)


def test_censor_never_orders_one_client():
    c = Cluster(byz=(0, "censor", {"client": "alice"}))
    c.workload(3)
    assert c.done("bob") == 3 and c.done("alice") == 0
    assert all(
        r.client != "alice" for i in (1, 2, 3) for e in c.of(i, Executed) for r in e.requests
    )
    assert_safe(c)


def test_slow_primary_delays_each_pre_prepare():
    c = Cluster(byz=(0, "slow-primary", {"delay_ms": 100}))  # 10 ticks
    c.submit("alice", op_put(b"k", b"v"))
    c.run()
    assert not c.received(1, PrePrepare)
    c.tick(9)
    assert not c.received(1, PrePrepare)
    c.tick(1)
    assert c.received(1, PrePrepare) and c.done("alice") == 1
    assert_safe(c)


def test_skip_seq_leaves_a_gap():
    c = Cluster(byz=(0, "skip-seq", {"seq": 2}))
    c.workload(2, clients=("alice",))
    assert sorted(pp.seq for _, pp in c.received(1, PrePrepare)) == [1, 3]
    assert [r.last_executed for r in c.honest] == [1, 1, 1]
    assert all(r.log.get(3).pre_prepare is not None for r in c.honest)
    assert_safe(c)


@pytest.mark.parametrize("mode", ["low", "high", "both"])
def test_out_of_window_is_dropped_and_counted(mode):
    c = Cluster(byz=(0, "out-of-window", {"mode": mode}))
    c.workload(2, clients=("alice",))
    assert c.rejects(Reason.OUT_OF_WINDOW, peer=0) >= 3
    assert all(r.last_executed == 0 and len(r.log) == 0 for r in c.honest)
    assert_safe(c)


def test_out_of_window_alongside_honest_traffic():
    c = Cluster(byz=(0, "out-of-window", {"keep_honest": True}))
    c.workload(12)
    assert c.done("alice") == c.done("bob") == 12
    assert c.rejects(Reason.OUT_OF_WINDOW, peer=0) > 0
    assert all(r.stable_seq > 0 for r in c.honest)
    assert_safe(c)


@pytest.mark.parametrize("mode", ["twice", "replay"])
def test_duplicate_request_executes_once(mode):
    c = Cluster(byz=(0, "duplicate-request", {"mode": mode}))
    c.workload(5)
    assert c.done("alice") == c.done("bob") == 5
    ex = c.of(1, Executed)
    reqs = Counter((r.client, r.timestamp) for e in ex for r in e.requests)
    assert max(reqs.values()) == 2  # ordered twice...
    assert sum(not r.fresh for e in ex for r in e.requests) > 0  # ...executed once
    assert_safe(c)


def test_wrong_view_is_ignored_without_prepares():
    c = Cluster(byz=(0, "wrong-view", {}))
    c.workload(1, clients=("alice",))
    assert {pp.view for _, pp in c.received(1, PrePrepare)} == {4}
    assert not any(c.received(r, Prepare) for r in range(4))
    assert all(len(r.log) == 0 for r in c.honest)
    c = Cluster(byz=(0, "wrong-view", {"view_offset": 1}))
    c.workload(1, clients=("alice",))
    assert c.rejects(Reason.NOT_PRIMARY, peer=0) == 3
    c = Cluster(byz=(0, "wrong-view", {"view_offset": 100}))
    c.workload(1, clients=("alice",))
    assert c.rejects(Reason.OUT_OF_WINDOW, peer=0) == 3
    assert not any(c.received(r, Prepare) for r in range(4))
    assert_safe(c)


def test_bad_digest_is_rejected_and_never_prepares():
    c = Cluster(byz=(0, "bad-digest", {}))
    c.workload(2)
    assert c.rejects(Reason.BAD_DIGEST, peer=0) >= 3
    assert not any(c.of(i, Prepared) for i in (1, 2, 3))
    c = Cluster(byz=(0, "bad-digest", {"mode": "swap", "to": [2, 3]}))
    c.workload(1, clients=("alice",))
    _, pp = c.received(2, PrePrepare)[0]
    assert batch_digest(pp.batch) != pp.digest
    assert c.rejects(Reason.BAD_DIGEST) == 2
    assert_safe(c, same_state=False)


@pytest.mark.parametrize("mode", ["alter", "invent"])
def test_forge_request_fails_the_client_signature(mode):
    c = Cluster(byz=(0, "forge-request", {"mode": mode}))
    c.workload(1, clients=("alice",))
    assert c.rejects(Reason.BAD_REQUEST, peer=0) == 3
    for r in c.honest:
        for p, why in r.rejects:
            assert why != Reason.BAD_REQUEST or p == 0
    details = [a.detail for i in (1, 2, 3) for a in c.actions[i] if getattr(a, "reason", None)]
    assert all("bad client signature" in d for d in details if "pre-prepare" in d)
    assert not any(c.of(i, Prepared) for i in (1, 2, 3))
    assert_safe(c)


def test_reorder_batch_executes_one_order_and_duplicates_once():
    c = Cluster(byz=(0, "reorder-batch", {}))
    c.workload(4)
    assert c.done("alice") == c.done("bob") == 4
    assert all(len(pp.batch) >= 2 for _, pp in c.received(1, PrePrepare))
    assert any(not r.fresh for e in c.of(1, Executed) for r in e.requests)
    assert_safe(c)


def test_oversize_is_refused_and_traffic_flows():
    c = Cluster(byz=(0, "oversize", {}))
    c.workload(8)
    assert c.done("alice") == c.done("bob") == 8
    assert c.rejects(Reason.BATCH_TOO_LARGE, peer=0) > 0
    assert c.rejects(Reason.MALFORMED, peer=0) > 0  # beyond MAX_BATCH, and too deep
    assert c.rejects(Reason.BAD_REQUEST, peer=0) > 0  # operation beyond MAX_OPERATION
    assert_safe(c)


def test_oversize_frame_exceeds_max_frame():
    c = Cluster(byz=(0, "oversize", {"modes": ["frame"]}))
    c.workload(1, clients=("alice",))
    assert c.oversize_dropped == 3 and c.done("alice") == 1
    assert_safe(c)


# -- any replica -----------------------------------------------------------------------------


def test_wrong_digest_votes_never_count():
    c = Cluster(byz=(1, "wrong-digest-vote", {}))
    c.workload(4)
    assert c.done("alice") == c.done("bob") == 4
    pps = {pp.seq: pp.digest for _, pp in c.received(2, PrePrepare)}
    votes = c.received(2, Prepare, src=1) + c.received(2, Commit, src=1)
    assert votes and all(v.digest != pps[v.seq] for _, v in votes)
    assert_safe(c)


def test_double_vote_leaves_evidence():
    c = Cluster(byz=(1, "double-vote", {}))
    c.workload(3)
    assert c.done("alice") == c.done("bob") == 3
    kinds = {e.kind for i in (0, 2, 3) for e in c.of(i, Evidence) if e.culprit == 1}
    assert {"double-prepare", "double-commit"} <= kinds
    assert_safe(c)


def test_vote_stuffing_is_counted_once_by_signer():
    c = Cluster(byz=(1, "vote-stuffing", {"copies": 4}))
    c.workload(3)
    assert c.done("alice") == c.done("bob") == 3
    assert len(c.received(2, Prepare, src=1)) >= 3 * 4
    assert c.rejects(Reason.BAD_SIGNATURE, peer=1) > 0
    assert_safe(c)


@pytest.mark.parametrize("modes", [["corrupt"], ["non-member"], ["domain"]])
def test_bad_signature_from_a_backup(modes):
    c = Cluster(byz=(1, "bad-signature", {"modes": modes}))
    c.workload(3)
    assert c.done("alice") == c.done("bob") == 3
    reason = Reason.UNKNOWN_SIGNER if modes == ["non-member"] else Reason.BAD_SIGNATURE
    assert c.rejects(reason, peer=1) > 0
    assert_safe(c)


def test_bad_signature_from_the_primary_changes_nothing():
    c = Cluster(byz=(0, "bad-signature", {}))
    c.workload(2)
    assert all(len(r.log) == 0 and r.last_executed == 0 for r in c.honest)
    assert_safe(c)


def test_future_flood_is_not_buffered():
    c = Cluster(byz=(1, "future-flood", {"rate": 20}))
    c.workload(6, ticks=3)
    assert c.done("alice") == c.done("bob") == 6
    assert c.rejects(Reason.OUT_OF_WINDOW, peer=1) > 0
    for r in c.honest:
        assert r.view == 0 and len(r.checkpoints.votes) <= 2
        assert len(r.future.messages) <= r.future.per_signer
        assert all(len(claims) <= 2 for claims in r.checkpoints.claims.values())
    assert_safe(c)


def test_premature_commit_never_commits_an_unprepared_slot():
    c = Cluster(byz=(3, "premature-commit", {"rate": 5}))
    c.workload(5, ticks=2)
    assert c.done("alice") == c.done("bob") == 5
    assert len(c.received(1, Commit, src=3)) > 10
    for i in (0, 1, 2):
        prepared = set()
        for a in c.actions[i]:
            if isinstance(a, Prepared):
                prepared.add((a.view, a.seq, a.digest))
            if isinstance(a, Committed):
                assert (a.view, a.seq, a.digest) in prepared
    assert_safe(c)


def test_amnesia_signs_conflicting_votes():
    c = Cluster(byz=(1, "amnesia", {"every": 2}))
    c.workload(4, ticks=2)
    assert c.done("alice") == c.done("bob") == 4
    assert any(e.culprit == 1 for i in (0, 2, 3) for e in c.of(i, Evidence))
    assert_safe(c)


def test_selective_send_reaches_only_its_targets():
    c = Cluster(byz=(1, "selective-send", {"to": [2]}))
    c.workload(4)
    assert {d for s, d, _ in c.delivered if s == 1 and isinstance(d, int)} == {2}
    assert c.done("alice") == c.done("bob") == 4
    assert_safe(c)


@pytest.mark.parametrize("kind", ["valid", "invalid", "mixed"])
def test_flood_keeps_correct_traffic_flowing(kind):
    c = Cluster(byz=(2, "flood", {"rate": 10, "kind": kind}))
    c.workload(5, ticks=2)
    assert c.done("alice") == c.done("bob") == 5
    if kind != "valid":
        assert c.rejects(Reason.MALFORMED, peer=2) + c.rejects(Reason.BAD_SIGNATURE, peer=2) > 0
    assert_safe(c)


def test_replay_is_ignored_and_foreign_cluster_counted():
    c = Cluster(byz=(3, "replay", {"rate": 6}))
    c.workload(8, ticks=2)
    assert c.done("alice") == c.done("bob") == 8
    replayed = [1 for s, _, data in c.delivered if s == 3 and open_envelope(data)[0].signer != 3]
    assert replayed
    assert c.rejects(Reason.OUT_OF_WINDOW, peer=3) + c.rejects(Reason.STALE, peer=3) > 0
    assert all(r.view == 0 for r in c.honest)
    assert_safe(c)


def test_bad_checkpoint_does_not_stop_stability():
    c = Cluster(byz=(1, "bad-checkpoint", {}))
    c.workload(5)
    assert all(r.stable_seq == 8 for r in c.honest)
    lies = {cp.digest for _, cp in c.received(0, Checkpoint, src=1)}
    assert lies and c.cores[0].checkpoints.stable_digest not in lies
    assert_safe(c)


def test_fake_stable_checkpoint_moves_nothing():
    c = Cluster(byz=(1, "fake-stable-checkpoint", {"every": 1}))
    c.tick(3)
    c.workload(3, ticks=1)
    assert c.done("alice") == c.done("bob") == 3
    assert all(r.stable_seq <= r.last_executed and r.transfer is None for r in c.honest)
    assert all(set(r.checkpoints.claims) <= {1} and len(r.checkpoints.claims.get(1, {})) <= 2 for r in c.honest)
    assert any(r.checkpoints.claims for r in c.honest)
    assert_safe(c)


# -- clients --------------------------------------------------------------------------------


def test_client_equivocate_executes_one_operation_everywhere():
    c = Cluster(byz_client=("alice", "client-equivocate", {}))
    c.workload(3)
    ops = {
        r: {
            m.operation
            for _, m in c.received(r, Request, src="alice")
            if m.client == "alice" and m.timestamp == 1
        }
        for r in range(4)
    }
    assert ops[0] == ops[1] and ops[2] == ops[3] and ops[0] != ops[2]
    assert c.done("alice") == c.done("bob") == 3
    assert_safe(c)


def test_client_replay_never_re_executes():
    c = Cluster(byz_client=("alice", "client-replay", {"every": 1, "burst": 3}))
    c.workload(4, ticks=2)
    assert c.done("alice") == c.done("bob") == 4
    assert c.rejects(Reason.STALE, peer="alice") > 0
    assert_safe(c)


@pytest.mark.parametrize("valid_for", [[0, 1], [2, 3]])
def test_client_partial_signature_same_verdict_on_same_bytes(valid_for):
    c = Cluster(byz_client=("alice", "client-partial-signature", {"valid_for": valid_for}))
    c.workload(2, ticks=1)
    assert c.rejects(Reason.BAD_REQUEST, peer="alice") >= 2
    verdict: dict[bytes, set] = {}
    for s, d, data in c.delivered:
        if s == "alice":
            bad = any(p == "alice" for p, why in c.cores[d].rejects if why == Reason.BAD_REQUEST)
            verdict.setdefault(data, set()).add(bad or d in valid_for)
    assert c.done("alice") == 2 and c.done("bob") == 2
    assert_safe(c)


def test_client_abuse_is_bounded():
    c = Cluster(byz_client=("alice", "client-abuse", {"rate": 6}))
    c.workload(4, clients=("bob",), ticks=2)
    assert c.done("bob") == 4
    assert c.rejects(Reason.MALFORMED, peer="alice") > 0
    assert all(len(r.batching.pending) <= len(CLIENTS) for r in c.cores)
    assert_safe(c)


def test_equivocation_is_proven_by_the_certificates_of_the_view_change():
    # No backup receives both pre-prepares; the prepared certificate in a VIEW-CHANGE
    # carries the other one, signed by the old primary: that pair is the evidence.
    from pbft.protocol.events import Evidence

    c = Cluster(byz=(0, "equivocate", {}))
    c.workload(1)
    c.tick(400)
    found = [e for r in (1, 2, 3) for e in c.of(r, Evidence)]
    assert found and {(e.culprit, e.kind) for e in found} == {(0, "equivocate")}
    for e in found:  # and it convinces a third party holding only the cluster file
        record = {"culprit": e.culprit, "kind": e.kind,
                  "first": base64.b64encode(e.first).decode(),
                  "second": base64.b64encode(e.second).decode()}
        verdict = verify_evidence(c.cfg, record)
        assert verdict.ok and verdict.culprit == 0, verdict
    assert_safe(c, same_state=False)
