"""Deliberately broken cores are caught: the simulator's checks are not vacuous.

Hand-made breakages here, plus every variant of `pbft.adversary.broken.BROKEN` when that
module exists: each must make some scenario or fuzz seed report a violation while the
broken replicas are counted as correct.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pbft.adversary.broken import BROKEN as _BROKEN
from pbft.protocol.replica import Replica
from pbft.service.kv import KeyValueStore
from pbft.sim.fuzz import random_scenario
from pbft.sim.scenario import Expect, NetworkFault, Scenario, load_scenario
from pbft.sim.simulation import run_scenario

SCENARIOS = Path(__file__).parents[1] / "scenarios"
PROBES = [
    Scenario(name="honest", seed=1, clients=3, requests=20),
    Scenario(name="lossy", seed=2, clients=3, requests=20, network=(NetworkFault(drop=0.1, reorder=0.3),)),
    Scenario(
        name="partition",
        seed=3,
        clients=3,
        requests=20,
        network=(NetworkFault(40, 2000, partition=((0, 1), (2, 3))),),
    ),
    Scenario(name="primary crash", seed=4, clients=3, requests=20, network=(NetworkFault(40, None, crash=0),)),
    Scenario(
        name="backup restart",
        seed=5,
        clients=3,
        requests=30,
        network=(NetworkFault(40, 800, crash=2),),
        expect=Expect(catch_up=True),
    ),
]


def _probe_files() -> list[Scenario]:
    names = [
        "byz-equivocate",
        "byz-bad-new-view-replace",
        "byz-fake-prepared-cert-own-view",
        "byz-lying-state-transfer",
        "catch-up-lying-source",  # a liar serves the state a restarted replica fetches
        "byz-bad-digest-swap",
        "byz-duplicate-request",
        "byz-out-of-window-high",
        "byz-out-of-window-low",
        "byz-premature-commit-reorder",
        "byz-vote-stuffing",
        "byz-double-vote",
        "byz-reorder-batch",
        "byz-client-replay",
        "byz-skip-seq",
    ]
    out = []
    for n in names:
        path = SCENARIOS / f"{n}.toml"
        if path.exists():
            out.append(load_scenario(str(path)))
    return out


def caught(replica_class) -> str | None:
    """The first violation any probe finds with every replica built from `replica_class`."""
    probes = PROBES + _probe_files() + [random_scenario(seed) for seed in range(20)]
    n = 4
    for s in probes:
        if s.f != 1:
            continue
        r = run_scenario(s, replica_class={i: replica_class for i in range(n)})
        if r.violations:
            return f"{s.name}: {r.violations[0].check}: {r.violations[0].detail}"
    return None


class SloppyStore(KeyValueStore):
    """Non-deterministic service: replica-dependent results (a broken state machine)."""

    def execute(self, operation: bytes, client: str) -> bytes:
        result = super().execute(operation, client)
        if getattr(self, "skew", False) and self.data:
            k = sorted(self.data)[0]
            self.data[k] = self.data[k] + b"!"
        return result


class SkewedReplica(Replica):
    def __init__(self, config, replica_id, key, service, verifier=None):
        if replica_id == 3:
            service = SloppyStore()
            service.skew = True
        super().__init__(config, replica_id, key, service, verifier)


class ForgetfulClientTable(Replica):
    """Forgets the reply cache after each execution: duplicates execute again."""

    def _execute(self, slot):
        super()._execute(slot)
        self.replies.records.clear()


@pytest.mark.parametrize("cls", [SkewedReplica, ForgetfulClientTable], ids=lambda c: c.__name__)
def test_hand_made_breakage_is_caught(cls):
    assert caught(cls) is not None


BROKEN = dict(_BROKEN)


@pytest.mark.skipif(not BROKEN, reason="pbft.adversary.broken is not installed")
@pytest.mark.parametrize("name", sorted(BROKEN) or ["none"])
def test_every_broken_variant_is_caught(name):
    found = caught(BROKEN[name])
    assert found is not None, f"broken variant {name!r} passed every probe"


def test_a_state_that_diverged_after_the_last_checkpoint_is_caught_at_the_end():
    """unverified-chunk installs the liar's forged state; the run then ends before any
    further checkpoint, so only the end-of-run comparison of correct replicas that
    executed equally far can see it (Simulation._check_final_states)."""
    from pbft.adversary.broken import UnverifiedChunk  # part of this project: no skip

    # Seed 10: the liar serves a leaf the restarted replica installs, and the run ends
    # before the next checkpoint (other seeds are caught earlier, or the lie is never
    # asked for: only leaves carry state, internal nodes lead only to what is asked).
    s = dataclasses.replace(load_scenario(str(SCENARIOS / "byz-lying-state-transfer.toml")), seed=10)
    r = run_scenario(s, replica_class={i: UnverifiedChunk for i in range(4)})
    assert [v.check for v in r.violations] == ["exactly-once"]
    assert "hold different states" in r.violations[0].detail
    assert run_scenario(s).passed
