"""Protocol rules that no other test pinned down, one per test: each test fails if its
rule is taken out of pbft/protocol (the mutant named in its docstring).

make_config: K = 4, L = 8, view_change_timeout_ms 1000, tick_ms 10, retransmit_ms 250
-> a retransmission every 25 ticks.
"""

from __future__ import annotations

import pytest
from conftest import (
    Router,
    actions_of,
    decoded,
    feed,
    make_config,
    make_replica,
    make_verifier,
    seal_as,
    sign_checkpoint,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
    sign_request,
)

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Broadcast, Received, Send, Tick, ViewChangeStarted, ViewInstalled
from pbft.protocol.messages import Checkpoint, FetchState, NewView, StateChunk, ViewChange, detached
from pbft.protocol.viewchange import (
    InvalidCertificate,
    ViewStatus,
    check_prepared_cert,
    check_view_change,
)
from pbft.service.kv import op_put

pytestmark = pytest.mark.timeout(120)


def ticks(replica, n: int) -> list:
    out = []
    for _ in range(n):
        out += replica.step(Tick())
    return out


def empty_view_change(signer: int, view: int) -> bytes:
    return seal_as(signer, ViewChange(view, 0, (), ()))


def test_a_prepared_certificate_from_the_new_view_itself_is_refused():
    """OSDI'99 4.4: a VIEW-CHANGE for view v carries prepared certificates of views below
    v only; one whose pre-prepare is of view v itself is invalid.
    Mutant killed: viewchange.check_prepared_cert `pp.view >= new_view` -> `>`."""
    cfg = make_config()
    verifier = make_verifier(cfg)
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    d = batch_digest(batch)
    # View 1: primary 1, backups 0, 2, 3.
    cert = (detached(sign_pre_prepare(1, batch, view=1)), sign_prepare(2, 1, d, 1), sign_prepare(3, 1, d, 1))
    assert check_prepared_cert(cfg, verifier, 2, cert).view == 1  # fine for a later view
    with pytest.raises(InvalidCertificate, match="view 1 >= 1"):
        check_prepared_cert(cfg, verifier, 1, cert)
    vc = ViewChange(1, 0, (), (cert,))
    with pytest.raises(InvalidCertificate):
        check_view_change(cfg, verifier, 2, vc, seal_as(2, vc))


def test_messages_of_the_pending_view_are_buffered_and_replayed_after_new_view():
    """OSDI'99 4.4: a replica in view-change status for view v buffers the PRE-PREPARE,
    PREPAREs and COMMITs of view v that arrive before the NEW-VIEW, and processes them once
    the view is installed (they are not retransmitted before the next timeout).
    Mutant killed: Replica._old_or_future `view < self.view` -> `view <= self.view`
    (messages of the pending view rejected as old instead of buffered)."""
    cfg = make_config()
    backup = make_replica(cfg, 2)
    backup.become_view_change(1)
    assert backup.view == 1 and backup.status is ViewStatus.VIEW_CHANGE
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    d = batch_digest(batch)
    # The new primary installed view 1 and ordered n=1 before its NEW-VIEW reached us.
    early = [sign_pre_prepare(1, batch, view=1)]
    early += [sign_prepare(r, 1, d, 1) for r in (0, 3)]
    early += [sign_commit(r, 1, d, 1) for r in (0, 1, 3)]
    for data in early:
        feed(backup, decoded(data)[0].signer, data)
    assert backup.log.get(1) is None and backup.last_executed == 0
    nv = NewView(1, tuple(empty_view_change(r, 1) for r in (0, 1, 3)), ())
    out = feed(backup, 1, seal_as(1, nv))
    assert actions_of(out, ViewInstalled) == [ViewInstalled(1, 1)]
    slot = backup.log.get(1)
    assert slot is not None and slot.view == 1 and slot.committed
    assert backup.last_executed == 1  # executed from the replayed messages alone


def test_a_bad_new_view_moves_the_replica_to_the_next_view_at_once():
    """OSDI'99 4.4 / 4.5.2: a NEW-VIEW for the view we wait for that does not recompute
    proves its primary faulty; the backup rejects it and starts the view change to v+1 in
    the same step, instead of waiting out the new-view timer.
    Mutant killed: Replica.on_new_view without `self.become_view_change(nv.view + 1)`."""
    cfg = make_config()
    backup = make_replica(cfg, 2)
    backup.become_view_change(1)
    # Two view-changes where 2f+1 = 3 are needed: it does not recompute.
    nv = NewView(1, tuple(empty_view_change(r, 1) for r in (0, 1)), ())
    out = feed(backup, 1, seal_as(1, nv))
    assert actions_of(out, ViewChangeStarted) == [ViewChangeStarted(2)]
    assert backup.view == 2 and backup.status is ViewStatus.VIEW_CHANGE
    vcs = [decoded(b.data)[1] for b in actions_of(out, Broadcast)]
    assert [m.new_view for m in vcs if isinstance(m, ViewChange)] == [2]


def test_a_lying_state_source_is_never_asked_again():
    """TOCS 2002 5.3.2: every answer is checked against the checkpoint digest 2f+1
    replicas signed (through the tree); a source that sent one that does not verify is a liar and the
    transfer asks only the others from then on (until every source lied).
    Mutant killed: statetransfer.Transfer.lied without `self.liars.add(source)`."""
    cfg = make_config()
    donor = make_replica(cfg, 0)
    root = donor.state_digest()
    backup = make_replica(cfg, 1)
    out = []
    for r in (0, 2, 3):  # 2f+1 CHECKPOINTs beyond the window (L = 8) start a transfer
        out += feed(backup, r, sign_checkpoint(r, 12, root))
    t = backup.transfer
    assert t is not None and sorted(t.sources) == [0, 2, 3]
    asked = [s.to for s in actions_of(out, Send) if isinstance(decoded(s.data)[1], FetchState)]
    liar = asked[-1]
    bad = StateChunk(12, root, 2, 0, 0, 1, b"not the state")
    out = feed(backup, liar, seal_as(liar, bad))
    # Slow sources: every retransmission period the chunk is asked for again.
    out += ticks(backup, 8 * 25)
    again = [s.to for s in actions_of(out, Send) if isinstance(decoded(s.data)[1], FetchState)]
    assert len(again) >= 6
    assert liar not in again
    assert set(again) == {0, 2, 3} - {liar}


def test_a_checkpoint_whose_votes_were_all_lost_becomes_stable_by_retransmission():
    """OSDI'99 4.3: a replica resends its own CHECKPOINT messages above its low water mark
    while they may be lost; a checkpoint whose votes were all dropped still becomes
    stable (and the log is truncated) without waiting for the next checkpoint.
    Mutant killed: Replica._retransmit without the loop that rebroadcasts its own
    checkpoint votes."""
    router = Router.build(make_config())
    dropping = True

    def deliver() -> None:
        while router.queue:
            src, dst, data = router.queue.popleft()
            if dropping and isinstance(decoded(data)[1], Checkpoint):
                continue  # every CHECKPOINT of the first round is lost
            if isinstance(dst, int):
                router.perform(dst, router.replicas[dst].step(Received(src, data)))
            elif dst in router.clients:
                router.perform(dst, router.clients[dst].step(Received(src, data)))

    for i in range(4):  # one request at a time: n = 1..4, checkpoint at K = 4
        router.submit("alice", op_put(b"k%d" % i, b"v"))
        deliver()
    assert [r.last_executed for r in router.replicas] == [4] * 4
    assert all(4 in r.checkpoints.own for r in router.replicas)
    assert [r.stable_seq for r in router.replicas] == [0] * 4
    dropping = False
    for _ in range(30):  # a little more than one retransmission period, no new requests
        for r in router.replicas:
            router.perform(r.id, r.step(Tick()))
        deliver()
    assert [r.stable_seq for r in router.replicas] == [4] * 4
    assert [r.log.low for r in router.replicas] == [4] * 4
