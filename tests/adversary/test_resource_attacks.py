"""The catalogue's resource and laggard attacks (pbft/adversary/resources.py) against the
simulator's checks: each passes on today's core and is caught when the rule that stops
it is taken out (issue 13: make our own fuzzer find the next one)."""

from __future__ import annotations

from collections import Counter

import pytest

from pbft.protocol.catchup import CatchUp
from pbft.protocol.future import FutureViews
from pbft.protocol.replica import Replica
from pbft.sim.scenario import ByzantineSpec, Expect, NetworkFault, Scenario
from pbft.sim.simulation import Simulation

pytestmark = pytest.mark.timeout(120)


def _scenario(behaviour: str | None, params: dict | None = None, **kw) -> Scenario:
    byz = () if behaviour is None else (ByzantineSpec("replica", 1, behaviour, params or {}),)
    return Scenario(name=behaviour or "honest", seed=5, clients=2, requests=40, byzantine=byz, **kw)


def test_buffer_stuffing_is_held_to_the_per_signer_byte_budget(monkeypatch):
    s = _scenario("buffer-stuffing", {"rate": 2, "size": 256 * 1024})
    r = Simulation(s).run()
    assert r.passed, r.violations
    # Without the byte budget (the count bound alone, as before issue 13), the oracle's
    # resource check sees one signer's future-view bytes exceed what it may hold.
    monkeypatch.setattr(FutureViews, "full", lambda self, signer, size: self.count[signer] >= self.per_signer)
    r = Simulation(s).run()
    assert [v.check for v in r.violations] == ["resources"], r.violations
    assert "_future (one signer's bytes)" in r.violations[0].detail


def _sent_by_correct(s: Scenario, flooder: int | None) -> int:
    sim = Simulation(s)
    sent: Counter = Counter()
    transmit = sim._transmit

    def counting(src, dst, data):
        if isinstance(src, int) and src != flooder:
            sent[src] += 1
        transmit(src, dst, data)

    sim._transmit = counting
    r = sim.run()
    assert r.passed, r.violations
    return sum(sent.values())


def test_a_status_flood_costs_correct_replicas_a_small_factor(monkeypatch):
    honest = _sent_by_correct(_scenario(None), None)
    flooded = _sent_by_correct(_scenario("status-flood", {"rate": 10}), 1)
    assert flooded <= 1.5 * honest, (flooded, honest)
    # Without the per-replica budget on answers, the same flood multiplies their traffic.
    monkeypatch.setattr(CatchUp, "too_soon", lambda self, *a: False)
    unbudgeted = _sent_by_correct(_scenario("status-flood", {"rate": 10}), 1)
    assert unbudgeted > 5 * honest, (unbudgeted, honest)


def test_stale_proof_cannot_strand_a_laggard(monkeypatch):
    # Replica 3 is cut off long enough to fall a window behind; replica 1 keeps sending
    # far-future CHECKPOINTs of its own. The laggard must catch up (expect.catch_up).
    s = _scenario(
        "stale-proof",
        {"rate": 2},
        network=(NetworkFault(100, 1500, partition=((3,), (0, 1, 2, "c0", "c1"))),),
        expect=Expect(catch_up=True),
        cluster=(("checkpoint_interval", 4), ("log_window", 8)),
    )
    r = Simulation(s).run()
    assert r.passed, r.violations
    # Judged one CHECKPOINT at a time (the proof sent as loose CHECKPOINTs, as before
    # issue 13), the same attack strands the laggard.
    from pbft.protocol.events import Send
    from pbft.protocol.messages import StableProof, decode_envelope

    original = Replica.on_status

    def loose_proofs(self, peer, env, st):
        mark = len(self._out)
        original(self, peer, env, st)
        out = []
        for a in self._out[mark:]:
            msg = decode_envelope(a.data)[1] if isinstance(a, Send) else None
            out += [Send(a.to, d) for d in msg.proof] if isinstance(msg, StableProof) else [a]
        self._out[mark:] = out

    monkeypatch.setattr(Replica, "on_status", loose_proofs)
    r = Simulation(s).run()
    assert [v.check for v in r.violations] == ["liveness"], r.violations
