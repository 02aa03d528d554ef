"""quorum.VoteSet against a naive twin (after etcd's quorum/quick_test.go): any sequence of
votes, checked after each one, gives the same answers as counting a list by hand."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol.quorum import Added, VoteSet

VALUES = [b"A", b"B", b"C"]
votes = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from(VALUES), st.binary(max_size=3)), max_size=40
)


class Naive:
    """Every vote ever offered, judged by reading the whole list each time."""

    def __init__(self) -> None:
        self.offered: list[tuple[int, bytes, bytes]] = []
        self.fired = False

    def first(self, signer: int) -> tuple[bytes, bytes] | None:
        return next(((v, d) for s, v, d in self.offered if s == signer), None)

    def add(self, signer: int, value: bytes, data: bytes) -> Added:
        prior = self.first(signer)
        self.offered.append((signer, value, data))
        if prior is None:
            return Added.ADDED
        return Added.DUPLICATE if prior[0] == value else Added.CONFLICT

    def kept(self) -> dict[int, tuple[bytes, bytes]]:
        signers = dict.fromkeys(s for s, _, _ in self.offered)
        return {s: self.first(s) for s in signers}  # type: ignore[misc]

    def count(self, value: bytes) -> int:
        return len({s for s, (v, _) in self.kept().items() if v == value})

    def proof(self, value: bytes, k: int) -> tuple[bytes, ...]:
        return tuple(sorted(d for v, d in self.kept().values() if v == value)[:k])

    def quorum_value(self, k: int) -> bytes | None:
        order = list(dict.fromkeys(v for v, _ in self.kept().values()))
        return next((v for v in order if self.count(v) >= k), None)


@settings(max_examples=300, deadline=None)
@given(votes, st.integers(1, 5), st.sampled_from(VALUES))
def test_vote_set_matches_a_naive_count(seq, k, target):
    vs, naive = VoteSet(), Naive()
    fired = 0
    for signer, value, data in seq:
        assert vs.add(signer, value, data) == naive.add(signer, value, data)
        assert dict(vs) == naive.kept()
        for v in VALUES:
            assert vs.count(v) == naive.count(v)
            assert vs.proof(v, k) == naive.proof(v, k)
            assert len(vs.proof(v, k)) == min(k, naive.count(v))
        assert vs.quorum_value(k) == naive.quorum_value(k)
        if vs.reached(target, k):
            fired += 1
            assert naive.count(target) >= k
        assert vs.done == (fired == 1)
    # Counts only grow (a signer's first vote stays), and reached is asked after every
    # vote: it was true exactly once iff the quorum is there by the end.
    assert fired == (1 if naive.count(target) >= k else 0)


def test_reached_is_true_once():
    vs = VoteSet()
    for signer in range(3):
        vs.add(signer, b"A", b"%d" % signer)
    assert vs.reached(b"A", 3) is True
    assert vs.reached(b"A", 3) is False
    vs.add(3, b"A", b"3")
    assert vs.reached(b"A", 3) is False and vs.count(b"A") == 4


def test_a_second_vote_never_counts():
    vs = VoteSet()
    assert vs.add(1, b"A", b"x") is Added.ADDED
    assert vs.add(1, b"A", b"y") is Added.DUPLICATE
    assert vs.add(1, b"B", b"z") is Added.CONFLICT
    assert vs.count(b"A") == 1 and vs.count(b"B") == 0 and vs[1] == (b"A", b"x")
