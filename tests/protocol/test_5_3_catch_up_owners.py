"""The owners of catching up (TOCS 2002 5.3): catchup.CatchUp (STATUS bookkeeping),
statetransfer.Transfer (what to fetch) and ChunkBudget (what to serve), and a damaged
durable record refusing recovery with one sentence (records.DamagedRecord)."""

from __future__ import annotations

import pytest
from conftest import make_config, make_replica

from pbft.protocol import codec
from pbft.protocol.catchup import CatchUp
from pbft.protocol.events import Persist, Reason, Received, Record
from pbft.protocol.partition import DEPTH, FANOUT, node_digest
from pbft.protocol.records import DamagedRecord
from pbft.protocol.statetransfer import (
    CHUNKS_PER_PERIOD,
    CHUNKS_REMEMBERED,
    IN_FLIGHT,
    KNOWN_NODES,
    MAX_PARTS,
    PAGE_BYTES,
    ChunkBudget,
    LeafPages,
    Transfer,
    Verdict,
    decode_page,
    encode_page,
    pages,
)


def test_behind_needs_f_plus_one_replicas_past_us_in_our_view():
    c = CatchUp(make_config(), period=10)  # f = 1
    c.report(0, 0, 30, now=0)
    assert not c.behind(0, 20)  # one replica alone may lie
    c.report(1, 1, 30, now=0)
    assert not c.behind(0, 20)  # another view does not count
    c.report(2, 0, 25, now=0)
    assert c.behind(0, 20) and not c.behind(0, 25)


def test_a_restarted_replica_is_located_by_2f_reports_at_f_2_too():
    """`CatchUp.report`: `2 * f` made `2 / f` is the same number at f = 1; at f = 2 it
    took one report for four."""
    c = CatchUp(make_config(f=2), period=10)
    c.restarted(by=100)
    assert [c.report(r, 0, 5, now=1) for r in (1, 2, 3, 4)] == [False, False, False, True]


def test_the_catch_up_bounds_are_reported_by_name_and_limit():
    """`CatchUp.bounds`: the names key the simulator's resource report; one entry per
    replica each."""
    c = CatchUp(make_config(), period=10)
    c.restarted(by=100)
    c.report(2, 0, 5, now=1)
    assert c.bounds() == [("catch_up.answered", 1, 4), ("catch_up.heard", 1, 4), ("catch_up.progress", 1, 4)]


def test_a_restarted_replica_is_located_by_2f_reports_and_answers_once_per_period():
    c = CatchUp(make_config(), period=10)
    c.restarted(by=100)
    assert not c.located and c.located_by == 100
    assert not c.report(0, 0, 5, now=1)
    assert c.report(1, 0, 5, now=2)  # 2f = 2 replicas heard
    c.locate()
    assert c.located and not c.heard
    assert c.too_soon(1, now=11) and not c.too_soon(1, now=12) and not c.too_soon(3, now=0)
    c.invariants()


def test_a_transfer_keeps_in_flight_requests_and_forgives_liars_when_all_lied():
    t = Transfer(8, b"d", (), sources=[1, 2])
    t.expected = {(0, b): bytes(32) for b in range(3 * IN_FLIGHT)}
    asks, exhausted = t.next_requests()
    assert len(asks) == IN_FLIGHT and not exhausted and {s for *_, s in asks} == {1, 2}
    assert t.next_requests() == ([], False)
    t.lied(1)
    t.lied(2)
    assert not t.asked
    asks, exhausted = t.next_requests()
    assert asks == [] and exhausted and not t.liars


def test_a_liar_loses_only_what_it_was_asked_and_its_leaves():
    """What was asked of other sources stays in flight, and a leaf whose pages come from
    another source keeps them: only the liar's share is asked again, of someone else."""
    t = Transfer(8, b"d", (), sources=[1, 2, 3])
    t.asked = {(1, 0): 1, (1, 1): 2, (0, 5): 1, (0, 6): 3}
    t.leaves = {5: LeafPages(1), 6: LeafPages(3)}
    t.lied(1)
    assert t.liars == {1}
    assert t.asked == {(1, 1): 2, (0, 6): 3}
    assert list(t.leaves) == [6] and t.leaves[6].source == 3


def test_a_stalled_period_judges_an_internal_node_by_itself_not_by_a_leaf_of_its_index():
    """Only a leaf (level 0) has pages whose arrival keeps its request alive across a
    retransmission period; an internal node with the same index, unanswered, is asked
    again elsewhere, and does not use up the leaf's freshness."""
    t = Transfer(8, b"d", (), sources=[1, 2, 3])
    t.asked = {(1, 5): 1, (0, 5): 2}
    t.leaves = {5: LeafPages(2)}  # a page arrived this period
    t.stalled()
    assert t.unanswered == {(1, 5): 1}
    assert t.asked == {(0, 5): 2} and t.leaves[5].fresh is False
    t.stalled()  # no page in the next period: the leaf starts over elsewhere
    assert t.unanswered == {(0, 5): 2} and not t.asked and not t.leaves
    # In either order: a leaf kept alive does not end the look at the rest.
    t = Transfer(8, b"d", (), sources=[1, 2, 3])
    t.asked = {(0, 5): 2, (1, 5): 1, (0, 6): 3}
    t.leaves = {5: LeafPages(2), 6: LeafPages(3, fresh=False)}
    t.stalled()
    assert t.unanswered == {(1, 5): 1, (0, 6): 3} and t.asked == {(0, 5): 2} and list(t.leaves) == [5]


def test_a_page_holds_up_to_exactly_page_bytes_and_reads_back_only_as_key_value_pairs():
    half = PAGE_BYTES // 2
    exact = [(b"a", bytes(half - 1)), (b"b", bytes(half - 1))]  # keys and values: PAGE_BYTES
    assert pages(exact) == [exact]
    over = [(b"a", bytes(half - 1)), (b"bb", bytes(half - 1))]
    assert pages(over) == [over[:1], over[1:]]
    assert pages([]) == [[]]
    second = [(b"x", bytes(PAGE_BYTES)), *exact]  # a page of its own, then exactly one more
    assert pages(second) == [second[:1], exact]
    assert decode_page(encode_page(exact)) == exact
    for bad in ([[b"k", b"v", b"x"]], [[b"k"]], [["k", b"v"]], [[b"k", 1]], [b"kv"], {b"k": b"v"}):
        assert decode_page(codec.encode(bad)) is None, bad
    assert decode_page(b"\xff") is None


def test_an_internal_node_is_wanted_from_anyone_even_beside_a_leaf_of_its_index_in_pages():
    t = Transfer(8, b"d", (), sources=[1, 2, 3])
    t.expected = {(1, 5): bytes(32), (0, 5): bytes(32)}
    t.leaves = {5: LeafPages(2, parts=3, got=1)}
    assert t.wants(8, b"d", 1, 5, 0, 3)
    assert not t.wants(8, b"d", 0, 5, 1, 3) and t.wants(8, b"d", 0, 5, 1, 2)


def test_sources_are_asked_in_turn_skipping_the_one_to_avoid_when_there_is_another():
    """`next_source`: the turn moves one source per request among those that have not
    lied, and once more to pass over the source a request was unanswered by; with one
    source left that one is asked anyway, and the turn does not jump (the rotation is
    part of a run's determinism)."""
    t = Transfer(8, b"d", (), sources=[1, 2, 3])
    assert [t.next_source() for _ in range(3)] == [2, 3, 1]
    assert t.next_source(avoid=2) == 3
    t.liars = {3}
    assert t.next_source(avoid=1) == 2
    t.liars = {2, 3}
    assert t.next_source(avoid=1) == 1
    t.liars = set()
    assert t.next_source() == 1 and t.turn == 9
    t.liars = {1, 2, 3}
    assert t.next_source() is None and t.turn == 9


def test_an_internal_node_is_asked_from_its_first_part_whatever_leaf_shares_its_index():
    t = Transfer(8, b"d", (), sources=[1, 2, 3])
    t.expected = {(1, 5): bytes(32), (0, 5): bytes(32)}
    t.leaves = {5: LeafPages(2, parts=3, got=1)}
    asks, _ = t.next_requests()
    assert asks == [(1, 5, 0, 2), (0, 5, 1, 2)]  # the node from the next in turn, from part 0


def test_a_walk_with_no_tree_of_our_own_fetches_every_child():
    """A replica with nothing to compare with (`mine` empty) fetches every child of a
    node it knows already; those it knows are walked at once."""
    t = Transfer(8, b"root", (), sources=[1, 2], known={
        (DEPTH, b"root"): tuple(bytes([i]) * 32 for i in range(FANOUT)),
        (DEPTH - 1, bytes([7]) * 32): tuple(bytes([200]) * 32 for _ in range(FANOUT)),
    })
    assert len(t.expected) == FANOUT - 1 + FANOUT
    assert (DEPTH - 1, 7) not in t.expected and t.expected[(DEPTH - 2, 7 * FANOUT + 3)] == bytes([200]) * 32


def test_an_internal_node_that_does_not_verify_makes_its_source_a_liar():
    children = tuple(bytes([i]) * 32 for i in range(FANOUT))
    for answer in (b"".join(children)[:-1], b"".join(reversed(children))):
        t = Transfer(8, b"d", (), sources=[1, 2, 3])
        t.expected = {(1, 4): node_digest(1, children)}
        t.asked = {(1, 4): 2}
        assert t.received(1, 4, 0, 1, answer, 2)[0] is Verdict.LIED
        assert t.liars == {2} and not t.asked and (1, 4) in t.expected


def test_verified_internal_nodes_are_remembered_up_to_known_nodes_the_oldest_forgotten_first():
    t = Transfer(8, b"d", (), sources=[1, 2])
    digests = []
    for i in range(KNOWN_NODES + 1):
        children = tuple(i.to_bytes(4, "big") * 8 for _ in range(FANOUT))
        digests.append(node_digest(1, children))
        t.expected[(1, i)] = digests[-1]
        assert t.received(1, i, 0, 1, b"".join(children), 1)[0] is Verdict.KEPT
        assert len(t.known) == min(i + 1, KNOWN_NODES)
    assert list(t.known) == [(1, d) for d in digests[1:]]


def test_a_page_whose_first_key_is_not_after_the_last_one_before_it_is_a_lie():
    entries = [(b"k%d" % i, bytes(40_000)) for i in range(4)]
    leaf = pages(entries)
    assert len(leaf) == 4
    t = Transfer(8, b"d", (), sources=[1, 2])
    t.expected = {(0, 3): bytes(32)}
    assert t.received(0, 3, 0, 4, encode_page(leaf[0]), 1)[0] is Verdict.KEPT
    assert t.received(0, 3, 1, 4, encode_page(leaf[0]), 1)[0] is Verdict.LIED  # the same key again
    assert t.liars == {1}
    t = Transfer(8, b"d", (), sources=[1, 2])
    t.expected = {(0, 3): bytes(32)}  # not the digest of the leaf sent
    assert t.received(0, 3, 0, 1, encode_page(entries[:1]), 2)[0] is Verdict.LIED
    assert t.liars == {2} and (0, 3) in t.expected


def test_a_leaf_comes_in_pages_from_one_source_in_order():
    """TOCS 2002 5.3.2, with leaves larger than a message: the first page may come from
    anyone, the next ones only from that source and in order; a page count that changes
    or keys that go back make the source a liar; the leaf is checked with its last page."""
    entries = [(b"k%d" % i, bytes(30_000)) for i in range(6)]
    bucket = 7
    leaf = pages(entries)
    assert len(leaf) == 3
    t = Transfer(8, b"d", (), sources=[1, 2])
    t.expected = {(0, bucket): b"x" * 32}
    assert t.wants(8, b"d", 0, bucket, 0, 2) and not t.wants(8, b"d", 0, bucket, 1, 2)
    verdict, _ = t.received(0, bucket, 0, 3, encode_page(leaf[0]), 2)
    assert verdict is Verdict.KEPT
    assert not t.wants(8, b"d", 0, bucket, 1, 1)  # another source
    assert not t.wants(8, b"d", 0, bucket, 2, 2)  # out of order
    assert t.wants(8, b"d", 0, bucket, 1, 2)
    assert t.next_requests()[0] == [(0, bucket, 1, 2)]
    verdict, _ = t.received(0, bucket, 1, 4, encode_page(leaf[1]), 2)  # the count changed
    assert verdict is Verdict.LIED and 2 in t.liars and bucket not in t.leaves
    # Keys not after the previous page's: a liar too.
    t = Transfer(8, b"d", (), sources=[1, 2])
    t.expected = {(0, bucket): b"x" * 32}
    t.received(0, bucket, 0, 3, encode_page(leaf[1]), 1)
    assert t.received(0, bucket, 1, 3, encode_page(leaf[0]), 1)[0] is Verdict.LIED


def test_chunks_are_served_once_per_period_each_and_rationed_per_asker():
    b = ChunkBudget(period=10, replicas=4)
    own = {8: b"d"}
    b.record((1, 8, 0, 0, 0), now=0)
    assert b.ignore(None, (1, 8, 0, 0, 0), b"d", own, now=5) == (Reason.DUPLICATE, None)
    assert b.ignore(None, (1, 8, 0, 0, 0), b"d", own, now=10) is None
    for i in range(1, CHUNKS_PER_PERIOD):
        b.record((1, 8, 0, i, 0), now=1)
    assert b.ignore(None, (1, 8, 0, 999, 0), b"d", own, now=2)[0] is Reason.OVERLOAD
    assert b.ignore(None, (2, 8, 0, 999, 0), b"d", own, now=2) is None  # another asker has its own budget
    assert b.ignore(None, (1, 8, 0, 999, 0), b"d", own, now=11) is None  # a new period
    assert b.ignore(None, (1, 9, 0, 0, 0), b"d", own, now=11) == (Reason.STALE, None)  # not held
    assert b.ignore(3, (1, 8, 0, 0, 0), b"d", own, now=30)[0] is Reason.WRONG_ROLE  # relayed
    # Nodes that do not exist in the tree, and pages of an internal node.
    assert b.ignore(None, (1, 8, DEPTH + 1, 0, 0), b"d", own, now=40)[0] is Reason.OUT_OF_WINDOW
    assert b.ignore(None, (1, 8, DEPTH, 1, 0), b"d", own, now=40)[0] is Reason.OUT_OF_WINDOW
    assert b.ignore(None, (1, 8, 0, FANOUT**DEPTH, 0), b"d", own, now=40)[0] is Reason.OUT_OF_WINDOW
    assert b.ignore(None, (1, 8, 1, 0, 1), b"d", own, now=40)[0] is Reason.OUT_OF_WINDOW
    b.invariants()


def test_the_chunk_budget_at_its_edges():
    """`ChunkBudget` exactly at each limit: the asker's own channel, the last page and
    node of the tree, one tick before a period ends, and the memory of answers sent,
    which forgets what is older than a period first and everything only when all of it
    is recent."""
    b = ChunkBudget(period=10, replicas=4)
    own = {8: b"d"}
    assert b.ignore(1, (1, 8, 0, 0, 0), b"d", own, now=0) is None  # the signer's own channel
    assert b.ignore(None, (1, 8, 0, 0, MAX_PARTS - 1), b"d", own, now=0) is None
    assert b.ignore(None, (1, 8, 0, 0, MAX_PARTS), b"d", own, now=0)[0] is Reason.OUT_OF_WINDOW
    assert b.ignore(None, (1, 8, 0, 0, -1), b"d", own, now=0)[0] is Reason.OUT_OF_WINDOW
    assert b.ignore(None, (1, 8, 0, FANOUT**DEPTH - 1, 0), b"d", own, now=0) is None
    assert b.ignore(None, (1, 8, DEPTH, 0, 0), b"d", own, now=0) is None
    assert b.ignore(None, (1, 8, 0, -1, 0), b"d", own, now=0)[0] is Reason.OUT_OF_WINDOW
    assert b.ignore(None, (1, 8, -1, 0, 0), b"d", own, now=0)[0] is Reason.OUT_OF_WINDOW
    b.record((1, 8, 0, 0, 0), now=0)
    assert b.ignore(None, (1, 8, 0, 0, 0), b"d", own, now=9) == (Reason.DUPLICATE, None)
    for i in range(1, CHUNKS_PER_PERIOD):
        b.record((1, 8, 0, i, 0), now=3)
    assert b.budget[1] == (0, CHUNKS_PER_PERIOD)  # the period began with the first answer
    assert b.ignore(None, (1, 8, 0, 999, 0), b"d", own, now=9)[0] is Reason.OVERLOAD
    assert b.ignore(None, (1, 8, 0, 999, 0), b"d", own, now=10) is None
    b.record((1, 8, 0, 999, 0), now=10)
    assert b.budget[1] == (10, 1)  # a new period, counted from this answer
    for i in range(1, CHUNKS_PER_PERIOD):
        b.record((1, 8, 0, 1000 + i, 0), now=15)
    assert b.ignore(None, (1, 8, 0, 2000, 0), b"d", own, now=19)[0] is Reason.OVERLOAD  # 10 + 10
    assert b.ignore(None, (1, 8, 0, 2000, 0), b"d", own, now=20) is None
    b.record((1, 8, 0, 2000, 0), now=100)
    assert b.ignore(None, (1, 8, 0, 2000, 0), b"d", own, now=109) == (Reason.DUPLICATE, None)
    assert b.ignore(None, (1, 8, 0, 2000, 0), b"d", own, now=110) is None
    # What an operator reads: the asker, by id.
    assert b.ignore(3, (1, 8, 0, 0, 0), b"d", own, now=200) == (Reason.WRONG_ROLE, "fetch-state of 1 relayed by 3")
    for i in range(CHUNKS_PER_PERIOD):
        b.record((2, 8, 0, i, 0), now=300)
    assert b.ignore(None, (2, 8, 0, 999, 0), b"d", own, now=300) == (
        Reason.OVERLOAD, "state chunks for replica 2 this period"
    )
    # The memory of answers: full, it keeps those sent within the last period...
    def full() -> ChunkBudget:
        b = ChunkBudget(period=10, replicas=4)
        for i in range(CHUNKS_REMEMBERED):
            b.record((i % 4, 8, 0, i, 0), now=0 if i % 2 else 5)
        assert len(b.sent) == CHUNKS_REMEMBERED
        return b

    b = full()
    recent = sum(1 for t in b.sent.values() if t == 5)
    b.record((2, 8, 1, 1, 0), now=14)  # the horizon is tick 4
    assert len(b.sent) == recent + 1 and sorted(set(b.sent.values())) == [5, 14]
    b = full()
    b.record((2, 8, 1, 1, 0), now=15)  # tick 5 is a whole period ago
    assert b.sent == {(2, 8, 1, 1, 0): 15}
    # ... and forgets them all when every one is recent.
    b = ChunkBudget(period=10, replicas=4)
    for i in range(CHUNKS_REMEMBERED):
        b.record((i % 4, 8, 0, i, 0), now=7)
    b.record((2, 8, 1, 1, 0), now=8)
    assert b.sent == {(2, 8, 1, 1, 0): 8}
    b.invariants()


@pytest.mark.parametrize(
    "record",
    [
        Persist(Record.CHECKPOINT, 0, 0, "", b"\x01"),
        Persist(Record.VIEW, 0, 0, "", b"\x83\x00\x00\x00"),
        Persist(Record.VOTE, 1, 0, "no-such-phase", b""),
    ],
)
def test_a_damaged_record_refuses_recovery_with_one_sentence(record):
    rep = make_replica(make_config(), 1)
    with pytest.raises(DamagedRecord, match="is damaged|not canonical") as exc:
        rep.recover([record])
    assert isinstance(exc.value, ValueError) and "\n" not in str(exc.value)


def test_a_leaf_whose_pages_keep_coming_survives_retransmission_periods():
    """A large leaf takes several retransmission periods (the server rations answers per
    period): it keeps its source and pages while pages arrive, and starts over from
    another source only after a whole period without one."""
    entries = [(b"k%d" % i, bytes(30_000)) for i in range(6)]
    leaf = pages(entries)
    t = Transfer(8, b"d", (), sources=[1, 2])
    t.expected = {(0, 7): b"x" * 32}
    asks, _ = t.next_requests()
    source = asks[0][3]
    assert t.received(0, 7, 0, 3, encode_page(leaf[0]), source)[0] is Verdict.KEPT
    t.stalled()  # a period ends with progress: pages and source kept
    assert t.next_requests()[0] == [(0, 7, 1, source)]
    assert t.received(0, 7, 1, 3, encode_page(leaf[1]), source)[0] is Verdict.KEPT
    t.stalled()
    assert t.next_requests()[0] == [(0, 7, 2, source)] and t.leaves[7].got == 2
    t.stalled()  # a whole period without page 2: start over, elsewhere
    assert 7 not in t.leaves
    asks, _ = t.next_requests()
    assert asks[0][:3] == (0, 7, 0)
    # A page that arrives while the next is already asked for, in the same period,
    # keeps that request alive across the period's end.
    source = asks[0][3]
    assert t.received(0, 7, 0, 3, encode_page(leaf[0]), source)[0] is Verdict.KEPT
    t.stalled()
    assert t.next_requests()[0] == [(0, 7, 1, source)]
    assert t.received(0, 7, 1, 3, encode_page(leaf[1]), source)[0] is Verdict.KEPT
    assert t.next_requests()[0] == [(0, 7, 2, source)]
    t.stalled()
    assert t.asked == {(0, 7): source} and t.leaves[7].got == 2 and not t.unanswered


def test_a_peer_behind_in_our_view_gets_the_proofs_of_at_most_catch_up_slots_slots():
    """`Replica._resend_committed` / `MessageLog.committed_proof`: a STATUS from a replica
    that lags inside our log is answered with the pre-prepare, prepares and commits of
    the next CATCH_UP_SLOTS committed slots after what it executed, not one more (the
    answer is rationed: `last + 2` for `last + 1` sent a seventeenth)."""
    from conftest import Router, seal_as

    from pbft.protocol.events import Send
    from pbft.protocol.messages import Commit, PrePrepare, Status, decode_envelope
    from pbft.protocol.replica import CATCH_UP_SLOTS
    from pbft.service.kv import op_put

    config = make_config(checkpoint_interval=64, log_window=128)
    router = Router.build(config)
    for i in range(CATCH_UP_SLOTS + 4):
        router.submit("alice", op_put(b"k", b"%d" % i))
        router.run()
    primary = router.replicas[0]
    assert primary.last_executed == CATCH_UP_SLOTS + 4 and primary.log.low == 0
    out = primary.step(Received(3, seal_as(3, Status(0, 2, 0, 0))))
    sent = [decode_envelope(a.data)[1] for a in out if isinstance(a, Send) and a.to == 3]
    pre_prepares = sorted(m.seq for m in sent if isinstance(m, PrePrepare))
    assert pre_prepares == list(range(3, 3 + CATCH_UP_SLOTS))
    # Each slot's commits but the asker's own.
    assert {m.seq for m in sent if isinstance(m, Commit)} == set(pre_prepares)
