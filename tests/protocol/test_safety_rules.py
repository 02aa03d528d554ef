"""SafetyRules: the only signer of votes never signs two digests for one slot."""

from __future__ import annotations

import pytest
from conftest import CLUSTER_ID, make_config, replica_key
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol.crypto import Verifier
from pbft.protocol.messages import (
    Checkpoint,
    Commit,
    Prepare,
    PrePrepare,
    Status,
    from_body,
)
from pbft.protocol.safety import SafetyRules, SafetyViolation, vote_slot

D1 = b"\x01" * 32
D2 = b"\x02" * 32


@pytest.fixture
def rules():
    return SafetyRules(replica_key(1), CLUSTER_ID, 1)


def votes(view, seq, d):
    return [
        PrePrepare(view, seq, d, ()),
        Prepare(view, seq, d),
        Commit(view, seq, d),
        Checkpoint(seq, d),
    ]


@pytest.mark.parametrize("kind", range(4), ids=["pre-prepare", "prepare", "commit", "checkpoint"])
def test_second_digest_for_same_slot_is_refused(rules, kind):
    first = votes(0, 5, D1)[kind]
    second = votes(0, 5, D2)[kind]
    env = rules.sign_vote(first)
    with pytest.raises(SafetyViolation):
        rules.sign_vote(second)
    # The refusal left the record alone: the first vote is still what we signed.
    assert rules.sign_vote(first) == env


def test_resign_returns_identical_envelope(rules):
    env = rules.sign_vote(Prepare(0, 5, D1))
    again = rules.sign_vote(Prepare(0, 5, D1))
    assert again is env or again == env
    assert Verifier(CLUSTER_ID, make_config().member_keys()).verify(env)
    assert env.signer == 1
    assert from_body(env.body) == Prepare(0, 5, D1)


def test_different_views_seqs_and_phases_are_independent(rules):
    rules.sign_vote(Prepare(0, 5, D1))
    rules.sign_vote(Prepare(1, 5, D2))  # another view
    rules.sign_vote(Prepare(0, 6, D2))  # another seq
    rules.sign_vote(Commit(0, 5, D2))  # another phase (our core never does this, but
    rules.sign_vote(PrePrepare(0, 5, D2, ()))  # the slot key is per phase)
    rules.sign_vote(Checkpoint(5, D2))


def test_checkpoints_have_no_view(rules):
    assert vote_slot(Checkpoint(8, D1)) == ("checkpoint", 0, 8)
    rules.sign_vote(Checkpoint(8, D1))
    with pytest.raises(SafetyViolation):
        rules.sign_vote(Checkpoint(8, D2))


def test_forget_below_drops_old_slots(rules):
    for seq in (3, 4, 5):
        rules.sign_vote(Prepare(0, seq, D1))
        rules.sign_vote(Checkpoint(seq, D1))
    rules.forget_below(4)
    assert {s[2] for s in rules.signed} == {5}
    # Slots at or below the stable checkpoint are forgotten and may be signed afresh.
    rules.sign_vote(Prepare(0, 4, D2))
    with pytest.raises(SafetyViolation):
        rules.sign_vote(Prepare(0, 5, D2))


def test_sign_other_refuses_votes_and_signs_the_rest(rules):
    env = rules.sign_other(Status(0, 1, 0, 1))
    assert from_body(env.body) == Status(0, 1, 0, 1)
    with pytest.raises(AssertionError):
        rules.sign_other(Prepare(0, 1, D1))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(1, 3), st.integers(0, 2)),
        max_size=30,
    )
)
def test_never_two_digests_for_one_slot_against_a_naive_twin(script):
    rules = SafetyRules(replica_key(0), CLUSTER_ID, 0)
    twin: dict = {}
    for kind, view, seq, d in script:
        msg = votes(view, seq, bytes([d]) * 32)[kind]
        slot = vote_slot(msg)
        if slot in twin and twin[slot] != msg.digest:
            with pytest.raises(SafetyViolation):
                rules.sign_vote(msg)
        else:
            rules.sign_vote(msg)
            twin[slot] = msg.digest
    assert {k: v[0] for k, v in rules.signed.items()} == twin
