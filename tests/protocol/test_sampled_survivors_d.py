"""A fourth batch of gaps found by a sampled mutation run of the core (docs/mutation.md).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise. Two mutants of that run are equivalent and have no test here (see
build/survivors-d-notes.md): `_switch_epoch__mutmut_21` (the batching queue adopted with
no start time is re-timed at once by `RequestTimers.new_view`, and that RequestTimers is
then replaced) and `MemoryStore.rollback__mutmut_15` (every bucket a checkpoint saved is a
key of `buckets`, so the default `{}` is never used).
"""

from __future__ import annotations

import pytest
from conftest import (
    broadcast_messages,
    drive_to_execution,
    feed,
    make_config,
    make_replica,
    make_verifier,
    put,
    sign_checkpoint,
    sign_pre_prepare,
)
from test_epochs import cluster, command, membership, replaced_3
from test_recovery_epochs import _epoch_1_in_a_view_change, recovered_in_epoch_0
from test_retired import _sends_to

from pbft.protocol.config import OPERATOR, ReplicaInfo
from pbft.protocol.crypto import KeyPair, batch_digest
from pbft.protocol.epochs import reconfigure_operation
from pbft.protocol.events import (
    Broadcast,
    CheckpointTaken,
    EpochStarted,
    Persist,
    Received,
    Record,
    Tick,
    Truncate,
)
from pbft.protocol.messages import Epochs as EpochsMessage
from pbft.protocol.messages import Status, ViewChange, decode_envelope
from pbft.protocol.records import DamagedRecord, ViewState, from_persist
from pbft.protocol.viewchange import ViewStatus
from pbft.sim.simulation import apply_durability

# -- the durable records: a damaged row is refused with one sentence (records.py) ----------


@pytest.mark.parametrize(
    ("row", "sentence"),
    [
        (Persist(Record.VOTE, 2**64, 0, "prepare", b""),
         "the stored vote record at view 0, n=18446744073709551616 (tag 'prepare') is damaged: bad key"),
        (Persist(Record.VOTE, 1, 0, "promise", b""),
         "the stored vote record at view 0, n=1 (tag 'promise') is damaged: unknown vote phase"),
    ],
    ids=["bad-key", "unknown-vote-phase"],
)
def test_recovery_refuses_a_damaged_row_with_its_exact_sentence(row, sentence):
    """A row whose key is not two u64s, or a VOTE row of no phase this replica signs, is
    damaged: recovery refuses the store with the one sentence an operator reads (records.py,
    docs/formats.md), word for word. Found by mutation testing: mutants
    pbft.protocol.records.x_from_persist__mutmut_10 ("XXbad keyXX") and _28 (the phase
    sentence None: "is damaged: None")."""
    rep = make_replica(make_config(), 1)
    with pytest.raises(DamagedRecord) as exc:
        rep.recover([row])
    assert str(exc.value) == sentence


# -- recovery with nothing stable: back to genesis (recovery.recover) -----------------------


def _kept(store: dict, actions) -> list:
    """Apply a step's durability actions to `store` as the simulator does; the actions."""
    for a in actions:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)
    return actions


def test_a_restart_that_starts_the_service_over_keeps_genesis_as_checkpoint_0():
    """With no stable checkpoint recorded, a restart goes back to genesis and replays
    what it executed; when the store no longer keeps checkpoint 0 (it had moved on to
    later stable checkpoints whose records the crash lost), the service starts over and
    genesis is kept again as checkpoint 0, so the replay takes each checkpoint after it
    again. K = 1: replica 2 executed n=1 and n=2, both became stable (the store released
    checkpoint 0), and only the records up to the executions survived. Found by mutation
    testing: mutant pbft.protocol.recovery.x_recover__mutmut_73 (genesis kept as
    checkpoint 1: replaying n=1, checkpoint 1 was "not after 1", a ValueError out of
    recover())."""
    cfg = make_config(checkpoint_interval=1)
    rep = make_replica(cfg, 2)
    genesis = rep.store.digest_at(0)
    store: dict = {}
    digests = {}
    for n, client in ((1, "alice"), (2, "bob")):
        batch = (put(client, 1),)
        out = _kept(store, feed(rep, 0, sign_pre_prepare(n, batch)))
        out += _kept(store, drive_to_execution(rep, n, batch_digest(batch)))
        [digests[n]] = [a.digest for a in out if isinstance(a, CheckpointTaken)]
    for n in (1, 2):  # stable; these steps' records are lost in the crash
        for r in (0, 1):
            feed(rep, r, sign_checkpoint(r, n, digests[n]))
    assert rep.log.low == 2 and 0 not in rep.store.kept
    again = make_replica(cfg, 2, service=rep.service)
    again.recover(list(store.values()))
    assert again.last_executed == 2 and again.log.low == 0
    assert again.store.kept == [0, 1, 2]
    assert [again.store.digest_at(n) for n in (0, 1, 2)] == [genesis, digests[1], digests[2]]


# -- configuration epochs: EPOCHS once per retransmission period (Replica._send_epochs) ------

NEW_2 = KeyPair.from_seed(b"test-replica-2-epoch-2")


def _epochs_sent(actions, to: int) -> list[EpochsMessage]:
    msgs = [decode_envelope(d)[1] for d in _sends_to(actions, to)]
    return [m for m in msgs if isinstance(m, EpochsMessage)]


def test_a_replica_left_behind_gets_the_epochs_once_per_period_even_across_an_epoch_switch():
    """A STATUS from a replica in an older epoch is answered with the entries of the
    later epochs (EPOCHS), once per retransmission period per replica: they are small,
    but a STATUS must not buy an answer each. The STATUS answers are rationed too
    (catchup.CatchUp), but an epoch switch starts those afresh; the EPOCHS ration is
    not. Replica 0, in epoch 1, sends the laggard (replica 1, epoch 0) epoch 1's entry;
    then switches to epoch 2 in the same tick; the laggard's next STATUS gets no
    second EPOCHS until a period has passed, then both entries. Found by mutation
    testing: mutant pbft.protocol.replica.xǁReplicaǁ_send_epochs__mutmut_1 (what was sent
    not remembered: EPOCHS again at once)."""
    router, operator = cluster()
    command(router, operator, 1, replaced_3(router.config))
    r0 = router.replicas[0]
    laggard = make_replica(router.config, 1)  # restarted from nothing, in epoch 0
    status = laggard.safety.sign_other(Status(0, 0, 0, 0)).to_bytes()
    [first] = _epochs_sent(r0.step(Received(1, status)), 1)
    assert len(first.entries) == 1
    cfg1 = r0.config
    replicas = list(cfg1.replicas)
    replicas[2] = ReplicaInfo(2, "127.0.0.1", 7202, NEW_2.public)
    router.perform(OPERATOR, operator.submit(reconfigure_operation(2, membership(cfg1, replicas=tuple(replicas)))))
    router.run()
    assert r0.epochs.current == 2 and r0.ticks == 0
    again = list(r0.step(Received(1, status)))
    assert _sends_to(again, 1) != []  # the STATUS is answered (catch-up starts afresh) ...
    assert _epochs_sent(again, 1) == []  # ... but the EPOCHS are not sent twice in a period
    for _ in range(r0._retransmit_ticks):
        r0.step(Tick())
    [later] = _epochs_sent(r0.step(Received(1, status)), 1)
    assert len(later.entries) == 2


# -- configuration epochs: the held view record written back (Replica._switch_epoch) ---------


def test_re_entering_an_epoch_writes_back_its_held_view_change_and_resends_it_after_a_restart():
    """A restart took replica 0 back to epoch 0 while it held epoch 1's records
    (recovery.HeldOver), its view record among them: it was in a view change of epoch 1,
    its VIEW-CHANGE durable. Re-entering epoch 1, the switch writes that record back,
    VIEW-CHANGE and all (the newest held record of each kind, here the only one), not a
    bare view record of its own: a restart after the switch finds it in that view change
    with its own VIEW-CHANGE, and retransmits it at the first tick (OSDI'99 4.4, 4.5.2).
    Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁ_switch_epoch__mutmut_119 (`[+1:]`: every held record of
    a kind but the first, so the only one was dropped and a view record with no message
    overwrote it on disk)."""
    held, ra = _epoch_1_in_a_view_change()
    vc = ra.view_changes.received[0].data
    b, operator_b, r0 = recovered_in_epoch_0(held)
    switch: list = []
    perform = b.perform

    def recording(src, actions):
        if src == 0 and any(isinstance(a, EpochStarted) for a in actions):
            switch.extend(actions)
        perform(src, actions)

    b.perform = recording
    command(b, operator_b, 1, replaced_3(b.config))
    assert r0.epochs.current == 1 and r0.view == ra.view and r0.status is ViewStatus.VIEW_CHANGE
    written = [from_persist(a) for a in switch if isinstance(a, Persist) and a.record is Record.VIEW]
    assert written == [ViewState(ra.view, False, vc)]
    again = make_replica(b.config, 0, make_verifier(b.config, memo=10_000), service=r0.service)
    again.recover(list(b.stores[0].values()))
    assert again.view == ra.view and again.status is ViewStatus.VIEW_CHANGE
    out = list(again.step(Tick()))
    assert [m.new_view for m in broadcast_messages(out) if isinstance(m, ViewChange)] == [ra.view]
    assert vc in [a.data for a in out if isinstance(a, Broadcast)]  # the very one it signed
