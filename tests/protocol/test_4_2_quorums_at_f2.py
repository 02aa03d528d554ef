"""Section 4.2's quorums at f = 2 (n = 7): prepared is the pre-prepare plus 2f = 4
matching PREPAREs from distinct backups, committed-local 2f + 1 = 5 COMMITs. At f = 1 the
arithmetic slips that mutation testing makes (`2 / f` for `2 * f`, `2 / f + 1` for
`2 * f + 1`) give the same numbers, so the f = 1 rule tests cannot tell them apart.
"""

from __future__ import annotations

import pytest
from conftest import actions_of, feed, make_config, make_replica, seal_as, sign_request

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Broadcast, Executed, Prepared
from pbft.protocol.messages import Commit, Prepare, PrePrepare, decode_envelope

pytestmark = pytest.mark.timeout(30)


def test_a_backup_at_f_2_prepares_on_the_fourth_prepare_and_executes_on_the_fifth_commit():
    cfg = make_config(f=2)
    backup = make_replica(cfg, 1)  # view 0: primary 0
    batch = (sign_request("alice", b"\x80", 1),)
    d = batch_digest(batch)
    out = feed(backup, 0, seal_as(0, PrePrepare(0, 1, d, batch)))
    assert not actions_of(out, Prepared)
    for r in (2, 3):
        assert not actions_of(feed(backup, r, seal_as(r, Prepare(0, 1, d))), Prepared)
    # Its own PREPARE and replicas 2-4's: 2f = 4 from distinct backups.
    out = feed(backup, 4, seal_as(4, Prepare(0, 1, d)))
    prepared = actions_of(out, Prepared)
    assert prepared and prepared[0].seq == 1
    view, _, proof = backup.prepared_certs[1]
    assert view == 0 and len(proof) == 4  # the certificate a VIEW-CHANGE carries: 2f prepares
    commits = [decode_envelope(a.data)[1] for a in actions_of(out, Broadcast)]
    assert any(isinstance(m, Commit) for m in commits)
    for r in (0, 2, 3):  # with its own: 4 commits, one short of 2f + 1
        out = feed(backup, r, seal_as(r, Commit(0, 1, d)))
    assert not actions_of(out, Executed)
    out = feed(backup, 4, seal_as(4, Commit(0, 1, d)))
    assert [a.seq for a in actions_of(out, Executed)] == [1]


def test_three_prepares_from_others_do_not_prepare_a_backup_at_f_2_without_its_own():
    cfg = make_config(f=2)
    backup = make_replica(cfg, 1)
    batch = (sign_request("alice", b"\x80", 1),)
    d = batch_digest(batch)
    feed(backup, 0, seal_as(0, PrePrepare(0, 1, d, batch)))
    out = []
    for r in (2, 3):
        out += feed(backup, r, seal_as(r, Prepare(0, 1, d)))
    assert not actions_of(out, Prepared)  # own + 2 = 3 < 2f
