"""A replica removed by a change lingers for the replicas left behind (epochs.py;
Replica._on_received_retired; fuzz seed 28055746).

The old epoch's proof that its boundary is stable may be held by nobody else: the members
that stay may have crashed before they collected its 2f+1 CHECKPOINTs. A removed replica
therefore answers, signed as the member it was, a STATUS behind its stable checkpoint
with the epochs after the asker's and the proof, and serves the state at that checkpoint;
everything else it refuses, and it answers no faster than a member does.
"""

from __future__ import annotations

import pytest
from conftest import make_replica, replica_key
from test_epochs import cluster, command, replaced_3

from pbft.protocol.config import LINGER_MAX_MS, LINGER_MS
from pbft.protocol.crypto import seal
from pbft.protocol.epochs import first_view
from pbft.protocol.events import Departed, EpochStarted, Reason, Received, Rejected, Send, Tick
from pbft.protocol.messages import Epochs as EpochsMessage
from pbft.protocol.messages import Prepare, StableProof, Status, decode_envelope
from pbft.protocol.safety import SafetyViolation

pytestmark = pytest.mark.timeout(60)


def _removed_and_left_behind(**settings):
    """Replica 3's key replaced (epoch 1 begins after checkpoint 4); replica 1 restarted
    from nothing in epoch 0 (its cluster file's), so everything it knows must come from
    the removed replica 3: replicas 0 and 2 are out of its reach. `settings` change the
    cluster's configuration."""
    router, operator = cluster(**settings)
    command(router, operator, 1, replaced_3(router.config))
    old3 = router.replicas[3]
    assert old3.retired and old3.log.low == 4 and old3.epochs.current == 1
    return router, old3, make_replica(router.config, 1)


def _sends_to(actions, to: int) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Send) and a.to == to]


def test_one_left_behind_reaches_the_new_epoch_through_the_removed_replica_alone():
    _, old3, laggard = _removed_and_left_behind()
    _reach_epoch_1_through(old3, laggard)


def _reach_epoch_1_through(old3, laggard) -> None:
    status = laggard.safety.sign_other(Status(0, 0, 0, 0)).to_bytes()
    answer = _sends_to(old3.step(Received(1, status)), 1)
    assert {type(decode_envelope(d)[1]) for d in answer} == {EpochsMessage, StableProof}
    # The loop of a replica that can reach only the removed one: it learns the boundary
    # is stable, fetches the state at it from replica 3 and moves to epoch 1.
    inbox = list(answer)
    for _ in range(400):
        out = []
        for data in inbox:
            out += laggard.step(Received(3, data))
        out += laggard.step(Tick())
        inbox = []
        for data in _sends_to(out, 3):
            inbox += _sends_to(old3.step(Received(1, data)), 1)
        old3.step(Tick())
        if laggard.epochs.current == 1:
            break
    assert laggard.log.low == 4 and laggard.last_executed == 4
    assert laggard.epochs.current == 1 and not laggard.retired


def test_the_removed_replica_answers_nothing_else_and_no_faster_than_a_member():
    _, old3, laggard = _removed_and_left_behind()
    behind = laggard.safety.sign_other(Status(0, 0, 0, 0)).to_bytes()
    assert _sends_to(old3.step(Received(1, behind)), 1)
    # Asked again at once: the answer of this period was given.
    again = old3.step(Received(1, behind))
    assert not _sends_to(again, 1)
    # A STATUS not behind its stable checkpoint needs nothing from it.
    assert not _sends_to(old3.step(Received(2, seal(replica_key(2), laggard.config.replica_domain, 2,
                                                         Status(0, 4, 4, 0)).to_bytes())), 2)
    # Relayed by another (its answer would go to who did not ask), forged, or a vote.
    relayed = old3.step(Received(0, behind))
    assert [a.reason for a in relayed if isinstance(a, Rejected)] == [Reason.WRONG_ROLE]
    forged = seal(replica_key(2), laggard.config.replica_domain, 0, Status(0, 0, 0, 0)).to_bytes()
    out = old3.step(Received(0, forged))
    assert [a.reason for a in out if isinstance(a, Rejected)] == [Reason.BAD_SIGNATURE]
    vote = seal(replica_key(0), laggard.config.replica_domain, 0, Prepare(0, 5, b"\x01" * 32)).to_bytes()
    before = old3.rejects[(0, Reason.STALE)]
    assert not old3.step(Received(0, vote))
    assert old3.rejects[(0, Reason.STALE)] == before + 1
    # Malformed bytes: a counted rejection, never a raise.
    out = old3.step(Received(0, b"\xff\x00garbage"))
    assert [a.reason for a in out if isinstance(a, Rejected)] == [Reason.MALFORMED]


def _ticks(rep, ms: int) -> int:
    return ms // rep.config.tick_ms


def _tick_until_departed(rep, limit: int) -> int | None:
    """Ticks stepped until `rep` says Departed (None if not within `limit`)."""
    for i in range(1, limit + 1):
        if any(isinstance(a, Departed) for a in rep.step(Tick())):
            return i
    return None


def test_the_removed_replica_departs_once_nobody_has_asked_for_a_while():
    _, old3, _ = _removed_and_left_behind()
    assert _tick_until_departed(old3, 2 * _ticks(old3, LINGER_MS)) == _ticks(old3, LINGER_MS)
    assert _tick_until_departed(old3, 100) is None  # once


@pytest.mark.parametrize("linger_ms", [0, 10, 2_000, LINGER_MAX_MS])
def test_the_lingering_is_the_cluster_files_linger_ms(linger_ms):
    """`[cluster] linger_ms` sets it (0: the next tick), in the removed replica's epoch and
    in the one it left alike (a change keeps the setting)."""
    _, old3, laggard = _removed_and_left_behind(linger_ms=linger_ms)
    assert old3.config.linger_ms == old3.left_config().linger_ms == linger_ms
    assert _tick_until_departed(old3, _ticks(old3, LINGER_MAX_MS) + 2) == max(1, _ticks(old3, linger_ms))
    # An answer half-way extends it by linger_ms from then, within the cap.
    _, old3, laggard = _removed_and_left_behind(linger_ms=linger_ms)
    linger, cap = _ticks(old3, linger_ms), _ticks(old3, LINGER_MAX_MS)
    if linger >= 2:
        for _ in range(linger // 2):
            old3.step(Tick())
        assert _sends_to(old3.step(Received(1, laggard.safety.sign_other(Status(0, 0, 0, 0)).to_bytes())), 1)
        assert _tick_until_departed(old3, cap) == min(linger, cap - linger // 2)


def test_an_answer_extends_the_lingering_but_never_beyond_its_cap():
    _, old3, laggard = _removed_and_left_behind()
    linger, period = _ticks(old3, LINGER_MS), old3._retransmit_ticks
    for _ in range(linger // 2):
        old3.step(Tick())
    # Asked half-way: LINGER_MS more from now.
    assert _sends_to(old3.step(Received(1, laggard.safety.sign_other(Status(0, 0, 0, 0)).to_bytes())), 1)
    assert _tick_until_departed(old3, 2 * linger) == linger
    # A peer that asks every period (a faulty one can, forever) keeps it at most LINGER_MAX_MS.
    _, old3, laggard = _removed_and_left_behind()
    behind = laggard.safety.sign_other(Status(0, 0, 0, 0)).to_bytes()
    cap = _ticks(old3, LINGER_MAX_MS)
    departed_at = None
    for t in range(1, cap + linger):
        if t % period == 0:
            old3.step(Received(1, behind))
        if any(isinstance(a, Departed) for a in old3.step(Tick())):
            departed_at = t
            break
    assert departed_at == cap


def test_a_removed_replica_signs_no_vote_and_nothing_but_its_answers():
    _, old3, _ = _removed_and_left_behind()
    with pytest.raises(SafetyViolation):
        old3.safety.sign_vote(Prepare(0, 5, b"\x01" * 32))
    with pytest.raises(SafetyViolation):
        old3.safety.sign_other(Status(0, 4, 4, 0))
    old3.safety.sign_other(StableProof(4, ()))  # what it hands over


def test_a_removed_replica_restarted_with_its_old_cluster_file_lingers_again_as_the_member_it_was():
    """The documented way to give a replica left behind more time than LINGER_MS: restart
    the removed one. Its cluster file is epoch 0's (an operator's host keeps the file it
    was started with); its records say epoch 1, where it is not a member. It comes back
    retired, signs as replica 3 of epoch 0 (`left_config`), and one left behind still
    reaches epoch 1 through it alone."""
    router, operator = _durable_cluster()
    command(router, operator, 1, replaced_3(router.config))
    old3 = router.replicas[3]
    assert old3.retired
    records = list(router.stores[3].values())
    again = make_replica(router.config, 3, service=old3.service)  # the crash kept the state
    notes = again.recover(records)
    assert any(isinstance(a, EpochStarted) and a.epoch == 1 for a in notes)
    assert again.retired and again.epochs.current == 1 and again.log.low == 4
    assert again.left_config() is not None and again.left_config().epoch == 0
    with pytest.raises(SafetyViolation):
        again.safety.sign_vote(Prepare(first_view(1), 5, b"\x01" * 32))
    _reach_epoch_1_through(again, make_replica(router.config, 1))
    # ... and departs again LINGER_MS after its last answer.
    assert _tick_until_departed(again, 2 * _ticks(again, LINGER_MS)) is not None


def _durable_cluster():
    from test_recovery_epochs import _cluster

    return _cluster()
