"""An eighth batch of gaps found by a sampled mutation run of the core (docs/mutation.md):
the detail of a refusal of a message for another view (Replica._old_or_future) and the
NEW-VIEW a new primary sends again to a replica still sending VIEW-CHANGE for the view it
installed (Replica.on_view_change).

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise. Notes: build/survivors-h-notes.md.
"""

from __future__ import annotations

import pytest
from conftest import (
    actions_of,
    decoded,
    feed,
    forge,
    make_config,
    make_replica,
    put,
    sign_commit,
    sign_pre_prepare,
    sign_prepare,
)

from pbft.protocol.crypto import batch_digest
from pbft.protocol.events import Broadcast, Reason, Rejected, Send, Tick
from pbft.protocol.viewchange import ViewStatus

BATCH = (put("alice", 1),)
D = batch_digest(BATCH)


# -- a message for another view: the refusal says what it was (Replica._old_or_future) -------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (sign_pre_prepare(1, BATCH, view=100, signer=0), "pre-prepare for far-future view 100"),
        (sign_prepare(2, 1, D, view=100), "vote for far-future view 100"),
        (sign_commit(2, 1, D, view=100), "vote for far-future view 100"),
    ],
    ids=["pre-prepare", "prepare", "commit"],
)
def test_a_message_for_a_far_future_view_is_refused_naming_what_it_was(data, detail):
    """A replica keeps a bounded amount of the messages of views to come (future.py), but
    none for a view more than n ahead of its own: such a message is refused as
    OUT_OF_WINDOW, and the refusal's detail names what was refused (a pre-prepare or a
    vote) and the view, so that an operator reading the report knows which traffic a
    peer sends. Here replica 1, in view 0, is sent messages of view 100 (> 0 + 4).
    Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁ_old_or_future__mutmut_6 (`what` not passed on:
    "None for far-future view 100")."""
    rep = make_replica(make_config(), 1)
    peer = decoded(data)[0].signer
    out = feed(rep, peer, data)
    assert out == [Rejected(peer, Reason.OUT_OF_WINDOW, detail)]
    assert rep.rejects[(peer, Reason.OUT_OF_WINDOW)] == 1
    assert len(rep.future.messages) == 0


@pytest.mark.parametrize("sign", [sign_prepare, sign_commit], ids=["prepare", "commit"])
def test_a_vote_for_a_view_we_left_is_refused_naming_it_a_vote(sign):
    """Votes of a view the replica has left are refused as WRONG_VIEW with a detail that
    says it was a vote and of which old view. Replica 1 moves to view 1 (a view change),
    then is sent replica 2's vote of view 0. Same mutant as above ("None for old view 0")."""
    rep = make_replica(make_config(), 1)
    rep.become_view_change(1)
    rep._out = []
    assert rep.view == 1 and rep.status is ViewStatus.VIEW_CHANGE
    out = feed(rep, 2, sign(2, 1, D, 0))
    assert out == [Rejected(2, Reason.WRONG_VIEW, "vote for old view 0")]
    assert rep.rejects[(2, Reason.WRONG_VIEW)] == 1


# -- the NEW-VIEW sent again, once per period, to signed senders only (Replica.on_view_change)


def _installed_primary():
    """Replica 1, primary of view 1, installed that view from the VIEW-CHANGEs of replicas
    0, 2 and 3 and broadcast its NEW-VIEW; a retransmission period has passed since.
    (the primary, the VIEW-CHANGE bytes of each of 0, 2, 3)."""
    cfg = make_config()
    vcs = {}
    for i in (0, 2, 3):
        rep = make_replica(cfg, i)
        rep._out = []
        rep.become_view_change(1)
        out, rep._out = rep._out, []
        vcs[i] = next(a.data for a in out if isinstance(a, Broadcast))
    primary = make_replica(cfg, 1)
    for i in (0, 2, 3):
        feed(primary, i, vcs[i])
    assert primary.view == 1 and primary.status is ViewStatus.NORMAL and primary.new_view_data
    for _ in range(primary._retransmit_ticks):  # past the NEW-VIEW's own broadcast
        primary.step(Tick())
    return primary, vcs


def _new_views_to(actions, to: int, primary) -> list:
    return [a for a in actions_of(actions, Send) if a.to == to and a.data == primary.new_view_data]


def test_a_view_change_repeated_within_a_period_is_one_duplicate_and_gets_no_second_new_view():
    """A replica that missed the NEW-VIEW of the view we installed keeps sending its
    VIEW-CHANGE for it; the new primary answers with its NEW-VIEW (large), but only once
    per retransmission period per replica: a second VIEW-CHANGE within the period is a
    DUPLICATE, counted exactly once against the peer that sent it, silently, with no
    second NEW-VIEW. Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁon_view_change__mutmut_27 (counted twice)."""
    primary, vcs = _installed_primary()
    assert primary.rejects[(3, Reason.DUPLICATE)] == 0
    first = feed(primary, 3, vcs[3])
    assert len(_new_views_to(first, 3, primary)) == 1
    assert actions_of(first, Rejected) == []
    second = feed(primary, 3, vcs[3])
    assert second == []
    assert primary.rejects[(3, Reason.DUPLICATE)] == 1
    third = feed(primary, 3, vcs[3])
    assert third == []
    assert primary.rejects[(3, Reason.DUPLICATE)] == 2


def test_a_forged_view_change_for_the_installed_view_is_refused_naming_its_sender():
    """The NEW-VIEW is sent again only for a VIEW-CHANGE its signer really signed: one
    whose signature does not hold (here naming replica 3, signed with replica 2's key,
    delivered by peer 3) is refused as BAD_SIGNATURE, reported and counted against the
    peer that sent it, and no NEW-VIEW goes out; the real one afterwards is answered.
    Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁon_view_change__mutmut_28 (`_verify(None, env)`:
    the refusal named no sender)."""
    primary, vcs = _installed_primary()
    env, vc = decoded(vcs[3])
    assert env.signer == 3
    out = feed(primary, 3, forge(3, vc, real_signer=2))
    assert out == [Rejected(3, Reason.BAD_SIGNATURE, "signer 3")]
    assert primary.rejects[(3, Reason.BAD_SIGNATURE)] == 1
    assert primary.rejects[(None, Reason.BAD_SIGNATURE)] == 0
    real = feed(primary, 3, vcs[3])  # the forgery did not use up the period
    assert len(_new_views_to(real, 3, primary)) == 1
