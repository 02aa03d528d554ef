"""A service that is not deterministic (docs/services.md): the core says so (`Diverged`)
instead of only fetching state, stalling or raising (red-team findings 1, 3, 5, 7).

One core of a 4-replica f=1 cluster with messages fed by hand (tests/conftest.py), on a
service whose state includes a per-instance salt: what a service that iterates over a set
or reads its host does across processes.
"""

from __future__ import annotations

import os

import pytest
from conftest import (
    actions_of,
    execute_batch,
    feed,
    make_client,
    make_config,
    make_replica,
    pre_prepare,
    put,
    sign_checkpoint,
    sign_commit,
    sign_prepare,
)

from pbft.protocol.events import (
    Broadcast,
    CheckpointStable,
    Diverged,
    Divergence,
    Failed,
    Persist,
    Received,
    Record,
    Send,
    SendClient,
    StateTransferStarted,
    Truncate,
    split_status_label,
    status_label,
)
from pbft.protocol.messages import Envelope, Reply, to_body
from pbft.protocol.recovery import ReplayDiverged
from pbft.service.api import Hosted, Service
from pbft.sim.simulation import apply_durability

pytestmark = pytest.mark.timeout(60)

FAR = b"\x42" * 32
OTHER = b"\x43" * 32


class Salted(Service):
    """Writes its instance's salt into the state: each replica (each process) differs."""

    name = "test.salted"

    def __init__(self, salt: bytes | None = None) -> None:
        self.salt = os.urandom(8) if salt is None else salt

    def execute(self, state, operation, client):
        state.put(b"salt", self.salt)
        return b"ok"


def salted(cfg, rid: int, salt: bytes | None = None):
    return make_replica(cfg, rid, service=Hosted(Salted(salt)))


def run_to(rep, last: int) -> list:
    actions = []
    for seq in range(rep.last_executed + 1, last + 1):
        actions += execute_batch(rep, seq, (put("alice", seq),))
    return actions


# -- a stable checkpoint that is not our state ------------------------------------------------


def test_a_stable_checkpoint_other_than_our_state_is_reported_and_fetched():
    """Finding 3: 2f+1 signed another digest at 4 than ours: `Diverged` (STABLE), the
    fetch as before, and the status a client's query gets says so until we match again."""
    cfg = make_config()
    rep = salted(cfg, 1)
    run_to(rep, 4)
    own = rep.checkpoints.own[4]
    out = []
    for signer in (0, 2, 3):
        out += feed(rep, signer, sign_checkpoint(signer, 4, FAR))
    assert actions_of(out, Diverged) == [Diverged(4, own, FAR, Divergence.STABLE)]
    assert actions_of(out, StateTransferStarted) and actions_of(out, CheckpointStable)
    assert rep.diverged == Diverged(4, own, FAR, Divergence.STABLE)
    assert split_status_label(status_label("", rep.diverged)) == ("", ("stable", 4))


def test_our_own_checkpoint_matching_a_stable_one_clears_the_divergence():
    cfg = make_config()
    rep = make_replica(cfg, 1)
    rep.diverged = Diverged(4, OTHER, FAR)  # an earlier one
    run_to(rep, 8)
    d = rep.checkpoints.own[8]
    out = []
    for signer in (0, 2):
        out += feed(rep, signer, sign_checkpoint(signer, 8, d))
    assert actions_of(out, CheckpointStable) and not actions_of(out, Diverged)
    assert rep.diverged is None


# -- CHECKPOINTs that prove correct replicas disagree --------------------------------------------


def test_checkpoints_that_no_digest_can_win_are_reported_once_as_a_split():
    """Finding 1: with our digest and two others at 4, whatever the digest, more than f
    signed another: correct replicas disagree (reported once, with the count)."""
    cfg = make_config()
    rep = salted(cfg, 1)
    run_to(rep, 4)
    own = rep.checkpoints.own[4]
    assert not actions_of(feed(rep, 0, sign_checkpoint(0, 4, FAR)), Diverged)  # f alone: no
    out = feed(rep, 2, sign_checkpoint(2, 4, OTHER))
    assert actions_of(out, Diverged) == [Diverged(4, own, b"", Divergence.SPLIT, 3)]
    assert not actions_of(feed(rep, 3, sign_checkpoint(3, 4, b"\x44" * 32)), Diverged)  # once
    assert rep.stable_seq == 0 and rep.diverged is not None


def test_f_faulty_replicas_signing_wrong_digests_never_look_like_a_split():
    cfg = make_config()
    rep = make_replica(cfg, 1)
    run_to(rep, 4)
    d = rep.checkpoints.own[4]
    out = feed(rep, 0, sign_checkpoint(0, 4, FAR))  # the one faulty replica
    out += feed(rep, 2, sign_checkpoint(2, 4, d))
    out += feed(rep, 3, sign_checkpoint(3, 4, d))
    assert not actions_of(out, Diverged) and rep.stable_seq == 4 and rep.diverged is None


def test_votes_before_our_own_report_the_split_when_ours_makes_it():
    """The split may be proven by our own vote (the last one in)."""
    cfg = make_config()
    rep = salted(cfg, 1)
    run_to(rep, 3)
    feed(rep, 0, sign_checkpoint(0, 4, FAR))
    feed(rep, 2, sign_checkpoint(2, 4, OTHER))
    out = run_to(rep, 4)
    [d] = actions_of(out, Diverged)
    assert d.kind is Divergence.SPLIT and d.own_digest == rep.checkpoints.own[4]


# -- replay after a restart ---------------------------------------------------------------------


def _durable(actions, store, drop_executed_from: int | None = None):
    for a in actions:
        if isinstance(a, Persist | Truncate):
            if (
                isinstance(a, Persist) and a.record is Record.EXECUTED
                and drop_executed_from is not None and a.seq >= drop_executed_from
            ):
                continue  # lost in the crash (EXECUTED records may follow replies)
            apply_durability(store, a)


def test_a_replay_that_contradicts_a_signed_checkpoint_stops_recovery_with_one_sentence():
    """Finding 1 after a restart, and 5 (code changed under the same `version`): the
    replay gets another digest for checkpoint 4 than the one signed before: a
    ReplayDiverged naming the likely cause, not SafetyViolation's traceback."""
    cfg = make_config()
    rep = salted(cfg, 1, b"old")
    store: dict = {}
    _durable(run_to(rep, 5), store)
    again = salted(cfg, 1, b"new")
    with pytest.raises(ReplayDiverged) as err:
        again.recover(list(store.values()))
    text = str(err.value)
    assert "checkpoint 4" in text and "not deterministic" in text and "version" in text
    assert "\n" not in text
    # The same code replays cleanly.
    same = salted(cfg, 1, b"old")
    same.recover(list(store.values()))
    assert same.last_executed == 5 and same.halted is None


def test_a_re_execution_in_step_that_contradicts_a_signed_checkpoint_halts_quietly():
    """The EXECUTED record of n=4 was lost in the crash, so 4 is executed again in step():
    a fatal Diverged, nothing sent, and every later step does nothing (it never raises)."""
    cfg = make_config()
    rep = salted(cfg, 1, b"old")
    store: dict = {}
    _durable(run_to(rep, 4), store, drop_executed_from=4)
    again = salted(cfg, 1, b"new")
    again.recover(list(store.values()))
    assert again.last_executed == 3
    _, digest = pre_prepare(again, 4, (put("alice", 4),))
    for r in (2, 3):
        feed(again, r, sign_prepare(r, 4, digest))
    feed(again, 0, sign_commit(0, 4, digest))
    halting = feed(again, 2, sign_commit(2, 4, digest))  # 2f+1 commits with ours: executes 4
    [d] = actions_of(halting, Diverged)
    assert d.fatal and d.kind is Divergence.REPLAY and d.seq == 4
    assert again.halted == d
    # The step that halted sends nothing computed with the diverging service (the reply
    # to request 4 included), and every later step does nothing.
    assert not [a for a in halting if isinstance(a, Send | Broadcast | SendClient)]
    assert feed(again, 0, sign_checkpoint(0, 4, FAR)) == []


# -- the client: replicas that answer differently -----------------------------------------------


def _reply(replica: int, ts: int, result: bytes) -> bytes:
    return Envelope(to_body(Reply(0, ts, "alice", replica, result)), replica, b"").to_bytes()


def test_a_client_fails_once_no_result_can_reach_f_plus_1():
    """Finding 7: four replicas, four results: no f+1 can ever match (a correct reply
    never changes), so the request fails at once saying why instead of timing out."""
    cfg = make_config()
    alice = make_client(cfg, "alice", retransmit_ticks=5)
    alice.submit(b"op")
    for r in range(3):
        assert alice.step(Received(r, _reply(r, 1, b"r%d" % r))) == []  # one more could match
    [failed] = alice.step(Received(3, _reply(3, 1, b"r3")))
    assert isinstance(failed, Failed) and failed.disagreed
    assert "4 different results" in failed.detail and "not deterministic" in failed.detail
    assert alice.outstanding is None


def test_one_faulty_reply_never_makes_a_client_give_up():
    cfg = make_config()
    alice = make_client(cfg, "alice", retransmit_ticks=5)
    alice.submit(b"op")
    assert alice.step(Received(0, _reply(0, 1, b"garbage"))) == []
    assert alice.step(Received(1, _reply(1, 1, b"r"))) == []
    assert alice.step(Received(0, _reply(0, 1, b"more garbage"))) == []  # it changes its mind
    out = alice.step(Received(2, _reply(2, 1, b"r")))
    assert [type(a).__name__ for a in out] == ["Completed"]
