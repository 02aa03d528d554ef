"""The review of issue 13's rules (a red-team pass against the paper) found ways to use
them against liveness or resources; each fix here has a test that fails without it."""

from __future__ import annotations

import pytest
from conftest import (
    actions_of,
    decoded,
    feed,
    make_config,
    make_replica,
    seal_as,
    sign_checkpoint,
    sign_request,
)
from test_4_4_view_change_timers import ticks as _ticks

from pbft.protocol.events import Rejected, Send
from pbft.protocol.held import HeldAnswers
from pbft.protocol.messages import FetchState, Request, Status, ViewChange
from pbft.protocol.statetransfer import CHUNKS_PER_PERIOD
from pbft.protocol.viewchange import LONE_FACTOR, InvalidCertificate, check_checkpoint_proof
from pbft.service.kv import op_put

pytestmark = pytest.mark.timeout(120)


def test_a_replayed_old_request_does_not_use_up_the_held_answer_of_a_new_one():
    """HELD answers were budgeted per client: a faulty replica replaying one old request
    of alice kept the answer her restarted process needed from ever being sent."""
    cfg = make_config()
    held = HeldAnswers(cfg)
    old = Request(b"op", 10001, "alice")
    new = Request(b"op", 101, "alice")
    assert held.answer(0, 1, old, 10003, now=0) is not None
    assert held.answer(0, 1, old, 10003, now=1) is None  # the replay, again: nothing
    assert held.answer(0, 1, new, 10003, now=2) is not None  # her own request still is


def test_a_replayed_status_uses_none_of_the_budget_of_the_real_one():
    """A lagging replica's old STATUS, replayed by another replica, used up the
    once-per-period answer its real STATUS needed, and it stayed behind. Only a STATUS
    over its signer's own channel is answered."""
    from test_recovery_holes import _executed_replica

    cfg = make_config()
    rep = _executed_replica(cfg, 1, 8)
    old = seal_as(3, Status(0, 5, 4, 1))
    replay = feed(rep, 0, old)  # replica 0 replays 3's STATUS
    assert not actions_of(replay, Send)
    assert [r.reason.name for r in actions_of(replay, Rejected)] == ["WRONG_ROLE"]
    assert actions_of(feed(rep, 3, seal_as(3, Status(0, 6, 4, 2))), Send)  # the real one
    # A replica restarted from its disk may report less than before: still answered.
    _ticks(rep, cfg.retransmit_ms // cfg.tick_ms)
    assert actions_of(feed(rep, 3, old), Send)


def _view_change(signer: int, view: int) -> bytes:
    return seal_as(signer, ViewChange(view, 0, (), ()))


def test_own_view_change_resends_are_per_view_and_never_to_a_replica_known_past_it():
    """Resends were budgeted per asker: a replayed VIEW-CHANGE of replica 1 for view 1 used
    the answer its real one for view 2 needed; and answering replicas known to be in a
    later view let two correct replicas resend old VIEW-CHANGEs to each other for ever."""
    cfg = make_config()
    rep = make_replica(cfg, 3)
    rep._out = []
    rep.become_view_change(1)
    rep.become_view_change(2)
    rep.become_view_change(3)
    rep._out = []
    assert {1, 2, 3} <= set(rep.view_changes.own)
    def resent(data: bytes) -> list[int]:
        return [decoded(a.data)[1].new_view for a in actions_of(feed(rep, 2, data), Send)]

    # A replay of replica 2's VIEW-CHANGE for view 1, then its real one for view 2 at once:
    # each view gets its answer (a budget per asker gave the replay the only one).
    assert resent(_view_change(2, 1)) == [1]
    assert resent(_view_change(2, 2)) == [2]
    # Replica 2 is past view 1 now: a copy of its old VIEW-CHANGE gets nothing, even a
    # period later (two correct replicas could otherwise resend old ones for ever).
    _ticks(rep, rep._retransmit_ticks)
    assert resent(_view_change(2, 1)) == []


def test_a_lone_view_change_is_joined_only_while_it_is_retransmitted_and_ever_more_slowly():
    """The group joins a replica alone in view + 1 only while that VIEW-CHANGE keeps
    coming (one copy is not a replica waiting there), and the wait doubles per join of the
    same signer without the view-change backoff's cap."""
    cfg = make_config()
    rep = make_replica(cfg, 0)
    vc = _view_change(2, 1)
    feed(rep, 2, vc)
    [(signer, view, due)] = rep.view_changes.lone_deadlines(rep.view, rep.ticks)
    assert (signer, view) == (2, 1) and due == LONE_FACTOR * rep._vc_timeout_ticks
    _ticks(rep, 2 * rep._retransmit_ticks + 1)
    assert rep.view_changes.lone_deadlines(rep.view, rep.ticks) == []  # no copy lately: not waiting there any more
    feed(rep, 2, vc)  # a retransmission, the same bytes
    assert [d[:2] for d in rep.view_changes.lone_deadlines(rep.view, rep.ticks)] == [(2, 1)]
    rep.view_changes.lone_joins[2] = 20  # far beyond MAX_BACKOFF_SHIFT (6)
    [(_, _, due)] = rep.view_changes.lone_deadlines(rep.view, rep.ticks)
    assert due > (LONE_FACTOR * rep._vc_timeout_ticks) << 6


def test_timers_restart_at_most_once_per_request_and_view():
    """Catching up (a state transfer, a restart, learning that we lag) gives a waiting
    request a fresh timer once: a primary that made one backup transfer again and again
    pushed its deadlines back for ever and censored a client."""
    cfg = make_config()
    rep = make_replica(cfg, 1)
    feed(rep, "bob", sign_request("bob", op_put(b"b", b"1"), 1))
    _ticks(rep, 5)
    rep.requests.restart(rep.ticks)
    first = rep.requests.waiting["bob"][2]
    _ticks(rep, 5)
    rep.requests.restart(rep.ticks)
    assert rep.requests.waiting["bob"][2] == first == 5


def test_state_chunks_per_replica_and_period_are_budgeted():
    """The budget per answer let a faulty replica fetch every node of a large checkpoint
    each period (64 MiB/s for a 16 MiB state): answers are rationed per asker."""
    from test_recovery_holes import _executed_replica

    cfg = make_config()
    rep = _executed_replica(cfg, 1, 8)
    digest = rep.checkpoints.own[8]
    sent = 0
    overload = 0
    for i in range(CHUNKS_PER_PERIOD + 2):  # leaves, each a distinct question
        out = feed(rep, 3, seal_as(3, FetchState(8, digest, 0, i, 0)))
        sent += len(actions_of(out, Send))
        overload += sum(1 for r in actions_of(out, Rejected) if r.reason.name == "OVERLOAD")
    assert sent == CHUNKS_PER_PERIOD and overload == 2
    _ticks(rep, cfg.retransmit_ms // cfg.tick_ms)
    assert actions_of(feed(rep, 3, seal_as(3, FetchState(8, digest, 0, CHUNKS_PER_PERIOD, 0))), Send)


def test_a_padded_checkpoint_proof_is_refused_by_its_shape_before_any_signature():
    """A STABLE-PROOF (or a VIEW-CHANGE's proof) padded with thousands of copies was
    verified envelope by envelope; its shape refuses it first."""
    cfg = make_config()
    d = b"\x07" * 32
    one = sign_checkpoint(0, 4, d)
    calls = []

    class Counting:
        def verify(self, env):
            calls.append(env.signer)
            return True

    with pytest.raises(InvalidCertificate, match="more than n"):
        check_checkpoint_proof(cfg, Counting(), 4, (one,) * 4096)
    with pytest.raises(InvalidCertificate, match="two messages of replica 0"):
        check_checkpoint_proof(cfg, Counting(), 4, (one, one, sign_checkpoint(1, 4, d)))
    assert calls == []
    proof = tuple(sign_checkpoint(s, 4, d) for s in (0, 1, 2))
    assert check_checkpoint_proof(cfg, Counting(), 4, proof) == d and sorted(calls) == [0, 1, 2]
