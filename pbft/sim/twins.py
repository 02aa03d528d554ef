"""Twins enumeration (Bano, Sonnino, Chursin, Perelman, Li, Ching, Malkhi: "Twins: BFT
Systems Made Robust", OPODIS 2021) for PBFT: every twinned replica, every per-view
partition schedule of R rounds (with the reductions below), each run in the simulator.

Theory of operation. Twins models the one Byzantine replica f = 1 allows as two correct
instances with its identity and key (its *twin*): put in different partitions they
equivocate, vote twice and forget what the other voted, with nothing but honest code. A
Twins scenario is a sequence of rounds, each with a leader and a partition of the nodes
(the n replicas plus the twin) into groups that only talk within themselves. The paper's
generator enumerates (1) the partitions of the nodes into at most P groups, (2) the
leader of each round, (3) every sequence of R (leader, partition) pairs, and cuts the
space down by bounding P, by leaders that can reach a quorum, and by symmetry.

Mapped onto PBFT (docs/fuzzing.md, "Twins"):

* **Round = view.** The leader of view v is replica v mod n, fixed by the protocol; a
  message belongs to the round of the view it carries (PRE-PREPARE, PREPARE, COMMIT,
  VIEW-CHANGE, NEW-VIEW), any other to the later of its sender's view and the round
  under way (scenario.Twins). A PBFT view never ends while its primary makes progress,
  so round v also ends at (v+1) x ROUND_MS: its messages are lost from then on and the replicas time out into
  view v+1 (a HotStuff round ends with its proposal; this is the PBFT equivalent). After
  the last round (R x ROUND_MS) nothing is filtered and liveness is judged.
* **Leader sequences.** Which replica is twinned is enumerated (all n), so for R <= n
  the twin leads round T for T < R, or none of them: every pattern of "the leader of
  round r is the Byzantine replica" a round-robin leader order allows (correct leaders
  are interchangeable but for which rounds they lead, and in PBFT they are all distinct
  within n views). The other freedom of a leader sequence, *skipping* a leader, PBFT
  realises by a partition: a round whose leader is cut off from the group that holds a
  quorum does not install its view; that group's new-view timer moves it to the next
  view, whose leader then takes over. So leader sequences are enumerated through the
  partitions, and every view of 0..R-1 is either led or skipped.
* **Partitions.** Per round, every partition of the n+1 instances into at most
  MAX_GROUPS groups (the paper's bound on the number of partitions; n = 4 leaves one group
  at most that can hold a quorum, so more groups only split the minority further) in
  which some group can form a quorum (2f+1 distinct replicas; the twin's two copies
  count once): the paper's "leader in a partition that can form a quorum", as PBFT needs
  it. A round where no group can form a quorum cannot finish its view change, so no
  replica's new-view timer starts and every replica waits in that view until the heal:
  the rounds after it never happen, and the schedule is that of fewer rounds.
* **Symmetry.** The two copies of the twin are interchangeable: of a schedule and the
  one with the copies swapped in every round, only the first in enumeration order is
  run (they differ in nothing but which copy the simulator steps first, and so in the
  latencies their messages draw).

For n = 4 that is 13 partitions per round and 4 x (13^R + 5^R) / 2 schedules: 36 for
R = 1, 388 for R = 2, 4,644 for R = 3. `run_case` runs the case with one index, and
`pbft twins` runs them all on the campaign's process pool (pbft.sim.campaign), writing
each violation's scenario file (the `[twins]` table, docs/formats.md) as it is found.
The twin is the one faulty replica: the oracle judges the other replicas and the clients
exactly as in any scenario, and nothing is weakened.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .campaign import SeedOutcome, _summary, _write
from .fuzz import FuzzViolation
from .scenario import Expect, Instance, Scenario, Twins, instance_name, to_toml
from .simulation import Simulation, run_scenario
from .trace import TraceWriter

MAX_ROUNDS = 6
"""The most rounds `pbft twins` enumerates (R = 6 is 4 x (13^6 + 5^6) / 2, some 9.7
million cases)."""
MAX_GROUPS = 2
"""Groups per round (the paper's number of partitions)."""
ROUND_MS = 2000
"""How long a round (a view) may last, in virtual ms. A view change after a round's end
takes about one view-change timeout; a replica left behind in a skipped view rejoins
later still. With 1,200 ms view 2 was installed within its round in 48 of 81 sampled
R = 3 schedules, with 2,000 ms in 67 (about all whose partition lets its primary lead),
for the same CPU time: rounds are cheap, messages are not."""
VIEW_CHANGE_TIMEOUT_MS = 400
"""The replicas' view-change timeout in a Twins run (the simulator's default is 1,000)."""
CLIENTS = 2
THINK_MS = 650
"""A client's pause between requests, so that requests span every round and go on after
the heal (3R + 3 requests each: about three per round, then liveness)."""
LIVENESS_MS = 20_000

Partition = tuple[tuple[Instance, ...], ...]
"""A round's groups, each a sorted tuple of instances, the groups sorted."""


@dataclass(frozen=True)
class Case:
    """One Twins schedule: the twinned replica and a partition per view."""

    replica: int
    rounds: tuple[Partition, ...]


def instances(n: int, twin: int) -> list[Instance]:
    """The n replicas and the twin's second copy, in order: 0, 1, ..., n-1, T'."""
    return [(i, 0) for i in range(n)] + [(twin, 1)]


def set_partitions(items: list[Instance], max_groups: int) -> Iterator[Partition]:
    """Every partition of `items` into at most `max_groups` non-empty groups, each once
    (restricted growth strings: item k joins one of the groups opened before it or opens
    the next)."""

    def grow(k: int, groups: list[list[Instance]]) -> Iterator[Partition]:
        if k == len(items):
            yield tuple(sorted(tuple(sorted(g)) for g in groups))
            return
        for g in groups:
            g.append(items[k])
            yield from grow(k + 1, groups)
            g.pop()
        if len(groups) < max_groups:
            groups.append([items[k]])
            yield from grow(k + 1, groups)
            groups.pop()

    yield from grow(0, [])


def has_quorum(p: Partition, quorum: int) -> bool:
    """Some group holds `quorum` distinct replicas (a twin's two copies are one replica)."""
    return any(len({rid for rid, _ in g}) >= quorum for g in p)


def round_partitions(n: int, f: int, twin: int, max_groups: int = MAX_GROUPS) -> list[Partition]:
    """The partitions a round may have (module docstring), in a fixed order."""
    quorum = 2 * f + 1
    return sorted(p for p in set_partitions(instances(n, twin), max_groups) if has_quorum(p, quorum))


def swap_copies(p: Partition, twin: int) -> Partition:
    """`p` with the twin's two copies exchanged."""
    def other(i: Instance) -> Instance:
        return (twin, 1 - i[1]) if i[0] == twin else i

    return tuple(sorted(tuple(sorted(other(i) for i in g)) for g in p))


@functools.lru_cache(maxsize=8)
def cases(rounds: int, f: int = 1, max_groups: int = MAX_GROUPS) -> tuple[Case, ...]:
    """Every schedule of `rounds` rounds, twinned replica by twinned replica, up to the
    symmetry of the twin's copies: a case's index in this tuple names it."""
    n = 3 * f + 1
    out: list[Case] = []
    for twin in range(n):
        options = round_partitions(n, f, twin, max_groups)
        index = {p: k for k, p in enumerate(options)}
        mirror = [index[swap_copies(p, twin)] for p in options]
        for seq in itertools.product(range(len(options)), repeat=rounds):
            if seq <= tuple(mirror[k] for k in seq):
                out.append(Case(twin, tuple(options[k] for k in seq)))
    return tuple(out)


def partition_text(p: Partition) -> str:
    """`0 1 2 | 3 3'`; `all` for one group."""
    if len(p) == 1:
        return "all"
    return " | ".join(" ".join(instance_name(i) for i in g) for g in p)


def describe(case: Case) -> str:
    """`twin 1: v0 [0 1 2 | 1' 3] v1 [all]`."""
    return f"twin {case.replica}: " + " ".join(f"v{v} [{partition_text(p)}]" for v, p in enumerate(case.rounds))


def scenario(case: Case, index: int, f: int = 1, seed: int = 0, broken: str = "") -> Scenario:
    """The scenario of `case` (number `index` of its enumeration): a paced closed-loop
    workload that outlasts the rounds, and liveness expected once they are over."""
    r = len(case.rounds)
    return Scenario(
        name=f"twins R={r} case {index}: {describe(case)}",
        f=f,
        seed=seed,
        clients=CLIENTS,
        requests=3 * r + 3,
        cluster=(("view_change_timeout_ms", VIEW_CHANGE_TIMEOUT_MS),),
        expect=Expect(all_requests_complete=True, liveness_ms=LIVENESS_MS),
        broken=broken,
        twins=Twins(case.replica, ROUND_MS, case.rounds),
        think_ms=THINK_MS,
    )


def run_case(
    index: int,
    opts,
    out_dir: str | None = None,
    trace_dir: str | None = None,
    on_trace: Callable[[str], str] | None = None,
    rounds: int = 1,
    seed: int = 0,
) -> SeedOutcome:
    """Case `index` of the `rounds`-round enumeration at `opts.f` (a campaign's runner,
    pbft.sim.campaign: `index` takes a seed's place): run it and, on a violation, write
    its scenario file `OUT_DIR/twins-R<rounds>-<index>.toml` and, with a trace directory,
    its trace and viewer page."""
    s = None
    try:
        case = cases(rounds, opts.f)[index]
        s = scenario(case, index, opts.f, seed, opts.broken)
        r = run_scenario(s)
        reached = tuple(r.coverage.items())
        if not r.violations:
            return SeedOutcome(index, describe(case), r.trace_digest or "", coverage=reached)
        v = r.violations[0]
        toml = to_toml(s)
        name = f"twins-R{rounds}-{index}"
        path = page = trace = ""
        if trace_dir is not None:
            trace = os.path.join(trace_dir, f"{name}.jsonl")
            with TraceWriter(trace) as tw:
                Simulation(s, trace=tw).run()
            if on_trace is not None:
                page = on_trace(trace)
        if out_dir is not None:
            path = os.path.join(out_dir, f"{name}.toml")
            head = f"# pbft twins: R={rounds} case {index}, {v.check}: {v.detail}".replace("\n", " ").rstrip()
            _write(path, head + "\n" + toml)
        found = FuzzViolation(index, v.check, v.detail, toml, trace, page)
        return SeedOutcome(index, describe(case), r.trace_digest or "", found, tuple(r.trace_tail), file=path,
                           coverage=reached)
    except Exception as exc:  # noqa: BLE001 - a crash is reported with its case, never fatal
        return SeedOutcome(index, "", crash=_summary(exc), scenario=to_toml(s) if s is not None else "")
