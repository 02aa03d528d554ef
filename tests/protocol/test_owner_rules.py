"""Rules that moved out of the replica into the owner of the state they read (issue 15):
each one alone, on its owner."""

from __future__ import annotations

import pytest
from conftest import make_config, make_verifier, seal_as, sign_request

from pbft.protocol import verified as verified_module
from pbft.protocol.batchfetch import DIGESTS_PER_SLOT, BatchAnswers, HeldBatches
from pbft.protocol.batching import Batching
from pbft.protocol.catchup import CatchUp
from pbft.protocol.checkpoints import Checkpoints
from pbft.protocol.events import Reason
from pbft.protocol.future import FUTURE_SIGNER_BYTES, FutureViews
from pbft.protocol.held import HeldAnswers, ReplyCache, WaitingReads
from pbft.protocol.messages import Prepare, Request
from pbft.protocol.partition import DEPTH, FANOUT, bucket_of
from pbft.protocol.statetransfer import Transfer, Verdict, encode_page
from pbft.protocol.store import MemoryStore
from pbft.protocol.timeouts import Expired, RequestTimers
from pbft.protocol.verified import DeferredRequests, VerifiedRequests
from pbft.service.kv import op_put


def test_a_status_is_answered_over_its_signers_channel_once_per_period():
    c = CatchUp(make_config(), period=10)
    assert c.ignore(2, 1, now=0)[0] is Reason.WRONG_ROLE  # relayed
    assert c.ignore(None, 1, now=0) is None and c.ignore(1, 1, now=0) is None
    c.report(1, 0, 0, now=0)
    assert c.ignore(1, 1, now=9) == (Reason.DUPLICATE, None)
    assert c.ignore(1, 1, now=10) is None


def test_checkpoint_votes_are_counted_above_the_stable_one_at_multiples_of_k():
    cp = Checkpoints(make_config())
    k = cp.config.checkpoint_interval
    assert cp.ignore(k, low=k) == (Reason.STALE, None)
    assert cp.ignore(k + 1, low=0)[0] is Reason.OUT_OF_WINDOW
    assert cp.ignore(2 * k, low=k) is None
    cp.vote_set(k).add(0, b"d", b"mine-k")
    cp.vote_set(2 * k).add(1, b"d", b"theirs")
    cp.vote_set(2 * k).add(0, b"d", b"mine-2k")
    assert cp.own_votes(0, low=0) == [b"mine-k", b"mine-2k"]
    assert cp.own_votes(0, low=k) == [b"mine-2k"]


def test_reads_wait_for_a_current_state_and_every_prepared_slot():
    reads = WaitingReads(make_config())
    assert reads.answerable(False, 0, {}) == ()
    req = Request(b"read", 1, "c0", read_only=True)
    reads.hold(req)
    assert reads.answerable(True, 5, {}) == ()  # stale: waits for the transfer
    assert reads.answerable(False, 5, {6: None}) == ()  # prepared, not executed
    assert reads.answerable(False, 6, {6: None}) == [("c0", req)]
    assert not reads.waiting


def test_the_reply_cache_settles_old_and_repeated_requests():
    replies = ReplyCache(make_config())
    assert replies.settled("c0", 1) is None
    replies.record("c0", 3, b"r")
    assert replies.settled("c0", 4) is None
    assert replies.settled("c0", 3).result == b"r" and replies.settled("c0", 2).timestamp == 3


def test_request_timers_check_restarts_once_when_behind_and_drops_the_executed():
    t = RequestTimers(clients=2)
    t.wait("c0", 1, b"a", now=0)
    t.wait("c1", 1, b"b", now=0)
    t.saw_ordered("c0", 1)
    t.saw_ordered("c1", 1)
    executed = {"c1": 1}.get
    assert t.check(10, False, lambda c: executed(c, -1), timeout=10) is Expired.VIEW_CHANGE
    assert "c1" not in t.waiting
    assert t.check(10, True, lambda c: -1, timeout=10) is None  # a fresh timer
    assert t.check(20, True, lambda c: -1, timeout=10) is Expired.VIEW_CHANGE  # only once


def test_a_request_the_primary_ordered_runs_on_the_view_change_timer_only():
    """4.4 and the ordering timer: a request seen in a pre-prepare (its client's ordered
    timestamp at or above its own) has the whole view-change timeout to execute; only one
    not ordered yet is held to 1/ORDERING_FRACTION of it, nudged half-way first."""
    t = RequestTimers(clients=3)
    t.wait("c0", 5, b"a", now=0)  # ordered exactly at its timestamp
    t.wait("c1", 5, b"b", now=0)  # ordered past it (a newer one of c1's was pre-prepared)
    t.saw_ordered("c0", 5)
    t.saw_ordered("c1", 6)
    for now in range(0, 10):  # timeout 10: ordering 5, nudge at 2
        assert t.expired(now, timeout=10) is None, now
    assert t.unordered() == []
    assert t.expired(10, timeout=10) is Expired.VIEW_CHANGE
    t = RequestTimers(clients=3)
    t.wait("c0", 5, b"a", now=0)
    t.saw_ordered("c0", 4)  # an older one of c0's was ordered, not this one
    assert t.unordered() == [b"a"]
    assert [t.expired(now, timeout=10) for now in range(6)] == [None, None, Expired.NUDGE, None, None,
                                                                 Expired.VIEW_CHANGE]


def test_the_ordering_timer_is_half_the_timeout_rounded_down_and_at_least_two_ticks():
    """ordering = max(2, timeout // ORDERING_FRACTION): an odd timeout rounds down, and a
    tiny one still leaves a tick for the nudge before the view change."""
    def ages(timeout: int) -> list[Expired | None]:
        t = RequestTimers(clients=1)
        t.wait("c0", 1, b"a", now=0)
        return [t.expired(now, timeout=timeout) for now in range(timeout + 1)]

    assert ages(11)[:6] == [None, None, Expired.NUDGE, None, None, Expired.VIEW_CHANGE]
    assert ages(3) == [None, Expired.NUDGE, Expired.VIEW_CHANGE, Expired.VIEW_CHANGE]
    assert ages(1) == [None, Expired.VIEW_CHANGE]  # the whole timeout first


def test_a_request_that_arrives_just_after_a_nudge_gets_its_own_nudge():
    """The nudge (half-way through the ordering timer) asks the primary again for the
    requests waiting then. One that began waiting in the same tick but after it (the
    tick's step came first) was not among them: when it is the oldest unordered one, it
    must be nudged too before its ordering timer runs out, or a request the primary merely
    lost costs a view change. Found by mutation testing (`nudged <= min(unordered)`)."""
    t = RequestTimers(clients=2)
    t.wait("c0", 1, b"a", now=0)
    assert [t.expired(now, timeout=10) for now in range(3)] == [None, None, Expired.NUDGE]
    t.wait("c1", 1, b"b", now=2)  # after the nudge of tick 2
    t.saw_ordered("c0", 1)  # the primary ordered c0's: c1's is the oldest unordered now
    assert [t.expired(now, timeout=10) for now in range(3, 8)] == [None, Expired.NUDGE, None, None,
                                                                    Expired.VIEW_CHANGE]
    assert t.unordered() == [b"b"]


def test_request_timers_wait_for_the_newest_request_of_each_client():
    """One outstanding request per client (4.1): a newer one replaces the one waited for
    (a fresh timer), the same one again keeps its timer, an older one is superseded."""
    t = RequestTimers(clients=2)
    assert t.wait("c0", 2, b"two", now=5)
    assert t.wait("c0", 2, b"two", now=9) and t.waiting["c0"] == (2, b"two", 5)
    assert not t.wait("c0", 1, b"one", now=9) and t.waiting["c0"] == (2, b"two", 5)
    assert t.wait("c0", 3, b"three", now=9) and t.waiting["c0"] == (3, b"three", 9)


def test_request_timers_stop_waiting_once_the_request_or_a_newer_one_executed():
    """Executing a client's request ends the wait for it and for anything older of that
    client at once, not at the next tick's check (what waits is handed to the next
    primary at a view change); an older execution leaves a newer request waiting."""
    t = RequestTimers(clients=3)
    t.wait("c0", 2, b"a", now=0)
    t.wait("c1", 3, b"b", now=0)
    t.executed("c0", 1)
    t.executed("c2", 9)  # a client we do not wait for
    assert set(t.waiting) == {"c0", "c1"}
    t.executed("c0", 2)
    t.executed("c1", 4)
    assert t.waiting == {} and t.new_view(5) == []


def test_the_ordered_timestamp_of_a_client_only_grows():
    """A pre-prepare of an older request of the client seen after a newer one (a slot
    re-issued, a message delivered late) does not make the newer request unordered again,
    which would put it back on the shorter ordering timer."""
    t = RequestTimers(clients=2)
    t.wait("c0", 5, b"a", now=0)
    t.saw_ordered("c0", 5)
    t.saw_ordered("c0", 3)
    assert t.ordered["c0"] == 5 and t.unordered() == []
    assert [t.expired(now, timeout=10) for now in range(10)] == [None] * 10


def test_held_batches_keep_the_latest_digests_accepted_per_slot():
    """At most DIGESTS_PER_SLOT batches per slot, the latest accepted: a pre-prepare
    accepted again (a later view re-issuing the same digest) counts as the latest, and
    the oldest goes first (batchfetch.py)."""
    held = HeldBatches(window=8)
    digests = [b"d%d" % i for i in range(DIGESTS_PER_SLOT + 2)]
    for d in digests[:DIGESTS_PER_SLOT]:
        held.keep(1, d, (d,))
    assert all(held.get(1, d) == (d,) for d in digests[:DIGESTS_PER_SLOT])
    held.keep(1, digests[0], (digests[0],))  # accepted again: now the latest
    held.keep(1, digests[DIGESTS_PER_SLOT], (b"new",))
    assert held.get(1, digests[1]) is None  # the oldest went
    assert held.get(1, digests[0]) == (digests[0],) and held.get(1, digests[DIGESTS_PER_SLOT]) == (b"new",)
    held.keep(1, digests[DIGESTS_PER_SLOT + 1], (b"newer",))
    assert held.get(1, digests[2]) is None
    assert held.bounds()[0][1] == DIGESTS_PER_SLOT


def test_held_batches_are_dropped_at_the_stable_checkpoint_that_covers_them():
    """A stable checkpoint at seq covers the slots at or below it (batchfetch.py)."""
    held = HeldBatches(window=8)
    for seq in (3, 4, 5):
        held.keep(seq, b"d%d" % seq, (b"r%d" % seq,))
    assert held.bounds() == [("held-batches", 3, 8 * DIGESTS_PER_SLOT, "batches")]
    held.collect(4)
    assert (held.get(3, b"d3"), held.get(4, b"d4"), held.get(5, b"d5")) == (None, None, (b"r5",))
    assert held.bounds() == [("held-batches", 1, 8 * DIGESTS_PER_SLOT, "batches")]


def test_batch_answers_remembered_are_dropped_at_the_stable_checkpoint_that_covers_them():
    """What BatchAnswers remembers of (asker, seq) goes at the stable checkpoint covering
    seq (4.3: everything at or below it is discarded), the rest stays."""
    answers = BatchAnswers(period=10, replicas=4, window=8)
    for seq in (3, 4, 5):
        answers.answered(1, seq, now=0)
    answers.collect(4)
    assert answers.bounds() == [("batch-answers", 1, 4 * 8, "entries")]  # "entries" is the unit the report prints
    assert answers.too_soon(1, 5, now=1) and not answers.too_soon(2, 5, now=1)


def test_request_timers_bounds_are_named_and_sized_per_client():
    t = RequestTimers(clients=3)
    t.wait("c0", 1, b"a", now=0)
    t.saw_ordered("c0", 1)
    t.saw_ordered("c1", 4)
    assert t.bounds() == [("waiting", 1, 3), ("ordered", 2, 3), ("_timers_restarted", 0, 3)]


def test_a_transfer_wants_only_the_nodes_that_differ_from_ours():
    """TOCS 2002 5.3.2: the walk fetches a node only if its digest differs from ours."""
    theirs, ours = MemoryStore(), MemoryStore()
    for i in range(50):
        theirs.put(b"k%d" % i, b"v")
        ours.put(b"k%d" % i, b"v")
    theirs.put(b"k7", b"changed")
    d = theirs.checkpoint(8)
    t = Transfer(8, d, (), sources=[1], mine=ours.tree_now().levels)
    assert t.wants(8, d, DEPTH, 0, 0, 1) and not t.wants(9, d, DEPTH, 0, 0, 1) and not t.wants(8, b"e", DEPTH, 0, 0, 1)
    assert not t.wants(8, d, 1, 0, 0, 1)  # not known to differ yet
    top = b"".join(theirs.children_at(8, DEPTH, 0))
    assert t.received(DEPTH, 0, 0, 1, top, 1)[0] is Verdict.KEPT
    b = bucket_of(b"k7")
    assert list(t.expected) == [(1, b // FANOUT)] and not t.wants(8, d, DEPTH, 0, 0, 1)
    t.received(1, b // FANOUT, 0, 1, b"".join(theirs.children_at(8, 1, b // FANOUT)), 1)
    assert list(t.expected) == [(0, b)]
    verdict, entries = t.received(0, b, 0, 1, encode_page(theirs.bucket_at(8, b)), 1)
    assert verdict is Verdict.LEAF and (b"k7", b"changed") in entries and t.complete()


def test_a_signers_future_view_budget_is_full_at_exactly_its_count():
    """FutureViews keeps at most `per_signer` messages of one signer (issue 13, item 6)."""
    fv = FutureViews(make_config())
    for _ in range(fv.per_signer - 1):
        fv.add(1, 1, b"x")
    assert not fv.full(1, 1)
    fv.add(1, 1, b"x")
    assert fv.full(1, 1) and not fv.full(2, 1)


def test_a_future_view_byte_budget_takes_a_message_up_to_exactly_its_limit():
    """One signer's bytes and the total are bounds that a message may reach, not pass."""
    fv = FutureViews(make_config())
    fv.bytes[2] = FUTURE_SIGNER_BYTES - 10
    assert not fv.full(2, 10) and fv.full(2, 11)
    fv.total = fv.total_limit - 10
    assert not fv.full(3, 10) and fv.full(3, 11)


def test_a_batch_says_why_each_request_that_does_not_verify_is_refused():
    cfg = make_config()
    good = sign_request("alice", op_put(b"k", b"v"), 1)
    forged = bytearray(sign_request("bob", op_put(b"k", b"w"), 1))
    forged[-1] ^= 1
    ok, bad = VerifiedRequests(make_verifier(cfg)).batch((good, b"\xff", bytes(forged)))
    assert [r.client for r, _ in ok] == ["alice"]
    assert len(bad) == 2 and bad[0].startswith("malformed request: ")
    assert bad[1] == "bad client signature from 'bob'"


def _deferred():
    cfg = make_config(clients=("alice", "bob", "carol"))
    requests = RequestTimers(clients=len(cfg.requesters))
    deferred = DeferredRequests(Batching(cfg, 100), requests, ReplyCache(cfg))
    return deferred, requests, VerifiedRequests(make_verifier(cfg))


def test_deferred_requests_are_taken_newest_first_per_client_and_each_client_in_turn():
    """DeferredRequests (issue 13, item 9): at the tick, per client in client order, its
    newest held request, verified; one that does not verify gives way to the next newest;
    one no newer than what now waits (superseded meanwhile) is dropped, the client's older
    ones with it, and the next client still gets its turn."""
    deferred, requests, verified = _deferred()
    for client in ("alice", "bob", "carol"):
        requests.wait(client, 1, sign_request(client, op_put(b"k", b"0"), 1), now=0)
    a2 = sign_request("alice", op_put(b"k", b"2"), 2)
    forged = bytearray(sign_request("bob", op_put(b"k", b"3"), 3))
    forged[-1] ^= 1
    b2 = sign_request("bob", op_put(b"k", b"2"), 2)
    c3, c2 = (sign_request("carol", op_put(b"k", b"%d" % t), t) for t in (3, 2))
    assert deferred.defer("alice", a2, _request(a2, 2)) is True
    assert deferred.defer("bob", bytes(forged), _request(forged, 3)) is True
    assert deferred.defer(2, b2, _request(b2, 2)) is True  # relayed by replica 2
    assert deferred.defer(2, c2, _request(c2, 2)) is True
    assert deferred.defer("carol", c3, _request(c3, 3)) is True
    requests.wait("alice", 2, a2, now=1)  # alice's arrived verified meanwhile: superseded
    taken = [(peer, data, checked if isinstance(checked, str) else checked.timestamp)
             for peer, data, checked in deferred.take(verified)]
    assert taken == [("bob", bytes(forged), "bad client signature from 'bob'"), (2, b2, 2), ("carol", c3, 3)]
    assert deferred.held == {}


def _request(data, timestamp):
    from pbft.protocol.messages import Request, decode_envelope
    _, msg = decode_envelope(bytes(data))
    assert isinstance(msg, Request) and msg.timestamp == timestamp
    return msg


def test_held_answers_are_rationed_per_client_not_across_clients():
    """A HELD goes out once per period per request (held.py): two clients refused for
    the same timestamp in one period are each told."""
    cfg = make_config()
    held = HeldAnswers(cfg)
    alice, bob = (_request(sign_request(c, op_put(b"k", b"v"), 1), 1) for c in ("alice", "bob"))
    assert held.answer(0, 1, alice, 5, now=0) is not None
    assert held.answer(0, 1, bob, 5, now=0) is not None
    assert held.answer(0, 1, alice, 5, now=1) is None  # the same request again, within the period


def test_the_future_view_buffer_counts_its_total_bytes_and_empties_to_zero():
    fv = FutureViews(make_config())
    fv.add(1, 1, b"abc")
    fv.add(2, 2, b"defgh")
    fv.add(1, 1, b"ij")
    assert fv.total == 10 and ("_future (total bytes)", 10, fv.total_limit) in fv.bounds()
    assert ("_future (one signer)", 2, fv.per_signer) in fv.bounds()
    assert ("_future (one signer's bytes)", 5, FUTURE_SIGNER_BYTES) in fv.bounds()
    assert ("_future (signers)", 2, fv.signers) in fv.bounds()
    assert [d for _, d in fv.take()] == [b"abc", b"defgh", b"ij"]
    assert fv.total == 0 and not fv.count and not fv.bytes and not fv.seen


def test_reply_records_are_read_back_for_every_client_name_and_only_theirs():
    """ReplyCache.load after a state transfer or a rollback: the records of every client
    of the configuration (names sort anywhere, upper case too), read by name; other keys
    (a client an earlier epoch removed keeps its record in the state) are not read."""
    from pbft.protocol import codec
    from pbft.protocol.store import Namespace

    cfg = make_config(clients=("Al", "bob"))
    store = MemoryStore()
    replies = ReplyCache(cfg, Namespace(store, b"r"))
    replies.record("Al", 3, b"x")
    replies.record("bob", 4, b"y")
    assert replies.load() == [] and {c: r.timestamp for c, r in replies.records.items()} == {"Al": 3, "bob": 4}
    Namespace(store, b"r").put(b"\xff", codec.encode([1, b"z"]))
    Namespace(store, b"r").put(b"Ab", codec.encode([1, b"z"]))  # sorts before both
    Namespace(store, b"r").put(b"Ak", codec.encode([1, b"z"]))
    assert replies.load() == []
    assert {c: r.timestamp for c, r in replies.records.items()} == {"Al": 3, "bob": 4}


def test_records_of_removed_clients_do_not_crowd_out_the_current_ones():
    """Found by a review of the divergence reports: records of alice, bob and carol and the
    operator, loaded in an epoch whose clients are alice and the operator, kept only
    alice's (a scan of the first clients+1 keys); the operator's command could then be
    executed again at that replica."""
    from pbft.protocol.config import OPERATOR
    from pbft.protocol.store import Namespace

    store = MemoryStore()
    before = ReplyCache(make_config(clients=("alice", "bob", "carol")), Namespace(store, b"r"))
    for i, client in enumerate(("alice", "bob", "carol", OPERATOR)):
        before.record(client, 10 + i, b"done")
    after = ReplyCache(make_config(clients=("alice",), operator_key=b"\x01" * 32), Namespace(store, b"r"))
    assert after.load() == []
    assert {c: r.timestamp for c, r in after.records.items()} == {"alice": 10, OPERATOR: 13}



def test_a_reply_record_that_does_not_read_is_a_problem_and_the_rest_still_load():
    from pbft.protocol import codec
    from pbft.protocol.store import Namespace

    cfg = make_config(clients=("Al", "bob", "cy"))
    store = MemoryStore()
    replies = ReplyCache(cfg, Namespace(store, b"r"))
    Namespace(store, b"r").put(b"Al", b"\xff\xff")  # not CBOR
    Namespace(store, b"r").put(b"bob", codec.encode([1, "text"]))  # a result that is not bytes
    replies.record("cy", 7, b"ok")
    assert replies.load() == ["reply record of 'Al' unreadable", "reply record of 'bob' not a client's"]
    assert {c: r.timestamp for c, r in replies.records.items()} == {"cy": 7}


def test_messages_for_up_to_n_views_ahead_are_kept_and_no_further():
    """A replica keeps messages for the next n views (one per possible next primary) and
    refuses older or farther ones, saying which (future.py)."""
    from pbft.protocol.events import Reason

    cfg = make_config()
    fv = FutureViews(cfg)
    assert fv.ignore(5 + cfg.n, 5, 1, b"x", "PREPARE") is None
    assert fv.ignore(6 + cfg.n, 5, 1, b"x", "PREPARE") == (Reason.OUT_OF_WINDOW, "PREPARE for far-future view 10")
    assert fv.ignore(4, 5, 1, b"x", "COMMIT") == (Reason.WRONG_VIEW, "COMMIT for old view 4")
    fv.add(1, 1, b"x")
    assert fv.ignore(6, 5, 1, b"x", "PREPARE") == (Reason.DUPLICATE, None)


def test_a_request_is_answered_again_only_after_a_period_whenever_it_was_told():
    """ClientAnswers: the same request answered at tick t goes out again from t + period,
    late in a run as early (held.py)."""
    cfg = make_config()
    answers = HeldAnswers(cfg)
    period = answers.period
    assert period >= 2
    assert answers.due("alice", 4, now=1000)
    assert not answers.due("alice", 4, now=1000 + period - 1)
    assert answers.due("alice", 4, now=1000 + period)
    assert answers.due("alice", 5, now=1000 + period)  # a newer request at once


def test_a_wait_for_returning_clients_that_ran_out_pauses_only_with_requests_waiting_and_none_in_flight():
    """batching.py: a hold that runs out while requests wait and nothing is in flight
    means clients did not come straight back: stop waiting for HOLD_PAUSE batches.
    Otherwise (nothing waits, or a batch is in flight) nothing is paused."""
    from pbft.protocol.batching import HOLD_PAUSE

    cfg = make_config(clients=("alice", "bob", "carol"))
    for pending, idle, paused in ((False, True, 0), (True, False, 0), (True, True, HOLD_PAUSE)):
        b = Batching(cfg, 100)
        b.expect_returns({"alice", "bob"}, now=0)
        if pending:
            req = _request(sign_request("carol", op_put(b"k", b"v"), 1), 1)
            b.enqueue(req, b"data")
        b.on_hold_timeout(idle=idle)
        assert (b.pause, b.returning, b.hold.running) == (paused, set(), False), (pending, idle)


def test_after_a_wait_ran_out_the_primary_waits_again_after_hold_pause_batches():
    """batching.py: a wait for returning clients that ran out stops the waiting for the
    next HOLD_PAUSE batches executed, then the primary waits again."""
    from pbft.protocol.batching import HOLD_PAUSE

    cfg = make_config(clients=("alice", "bob", "carol"))
    b = Batching(cfg, 100)
    b.expect_returns({"alice", "bob"}, now=0)
    b.enqueue(_request(sign_request("carol", op_put(b"k", b"v"), 1), 1), b"data")
    b.on_hold_timeout(idle=True)
    assert b.pause == HOLD_PAUSE
    for i in range(HOLD_PAUSE - 1):
        b.expect_returns({"alice", "bob"}, now=i)
        assert not b.returning and not b.hold.running, i
    b.expect_returns({"alice", "bob"}, now=HOLD_PAUSE)
    assert b.pause == 0 and b.returning == {"alice", "bob"} and b.hold.running


def test_a_request_with_timestamp_0_queued_at_the_primary_defers_its_clients_newer_ones():
    """Timestamps start at 0 (they are unsigned): a queued request with timestamp 0 is a
    request waiting here like any other for DeferredRequests."""
    deferred, _, verified = _deferred()
    r0 = sign_request("alice", op_put(b"k", b"0"), 0)
    deferred.batching.enqueue(_request(r0, 0), r0)
    assert deferred.queued_ts("alice") == 0
    r1 = sign_request("alice", op_put(b"k", b"1"), 1)
    assert deferred.defer("alice", r1, _request(r1, 1)) is True
    assert deferred.defer("alice", r0, _request(r0, 0)) is None  # what waits, again: verified bytes
    deferred.batching.enqueue(_request(r1, 1), r1)
    assert deferred.defer(2, r0, _request(r0, 0)) is False  # older than what waits: dropped


def test_a_request_waited_for_that_already_executed_does_not_defer_its_clients_next():
    """A backup's waiting entry executed meanwhile (its reply recorded, say by a state
    transfer, before the timers drop it) is not a request waiting here: the client's next
    one is verified at once, not deferred."""
    deferred, requests, _ = _deferred()
    r3 = sign_request("alice", op_put(b"k", b"3"), 3)
    requests.wait("alice", 3, r3, now=0)
    assert deferred.queued_ts("alice") == 3
    deferred.replies.record("alice", 3, b"ok")
    assert deferred.queued_ts("alice") == -1
    r4 = sign_request("alice", op_put(b"k", b"4"), 4)
    assert deferred.defer("alice", r4, _request(r4, 4)) is None


def test_a_deferred_slot_keeps_the_newest_request_and_a_full_budget_still_serves_a_held_slot(monkeypatch):
    """`DeferredRequests.defer`: one request per (client, channel) is kept, the newest;
    an older one arriving after it does not replace it. When the budget is full, a
    request for a slot already held still takes it (no new room is used); only a new
    slot is verified at once."""
    deferred, _, _ = _deferred()
    r0 = sign_request("alice", op_put(b"k", b"0"), 0)
    deferred.batching.enqueue(_request(r0, 0), r0)
    r5, r3 = (sign_request("alice", op_put(b"k", b"%d" % t), t) for t in (5, 3))
    assert deferred.defer("alice", r5, _request(r5, 5)) is True
    assert deferred.defer("alice", r3, _request(r3, 3)) is True  # kept back, but not kept
    assert deferred.held[("alice", "alice")][1] == r5
    limit = len(deferred.held)
    monkeypatch.setattr(verified_module, "DEFERRED_REQUESTS", limit)  # full now
    r7 = sign_request("alice", op_put(b"k", b"7"), 7)
    assert deferred.defer("alice", r7, _request(r7, 7)) is True
    assert deferred.held[("alice", "alice")][1] == r7 and len(deferred.held) == limit
    assert deferred.defer(2, r7, _request(r7, 7)) is None  # a new slot: no room


def test_a_request_checked_once_is_not_verified_again_and_a_tie_keeps_the_first_deferred():
    """`VerifiedRequests.check` answers a request it verified before from its cache (a
    request reaches a backup alone and again in the pre-prepare's batch: one signature
    check, not two), and keeps the most recently used. `defer` keeps the request held
    for a slot against another with the same timestamp."""
    _, _, verified = _deferred()
    calls = []
    real = verified.verifier.verify
    verified.verifier.verify = lambda env: calls.append(env) or real(env)
    a1, b1 = sign_request("alice", op_put(b"k", b"1"), 1), sign_request("bob", op_put(b"k", b"1"), 1)
    first = verified.check(a1)
    verified.check(b1)
    assert verified.check(a1) is first and len(calls) == 2
    assert list(verified.cache.values())[-1] is first  # used last
    assert verified.check(seal_as("alice", Prepare(0, 1, bytes(32)))) == "not a request"
    deferred, _, _ = _deferred()
    r0 = sign_request("alice", op_put(b"k", b"0"), 0)
    deferred.batching.enqueue(_request(r0, 0), r0)
    r5, other5 = sign_request("alice", op_put(b"k", b"5"), 5), sign_request("alice", op_put(b"j", b"5"), 5)
    assert deferred.defer("alice", r5, _request(r5, 5)) is True
    assert deferred.defer("alice", other5, _request(other5, 5)) is True
    assert deferred.held[("alice", "alice")][1] == r5


def test_the_checked_requests_cache_holds_exactly_its_limit_least_recently_used_out_first(monkeypatch):
    monkeypatch.setattr(verified_module, "VERIFIED_CACHE", 2)
    _, _, verified = _deferred()
    a, b, c = (sign_request(name, op_put(b"k", b"v"), 1) for name in ("alice", "bob", "carol"))
    verified.check(a)
    verified.check(b)
    verified.check(a)  # used again: bob is now the least recently used
    verified.check(c)
    assert [r.client for r in verified.cache.values()] == ["alice", "carol"]


@pytest.mark.parametrize("batch_max, worthwhile", [(8, 1), (12, 1), (16, 2), (20, 2), (23, 2), (24, 3)])
def test_a_batch_is_worthwhile_in_flight_at_batch_max_over_8_rounded_down(batch_max, worthwhile):
    """Busy, with batches in flight, the primary proposes once batch_max // 8 requests
    wait (at least one), whatever batch_max is."""
    cfg = make_config(clients=tuple(f"c{i}" for i in range(4)), batch_max=batch_max)
    b = Batching(cfg, 100)
    for i in range(worthwhile - 1):
        b.enqueue(_request(sign_request(f"c{i}", op_put(b"k", b"v"), 1), 1), b"data")
    assert worthwhile == 1 or not b.ready(in_flight=1)
    b.enqueue(_request(sign_request("c3", op_put(b"k", b"v"), 1), 1), b"data")
    assert b.ready(in_flight=1)


@pytest.mark.parametrize("vc_ticks, hold", [(1000, 4), (40, 4), (24, 3), (12, 1), (4, 1)])
def test_the_wait_for_returning_clients_is_hold_ms_at_most_an_eighth_of_the_view_change_timeout(vc_ticks, hold):
    """HOLD_MS (40 ms, 4 ticks of 10 ms) rounded up, at most an eighth of the view-change
    timeout rounded down, at least one tick; and a fresh primary waits from its first
    executed batch (no pause to spend first)."""
    cfg = make_config(tick_ms=10)
    b = Batching(cfg, vc_ticks)
    assert b.hold.ticks == hold and type(b.hold.ticks) is int
    b.expect_returns({"alice", "bob"}, now=0)
    assert b.returning == {"alice", "bob"} and b.hold.running
