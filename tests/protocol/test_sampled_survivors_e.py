"""A fifth batch of gaps found by a sampled mutation run of the core (docs/mutation.md).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise. Notes: build/survivors-e-notes.md.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import (
    drive_to_execution,
    feed,
    make_config,
    make_replica,
    put,
    seal_as,
    sign_checkpoint,
    sign_pre_prepare,
)
from test_epochs import OPERATOR_KEY, replaced_3

from pbft.protocol import codec
from pbft.protocol.config import OPERATOR
from pbft.protocol.crypto import batch_digest, seal
from pbft.protocol.epochs import first_view, reconfigure_operation
from pbft.protocol.events import (
    CheckpointTaken,
    Evidence,
    Note,
    Persist,
    Reason,
    Received,
    Record,
    Rejected,
    Send,
    StateInstalled,
    Tick,
    Truncate,
)
from pbft.protocol.evidence import EVIDENCE_MEMORY, EvidenceMemory
from pbft.protocol.messages import FetchBatch, Request
from pbft.protocol.records import ACCEPTED, QUORUM_TAG, DamagedRecord
from pbft.protocol.replica import ALL_CHECKPOINTS
from pbft.protocol.viewchange import ViewStatus
from pbft.sim.simulation import apply_durability

# -- the durable records: every damaged shape has its sentence (records.from_persist) -------


def _damaged(record: str, view: int, seq: int, tag: str, what: str) -> str:
    return f"the stored {record} record at view {view}, n={seq} (tag {tag!r}) is damaged: {what}"


E1 = first_view(1)
E2 = first_view(2)


@pytest.mark.parametrize(
    ("row", "sentence"),
    [
        (Persist(Record.EXECUTED, 1, -1, "", b""),
         _damaged("executed", -1, 1, "", "bad key")),
        (Persist(Record.VOTE, 1, 0, "promise", b""),
         _damaged("vote", 0, 1, "promise", "unknown vote phase")),
        (Persist(Record.PREPARED, 1, 0, "", codec.encode([])),
         _damaged("prepared", 0, 1, "", "not a list of envelopes")),
        (Persist(Record.PREPARED, 1, 0, "", codec.encode([b"pp", "prepare"])),
         _damaged("prepared", 0, 1, "", "not a list of envelopes")),
        (Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([4, b"d"])),
         _damaged("checkpoint", 0, 0, "", "not [seq, digest, proof]")),
        (Persist(Record.CHECKPOINT, 0, 0, "", codec.encode([4, b"d", b"proof"])),
         _damaged("checkpoint", 0, 0, "", "a field has the wrong type")),
        (Persist(Record.WINDOW, 0, 0, "", codec.encode({"seq": 4})),
         _damaged("window", 0, 0, "", "not [seq, digest, proof]")),
        (Persist(Record.WINDOW, 0, 0, "", codec.encode([-4, b"d", []])),
         _damaged("window", 0, 0, "", "a field has the wrong type")),
        (Persist(Record.VIEW, 0, 0, QUORUM_TAG, codec.encode("one")),
         _damaged("view", 0, 0, QUORUM_TAG, "not a view number")),
        (Persist(Record.VIEW, 0, E2, QUORUM_TAG, codec.encode(E1 + 1)),
         _damaged("view", E2, 0, QUORUM_TAG, "keyed under another epoch")),
        (Persist(Record.VIEW, 0, 0, "", codec.encode([1, True, b"", b""])),
         _damaged("view", 0, 0, "", "not [view, active, message]")),
        (Persist(Record.VIEW, 0, 0, "", codec.encode([1, 1, b""])),
         _damaged("view", 0, 0, "", "a field has the wrong type")),
        (Persist(Record.VIEW, 0, E1, "", codec.encode([E2, True, b""])),
         _damaged("view", E1, 0, "", "keyed under another epoch")),
    ],
    ids=[
        "bad-key", "vote-phase", "prepared-empty", "prepared-not-bytes", "checkpoint-shape",
        "checkpoint-field-type", "window-shape", "window-field-type", "quorum-not-a-view",
        "quorum-other-epoch", "view-shape", "view-field-type", "view-other-epoch",
    ],
)
def test_recovery_refuses_every_damaged_shape_with_its_exact_sentence(row, sentence):
    """Each check `from_persist` makes of a stored row has its own sentence, the one an
    operator reads when recovery refuses the store (records.py, docs/formats.md), word
    for word: one minimal damaged row per check (a PREPARED row empty or with a non-bytes
    member, a CHECKPOINT or WINDOW not three fields or with a field of the wrong type, a
    view-quorum row not a view or keyed under another epoch, a VIEW row likewise). Found
    by mutation testing: mutants pbft.protocol.records.x_from_persist__mutmut_57 ("NOT A
    LIST OF ENVELOPES"), _122 ("NOT [SEQ, DIGEST, PROOF]", the WINDOW row), _167
    ("XXkeyed under another epochXX", the view-quorum row) and _197 ("XXa field has the
    wrong typeXX", the VIEW row)."""
    rep = make_replica(make_config(), 1)
    with pytest.raises(DamagedRecord) as exc:
        rep.recover([row])
    assert str(exc.value) == sentence


def test_an_accepted_pre_prepare_row_is_not_a_vote_of_an_unknown_phase():
    """The one VOTE tag that is not a phase this replica signs, the pre-prepare it
    accepted from the primary, is read back, not refused (the "unknown vote phase"
    sentence above is for any other tag)."""
    rep = make_replica(make_config(), 1)
    pp = sign_pre_prepare(1, (put("alice", 1),))
    rep.recover([Persist(Record.VOTE, 1, 0, ACCEPTED, pp)])  # no DamagedRecord


# -- evidence: a conflicting pair reported once (evidence.EvidenceMemory) -------------------


def test_an_equivocation_retransmitted_is_reported_once_and_refused_each_time():
    """A primary that signs two PRE-PREPAREs for one (v, n) is faulty, and the backup
    reports the pair as Evidence (OSDI'99 4.2; evidence.py); retransmissions repeat the
    same pair, which is refused again (CONFLICT) but reported only once. Found by
    mutation testing: mutant pbft.protocol.evidence.xǁEvidenceMemoryǁfirst_time__mutmut_5
    (a pair already seen counted as new: Evidence at every retransmission)."""
    rep = make_replica(make_config(), 1)
    first = sign_pre_prepare(1, (put("alice", 1),))
    second = sign_pre_prepare(1, (put("bob", 1),))
    feed(rep, 0, first)
    out = feed(rep, 0, second)
    assert [a for a in out if isinstance(a, Evidence)] == [Evidence(0, "equivocate", first, second)]
    for _ in range(2):
        again = feed(rep, 0, second)
        assert [a for a in again if isinstance(a, Evidence)] == []
        assert [(a.peer, a.reason) for a in again if isinstance(a, Rejected)] == [(0, Reason.CONFLICT)]


def test_the_evidence_memory_reports_each_pair_once_and_forgets_all_when_full():
    """EvidenceMemory: True the first time a pair is offered, False after; when it holds
    EVIDENCE_MEMORY pairs it forgets them all (at worst a pair is reported again), so it
    never grows past its bound. Same mutant as above, at the memory itself."""
    mem = EvidenceMemory()
    assert mem.first_time(0, "equivocate", b"a", b"b")
    assert not mem.first_time(0, "equivocate", b"a", b"b")
    assert mem.first_time(0, "equivocate", b"b", b"a")  # another pair (order matters)
    assert mem.first_time(1, "equivocate", b"a", b"b")  # another culprit
    for i in range(EVIDENCE_MEMORY - 3):
        assert mem.first_time(2, "double-prepare", i.to_bytes(4, "big"), b"x")
    assert len(mem.seen) == EVIDENCE_MEMORY
    assert not mem.first_time(0, "equivocate", b"a", b"b")  # full, but already known
    assert mem.first_time(3, "double-commit", b"c", b"d")  # full: forgotten, then this one
    assert len(mem.seen) == 1
    assert mem.first_time(0, "equivocate", b"a", b"b")  # forgotten: reported again


# -- configuration epochs: a pending change after a state transfer (Replica._install_state) --


def _keep(store: dict, actions) -> None:
    for a in actions:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)


def _restarted_behind_a_pending_change():
    """Replicas 1, 2 and 3 executed alice's puts at n=1..4 (checkpoint 4 stable) and the
    operator's command for epoch 1 at n=5 (boundary B = 8). Replica 2 restarts on a store
    that no longer keeps checkpoint 4: it reads the pending change from the store's
    entries and fetches the state at 4 from replicas 1 and 3 (recovery.py). Returns
    (the restarted replica 2, the replicas that serve it)."""
    cfg = replace(make_config(), operator_key=OPERATOR_KEY.public)
    reps = {i: make_replica(cfg, i) for i in (1, 2, 3)}
    store: dict = {}
    op = Request(reconfigure_operation(1, replaced_3(cfg)), 1, OPERATOR)
    batches = [(put("alice", ts),) for ts in range(1, 5)]
    batches.append((seal(OPERATOR_KEY, cfg.signing_domain, OPERATOR, op).to_bytes(),))
    digest4 = b""
    for seq, batch in enumerate(batches, start=1):
        for i, r in reps.items():
            out = feed(r, 0, sign_pre_prepare(seq, batch)) + drive_to_execution(r, seq, batch_digest(batch))
            if i == 2:
                _keep(store, out)
            taken = [a.digest for a in out if isinstance(a, CheckpointTaken)]
            digest4 = taken[0] if taken else digest4
        if seq == 4:
            for i, r in reps.items():
                for s in (1, 2, 3):
                    if s != i:
                        out = feed(r, s, sign_checkpoint(s, 4, digest4))
                        if i == 2:
                            _keep(store, out)
    r2 = reps[2]
    assert r2.log.low == 4 and r2.last_executed == 5 and r2.epochs.boundary() == 8
    r2.store.release(ALL_CHECKPOINTS)
    again = make_replica(cfg, 2, service=r2.service)
    again.recover(list(store.values()))
    assert again.transfer is not None and again.transfer.seq == 4 and sorted(again.transfer.sources) == [1, 3]
    assert again.epochs.boundary() == 8 and again.epoch_deadline is None
    return again, reps


def _tick_and_serve(rep, servers: dict) -> list:
    """One tick of `rep`, its requests answered by `servers` until quiet: every action of
    `rep` in that time."""
    out = list(rep.step(Tick()))
    pending = [a for a in out if isinstance(a, Send)]
    while pending:
        a = pending.pop(0)
        if a.to not in servers:
            continue
        for b in servers[a.to].step(Received(rep.id, a.data)):
            if isinstance(b, Send) and b.to == rep.id:
                got = list(rep.step(Received(a.to, b.data)))
                out += got
                pending += [c for c in got if isinstance(c, Send)]
    return out


def _notes(actions) -> list[str]:
    return [a.text for a in actions if isinstance(a, Note)]


def test_a_pending_change_installed_by_a_state_transfer_waits_a_whole_timeout_for_its_boundary():
    """A replica that installs a state (state transfer) while a change of configuration
    is pending below its boundary B starts the deadline by which B must be reached as if
    it had executed the command: a whole view-change timeout from the install, not at
    once (epochs.py; `_on_epoch_deadline`). Here the restarted replica 2 installs the
    state at 4 with B = 8; it stays in view 0 for the timeout, then moves the view saying
    B is not reached. Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁ_install_state__mutmut_56 (`ticks - timeout`: the
    deadline already past, the view change at the very next tick)."""
    rep, servers = _restarted_behind_a_pending_change()
    out = _tick_and_serve(rep, servers)
    assert [a.seq for a in out if isinstance(a, StateInstalled)] == [4]
    assert rep.last_executed == 4 and rep.epochs.current == 0 and rep.epochs.boundary() == 8
    installed_at = rep.ticks
    timeout = rep._vc_timeout_ticks
    quiet: list = []
    while rep.ticks < installed_at + timeout - 1:
        quiet += rep.step(Tick())
    assert not [n for n in _notes(quiet) if "boundary" in n]
    assert rep.view == 0 and rep.status is ViewStatus.NORMAL
    out = list(rep.step(Tick()))  # a whole timeout after the install
    assert _notes(out) == ["the boundary 8 of epoch 1 is not reached"]
    assert rep.view == 1 and rep.status is ViewStatus.VIEW_CHANGE


# -- batches by digest: a FETCH-BATCH refused names who sent it (Replica.on_fetch_batch) ----


def test_a_fetch_batch_not_signed_by_a_replica_is_refused_naming_the_sender():
    """Only replicas ask for a batch by digest (FETCH-BATCH, a protocol message): one a
    client signed is refused as WRONG_ROLE, reported and counted against the peer that
    sent it, and answered with nothing. Found by mutation testing: mutants
    pbft.protocol.replica.xǁReplicaǁon_fetch_batch__mutmut_3 (the refusal named no peer)
    and _5 (`_ignore` called without its peer: a TypeError out of step)."""
    rep = make_replica(make_config(), 1)
    batch = (put("alice", 1),)
    feed(rep, 0, sign_pre_prepare(1, batch))
    out = feed(rep, "alice", seal_as("alice", FetchBatch(1, batch_digest(batch))))
    assert out == [Rejected("alice", Reason.WRONG_ROLE, "protocol message not signed by a replica")]
    assert rep.rejects[("alice", Reason.WRONG_ROLE)] == 1
    assert rep.rejects[(None, Reason.WRONG_ROLE)] == 0


def test_our_own_fetch_batch_echoed_back_is_counted_quietly_against_the_peer():
    """A FETCH-BATCH we signed ourselves, echoed back by a peer, is not answered (we do
    not send ourselves batches): counted once as a DUPLICATE against that peer, with no
    Rejected action (a quiet refusal, `_ignore` with no detail)."""
    rep = make_replica(make_config(), 1)
    batch = (put("alice", 1),)
    feed(rep, 0, sign_pre_prepare(1, batch))
    out = feed(rep, 2, seal_as(1, FetchBatch(1, batch_digest(batch))))
    assert out == []
    assert rep.rejects[(2, Reason.DUPLICATE)] == 1
