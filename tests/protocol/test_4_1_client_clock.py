"""Client clocks (OSDI'99 section 4.1): a client continues from the timestamp the replicas
hold for it, once f+1 of them say the same; a replica tells it, at most once a period.

Core tests drive one ClientCore or Replica by hand; the Router tests run a whole cluster
in memory (no ticks: the catch-up must not wait for a retransmission timer).
"""

from __future__ import annotations

import pytest
from conftest import (
    Router,
    actions_of,
    decoded,
    feed,
    forge,
    make_client,
    make_config,
    sign_request,
)

from pbft.protocol.client import CATCH_UP_GAP, MAX_CATCH_UPS
from pbft.protocol.events import (
    Completed,
    Failed,
    Reason,
    Received,
    Rejected,
    Send,
    SendClient,
    Tick,
)
from pbft.protocol.held import HeldAnswers
from pbft.protocol.messages import MAX_U64, Envelope, Held, Reply, Request, to_body
from pbft.service.kv import decode_result, op_get, op_put

NOW = 1_750_000_000_000_000
"""A wall clock in microseconds, as the runtime seeds a client's timestamps."""
HOUR = 3_600 * 10**6
TEN_YEARS = 10 * 365 * 24 * HOUR


@pytest.fixture
def cfg():
    return make_config()


@pytest.fixture
def alice(cfg):
    return make_client(cfg, "alice", retransmit_ticks=5)


def held(replica: int, ts: int, value: int, view: int = 0, client="alice", signer=None) -> bytes:
    body = to_body(Held(view, ts, client, replica, value))
    return Envelope(body, replica if signer is None else signer, b"").to_bytes()


def reply_bytes(replica: int, ts: int, result: bytes = b"ok") -> bytes:
    return Envelope(to_body(Reply(0, ts, "alice", replica, result)), replica, b"").to_bytes()


def deliver(client, peer, data):
    return client.step(Received(peer, data))


def sent_requests(actions) -> list[tuple[int, Request]]:
    return [(a.to, decoded(a.data)[1]) for a in actions_of(actions, Send)]


# -- the client core ------------------------------------------------------------------------


def test_f_plus_1_matching_held_timestamps_move_the_client_on(alice):
    [first] = alice.submit(b"op")
    # One replica's word: the request goes to everyone (once), so the others can confirm.
    actions = deliver(alice, 0, held(0, 1, 500))
    assert sent_requests(actions) == [(r, decoded(first.data)[1]) for r in range(4)]
    assert alice.timestamp == 1
    # The second alike: continue from 501, the same operation signed again.
    actions = deliver(alice, 2, held(2, 1, 500))
    [(to, req)] = sent_requests(actions)
    assert to == 0 and req == Request(b"op", 500 + CATCH_UP_GAP, "alice", False)
    assert alice.outstanding.timestamp == alice.timestamp == 500 + CATCH_UP_GAP
    # Late HELDs for the abandoned timestamp change nothing.
    assert deliver(alice, 3, held(3, 1, 500)) == []
    assert deliver(alice, 1, reply_bytes(1, 500 + CATCH_UP_GAP, b"r")) == []
    assert deliver(alice, 2, reply_bytes(2, 500 + CATCH_UP_GAP, b"r")) == [Completed(500 + CATCH_UP_GAP, b"r")]
    # Monotonic from there on.
    [send] = alice.submit(b"next")
    assert decoded(send.data)[1].timestamp == 501 + CATCH_UP_GAP


def test_the_view_in_held_answers_vouched_by_f_plus_1_is_learnt(alice):
    # HELDs say the view their replicas are in, as replies do (section 4.1): f+1 distinct
    # replicas vouch for it, so the next request goes to that view's primary.
    alice.submit(b"op")
    deliver(alice, 1, held(1, 1, 500, view=5))
    assert alice.view == 0  # one replica's word
    [(to, _)] = sent_requests(deliver(alice, 2, held(2, 1, 500, view=5)))
    assert alice.view == 5 and to == 5 % 4


def test_one_liar_cannot_move_the_timestamp(alice):
    alice.submit(b"op")
    assert len(deliver(alice, 3, held(3, 1, MAX_U64 - 1))) == 4  # asks everyone, once
    assert deliver(alice, 3, held(3, 1, MAX_U64 - 1)) == []  # the same replica counts once
    assert deliver(alice, 3, held(3, 1, MAX_U64)) == []
    assert alice.timestamp == 1 and alice.outstanding.timestamp == 1
    # The request was not stale at the correct replicas: it completes as it is.
    deliver(alice, 0, reply_bytes(0, 1, b"r"))
    assert deliver(alice, 1, reply_bytes(1, 1, b"r")) == [Completed(1, b"r")]
    [send] = alice.submit(b"next")
    assert decoded(send.data)[1].timestamp == 2


def test_f_liars_cannot_move_the_timestamp():
    cfg = make_config(f=2)
    client = make_client(cfg, "alice", retransmit_ticks=5)
    client.submit(b"op")
    for liar in (5, 6):
        deliver(client, liar, held(liar, 1, 10**18))
    assert client.timestamp == 1 and client.outstanding.timestamp == 1
    deliver(client, 0, held(0, 1, 7))
    deliver(client, 1, held(1, 1, 7))
    assert client.timestamp == 1
    [(_, req)] = sent_requests(deliver(client, 2, held(2, 1, 7)))  # the third alike: f+1
    assert req.timestamp == 7 + CATCH_UP_GAP


def test_held_timestamps_that_disagree_do_not_move_the_client(alice):
    alice.submit(b"op")
    deliver(alice, 0, held(0, 1, 500))
    assert deliver(alice, 1, held(1, 1, 600)) == []
    assert alice.timestamp == 1
    [(_, req)] = sent_requests(deliver(alice, 2, held(2, 1, 600)))
    assert req.timestamp == 600 + CATCH_UP_GAP


def test_held_not_from_its_channel_for_someone_else_or_not_newer_is_rejected(alice):
    alice.submit(b"op")
    cases = [
        (3, held(0, 1, 500), Reason.UNKNOWN_SIGNER),  # replica 3 speaks for replica 0
        (None, held(0, 1, 500), Reason.UNKNOWN_SIGNER),
        (1, held(1, 1, 500, client="bob"), Reason.WRONG_ROLE),
        (1, held(1, 1, 1), Reason.MALFORMED),  # not newer than the request
        (1, held(1, 1, 0), Reason.MALFORMED),
    ]
    for peer, data, reason in cases:
        [rej] = deliver(alice, peer, data)
        assert isinstance(rej, Rejected) and rej.reason == reason
        assert rej.peer == peer  # the channel's peer, whom the operator's figures blame
    # None of them counted: one more honest-looking answer is not f+1.
    assert len(deliver(alice, 0, held(0, 1, 500))) == 4
    assert alice.timestamp == 1


def test_held_at_the_largest_timestamp_fails_with_a_reason(alice):
    alice.submit(b"op")
    deliver(alice, 0, held(0, 1, MAX_U64))
    [failed] = deliver(alice, 1, held(1, 1, MAX_U64))
    assert isinstance(failed, Failed) and failed.timestamp == 1
    assert "largest" in failed.detail and "alice" in failed.detail
    assert alice.outstanding is None
    # Nothing larger exists: the next request fails at once, without sending anything.
    [failed] = alice.submit(b"next")
    assert isinstance(failed, Failed) and alice.outstanding is None


def test_one_below_the_largest_is_still_usable(alice):
    alice.submit(b"op")
    deliver(alice, 0, held(0, 1, MAX_U64 - 1))
    [(_, req)] = sent_requests(deliver(alice, 1, held(1, 1, MAX_U64 - 1)))
    assert req.timestamp == MAX_U64


def test_catching_up_is_bounded(alice):
    """Replicas that keep holding newer timestamps (another process with this identity)
    do not make the client chase them for ever: it gives up with a reason."""
    alice.submit(b"op")
    ts = 1
    for _ in range(MAX_CATCH_UPS):
        deliver(alice, 0, held(0, ts, ts + 100))
        [(_, req)] = sent_requests(deliver(alice, 1, held(1, ts, ts + 100)))
        assert req.timestamp == ts + 100 + CATCH_UP_GAP
        ts = req.timestamp
    deliver(alice, 0, held(0, ts, ts + 100))
    [failed] = deliver(alice, 1, held(1, ts, ts + 100))
    assert isinstance(failed, Failed) and "another process" in failed.detail
    assert alice.outstanding is None
    # The vouched timestamp is kept: the next operation starts above it.
    [send] = alice.submit(b"next")
    assert decoded(send.data)[1].timestamp == ts + 101


def test_a_restarted_process_never_reuses_the_timestamp_of_its_predecessors_request_in_flight(cfg):
    """The previous process of alice caught up to h + CATCH_UP_GAP, then counted by one; it
    died with its next request in flight, unexecuted. A new process learns the last
    executed timestamp from f+1 replicas; continuing at held + 1 it would take exactly the
    in-flight timestamp, and the replicas would answer it with the old request's result."""
    old = make_client(cfg, "alice", retransmit_ticks=5)
    old.submit(b"first")
    deliver(old, 0, held(0, 1, 500))
    deliver(old, 1, held(1, 1, 500))
    executed = old.outstanding.timestamp
    old.cancel()
    [send] = old.submit(b"in flight when it died")
    in_flight = decoded(send.data)[1].timestamp
    new = make_client(cfg, "alice", retransmit_ticks=5)
    new.submit(b"after the restart")
    deliver(new, 0, held(0, 1, executed))
    [(_, req)] = sent_requests(deliver(new, 1, held(1, 1, executed)))
    assert req.timestamp != in_flight and req.timestamp > in_flight


def test_a_new_operation_may_catch_up_again(alice):
    """The bound is per operation, not per client."""
    for round_ in range(MAX_CATCH_UPS + 1):
        alice.submit(b"op")
        ts = alice.outstanding.timestamp
        deliver(alice, 0, held(0, ts, ts + 10))
        deliver(alice, 1, held(1, ts, ts + 10))
        assert alice.outstanding.timestamp == ts + 10 + CATCH_UP_GAP, round_
        alice.cancel()


# -- the replica ----------------------------------------------------------------------------


def executed_cluster(start: int) -> Router:
    """A cluster that executed one put of alice's, with timestamp start + 1."""
    router = Router.build()
    router.clients["alice"] = make_client(router.config, "alice", start_timestamp=start)
    router.submit("alice", op_put(b"k", b"first"))
    router.run()
    assert [(c, ts) for c, ts, _ in router.completed] == [("alice", start + 1)]
    router.completed.clear()
    return router


def test_a_replica_tells_the_client_what_it_holds_at_most_once_a_period():
    router = executed_cluster(NOW)
    rep = router.replicas[1]
    stale = sign_request("alice", op_put(b"k", b"old"), NOW - HOUR)
    actions = feed(rep, "alice", stale)
    assert [a.reason for a in actions_of(actions, Rejected)] == [Reason.STALE]
    [told] = actions_of(actions, SendClient)
    env, msg = decoded(told.data)
    assert told.client == "alice" and env.signer == 1 and env.signature == b""  # as a REPLY
    assert msg == Held(0, NOW - HOUR, "alice", 1, NOW + 1)
    # A replay (here relayed by replica 3) within the period: refused, nobody told.
    for peer in ("alice", 3):
        actions = feed(rep, peer, stale)
        assert actions_of(actions, SendClient) == []
        assert [a.reason for a in actions_of(actions, Rejected)] == [Reason.STALE]
    period = HeldAnswers(router.config).period
    assert 1 <= period < router.clients["alice"].retransmit_ticks  # a retransmission is answered
    for _ in range(period):
        rep.step(Tick())
    [told] = actions_of(feed(rep, 3, stale), SendClient)
    assert told.client == "alice"  # to the request's client, never to whoever relayed it


def test_a_stale_request_with_a_bad_signature_gets_no_answer():
    router = executed_cluster(NOW)
    rep = router.replicas[1]
    forged = forge("alice", Request(op_put(b"k", b"x"), NOW - HOUR, "alice"), real_signer="bob")
    actions = feed(rep, "alice", forged)
    assert actions_of(actions, SendClient) == []
    assert [a.reason for a in actions_of(actions, Rejected)] == [Reason.BAD_REQUEST]


# -- whole cluster, in memory ---------------------------------------------------------------


def restart_alice(router: Router, start: int) -> None:
    """A new client process for alice whose wall clock reads `start`."""
    router.clients["alice"] = make_client(router.config, "alice", start_timestamp=start)


@pytest.mark.parametrize(
    ("first_clock", "second_clock"),
    [(NOW, NOW - HOUR), (NOW + TEN_YEARS, NOW)],
    ids=["clock-an-hour-behind", "clock-ten-years-ahead-then-corrected"],
)
def test_a_restarted_client_whose_clock_is_behind_completes(first_clock, second_clock):
    router = executed_cluster(first_clock)
    restart_alice(router, second_clock)
    router.submit("alice", op_put(b"k", b"second"))
    router.run()
    [(client, ts, result)] = router.completed
    assert client == "alice" and ts == first_clock + 1 + CATCH_UP_GAP and decode_result(result) is True
    # Reads and later writes go on from there; every correct replica executed both puts.
    router.submit("alice", op_get(b"k"), read_only=True)
    router.run()
    assert decode_result(router.completed[-1][2]) == b"second"
    router.submit("alice", op_put(b"k", b"third"))
    router.run()
    assert router.completed[-1][1] == first_clock + 3 + CATCH_UP_GAP  # the read took one
    assert all(r.replies.records["alice"].timestamp == first_clock + 3 + CATCH_UP_GAP for r in router.replicas)


def test_a_client_whose_clock_is_ahead_needs_nothing():
    router = executed_cluster(NOW - HOUR)
    restart_alice(router, NOW)
    before = router.delivered
    router.submit("alice", op_put(b"k", b"second"))
    router.run()
    assert [ts for _, ts, _ in router.completed] == [NOW + 1]
    assert all(len(r.replies.held) == 0 for r in router.replicas)
    assert router.delivered - before < 40  # the normal case: no HELD round trip


# -- the simulator: lossy, reordering network ------------------------------------------------


class RestartedClients:
    """A Simulation whose clients start with their clocks at `first` and, after `at`
    completed requests, restart as new processes with their clocks at `second`."""

    @staticmethod
    def run(scenario, first: int, second: int, at: int, seed: int | None = None):
        from pbft.protocol.client import ClientCore
        from pbft.sim.simulation import Simulation

        class Sim(Simulation):
            def _submit(self, name: str) -> None:
                cs = self.clients[name]
                if cs.done == at and cs.core.outstanding is None and cs.core.timestamp > second + at:
                    cs.core = cs.driver = ClientCore(
                        self.config, name, self.client_keys[name], start_timestamp=second
                    )
                    # A new process: it may reuse the timestamp of an earlier read-only
                    # request (replicas hold only executed ones), so the oracle must take
                    # each of its requests as a new submission.
                    cs.timestamps.clear()
                super()._submit(name)

        sim = Sim(scenario, seed)
        for cs in sim.clients.values():
            cs.core.timestamp = first
        return sim, sim.run()


@pytest.mark.parametrize(
    ("first", "second"),
    [(NOW, NOW - HOUR), (NOW + TEN_YEARS, NOW)],
    ids=["clock-an-hour-behind", "clock-ten-years-ahead-then-corrected"],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_clients_restarted_with_clocks_behind_complete(first, second, seed):
    from pbft.sim.scenario import NetworkFault, Scenario

    scenario = Scenario(
        name="clock-behind",
        seed=seed,
        clients=3,
        requests=10,
        network=(NetworkFault(drop=0.05, duplicate=0.1, reorder=0.2),),
    )
    sim, result = RestartedClients.run(scenario, first, second, at=4)
    assert result.passed, result.violations
    assert result.requests_completed == result.requests_total == 30
    for cs in sim.clients.values():
        assert min(cs.timestamps) <= second + 2  # the new process started behind...
        assert first < cs.core.timestamp < first + 20 + CATCH_UP_GAP  # ...and caught up


def test_the_client_counts_its_retransmissions(alice):
    # Each expiry of the request's timer resends it to everyone and is counted (what the
    # simulator's tests of needless retransmission read), the timer doubling each time.
    alice.submit(b"op")
    sends = []
    for _ in range(5 + 10):
        sends.append(len(actions_of(alice.step(Tick()), Send)))
    assert alice.retransmissions == 2 and sends.count(4) == 2
