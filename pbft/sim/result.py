"""The result of one scenario run, simulated or with real processes, and its JSON.

One type for both (`pbft scenario run` and `pbft scenario run --real` print the same
verdicts from it): the fields both runs have, plus those only one of them fills, each
saying which. A real run has no trace digest (`trace_digest` None): processes, sockets
and the operating system's scheduler are not deterministic.

The verdict (`verdict`): FAIL when a check failed within the fault assumption;
INCOMPLETE when a real run could not apply some entry of the scenario (`incomplete` lists
them), so it did not run the attack it names and must never pass; EXCEEDS when more than
f replicas are faulty (reported, not a protocol failure); else PASS. Only PASS and EXCEEDS
exit 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .oracle import Peak, Violation


@dataclass(frozen=True, slots=True)
class Latency:
    """The simulator's liveness figures: correct clients' request latencies (virtual ms,
    submission to completion, over the requests that completed)."""

    completed: int
    worst_ms: int
    """The worst latency of the run."""
    heal_ms: int
    """When the last windowed network fault healed or the last crashed replica restarted
    (0: none)."""
    after_heal: int
    """Requests that completed after `heal_ms`."""
    worst_after_heal_ms: int
    """Of those, the worst time from the later of their submission and `heal_ms` to their
    completion: what the liveness check bounds."""
    bound_ms: int | None
    """`expect.liveness_ms` when liveness is expected (None when the scenario expects
    requests may not complete)."""

    @classmethod
    def of(cls, pairs: list[tuple[int, int]], heal: int, bound_ms: int | None) -> Latency:
        """The figures of (submitted, completed) pairs, with the last heal at `heal`."""
        after = [done - max(since, heal) for since, done in pairs if done >= heal]
        return cls(
            completed=len(pairs),
            worst_ms=max((done - since for since, done in pairs), default=0),
            heal_ms=heal,
            after_heal=len(after),
            worst_after_heal_ms=max(after, default=0),
            bound_ms=bound_ms,
        )


@dataclass(frozen=True, slots=True)
class FaultyNode:
    """The simulator's figures on one faulty node (replica "2" or client "c1")."""

    sent: int
    """Messages it sent (one per receiver)."""
    lies: dict[str, int] | None
    """Of those, how many were lies ("forged", "mutated": pbft.sim.trace.Lies); None for a
    node without a behaviour (a twin, a restart from nothing), whose every message is
    its own honest core's."""
    refused: dict[str, int]
    """What the correct replicas refused of what it sent, by reason."""
    evidence: dict[str, int]
    """Evidence the correct replicas collected against it, by kind (each distinct pair of
    conflicting messages once per replica)."""


@dataclass
class ReplicaReport:
    id: int
    byzantine: bool
    view: int
    last_executed: int
    stable_checkpoint: int
    state_digest: str = ""
    """The simulator's: the state digest, hex ("" for a replica that never ran)."""
    log_size: int = 0
    """The simulator's: slots in the replica's message log."""
    reachable: bool = True
    """A real run's: the replica answered the final status query (-1s when not)."""


@dataclass
class RunResult:
    name: str
    seed: int
    violations: list[Violation]
    requests_completed: int
    requests_total: int
    view_changes: int
    replicas: list[ReplicaReport]
    exceeds_fault_assumption: bool
    real: bool = False
    """Real processes (`--real`), not the simulator."""
    trace_digest: str | None = None
    """The simulator's digest of the whole run (the same seed gives the same digest)."""
    trace_tail: list[str] = field(default_factory=list)
    """What led to the end: the simulator's last events, or a real run's last log lines."""
    virtual_ms: int = 0
    """The simulator's: virtual time at the end."""
    delivered: int = 0
    """The simulator's: messages delivered."""
    dropped: int = 0
    """The simulator's: messages the network dropped."""
    wall_ms: int = 0
    """A real run's: how long it took."""
    incomplete: list[str] = field(default_factory=list)
    """A real run's: scenario entries real processes could not apply, each said once
    (any makes the verdict INCOMPLETE)."""
    link_faults: dict[str, Any] = field(default_factory=dict)
    """A real run's: what the link-fault layers did (dropped, delayed, reordered,
    duplicated, and `entries`: per [[network]] link fault, the messages it acted on)."""
    applied: list[str] = field(default_factory=list)
    """A real run's: the twins' second processes and the Byzantine clients, one line each
    saying what they did (a twin's last executed, frames a client sent)."""
    crashes: list[str] = field(default_factory=list)
    """A real run's: every kill and restart applied, in order, with when (s) and why."""
    attacker_failures: list[str] = field(default_factory=list)
    """A Byzantine behaviour's hook raised (first few, one sentence each): the attacker
    failed, not the protocol, and the run tested less than the scenario says."""
    attacker_failure_count: int = 0
    coverage: dict[str, int] = field(default_factory=dict)
    """The simulator's: what the run reached, item -> count (pbft.sim.coverage)."""
    checks: dict[str, int] = field(default_factory=dict)
    """The simulator's: how much each check of the oracle looked at (prepared slots,
    executed slots, executed requests, checkpoints, client operations, resource audits)."""
    refused: dict[str, dict[str, int]] = field(default_factory=dict)
    """The simulator's: per faulty node ("2", "c1"), what the correct replicas refused of
    what it sent, by reason (their `Rejected` counts)."""
    latency: Latency | None = None
    """The simulator's liveness figures."""
    resources: dict[str, Peak] = field(default_factory=dict)
    """The simulator's: per bounded structure of a correct replica, its peak against its
    bound."""
    faulty: dict[str, FaultyNode] = field(default_factory=dict)
    """The simulator's: per faulty node, what it sent, its lies, refusals and evidence."""

    @property
    def passed(self) -> bool:
        """No protocol violation, and (a real run) every entry applied; an attacker's
        failure is judged apart (`attacker_failed`)."""
        return not self.violations and not self.incomplete

    @property
    def attacker_failed(self) -> bool:
        return bool(self.attacker_failures or self.attacker_failure_count)

    @property
    def verdict(self) -> str:
        """FAIL (a check failed, within the fault assumption), INCOMPLETE (a real run could
        not apply part of its scenario), ATTACKER-FAILED (a behaviour's script raised: the
        run tested less than it says, which is no protocol violation), EXCEEDS (more
        faulty replicas than f: reported, never a protocol failure) or PASS. The first
        three exit 1."""
        if self.violations and not self.exceeds_fault_assumption:
            return "FAIL"
        if self.incomplete:
            return "INCOMPLETE"
        if self.attacker_failed:
            return "ATTACKER-FAILED"
        if self.exceeds_fault_assumption:
            return "EXCEEDS"
        return "PASS"


def result_json(r: RunResult) -> dict[str, Any]:
    """The `pbft scenario run --json` object of one run (real runs add "mode": "real")."""
    out: dict[str, Any] = {"name": r.name, "seed": r.seed}
    if r.real:
        out["mode"] = "real"
    out.update(
        verdict=r.verdict,
        passed=r.passed,
        exceeds_fault_assumption=r.exceeds_fault_assumption,
        violations=[{"check": v.check, "detail": v.detail} for v in r.violations],
        requests_completed=r.requests_completed,
        requests_total=r.requests_total,
        view_changes=r.view_changes,
        attacker_failures=r.attacker_failures,
        attacker_failure_count=r.attacker_failure_count,
    )
    if r.real:
        out.update(
            wall_ms=r.wall_ms, trace_digest=r.trace_digest, incomplete=r.incomplete,
            link_faults=r.link_faults, applied=r.applied, crashes=r.crashes,
            checks=r.checks, latency=None if r.latency is None else asdict(r.latency),
        )
    else:
        out.update(virtual_ms=r.virtual_ms, messages_delivered=r.delivered, trace_digest=r.trace_digest,
                   checks=r.checks, refused=r.refused,
                   latency=None if r.latency is None else asdict(r.latency),
                   resources={name: asdict(p) for name, p in r.resources.items()},
                   faulty={node: asdict(f) for node, f in r.faulty.items()})
    out["replicas"] = [_replica_json(rep, r.real) for rep in r.replicas]
    return out


def _replica_json(rep: ReplicaReport, real: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rep.id, "byzantine": rep.byzantine}
    if real:
        out["reachable"] = rep.reachable
    out.update(view=rep.view, last_executed=rep.last_executed, stable_checkpoint=rep.stable_checkpoint)
    if not real:
        out["state_digest"] = rep.state_digest
    return out
