"""invariants() of the replica and of each owner: the bounds live with the state they
bound, hold through a run, and a structure over its bound is reported by name."""

from __future__ import annotations

import pytest
from conftest import Router, make_config, make_replica

from pbft.protocol.batching import Batching
from pbft.protocol.checkpoints import CLAIMS_PER_REPLICA, Checkpoints
from pbft.protocol.future import FUTURE_SIGNER_BYTES, FutureViews
from pbft.protocol.log import MessageLog
from pbft.protocol.statetransfer import IN_FLIGHT, MAX_PARTS, LeafPages, Transfer
from pbft.protocol.timeouts import Timeout
from pbft.service.kv import op_put
from pbft.sim.scenario import Scenario
from pbft.sim.simulation import Simulation

CFG = make_config()


def test_a_fresh_replica_holds_its_invariants():
    make_replica(CFG, 0).invariants()


def test_invariants_hold_after_every_step_of_a_run():
    router = Router.build(CFG)
    steps = []
    for r in router.replicas:

        def checked(event, r=r, step=r.step):
            out = step(event)
            r.invariants()
            steps.append(r.id)
            return out

        r.step = checked  # type: ignore[method-assign]
    for i in range(12):  # past a few checkpoints (K = 4) and log windows (L = 8)
        router.submit("alice", op_put(b"k", b"%d" % i))
        router.run()
    assert len(router.completed) == 12 and len(steps) > 12 * 4


def test_the_simulator_checks_them_after_every_step():
    r = Simulation(Scenario(seed=3, clients=2, requests=10)).run()
    assert r.passed, r.violations


def over(fn, match):
    with pytest.raises(AssertionError, match=match):
        fn()


def test_log_bound():
    log = MessageLog(CFG.log_window)
    for seq in range(1, CFG.log_window + 1):
        log.slot(seq, 0)
    log.invariants()
    log.slots[CFG.log_window + 1] = log.slots[1]
    over(log.invariants, "log holds 9 entries, bound 8")


def test_checkpoint_bounds():
    cp = Checkpoints(CFG)
    cp.claims[1] = {s: (b"d", b"x") for s in range(CLAIMS_PER_REPLICA + 1)}
    cp.invariants()  # three claims of one replica, 2n in all: within the total
    cp.claims.update({r: {s: (b"d", b"x") for s in range(3)} for r in range(2, 4)})
    over(cp.invariants, r"claims \(checkpoints\) holds 9, bound 8")
    cp = Checkpoints(CFG)
    for seq in range(4, 4 * 6, 4):
        cp.vote_set(seq)
    over(cp.invariants, "checkpoint_votes holds 5, bound 4")


def test_future_buffer_bounds():
    fv = FutureViews(CFG)
    fv.add(1, 1, bytes(100))
    fv.invariants()
    fv.bytes[1] += FUTURE_SIGNER_BYTES
    over(fv.invariants, "one signer's bytes")


def test_batching_bound():
    b = Batching(CFG, 100)
    b.pending.update({f"c{i}": None for i in range(len(CFG.clients) + 1)})  # type: ignore[misc]
    over(b.invariants, "pending holds 3, bound 2")


def test_transfer_bounds():
    t = Transfer(4, b"d", (), [1, 2])
    t.asked.update({i: 1 for i in range(IN_FLIGHT + 1)})
    over(t.invariants, "transfer \\(asked\\)")
    t = Transfer(4, b"d", (), [1, 2])
    t.leaves.update({b: LeafPages(1) for b in range(IN_FLIGHT + 1)})
    over(t.invariants, "transfer \\(leaves\\)")
    t = Transfer(4, b"d", (), [1, 2])
    t.leaves[0] = LeafPages(1, parts=MAX_PARTS + 1)
    over(t.invariants, "transfer \\(pages\\)")


def test_a_transfer_in_progress_reports_the_bounds_an_idle_one_does_with_their_real_sizes():
    """The replica lists IDLE_TRANSFER when no transfer runs and the transfer's own
    bounds when one does: the same names, limits and units (FRESH_BOUNDS pins the idle
    list), each with its real size; the pages are those of the largest leaf."""
    from pbft.protocol.statetransfer import IDLE_TRANSFER

    t = Transfer(4, b"d", (), [1, 2])
    assert t.bounds() == IDLE_TRANSFER
    t.asked.update({(0, i): 1 for i in range(3)})
    t.leaves.update({0: LeafPages(1, parts=7), 1: LeafPages(2, parts=2)})
    t.unanswered.update({(1, 0): 2})
    assert [(name, size) for name, size, *_ in t.bounds()] == [
        ("transfer (asked)", 3), ("transfer (leaves)", 2), ("transfer (pages)", 7), ("transfer (unanswered)", 1)
    ]
    assert [(name, limit, *unit) for name, _, limit, *unit in t.bounds()] == [
        (name, limit, *unit) for name, _, limit, *unit in IDLE_TRANSFER
    ]
    t = Transfer(4, b"d", (), [1, 2])
    t.unanswered.update({(0, i): 1 for i in range(IN_FLIGHT + 1)})
    over(t.invariants, "transfer \\(unanswered\\)")


def test_replica_reports_an_owner_over_its_bound():
    r = make_replica(CFG, 1)
    r.requests.waiting.update({f"x{i}": (1, b"", 0) for i in range(len(CFG.clients) + 1)})
    over(r.invariants, "waiting holds 3, bound 2")


def test_timeout_counts_ticks():
    t = Timeout("t", 3)
    assert repr(t) == "Timeout('t', 3, started=None)"  # its name is for debugging only
    assert not t.fired(100) and t.deadline is None
    t.start(10)
    assert [t.fired(now) for now in (11, 12, 13, 14)] == [False, False, True, True]
    assert t.deadline == 13
    t.start(13, ticks=1)
    assert t.fired(14) and t.deadline == 14
    t.stop()
    assert not t.running and not t.fired(1000)


def _owners(replica) -> dict[str, object]:
    """Every owner a replica holds that lists bounds and checks them (`invariants()`)."""
    return {name: v for name, v in vars(replica).items()
            if callable(getattr(v, "invariants", None)) and callable(getattr(v, "bounds", None))}


def test_every_owners_invariants_check_its_own_bounds():
    """Each owner's `invariants()` asserts exactly the list its `bounds()` gives: they
    hold on a replica that ran a workload, and a bound over its limit (the owner's class
    made to report one) is named in the assertion."""
    router = Router.build(CFG)
    for i in range(6):
        router.submit("alice", op_put(b"k", b"%d" % i))
        router.run()
    owners = _owners(router.replicas[0])
    assert {"log", "checkpoints", "future", "requests", "view_changes", "batch_answers",
            "batching", "replies", "reads", "verified", "deferred",
            "catch_up"} <= set(owners)
    for name, owner in owners.items():
        owner.invariants()
        over_bound = type(f"Over{type(owner).__name__}", (type(owner),), {
            "__slots__": (), "bounds": lambda self, name=name: [("fine", 1, 1), (f"{name}-x", 2, 1)]})
        original = type(owner)
        owner.__class__ = over_bound
        try:
            over(owner.invariants, f"{name}-x holds 2, bound 1")
        finally:
            owner.__class__ = original


# Every bounded structure of a fresh replica (make_config: f = 1, K = 4, L = 8, clients
# alice and bob), as (name, limit[, unit]). The names key the simulator's resource report
# and docs/robustness.md; the limits are the documented ones. A change here is a change
# to what a replica promises to bound: update the docs with it.
FRESH_BOUNDS = [
    ('log', 8, 'entries'),
    ('checkpoint_votes', 4),
    ('checkpoint_votes (votes)', 16),
    ('checkpoint_votes (bytes)', 8192),
    ('own_checkpoints', 4),
    ('claims', 4),
    ('claims (checkpoints)', 8),
    ('claims (bytes)', 4096),
    ('_future', 160),
    ('_future_seen', 160),
    ('_future (signers)', 4),
    ('_future (one signer)', 40),
    ("_future (one signer's bytes)", 16777216),
    ('_future (total bytes)', 50331648),
    ('waiting', 2),
    ('ordered', 2),
    ('_timers_restarted', 2),
    ('view_changes', 4),
    ('_new_view_resent', 4),
    ('_own_vcs', 4),
    ('_vc_resent', 4),
    ('_peer_view', 4),
    ('_lone_since', 4),
    ('_lone_joins', 4),
    ('_vc_refused', 4),
    ('_nv_refused', 4),
    ('_chunks_sent', 4096),
    ('_chunk_budget', 4),
    ('batch-answers', 32, 'entries'),
    ('held-batches', 32, 'batches'),
    ('_verified', 4096),
    ('_deferred', 4096),
    ('pending', 2),
    ('returning', 2),
    ('clients', 2),
    ('ClientAnswers', 2),
    ('HeldAnswers', 2),
    ('reads', 2),
    ('evidence', 4096),
    ('catch_up.answered', 4),
    ('catch_up.heard', 4),
    ('catch_up.progress', 4),
    ('verdicts', 0),
    ('transfer (asked)', 8, 'requests'),
    ('transfer (leaves)', 8, 'leaves in pages'),
    ('transfer (pages)', 16384, 'pages of one leaf'),
    ('transfer (unanswered)', 8, 'requests to ask elsewhere'),
    ('prepared_certs', 8),
    ('epochs_sent', 100),
    ('status_answered', 2),
    ('read_answers', 2),
    ('tree_nodes', 514),
    ('rejects', 105),
]


def test_a_replica_lists_every_bound_by_name_and_limit():
    assert [b[:1] + b[2:] for b in make_replica(CFG, 0).bounds()] == FRESH_BOUNDS
    assert all(b[1] == 0 for b in make_replica(CFG, 0).bounds())


# The limits that depend on n or f, at f = 2 (n = 7); the others are as at f = 1.
F2_LIMITS = {'checkpoint_votes (votes)': 28, 'checkpoint_votes (bytes)': 14336, 'claims': 7,
    'claims (checkpoints)': 14, 'claims (bytes)': 7168, '_future': 364, '_future_seen': 364,
    '_future (signers)': 7, '_future (one signer)': 52, '_future (total bytes)': 67108864,
    'view_changes': 7, '_new_view_resent': 7, '_own_vcs': 7, '_vc_resent': 7, '_peer_view':
    7, '_lone_since': 7, '_lone_joins': 7, '_vc_refused': 7, '_nv_refused': 7,
    '_chunk_budget': 7, 'batch-answers': 56, 'catch_up.answered': 7, 'catch_up.heard': 7,
    'catch_up.progress': 7, 'rejects': 150}


def test_the_limits_that_depend_on_the_group_follow_it_at_f_2():
    limits = {b[0]: b[2] for b in make_replica(make_config(f=2), 0).bounds()}
    assert {k: v for k, v in limits.items() if k in F2_LIMITS} == F2_LIMITS
    assert {k: v for k, v in limits.items() if k not in F2_LIMITS} == {
        b[0]: b[1] for b in FRESH_BOUNDS if b[0] not in F2_LIMITS}
