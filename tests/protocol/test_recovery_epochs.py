"""A restart that takes a replica back to an earlier configuration epoch than one it had
signed in (recovery.HeldOver; fuzz seed 27020589, tests/scenarios/fuzz-27020589-...).

A replica fetching the state of a window jump cannot read the epochs its store records
until the state is whole, so a restart then comes back in the cluster file's epoch. What
it signed, accepted and prepared in the later epoch is still a promise (OSDI'99 4.2: a
correct replica never sends conflicting messages): it must stay on disk through the epoch
switches on the way and come back into force when the replica re-enters that epoch.

Here the restart is made to come back in epoch 0 by giving the recovered replica only the
records of epoch 1 and a fresh state, which is what the jump leaves it able to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from conftest import Router, make_config, make_replica, make_verifier, seal_as, sign_pre_prepare
from test_epochs import OPERATOR_KEY, command, replaced_3

from pbft.protocol import recovery
from pbft.protocol.client import ClientCore
from pbft.protocol.config import OPERATOR
from pbft.protocol.epochs import epoch_of_view, first_view
from pbft.protocol.events import Executed, Persist, Received, Record, Tick, Truncate
from pbft.protocol.messages import Prepare, ViewChange
from pbft.protocol.records import (
    AcceptedPrePrepare,
    DamagedRecord,
    ExecutedBatch,
    PreparedCertificate,
    SignedVote,
    ViewQuorum,
    ViewState,
    from_persist,
)
from pbft.protocol.viewchange import ViewStatus
from pbft.service.kv import op_put
from pbft.sim.simulation import apply_durability

pytestmark = pytest.mark.timeout(60)


@dataclass
class DurableRouter(Router):
    """The in-memory network, with each replica's durable records kept as the simulator
    keeps them (apply_durability)."""

    stores: dict[int, dict] = field(default_factory=dict)
    executed: dict[int, dict[int, list[str]]] = field(default_factory=dict)

    def perform(self, src, actions) -> None:
        if isinstance(src, int):
            store = self.stores.setdefault(src, {})
            for a in actions:
                if isinstance(a, Persist | Truncate):
                    apply_durability(store, a)
                elif isinstance(a, Executed):
                    self.executed.setdefault(src, {})[a.seq] = [r.client for r in a.requests]
        super().perform(src, actions)


def _cluster() -> tuple[DurableRouter, ClientCore]:
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    verifier = make_verifier(config, memo=10_000)
    router = DurableRouter(config, [make_replica(config, i, verifier) for i in config.replica_ids()],
                           {c.id: ClientCore(config, c.id, _key(c.id)) for c in config.clients})
    operator = ClientCore(config, OPERATOR, OPERATOR_KEY)
    router.clients[OPERATOR] = operator
    return router, operator


def _key(name):
    from conftest import client_key
    return client_key(name)


PP5 = ("pre-prepare", first_view(1), 5)


def _epoch_1_records(store: dict) -> list[Persist]:
    """Replica 0's records of epoch 1: its votes there and its view."""
    out = []
    for p in store.values():
        typed = from_persist(p)
        view = getattr(typed, "view", 0)
        if epoch_of_view(view) == 1:
            out.append(p)
    return out


def test_a_restart_back_into_an_earlier_epoch_keeps_the_later_epochs_votes():
    # Run A: epoch 1 begins after checkpoint 4; its primary (replica 0) proposes alice's
    # put at n=5.
    a, operator = _cluster()
    command(a, operator, 1, replaced_3(a.config))
    assert a.replicas[0].epochs.current == 1 and a.replicas[0].next_seq == 5
    a.submit("alice", op_put(b"k", b"alice"))
    a.run()
    signed_a = a.replicas[0].safety.signed[PP5][1].to_bytes()
    held = _epoch_1_records(a.stores[0])
    assert any(p.record is Record.VOTE and (p.tag, p.view, p.seq) == PP5 for p in held)

    # Run B: replica 0 restarts in epoch 0 holding those records, and the group changes
    # to epoch 1 again. Re-entering it, replica 0 must keep its pre-prepare for n=5 (and
    # number bob's request after it), in memory and on disk.
    b, operator_b = _cluster()
    r0 = make_replica(b.config, 0, make_verifier(b.config, memo=10_000))
    r0.recover(held)
    assert r0.epochs.current == 0 and not r0.safety.signed
    b.replicas[0] = r0
    b.stores[0] = {p.key: p for p in held}
    command(b, operator_b, 1, replaced_3(b.config))
    assert r0.epochs.current == 1
    assert r0.safety.signed[PP5][1].to_bytes() == signed_a
    assert r0.next_seq == 6
    assert (Record.VOTE.value, first_view(1), 5, "pre-prepare") in b.stores[0]  # the switch kept it
    # Its retransmission of that pre-prepare gets n=5 executed with alice's put, and bob's
    # request goes into n=6 (the clients do not know epoch 1: the replicas' executions
    # are what counts here).
    b.submit("bob", op_put(b"k", b"bob"))
    for _ in range(100):
        for i, rep in enumerate(b.replicas):
            b.perform(i, rep.step(Tick()))
        b.run()
        if all(rep.last_executed >= 6 for rep in b.replicas[:3]):
            break
    for i in range(3):
        assert b.executed[i][5] == ["alice"] and b.executed[i][6] == ["bob"]
    assert r0.safety.signed[PP5][1].to_bytes() == signed_a


def _epoch_1_in_a_view_change():
    """Run A to the point where replica 0, primary of epoch 1 with n=5 proposed, has
    timed out into a view change of epoch 1 (its VIEW-CHANGE durable, not delivered)."""
    a, operator = _cluster()
    command(a, operator, 1, replaced_3(a.config))
    a.submit("alice", op_put(b"k", b"alice"))
    a.run()
    r0 = a.replicas[0]
    r0.become_view_change(r0.view + 1)
    out, r0._out = r0._out, []
    a.perform(0, out)
    a.queue.clear()
    return _epoch_1_records(a.stores[0]), r0


def recovered_in_epoch_0(held: list[Persist]):
    """Run B before the switch: replica 0 recovered in epoch 0 holding `held` (records of
    epoch 1 among them); (the router, the operator, replica 0)."""
    b, operator_b = _cluster()
    r0 = make_replica(b.config, 0, make_verifier(b.config, memo=10_000))
    r0.recover(held)
    assert r0.epochs.current == 0 and len(r0.held_over) > 0
    b.replicas[0] = r0
    b.stores[0] = {p.key: p for p in held}
    return b, operator_b, r0


def _reenter(held: list[Persist]) -> tuple[DurableRouter, object]:
    """Run B: replica 0 recovered in epoch 0 holding `held`, then the switch to epoch 1."""
    b, operator_b, r0 = recovered_in_epoch_0(held)
    command(b, operator_b, 1, replaced_3(b.config))
    return b, r0


@pytest.mark.parametrize("older_store", [False, True], ids=["per-epoch-key", "key-0-of-older-stores"])
def test_a_view_change_of_the_later_epoch_is_resumed_and_stays_durable(older_store):
    """The held view record says replica 0 had left epoch 1's first view (its VIEW-CHANGE
    for the next): re-entering, it is back in that view change (OSDI'99 4.4: it accepts
    nothing more of the view it left), and a restart after the switch finds it there too,
    also when an older store kept the record under key 0, which the switch's truncation
    drops (found by review: it must be written again under the epoch's key)."""
    held, ra = _epoch_1_in_a_view_change()
    if older_store:
        held = [replace(p, view=0) if p.record is Record.VIEW else p for p in held]
    b, r0 = _reenter(held)
    assert r0.epochs.current == 1 and r0.status is ViewStatus.VIEW_CHANGE and r0.view == ra.view
    assert 0 in r0.view_changes.received
    again = make_replica(b.config, 0, make_verifier(b.config, memo=10_000), service=r0.service)
    again.recover(list(b.stores[0].values()))
    assert again.view == ra.view and again.status is ViewStatus.VIEW_CHANGE


def test_a_view_record_is_one_per_epoch_and_read_only_under_its_epochs_key():
    """The VIEW record of a later epoch is not overwritten by a view change in the earlier
    epoch a restart came back to; an epoch-0 key is that of older stores."""
    v0, v2 = ViewState(3, False, b""), ViewState(first_view(2) + 1, True, b"")
    assert v0.to_persist().key != v2.to_persist().key
    assert v2.to_persist().view == first_view(2)
    assert from_persist(replace(v2.to_persist(), view=0)) == v2  # an older store's row
    with pytest.raises(DamagedRecord, match="another epoch"):
        from_persist(replace(v2.to_persist(), view=first_view(1)))
    q = ViewQuorum(first_view(2) + 1)
    assert q.to_persist().view == first_view(2) and from_persist(q.to_persist()) == q


def test_an_epoch_switch_truncates_only_the_epochs_before_it():
    store: dict = {}
    votes = {e: Persist(Record.VOTE, 9, first_view(e), "prepare", b"%d" % e) for e in (0, 1, 2)}
    views = {e: ViewState(first_view(e), True, b"").to_persist() for e in (0, 1, 2)}
    for p in [*votes.values(), *views.values()]:
        apply_durability(store, p)
    apply_durability(store, Truncate((1 << 63) - 1, below_view=first_view(1)))
    assert votes[0].key not in store and views[0].key not in store
    assert {votes[1].key, votes[2].key, views[1].key, views[2].key} <= set(store)
    apply_durability(store, Truncate(9))  # a stable checkpoint: every epoch at or below it
    assert votes[1].key not in store and views[1].key in store


def test_learning_of_an_epoch_forgets_which_view_changes_were_refused():
    """A VIEW-CHANGE or NEW-VIEW refused because its proof is of an epoch we had not heard
    of may check once we have: learning an epoch (EPOCHS) forgets the refusals, so its
    retransmission, the same bytes, is checked again rather than taken for a replay."""
    from pbft.protocol.events import Send

    a, operator = _cluster()
    command(a, operator, 1, replaced_3(a.config))
    fresh = make_replica(a.config, 1, make_verifier(a.config, memo=10_000))  # knows epoch 0 only
    fresh.view_changes.refused[2] = b"\x01" * 32
    fresh.view_changes.refused_new_view[1] = b"\x02" * 32
    a.replicas[0]._send_epochs(1, 0)
    [epochs] = [x.data for x in a.replicas[0]._out if isinstance(x, Send)]
    fresh.step(Received(0, epochs))
    assert 1 in fresh.epochs.configs
    assert fresh.view_changes.refused == {} and fresh.view_changes.refused_new_view == {}


def test_records_held_over_are_given_back_once_by_epoch_and_earlier_ones_dropped():
    """`HeldOver.take(e)`: the records of epoch e, in the order written; afterwards only
    those of later epochs are held (a record of no epoch counts as before them all)."""
    def vote(epoch: int, seq: int) -> SignedVote:
        return SignedVote("prepare", first_view(epoch) + 1, seq, b"%d" % seq)

    held = recovery.HeldOver([vote(2, 1), vote(3, 2), vote(2, 3), vote(1, 4), ExecutedBatch(0, 5)])
    assert held.take(2) == [vote(2, 1), vote(2, 3)]
    assert len(held) == 1 and held.records == [vote(3, 2)]
    assert held.take(2) == []
    assert held.take(3) == [vote(3, 2)] and len(held) == 0
    nothing = recovery.HeldOver([ExecutedBatch(0, 5)])
    assert nothing.take(0) == [] and len(nothing) == 0


def test_prepared_certificates_come_back_only_above_the_stable_checkpoint():
    """`load_votes`: a certificate at or below h is of a slot the stable checkpoint
    settled; only those above it go into our VIEW-CHANGEs (OSDI'99 4.4)."""
    rep = make_replica(make_config(), 1)
    rep.log.advance(4)
    certs = [PreparedCertificate(0, s, b"pp%d" % s, ()) for s in (3, 4, 5, 12)]
    recovery.load_votes(rep, certs)
    assert sorted(rep.prepared_certs) == [5, 12]


def test_the_last_view_record_alone_says_where_a_replica_was():
    """`load_view` with two view records of one epoch (an older store's row and the
    current one, or what `HeldOver` gives back): the last decides, and the earlier one
    leaves nothing behind, no new-view timer of a view change that was over."""
    rep = make_replica(make_config(), 1)
    recovery.load_view(rep, [ViewQuorum(1), ViewState(1, False, b""), ViewState(2, True, b"")])
    assert (rep.view, rep.status) == (2, ViewStatus.NORMAL) and not rep.new_view_timeout.running


def test_the_new_view_timer_a_restart_restores_runs_for_the_first_timeout_and_its_last_quorum():
    """A view change 2f+1 had joined before the restart runs its new-view timer again,
    for the first timeout (OSDI'99 4.5.2: only a view change that fails doubles it),
    also when `HeldOver` restores it into a replica whose timer had doubled; a quorum
    recorded for an earlier view of the epoch does not start it."""
    rep = make_replica(make_config(), 1)
    first = rep.new_view_timeout.ticks
    rep.new_view_timeout.ticks = 4 * first  # doubled twice in the epoch left
    rep.ticks = 3
    recovery.load_view(rep, [ViewQuorum(1), ViewQuorum(2), ViewState(2, False, b"")])
    assert rep.new_view_timeout.running and rep.new_view_timeout.ticks == first
    assert rep.new_view_timeout.started == 3  # from now
    other = make_replica(make_config(), 1)
    recovery.load_view(other, [ViewQuorum(2), ViewQuorum(1), ViewState(2, False, b"")])
    assert (other.view, other.status) == (2, ViewStatus.VIEW_CHANGE) and not other.new_view_timeout.running


def test_a_restart_in_a_view_change_keeps_its_own_view_change_as_its_own():
    """Our VIEW-CHANGE, restored from the VIEW record, counts as the one replica `id`
    sent (a NEW-VIEW we build lists it under our id, section 4.4)."""
    rep = make_replica(make_config(), 1)
    vc = seal_as(1, ViewChange(1, 0, (), ()))
    recovery.load_view(rep, [ViewState(1, False, vc)])
    assert (rep.view, rep.status) == (1, ViewStatus.VIEW_CHANGE)
    mine = rep.view_changes.received[1]
    assert mine.signer == 1 and mine.data == vc


def test_accepted_pre_prepares_come_back_only_of_this_view_in_the_window_above_execution():
    """`load_view` puts back the pre-prepares a backup answered in the view it re-enters,
    inside the window and above what it executed; any other record in between is
    passed over, not an end."""
    rep = make_replica(make_config(), 2)  # K = 4, L = 8
    rep.last_executed = 2
    pp = {(v, s): sign_pre_prepare(s, (), view=v) for v, s in [(1, 2), (1, 3), (0, 4), (1, 9), (1, 5)]}
    records = [ViewState(1, True, b"nv"), ExecutedBatch(1, 1)]
    for (v, s), env in pp.items():
        records += [AcceptedPrePrepare(v, s, env), ExecutedBatch(v, s)]
    recovery.load_view(rep, records)
    assert sorted(rep.log.slots) == [3, 5]
    assert rep.log.slots[3].pre_prepare_env == pp[(1, 3)] and rep.log.slots[5].pre_prepare_env == pp[(1, 5)]


def test_our_own_votes_of_this_view_come_back_into_the_log_and_the_primary_numbers_after_them():
    """`load_view` puts back the pre-prepares and prepares we signed in the view we
    re-enter (any vote of another view before them in the list is passed over, not an
    end), in slots of that view; a primary numbers its next batch after its last."""
    primary = make_replica(make_config(), 1)  # the primary of view 1
    pp = sign_pre_prepare(5, (), view=1)
    recovery.load_votes(primary, [SignedVote("pre-prepare", 1, 5, pp)])
    recovery.load_view(primary, [ViewState(1, True, b"nv")])
    assert sorted(primary.log.slots) == [5] and primary.log.slots[5].view == 1
    assert primary.log.slots[5].pre_prepare_env == pp and primary.next_seq == 6
    backup = make_replica(make_config(), 2)
    old, mine = seal_as(2, Prepare(0, 3, bytes(32))), seal_as(2, Prepare(1, 4, bytes(32)))
    recovery.load_votes(backup, [SignedVote("prepare", 0, 3, old), SignedVote("prepare", 1, 4, mine)])
    recovery.load_view(backup, [ViewState(1, True, b"nv")])
    assert sorted(backup.log.slots) == [4] and backup.log.slots[4].my_prepare == mine
    assert backup.log.slots[4].view == 1
