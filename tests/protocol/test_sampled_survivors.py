"""Gaps found by a sampled mutation run of the core (docs/mutation.md).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import (
    drive_to_execution,
    feed,
    forge,
    make_config,
    make_replica,
    make_verifier,
    put,
    rejections,
    seal_as,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
)
from test_4_4_batches_by_digest import (
    BIG,
    CLIENTS,
    D,
    certificate,
    committed_in_view_1,
    new_view,
    view_change,
)
from test_epochs import OPERATOR_KEY, command, replaced_3
from test_recovery_epochs import _cluster as durable_cluster
from test_recovery_epochs import _epoch_1_in_a_view_change, recovered_in_epoch_0

from pbft.protocol import codec
from pbft.protocol.config import OPERATOR
from pbft.protocol.crypto import batch_digest, seal
from pbft.protocol.epochs import first_view, reconfigure_operation
from pbft.protocol.events import (
    EpochStarted,
    Executed,
    Note,
    Persist,
    Reason,
    Record,
    Rejected,
    Tick,
    Truncate,
)
from pbft.protocol.messages import (
    Batch,
    NewView,
    PrePrepare,
    Request,
    ViewChange,
    decode_envelope,
    detached,
)
from pbft.protocol.records import DamagedRecord, PreparedCertificate, ViewState, from_persist
from pbft.protocol.replica import ALL_CHECKPOINTS
from pbft.protocol.viewchange import ViewStatus
from pbft.service.kv import op_put
from pbft.sim.simulation import apply_durability

# -- OSDI'99 4.4: a batch fetched by digest ------------------------------------------------


def _fetched(store: dict | None = None):
    """Replica 3 of view 1 (primary 1): n=1 re-issued by digest, committed, its batch
    fetched from replica 2 (test_4_4_batches_by_digest). Its durable records go into
    `store` as the simulator keeps them."""
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 3)
    out = feed(rep, 1, new_view())
    out += committed_in_view_1(rep)
    out += feed(rep, 2, seal_as(2, Batch(1, D, BIG)))
    if store is not None:
        for a in out:
            if isinstance(a, Persist | Truncate):
                apply_durability(store, a)
    return rep, out


def test_a_second_answer_for_a_batch_already_attached_is_counted_once_as_stale():
    """A BATCH for a slot that no longer misses it (a second replica answered the same
    FETCH-BATCH) is dropped quietly: one STALE count per message, no Rejected action, no
    change. Mutant pbft.protocol.replica.xǁReplicaǁon_batch__mutmut_22 (counted 2)."""
    rep, _ = _fetched()
    assert rep.last_executed == 1
    before = rep.rejects.copy()
    out = feed(rep, 1, seal_as(1, Batch(1, D, BIG)))
    assert out == [] and rejections(out) == []
    assert rep.rejects - before == {(1, Reason.STALE): 1}
    feed(rep, 0, seal_as(0, Batch(1, D, BIG)))
    assert rep.rejects - before == {(1, Reason.STALE): 1, (0, Reason.STALE): 1}
    assert rep.last_executed == 1


def test_the_prepared_record_written_for_a_fetched_batch_keeps_its_view_and_replays():
    """When a batch fetched by digest arrives, the PREPARED record is written again with
    the batch, under the certificate's view (OSDI'99 4.4: prepared certificates survive a
    restart; docs/architecture.md, the durability contract): a restart replays the
    execution from it. Mutant pbft.protocol.replica.xǁReplicaǁ_attach_batch__mutmut_42
    (the record's view None: the row is damaged and the replica refuses to start)."""
    store: dict = {}
    rep, out = _fetched(store)
    assert [a.seq for a in out if isinstance(a, Executed)] == [1]
    records = [from_persist(a) for a in out if isinstance(a, Persist)]
    certs = [r for r in records if isinstance(r, PreparedCertificate)]
    assert certs[-1].view == 1 and certs[-1].seq == 1
    assert decode_envelope(certs[-1].pre_prepare)[1].batch == BIG
    # A restart on the store as it is replays n=1 from the records.
    again = make_replica(rep.config, 3, service=rep.service)
    again.recover(list(store.values()))
    assert again.last_executed == 1 and again.view == 1
    assert again.service.digest() == rep.service.digest()


# -- configuration epochs: the deadline of a pending change (epochs.py) --------------------


def _pending_change(replica: int = 2, executed: int = 1):
    """A backup of epoch 0 that executed the operator's command for epoch 1 at n=1
    (boundary B = 4), then alice's puts up to n=`executed`; no CHECKPOINT of the others
    arrives, so nothing is stable."""
    cfg = replace(make_config(), operator_key=OPERATOR_KEY.public)
    rep = make_replica(cfg, replica)
    op = Request(reconfigure_operation(1, replaced_3(cfg)), 1, OPERATOR)
    batches = [(seal(OPERATOR_KEY, cfg.signing_domain, OPERATOR, op).to_bytes(),)]
    batches += [(put("alice", ts),) for ts in range(1, executed)]
    for seq, batch in enumerate(batches, start=1):
        feed(rep, 0, sign_pre_prepare(seq, batch))
        drive_to_execution(rep, seq, batch_digest(batch))
    assert rep.last_executed == executed and rep.epochs.boundary() == 4 and rep.log.low == 0
    return rep


def _tick(rep, times: int) -> list:
    out: list = []
    for _ in range(times):
        out += rep.step(Tick())
    return out


def _notes(actions) -> list[str]:
    return [a.text for a in actions if isinstance(a, Note)]


def test_a_boundary_executed_but_not_stable_at_the_deadline_moves_the_view_and_says_why():
    """A change of configuration waits for the checkpoint at its boundary B to be stable
    (epochs.py). A backup that executed up to B (last_executed == B) but sees no stable
    checkpoint there for a view-change timeout starts a view change (OSDI'99 4.4: the
    NEW-VIEW re-issues what was prepared; fuzz seed 18000931), with a note naming B, the
    pending epoch and *not stable* (B is reached). Mutants
    pbft.protocol.replica.xǁReplicaǁ_on_epoch_deadline__mutmut_15 (`<=`: said "not
    reached") and _28 (named epoch 2)."""
    rep = _pending_change(executed=4)
    timeout = rep._vc_timeout_ticks
    assert rep.last_executed == 4 and rep.log.low == 0  # B executed, not stable
    assert not _notes(_tick(rep, timeout - 1))
    assert rep.view == 0 and rep.status is ViewStatus.NORMAL
    out = _tick(rep, 1)
    assert _notes(out) == ["the boundary 4 of epoch 1 is not stable"]
    assert rep.view == 1 and rep.status is ViewStatus.VIEW_CHANGE


def test_the_epoch_deadline_restarts_a_whole_timeout_after_it_fires():
    """A backup whose pending change's boundary is not reached moves the view when the
    deadline passes, and the deadline then restarts a whole view-change timeout later
    (backed off like the view-change timer, OSDI'99 4.5.2), so the view the NEW-VIEW
    installs gets its time to fill up to B: no second view change at the next tick.
    Mutant pbft.protocol.replica.xǁReplicaǁ_on_epoch_deadline__mutmut_5 (`ticks - X`:
    the deadline stayed in the past and the new view was left at its first tick)."""
    rep = _pending_change(executed=1)
    timeout = rep._vc_timeout_ticks
    out = _tick(rep, timeout)
    assert _notes(out) == ["the boundary 4 of epoch 1 is not reached"]
    assert rep.view == 1 and rep.status is ViewStatus.VIEW_CHANGE
    assert rep.epoch_deadline == rep.ticks + timeout
    # View 1's NEW-VIEW (primary 1) from the VIEW-CHANGEs of 0, 1 and 3.
    vcs = tuple(seal_as(s, ViewChange(1, 0, (), ())) for s in (0, 1, 3))
    feed(rep, 1, seal_as(1, NewView(1, vcs, ())))
    assert rep.view == 1 and rep.status is ViewStatus.NORMAL
    _tick(rep, timeout - 1)
    assert rep.view == 1 and rep.status is ViewStatus.NORMAL
    out = _tick(rep, 1)  # a whole timeout after it fired, B still not reached
    assert _notes(out) == ["the boundary 4 of epoch 1 is not reached"]
    assert rep.view == 2 and rep.status is ViewStatus.VIEW_CHANGE


# -- recovery (docs/architecture.md, "The durability contract") -----------------------------


def test_a_restart_that_must_fetch_its_stable_state_enters_no_epoch_before_holding_it():
    """A replica restarted on a store that no longer keeps its stable checkpoint (B = 4,
    the boundary of epoch 1) fetches that state (TOCS 5.3) and replays nothing; until the
    state is whole it stays in the epoch the cluster file names, however far the store's
    own entries say the group went (epochs.py: the new group starts from the stable
    checkpoint, so a replica switches only once it holds that state,
    `_maybe_switch_epoch`). Mutant pbft.protocol.recovery.x_recover__mutmut_97 (the
    fetch branch left `replay` true: epoch 1 began in the middle of the transfer)."""
    a, operator = durable_cluster()
    command(a, operator, 1, replaced_3(a.config))
    r1 = a.replicas[1]
    assert r1.epochs.current == 1 and r1.log.low == 4 and r1.last_executed == 4
    r1.store.release(ALL_CHECKPOINTS)  # the store cannot go back to checkpoint 4 any more
    again = make_replica(a.config, 1, make_verifier(a.config), service=r1.service)
    notes = again.recover(list(a.stores[1].values()))
    assert "the stored state does not hold checkpoint n=4: fetching it" in _notes(notes)
    assert not [n for n in notes if isinstance(n, EpochStarted)]
    assert again.epochs.current == 0 and again.config.epoch == 0
    assert again.transfer is not None and again.transfer.seq == 4 and again.log.low == 4
    assert again.last_executed == 0 and len(again.held_over) > 0  # epoch 1's records wait


def test_re_entering_an_epoch_writes_back_only_its_newest_held_view_record():
    """A restart took replica 0 back to epoch 0 while it held epoch 1's records
    (recovery.HeldOver), among them two VIEW records of epoch 1: an older store's row
    under key 0 (written when it entered epoch 1's first view) and the newer one under
    epoch 1's key (its VIEW-CHANGE for the next view). Re-entering epoch 1, the switch
    writes back the newest record of each kind, once: the view it is in (OSDI'99 4.4),
    never the one it left. Mutant pbft.protocol.replica.xǁReplicaǁ_switch_epoch__mutmut_120
    (`[-2:]`: the older row was written back too, just before the newer one; the same
    step's later write under the same key overwrote it, so only the actions tell)."""
    held, ra = _epoch_1_in_a_view_change()
    legacy = replace(ViewState(first_view(1), True, b"").to_persist(), view=0)
    held = [legacy, *held]
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
    states = [r for r in written if isinstance(r, ViewState)]
    assert [(s.view, s.active) for s in states] == [(ra.view, False)]


# -- the durable records: a damaged row is refused with one sentence (records.py) ----------


@pytest.mark.parametrize(
    ("row", "sentence"),
    [
        (Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([1, "d", [b"a"]])),
         "the stored checkpoint record at view 0, n=0 (tag '') is damaged: a field has the wrong type"),
        (Persist(Record.VIEW, 0, 0, "", codec.encode([1, True])),
         "the stored view record at view 0, n=0 (tag '') is damaged: not [view, active, message]"),
    ],
    ids=["checkpoint-field-type", "view-shape"],
)
def test_a_damaged_row_is_refused_with_its_exact_sentence(row, sentence):
    """The sentence an operator reads when recovery refuses a store (records.py,
    docs/formats.md). Mutants pbft.protocol.records.x_from_persist__mutmut_102 and
    _182 (the sentences in capitals)."""
    with pytest.raises(DamagedRecord) as exc:
        from_persist(row)
    assert str(exc.value) == sentence


# -- OSDI'99 4.4: what a BATCH answer is refused for ---------------------------------------


def test_a_batch_not_signed_by_a_replica_or_not_of_its_digest_is_refused_naming_its_sender():
    """A BATCH answers a FETCH-BATCH for a slot held by digest only: it must come from a
    replica, and its requests must hash to the digest 2f+1 replicas prepared (4.4). Each
    refusal names the channel's peer, its reason and the slot. Mutants
    pbft.protocol.replica.xǁReplicaǁon_batch__mutmut_4 (the guard's verdict lost) and
    _27 (the detail lost)."""
    cfg = make_config(clients=CLIENTS)
    rep = make_replica(cfg, 3)
    committed_in_view_1(rep)  # n=1 committed, its batch still missing
    out = feed(rep, 2, seal_as("alice", Batch(1, D, BIG)))
    assert [(a.peer, a.reason) for a in out if isinstance(a, Rejected)] == [(2, Reason.WRONG_ROLE)]
    out = feed(rep, 2, seal_as(2, Batch(1, D, BIG[:2])))
    assert [(a.peer, a.reason, a.detail) for a in out if isinstance(a, Rejected)] == [
        (2, Reason.BAD_DIGEST, "batch n=1")
    ]
    assert rep.last_executed == 0
    feed(rep, 2, seal_as(2, Batch(1, D, BIG)))
    assert rep.last_executed == 1


def test_a_fetched_batch_with_a_request_that_does_not_verify_is_executed_and_noted():
    """A batch fetched by digest was prepared by 2f+1 replicas, one of them correct, which
    checked its requests: one that does not verify here (a key changed since, a damaged
    copy) does not stop the slot; it is said in a note (4.4). Mutant
    pbft.protocol.replica.xǁReplicaǁ_attach_batch__mutmut_6 (the note's text lost)."""
    batch = (put("alice", 1), forge("bob", Request(op_put(b"k", b"v"), 1, "bob"), real_signer="alice"))
    d = batch_digest(batch)
    vcs = (view_change(0), view_change(1, (certificate(1, batch),)), view_change(2))
    nv = seal_as(1, NewView(1, vcs, (detached(seal_as(1, PrePrepare(1, 1, d))),)))
    rep = make_replica(make_config(clients=CLIENTS), 3)
    feed(rep, 1, nv)
    for r in (1, 2):
        feed(rep, r, sign_commit(r, 1, d, view=1))
    feed(rep, 2, sign_prepare(2, 1, d, view=1))
    out = feed(rep, 2, seal_as(2, Batch(1, d, batch)))
    notes = [a.text for a in out if isinstance(a, Note)]
    assert len(notes) == 1 and notes[0].startswith("unverifiable request in fetched n=1: ")
    assert rep.last_executed == 1


def test_an_epochs_entry_that_does_not_decode_is_refused_as_malformed():
    """EPOCHS carries [epoch, after, command] entries (epochs.py); one that is not is
    refused, naming the peer. Mutant pbft.protocol.replica.xǁReplicaǁon_epochs__mutmut_12
    (the reason lost)."""
    from pbft.protocol.messages import Epochs as EpochsMessage

    rep = make_replica(make_config(), 0)
    for entry in (b"\xff", codec.encode([1, 2])):
        out = feed(rep, 2, seal_as(2, EpochsMessage((entry,))))
        assert [(a.peer, a.reason, a.detail) for a in out if isinstance(a, Rejected)] == [
            (2, Reason.MALFORMED, "an epoch entry")
        ]
    assert rep.rejects[(2, Reason.MALFORMED)] == 2


def test_a_removed_replica_counts_what_no_other_member_signed_as_stale():
    """A replica removed by a change answers only members of its old epoch (replica.py,
    `_on_received_retired`): its own messages echoed back are counted, one each, and not
    answered. Mutant pbft.protocol.replica.xǁReplicaǁ_on_received_retired__mutmut_18
    (counted down)."""
    from test_retired import _removed_and_left_behind

    from pbft.protocol.messages import Status

    _, old3, _ = _removed_and_left_behind()
    own = seal_as(3, Status(0, 0, 0, 0))  # signed as itself: no other member's
    before = old3.rejects[(1, Reason.STALE)]
    for _ in range(2):
        assert feed(old3, 1, own) == []
    assert old3.rejects[(1, Reason.STALE)] == before + 2


def test_progress_toward_the_boundary_restarts_the_epoch_deadline():
    """While a change of configuration is pending, each execution restarts the deadline
    by which the boundary must be reached (epochs.py; `_on_epoch_deadline`): a group that
    keeps ordering is not moved to another view. Mutant
    pbft.protocol.replica.xǁReplicaǁ_execute__mutmut_83 (restarted only when there is none)."""
    rep = _pending_change(executed=1)
    assert rep.epoch_deadline is not None
    _tick(rep, 5)
    feed(rep, 0, sign_pre_prepare(2, (put("alice", 1),)))
    drive_to_execution(rep, 2, batch_digest((put("alice", 1),)))
    assert rep.last_executed == 2
    assert rep.epoch_deadline == rep.ticks + rep._vc_timeout_ticks
