"""Still more gaps found by a sampled mutation run of the core (docs/mutation.md).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise.
"""

from __future__ import annotations

from conftest import (
    CLIENTS4,
    broadcast_messages,
    drive_to_execution,
    feed,
    make_config,
    make_replica,
    put,
    seal_as,
    sign_pre_prepare,
    sign_prepare,
)
from test_epochs import cluster, command, membership, replaced_3
from test_retired import _removed_and_left_behind, _sends_to

from pbft.protocol.config import OPERATOR, ReplicaInfo
from pbft.protocol.crypto import KeyPair, batch_digest
from pbft.protocol.epochs import first_view, reconfigure_operation
from pbft.protocol.events import Load, Persist, Reason, Received, Rejected, Tick, Truncate
from pbft.protocol.messages import (
    Commit,
    FetchState,
    NewView,
    Prepare,
    PrePrepare,
    StableProof,
    StateChunk,
    Status,
    ViewChange,
    decode_envelope,
    detached,
)
from pbft.protocol.viewchange import ViewStatus
from pbft.sim.simulation import apply_durability


def _kept(store: dict, actions) -> list:
    """Apply a step's durability actions to `store` as the simulator does; the actions."""
    for a in actions:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)
    return actions


def _restarted(rep, store: dict):
    """`rep` restarted from `store` on the state its crash left (make_replica + recover)."""
    again = make_replica(rep.config, rep.id, service=rep.service)
    again.recover(list(store.values()))
    return again


# -- a removed replica rations its answers (Replica._on_received_retired) -------------------


def test_a_removed_replica_answers_a_fetch_state_once_per_period_and_counts_the_repeat():
    """A replica removed by a change still serves the state at its stable checkpoint to one
    left behind, rationed as a member would (statetransfer.ChunkBudget): the same
    FETCH-STATE asked again at once gets no second answer, is counted once as a DUPLICATE
    against the asker (quietly: no Rejected action), and one relayed by another replica is
    refused naming the relay. Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁ_on_received_retired__mutmut_73 (the refusal called
    `_ignore` without its peer: a TypeError out of step)."""
    _, old3, laggard = _removed_and_left_behind()
    status = laggard.safety.sign_other(Status(0, 0, 0, 0)).to_bytes()
    answer = _sends_to(old3.step(Received(1, status)), 1)
    assert StableProof in {type(decode_envelope(d)[1]) for d in answer}
    # The laggard learns the boundary and asks replica 3 (the only one it reaches) for state.
    asks: list[bytes] = []
    for data in answer:
        asks += _sends_to(laggard.step(Received(3, data)), 3)
    asks += _sends_to(laggard.step(Tick()), 3)
    fetch = next(d for d in asks if isinstance(decode_envelope(d)[1], FetchState))
    served = _sends_to(old3.step(Received(1, fetch)), 1)
    assert [type(decode_envelope(d)[1]) for d in served] == [StateChunk]
    before = old3.rejects[(1, Reason.DUPLICATE)]
    again = old3.step(Received(1, fetch))
    assert list(again) == []
    assert old3.rejects[(1, Reason.DUPLICATE)] == before + 1
    relayed = old3.step(Received(0, fetch))
    assert [(a.peer, a.reason) for a in relayed if isinstance(a, Rejected)] == [(0, Reason.WRONG_ROLE)]


# -- configuration epochs: the epoch a removed replica left (Replica.left_config) -----------

NEW_2 = KeyPair.from_seed(b"test-replica-2-epoch-2")


def test_a_replica_removed_after_two_epochs_signs_as_the_member_of_the_latest_one():
    """Replica 2 was a member of epoch 0 and of epoch 1 (replica 3's key replaced), and is
    removed in epoch 2 (its own key replaced). `left_config` is the configuration of the
    LATEST epoch before the current one it was a member of, epoch 1, not epoch 0: the
    replicas left behind are of epoch 1, and what the removed replica hands them (a
    STABLE-PROOF) is signed under epoch 1's domain, so it verifies there as epoch 1's.
    Found by mutation testing: mutant pbft.protocol.replica.xǁReplicaǁleft_config__mutmut_6
    (searched the epochs oldest first: epoch 0's, whose domain no epoch-1 replica uses)."""
    router, operator = cluster()
    command(router, operator, 1, replaced_3(router.config))
    cfg1 = router.replicas[0].config
    assert cfg1.epoch == 1
    replicas = list(cfg1.replicas)
    replicas[2] = ReplicaInfo(2, "127.0.0.1", 7202, NEW_2.public)
    router.perform(OPERATOR, operator.submit(reconfigure_operation(2, membership(cfg1, replicas=tuple(replicas)))))
    router.run()
    old2, r0 = router.replicas[2], router.replicas[0]
    assert r0.epochs.current == 2 and not r0.retired
    assert old2.retired and old2.epochs.current == 2
    left = old2.left_config()
    assert left is not None and left.epoch == 1 and left == old2.epochs.configs[1]
    # A replica left behind in epoch 1 (stable checkpoint 4) asks; the answer is epoch 1's.
    asking = seal_as(1, Status(first_view(1), 4, 4, 0), cluster_id=cfg1.replica_domain)
    answer = _sends_to(old2.step(Received(1, asking)), 1)
    proofs = [d for d in answer if isinstance(decode_envelope(d)[1], StableProof)]
    assert len(proofs) == 1
    env = decode_envelope(proofs[0])[0]
    assert r0.epochs.verifier(1).verify(env)
    assert r0.epochs.verify_any(env) == 1


# -- recovery: our own votes of the view we re-enter (recovery.load_view) -------------------

A = (put("alice", 1),)
DA = batch_digest(A)


def _prepared_in_view_0_and_re_issued_in_view_1(store: dict):
    """Replica 2 prepared n=1 (alice's put) in view 0, then view 1's NEW-VIEW (primary 1,
    from the VIEW-CHANGEs of 0, 1 and 3, replica 1's carrying the prepared certificate)
    re-issued n=1 by digest, and replica 2 prepared it again in view 1: its store holds
    PREPAREs of both views for n=1, and no accepted pre-prepare of view 1 (a NEW-VIEW's
    pre-prepares are kept in the NEW-VIEW)."""
    rep = make_replica(make_config(), 2)
    _kept(store, feed(rep, 0, sign_pre_prepare(1, A)))
    assert ("prepare", 0, 1) in rep.safety.signed and not rep.log.get(1).prepared
    cert = (detached(sign_pre_prepare(1, A)), sign_prepare(1, 1, DA), sign_prepare(2, 1, DA))
    vcs = (
        seal_as(0, ViewChange(1, 0, (), ())),
        seal_as(1, ViewChange(1, 0, (), (cert,))),
        seal_as(3, ViewChange(1, 0, (), ())),
    )
    nv = seal_as(1, NewView(1, vcs, (detached(seal_as(1, PrePrepare(1, 1, DA))),)))
    rep.become_view_change(1)
    _kept(store, feed(rep, 1, nv))
    assert (rep.view, rep.status) == (1, ViewStatus.NORMAL)
    assert ("prepare", 1, 1) in rep.safety.signed
    return rep


def _own_prepares(actions) -> list[Prepare]:
    return [m for m in broadcast_messages(actions) if isinstance(m, Prepare)]


def test_a_restarted_backup_puts_back_only_its_prepare_of_the_view_it_re_enters():
    """After a restart, `load_view` puts our own PREPAREs of the view we re-enter back into
    the log, in a slot of THAT view (so the retransmission of our own messages, which
    sends only slots of the current view, resends it at the first tick: TOCS 5.3), and
    never a PREPARE we signed in an earlier view (OSDI'99 4.4: a NEW-VIEW supersedes the
    old view's slots). Replica 2 signed PREPAREs for n=1 in view 0 and, for the NEW-VIEW's
    re-issue, in view 1. Found by mutation testing: mutants
    pbft.protocol.recovery.x_load_view__mutmut_62 (`and` for `or`: the view-0 PREPARE was
    loaded, making the slot one of view 0), _67 (`break` for `continue`: the view-0 vote,
    first in order, ended the loop and the view-1 PREPARE was never put back) and _90
    (the restored slot's view None)."""
    store: dict = {}
    rep = _prepared_in_view_0_and_re_issued_in_view_1(store)
    again = _restarted(rep, store)
    assert (again.view, again.status) == (1, ViewStatus.NORMAL)
    slot = again.log.get(1)
    assert slot is not None and slot.view == 1
    assert slot.my_prepare == rep.safety.signed[("prepare", 1, 1)][1].to_bytes()
    out = list(again.step(Tick()))
    assert _own_prepares(out) == [Prepare(1, 1, DA)]
    # The view's primary resends the pre-prepare, a backup its PREPARE, 2f+1 commit: done.
    feed(again, 1, seal_as(1, PrePrepare(1, 1, DA, A)))
    drive_to_execution(again, 1, DA, view=1)
    assert again.last_executed == 1 and again.log.get(1).view == 1


def test_a_restarted_backup_puts_back_its_prepare_after_the_votes_of_what_it_executed():
    """The votes a replica signed are replayed in order (commit, pre-prepare, prepare;
    then by view and number); those of slots it already executed are passed over, and
    those after them still come back: replica 2 executed n=1 and prepared n=2 in view 0,
    and after a restart its PREPARE for n=2 is in the log and retransmitted at the first
    tick (TOCS 5.3), so with one more PREPARE the slot prepares and it commits. Found by
    mutation testing: mutant pbft.protocol.recovery.x_load_view__mutmut_67 (`break`: the
    COMMIT of executed n=1, first in order, ended the replay)."""
    store: dict = {}
    rep = make_replica(make_config(), 2)
    _kept(store, feed(rep, 0, sign_pre_prepare(1, A)))
    _kept(store, drive_to_execution(rep, 1, DA))
    b = (put("bob", 1),)
    _kept(store, feed(rep, 0, sign_pre_prepare(2, b)))
    assert rep.last_executed == 1 and ("prepare", 0, 2) in rep.safety.signed
    again = _restarted(rep, store)
    assert again.last_executed == 1
    slot = again.log.get(2)
    assert slot is not None and slot.view == 0 and slot.my_prepare
    assert _own_prepares(list(again.step(Tick()))) == [Prepare(0, 2, batch_digest(b))]
    # Its own PREPARE counts: one more (replica 1's) and the slot is prepared, COMMIT out.
    out = feed(again, 1, sign_prepare(1, 2, batch_digest(b)))
    assert again.log.get(2).prepared
    assert [m for m in broadcast_messages(out) if isinstance(m, Commit)] == [Commit(0, 2, batch_digest(b))]


def test_a_restarted_primary_numbers_after_the_pre_prepares_it_signed():
    """A primary that signed PRE-PREPAREs for n=1 and n=2 and restarted before they
    executed numbers its next batch 3 (OSDI'99 4.2: never two pre-prepares for one (v, n);
    `load_view`), and a retransmitted request already in one of them is not proposed a
    second time. Found by mutation testing: mutant
    pbft.protocol.recovery.x_load_view__mutmut_86 (`seq - 1`: the restarted primary
    believed n=1 was next, took alice's retransmission for a new request and proposed it
    again at n=3)."""
    store: dict = {}
    rep = make_replica(make_config(clients=CLIENTS4), 0)
    rep.step(Load(False))  # idle: it proposes as soon as its pipeline has room
    alice, bob = put("alice", 1), put("bob", 1)
    out = _kept(store, feed(rep, "alice", alice))
    out += _kept(store, feed(rep, "bob", bob))
    pps = [m for m in broadcast_messages(out) if isinstance(m, PrePrepare)]
    assert [(m.seq, m.batch) for m in pps] == [(1, (alice,)), (2, (bob,))]
    again = _restarted(rep, store)
    assert again.next_seq == 3 and again.last_executed == 0
    out = feed(again, "alice", alice)  # alice's client retransmits, first thing
    out += list(again.step(Load(False)))  # then the runtime says it is idle
    assert [m for m in broadcast_messages(out) if isinstance(m, PrePrepare)] == []
    out = feed(again, "carol", put("carol", 1))
    assert [(m.seq, m.batch) for m in broadcast_messages(out) if isinstance(m, PrePrepare)] == [
        (3, (put("carol", 1),))
    ]
