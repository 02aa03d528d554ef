"""Resources over a long run (docs/attacks.md, "The checks": resources): every bounded structure
of every correct replica stays within its bound, and replica memory is flat once warmed up.

The CI run is 3,000 requests (10 clients x 300) with K=8, L=16 on mild link faults (drop,
duplicate, reorder); the full size (20 x 1500 = 30,000, and K=128/L=256) runs with
PBFT_SOAK=1 or `make soak`. Memory is judged by size, never by wall-clock time.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from pbft.protocol.evidence import EVIDENCE_MEMORY
from pbft.protocol.verified import VERIFIED_CACHE

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("soak_sim", ROOT / "tools" / "soak_sim.py")
soak_sim = importlib.util.module_from_spec(_spec)
sys.modules["soak_sim"] = soak_sim
_spec.loader.exec_module(soak_sim)

SOAK = os.environ.get("PBFT_SOAK") == "1"


def explicit_bounds(cfg, view_changes: int) -> dict[str, int]:
    """The bounds, written out from pbft/protocol (K = checkpoint_interval, L = log_window,
    n replicas, c clients), independently of soak_sim.bounds."""
    K, L, n, c = cfg.checkpoint_interval, cfg.log_window, cfg.n, len(cfg.clients)
    future_per_peer = 3 * L + 4 * n  # FutureViews.per_signer
    return {
        "log": L,  # MessageLog keeps slots h < seq <= h + L only
        "checkpoint_votes": L // K,  # on_checkpoint: in-window multiples of K only
        "own_checkpoints": L // K + 1,  # seq >= h (the stable one is kept) up to h + L
        "claims": 2 * n,  # _on_checkpoint_claim: the latest two per replica
        "future_per_peer": future_per_peer,  # _old_or_future refuses beyond the limit
        "future": future_per_peer * (n + c + 1),  # per peer: replicas, clients, unknown
        "waiting": c,  # one request per client (a client has one outstanding, 4.1)
        "pending": c,  # the primary's queue: the newest request per client
        "deferred_reads": c,  # one read per client
        "verified": VERIFIED_CACHE,  # LRU of checked request signatures
        # SafetyRules.signed after forget_below(h): per slot in (h, h + L] and view, a
        # primary signs PRE-PREPARE + COMMIT, a backup PREPARE + COMMIT; plus a CHECKPOINT
        # per multiple of K.
        "safety_signed": 2 * L * (1 + view_changes) + L // K,
        "prepared_certs": L,  # pruned at each stable checkpoint to slots above h
        "view_changes": n,  # the latest valid VIEW-CHANGE per replica
        "clients": c,  # the reply cache: one record per registered client
        "evidence_seen": EVIDENCE_MEMORY,
        "rejects": (n + c + 1) * 32,  # Counter keyed by (peer, Reason): no named bound
    }


def check(rep) -> None:
    assert rep.passed, rep.violations[:3]
    assert rep.requests_completed == rep.requests_total
    for name, (value, bound) in rep.over.items():
        pytest.fail(f"{name}: max {value} > bound {bound}")


def run(clients: int, requests: int, k: int, w: int, **kw):
    s = soak_sim.soak_scenario(clients, requests, seed=1, checkpoint_interval=k, log_window=w)
    rep = soak_sim.soak(s, every=25, mem_every=2500, **kw)
    sim_cfg = soak_sim.SoakSimulation(s).config
    return rep, sim_cfg


def assert_flat(rep, replicas: int) -> None:
    start, mid, end = soak_sim.memory_points(rep.memory)
    # Replica cores without their signature LRU and known tree nodes (each bounded by a
    # count; the nodes fill up as replicas transfer state): flat once warmed up (the log, votes and
    # checkpoints are garbage-collected at each stable checkpoint). Loose: growth from the
    # middle to the end below the warmed-up size itself (a leak of even one small object per
    # request would be several times that over the second half).
    assert end.replica_kb - mid.replica_kb < max(start.replica_kb, 64), (start, mid, end)
    # The LRU grows with distinct requests until VERIFIED_CACHE entries (checked by count);
    # per entry it stays small (a request envelope's decoded Request and its digest key).
    entries = rep.maxima["verified"]
    assert end.verified_kb * 1024 / (replicas * max(entries, 1)) < 1024, end


def test_soak_ci_structures_within_bounds_and_memory_flat():
    rep, cfg = run(10, 300, 8, 16, trace_memory=False)
    check(rep)
    bounds = explicit_bounds(cfg, rep.view_changes)
    for name, value in rep.maxima.items():
        assert value <= bounds[name], f"{name}: max {value} > bound {bounds[name]}"
    # The window is actually exercised: a full log, votes and checkpoints at their bound.
    assert rep.maxima["log"] == cfg.log_window
    assert rep.maxima["checkpoint_votes"] >= 1
    assert_flat(rep, cfg.n)


def test_soak_tracemalloc_growth_is_bounded():
    """Process memory with tracemalloc, loose: over the second half of the run, the growth not
    explained by what grows by design (the oracle's history of the run and the replicas'
    signature LRUs, measured by size) stays below twice the warmed-up process size."""
    s = soak_sim.soak_scenario(4, 120, seed=2, checkpoint_interval=8, log_window=16)
    rep = soak_sim.soak(s, every=25, mem_every=500, trace_memory=True)
    check(rep)
    start, mid, end = soak_sim.memory_points(rep.memory)
    by_design = (end.oracle_kb - mid.oracle_kb) + (end.verified_kb - mid.verified_kb) + (end.tree_kb - mid.tree_kb)
    assert end.traced_kb - mid.traced_kb - by_design < 2 * start.traced_kb, (start, mid, end)


def test_catch_up_scenarios_are_timed():
    for name, lagger in soak_sim.CATCH_UP_FILES.items():
        rep = soak_sim.measure_catch_up(soak_sim.SCENARIOS / name, lagger)
        cu = rep.catch_up
        assert rep.passed, (name, rep.violations[:3])
        assert cu.behind_at_heal > 2 * 8, (name, cu)  # it missed several checkpoint intervals
        assert cu.stable_ms is not None and cu.executed_ms is not None, (name, cu)
        assert cu.transfers >= 1 and cu.same_digest, (name, cu)


@pytest.mark.skipif(not SOAK, reason="full-size soak: PBFT_SOAK=1 or make soak")
@pytest.mark.parametrize(
    "k,w",
    [
        pytest.param(None, None, id="sim-K8-L32"),
        pytest.param(128, 256, id="production-K128-L256"),
    ],
)
def test_soak_full_size(k, w):
    rep, cfg = run(20, 1500, k, w, trace_memory=False)
    check(rep)
    bounds = explicit_bounds(cfg, rep.view_changes)
    for name, value in rep.maxima.items():
        assert value <= bounds[name], f"{name}: max {value} > bound {bounds[name]}"
    assert_flat(rep, cfg.n)
