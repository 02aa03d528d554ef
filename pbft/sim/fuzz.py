"""ByzzFuzz-style random testing (Winter et al., OOPSLA 2023).

Theory of operation. Each fuzz seed deterministically generates a `Scenario`: a short
closed-loop workload, up to f faulty replicas (a random behaviour from the catalogue, a twin,
a crash for good or a restart from nothing), sometimes a Byzantine client, sometimes crashes
of any replicas that restart from their durable stores (benign: those replicas stay correct;
now and then every replica at once), and a few random network faults (drop, delay with
jitter, duplication, reordering, a partition or a one-way cut for a window). The run is judged by the oracle. Faulty replicas never exceed f, so liveness is
expected: once the last fault heals, every correct client's request must complete.

Widening (issue 13: bugs the fuzzer could not reach). A second RNG stream per seed, so
the ordinary part of a seed's scenario is what it always was, adds with the shares below:
small `[cluster]` knobs (checkpoint interval and window, batch 1, pipeline 1); link faults
that touch only some message kinds, senders, receivers, views or sequence numbers; storms
of crash-restarts triggered by a replica's own checkpoints, state transfers and view
changes (often of a replica first made to lag, so that it restarts mid-transfer); an
amnesiac restart when fewer than f replicas are faulty; and `catch_up = true` whenever no
fault lasts the whole run (every live correct replica must then reach the latest stable
checkpoint). The simulator also judges `view-agreement` at the end of every run.

On a violation the schedule is shrunk: drop network faults, behaviours and single rules one
at a time, then fewer clients and requests, keeping each change while the same check still
fails. The result is printed as a scenario file, replayable with `pbft scenario run FILE`.
`fuzz` below runs seeds one after the other in this process; pbft.sim.campaign runs them
on several worker processes and in shards (`pbft fuzz --jobs`, `--shard`, `merge`), with
`shrunk_violation` as the per-seed step, and writes the scenario files as they are found.

Modes. `random` (above) draws whole behaviours from the catalogue (`behaviours` restricts
the choice, e.g. to a user's FILE.py:Class). `mutation` is ByzzFuzz's small-scope message
mutation: per seed, its own RNG stream draws up to f faulty replicas (the primary of view 0
half the time), each with one to three declarative rules (pbft/adversary/rules.py, docs/rules.md)
scoped to a protocol round (a view, or a few sequence numbers): a one-field mutation (view
or seq moved by one, the digest of another slot, random digest bytes, a batch without its
last request or with another client's request, also inside a NEW-VIEW or a VIEW-CHANGE's
certificate, a flipped byte of a state chunk, an older message of the same kind, a PREPARE
sent as a COMMIT or back), an equivocation between two groups of receivers, a drop, a
replay (of this message or an older one, or an echo of what it receives) or a duplicate;
plus zero to two round faults within a time window: a partition of the replicas that applies
only to the messages of one view (and some sequence numbers), or the loss of one phase of a
round (the PRE-PREPAREs, PREPAREs or COMMITs of a view and a few sequence numbers) on the way
to some replicas. A rule that acts only in a view change or later comes with a stall
(`_stall`), a rule on state transfer with a lagging replica (a benign crash-restart), or they
would never fire. `broken` runs every
scenario with the correct replicas on a deliberately broken core (pbft.adversary.broken).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO

from ..adversary import rules as rules_mod
from ..adversary.catalogue import CLIENT_REGISTRY, REGISTRY
from .result import RunResult
from .scenario import (
    TRIGGERS,
    ByzantineSpec,
    Expect,
    NetworkFault,
    Reconfigure,
    ReplicaLoad,
    Scenario,
    to_toml,
)
from .simulation import Simulation, never_healed, run_scenario
from .trace import TraceWriter

MAX_SHRINK_RUNS = 40
PARAMS: dict[str, list[dict]] = {
    "bad-digest": [{"mode": "swap", "to": [2, 3]}, {"mode": "random"}],
    "out-of-window": [
        {"mode": "high", "keep_honest": True},
        {"mode": "low", "keep_honest": True, "from_seq": 10},
    ],
    "silent": [{"from_seq": 5}],
    "skip-seq": [{"seq": 3}],
    "selective-send": [{"to": [1]}, {"to": [1, 2]}],
}
"""Interesting parameter sets per behaviour (the defaults are always a candidate too);
replica ids above n-1 are dropped when the fuzzer uses them."""
DURABLE_CRASH_SOME = 0.3
DURABLE_CRASH_ALL = 0.05
"""Shares of fuzz runs with one or two durable crash-restarts, and with all replicas at once."""
WINDOW_MS = 3000
"""Windowed faults start and end within the first WINDOW_MS of virtual time."""

CLUSTER_SHARE = 0.15
"""Runs with small [cluster] knobs (each knob drawn on its own inside such a run)."""
FILTER_SHARE = 0.15
"""Runs with one or two link faults filtered by message kind, sender, receiver, seq, view."""
STORM_SHARE = 0.15
"""Runs with a storm of crash-restarts triggered by checkpoints, transfers, view changes."""
AMNESIA_SHARE = 0.1
"""Runs with an (extra) amnesiac restart, when fewer than f replicas are faulty."""
STORM_MS = 1200
"""Storm crashes are armed (and lagging replicas restart) within this many virtual ms."""
STORM_REQUESTS = (15, 40)
"""Requests per client in a storm run: enough checkpoints and transfers to crash on."""
CATCH_UP_SHARE = 0.35
"""Runs that also expect `catch_up` (only when no fault lasts the whole run)."""
FILTER_KINDS = (
    "PRE-PREPARE",
    "PREPARE",
    "COMMIT",
    "CHECKPOINT",
    "VIEW-CHANGE",
    "NEW-VIEW",
    "STATUS",
    "FETCH-STATE",
    "STATE-CHUNK",
)
"""Message kinds a filtered link fault picks from (replica-to-replica traffic)."""


@dataclass(frozen=True)
class FuzzViolation:
    seed: int
    check: str
    detail: str
    toml: str
    trace: str = ""
    """With a trace directory: the file holding the shrunk scenario's trace."""
    page: str = ""
    """With a trace directory and a page writer: the viewer page of that trace, which
    opens at the violation."""


@dataclass
class FuzzReport:
    runs: int
    violations: list[FuzzViolation]
    seconds: float

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds if self.seconds > 0 else 0.0


def _window(rng: random.Random) -> tuple[int, int]:
    at = rng.randrange(0, WINDOW_MS - 200)
    return at, rng.randrange(at + 100, WINDOW_MS)


def _link_fault(rng: random.Random, n: int) -> NetworkFault:
    kind = rng.choice(["drop", "delay", "duplicate", "reorder", "partition", "one_way"])
    whole = rng.random() < 0.5 and kind in ("drop", "delay", "duplicate", "reorder")
    at, until = (0, None) if whole else _window(rng)
    match kind:
        case "drop":
            return NetworkFault(at, until, drop=round(rng.uniform(0.01, 0.15), 3))
        case "delay":
            return NetworkFault(at, until, delay_ms=rng.randint(5, 100), jitter_ms=rng.randint(0, 100))
        case "duplicate":
            return NetworkFault(at, until, duplicate=round(rng.uniform(0.05, 0.5), 3))
        case "reorder":
            return NetworkFault(at, until, reorder=round(rng.uniform(0.1, 0.6), 3), reorder_ms=rng.randint(10, 150))
        case "partition":
            ids = list(range(n))
            rng.shuffle(ids)
            cut = rng.randint(1, n - 1)
            groups = (tuple(sorted(ids[:cut])), tuple(sorted(ids[cut:])))
            return NetworkFault(at, until, partition=groups)
    a, b = rng.sample(range(n), 2)
    return NetworkFault(at, until, one_way=(a, b))


def _durable_crashes(rng: random.Random, n: int, exclude: set[int]) -> list[NetworkFault]:
    """Crashes with a restart from storage: none (most runs), one or two replicas, or every
    replica at once; `exclude` are replicas that already have a crash entry (one per replica,
    so no crash lands on a replica already down, and no crash for good is undone)."""
    r = rng.random()
    if r < DURABLE_CRASH_ALL:
        at = rng.randrange(0, WINDOW_MS)
        until = at + rng.randint(100, 1500)
        return [NetworkFault(at, until, crash=i) for i in range(n) if i not in exclude]
    if r > DURABLE_CRASH_ALL + DURABLE_CRASH_SOME:
        return []
    ids = [i for i in range(n) if i not in exclude]
    out = []
    for rid in rng.sample(ids, min(len(ids), rng.randint(1, 2))):
        at = rng.randrange(0, WINDOW_MS)
        out.append(NetworkFault(at, at + rng.randint(100, 2500), crash=rid))
    return out


def random_scenario(
    seed: int, f: int = 1, wide: bool = True, behaviours: list[str] | tuple[str, ...] | None = None
) -> Scenario:
    """The scenario of fuzz seed `seed`; `wide = False` leaves out the widening;
    `behaviours` (catalogue names or FILE.py:Class references) restricts the replica
    behaviours drawn (None: the whole catalogue)."""
    rng = random.Random(seed * 1_000_003 + f)
    n = 3 * f + 1
    clients = rng.randint(2, 3)
    requests = rng.randint(4, 10)
    behaviours = sorted(REGISTRY) if behaviours is None else list(behaviours)
    client_behaviours = sorted(CLIENT_REGISTRY)
    faulty = rng.sample(range(n), rng.randint(0, f))
    byz: list[ByzantineSpec] = []
    net: list[NetworkFault] = []
    for rid in faulty:
        r = rng.random()
        if behaviours and r < 0.7:
            name = rng.choice(behaviours)
            params = dict(rng.choice([{}, *PARAMS.get(name, [])]))
            if isinstance(params.get("to"), list):
                params["to"] = [i for i in params["to"] if i < n and i != rid] or [(rid + 1) % n]
            byz.append(ByzantineSpec("replica", rid, name, params))
        elif r < 0.85:
            net.append(NetworkFault(twin=rid))
        else:
            at = rng.randrange(0, WINDOW_MS)
            if rng.random() < 0.5:
                net.append(NetworkFault(at, None, crash=rid))
            else:
                net.append(NetworkFault(at, at + rng.randint(100, 2000), crash=rid, amnesia=True))
    net.extend(_durable_crashes(rng, n, exclude={nf.crash for nf in net if nf.crash is not None}))
    if client_behaviours and rng.random() < 0.3:
        byz.append(ByzantineSpec("client", rng.randrange(clients), rng.choice(client_behaviours), {}))
    for _ in range(rng.randint(0, 3)):
        net.append(_link_fault(rng, n))
    s = Scenario(
        name=f"fuzz seed {seed}",
        f=f,
        seed=seed,
        clients=clients,
        requests=requests,
        byzantine=tuple(byz),
        network=tuple(net),
        expect=Expect(all_requests_complete=True),
    )
    s = widen(s, seed) if wide else s
    steps = _reconfiguration(seed, f, set(s.faulty_replicas()), s.clients)
    s = replace(s, reconfigure=steps) if steps else s
    return replace(s, load=ReplicaLoad.IDLE) if _idle(seed, f) else s


IDLE_SHARE = 0.25
"""Share of random-mode seeds whose replicas report an idle event loop, so that the
primary proposes at once (events.Load; batching.py): the other policy."""


def _idle(seed: int, f: int) -> bool:
    """From an RNG of its own, so other seeds are the scenarios they always were."""
    return random.Random(f"load/{seed}/{f}").random() < IDLE_SHARE


RECONFIGURE_SHARE = 0.2
"""Share of random-mode seeds whose group is changed while they run ([[reconfigure]])."""


def _reconfiguration(seed: int, f: int, faulty: set[int], clients: int) -> tuple[Reconfigure, ...]:
    """Operator changes for a fuzz seed: replacing a replica, growing or shrinking the
    group, adding clients, one to three of them at random times. From an RNG of its own,
    so that seeds without changes are the scenarios they always were. f never drops
    below the faulty replicas that stay in the group."""
    rng = random.Random(f"reconfigure/{seed}/{f}")
    if rng.random() >= RECONFIGURE_SHARE:
        return ()
    steps: list[Reconfigure] = []
    cur = f
    at = rng.randrange(50, WINDOW_MS)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("replace", "grow", "shrink", "client"))
        n = 3 * cur + 1
        if kind == "replace":
            steps.append(Reconfigure(at, replace=(rng.randrange(n),)))
        elif kind == "grow" and cur < 2:
            cur += 1
            steps.append(Reconfigure(at, f=cur))
        elif kind == "shrink" and cur > 1 and len({r for r in faulty if r < 3 * (cur - 1) + 1}) <= cur - 1:
            cur -= 1
            steps.append(Reconfigure(at, f=cur))
        else:
            steps.append(Reconfigure(at, add_clients=1))
        at += rng.randrange(100, 1500)
    return tuple(steps)


def _cluster_knobs(rng: random.Random) -> tuple[tuple[str, int], ...]:
    """Small windows, batch 1 and pipeline 1: checkpoints, window jumps and water marks
    come every few requests (at least one knob differs from the simulator's defaults)."""
    knobs: dict[str, int] = {}
    while not knobs:
        if rng.random() < 0.6:
            knobs["checkpoint_interval"] = rng.choice([2, 3, 4])
        if rng.random() < 0.6:
            k = knobs.get("checkpoint_interval", 8)
            knobs["log_window"] = k * rng.choice([1, 2, 4])
        if rng.random() < 0.4:
            knobs["batch_max"] = 1
        if rng.random() < 0.4:
            knobs["pipeline"] = 1
    order = ("checkpoint_interval", "log_window", "batch_max", "pipeline")
    return tuple((k, knobs[k]) for k in order if k in knobs)


def _filtered_fault(rng: random.Random, n: int) -> NetworkFault:
    """A windowed link fault on some messages only: a kind (or two), sometimes only from
    or to some replicas, sometimes only some views or sequence numbers."""
    at, until = _window(rng)
    kinds = tuple(sorted(rng.sample(FILTER_KINDS, rng.choice([1, 1, 2]))))
    from_ = tuple(sorted(rng.sample(range(n), rng.randint(1, n - 1)))) if rng.random() < 0.4 else ()
    to = tuple(sorted(rng.sample(range(n), rng.randint(1, n - 1)))) if rng.random() < 0.4 else ()
    views = (rng.choice([0, 1]),) if rng.random() < 0.15 else ()
    seqs = tuple(sorted(rng.sample(range(1, 25), rng.randint(1, 4)))) if rng.random() < 0.25 else ()
    r = rng.random()
    if r < 0.7:
        effect: dict = {"drop": 1.0 if rng.random() < 0.7 else round(rng.uniform(0.3, 0.9), 3)}
    elif r < 0.85:
        effect = {"delay_ms": rng.randint(100, 900), "jitter_ms": rng.randint(0, 200)}
    else:
        effect = {"duplicate": round(rng.uniform(0.3, 1.0), 3)}
    return NetworkFault(at, until, kinds=kinds, from_=from_, to=to, views=views, seqs=seqs, **effect)


def _storm(rng: random.Random, n: int, free: list[int]) -> list[NetworkFault]:
    """Crash-restarts at the worst moments. Often one replica is first made to lag (a
    timed crash) and then crashes again when it makes a checkpoint stable, starts or
    installs the transfer that would bring it back; others crash on view changes,
    checkpoints and NEW-VIEWs. Only replicas in `free` (correct, no other crash entry).
    Everything is armed within STORM_MS, while the (longer) workload still runs."""
    out: list[NetworkFault] = []
    pool = list(free)
    rng.shuffle(pool)
    if pool and rng.random() < 0.6:
        rid = pool.pop()
        at = rng.randrange(0, STORM_MS // 2)
        back = at + rng.randint(200, STORM_MS)
        out.append(NetworkFault(at, back, crash=rid))
        on = rng.choice(["transfer", "transfer", "installed", "checkpoint"])
        out.append(
            NetworkFault(back, None, crash=rid, on=on, down_ms=rng.randint(10, 800), times=rng.randint(1, 3))
        )
    for rid in pool[: rng.randint(0 if out else 1, 2)]:
        out.append(
            NetworkFault(
                rng.randrange(0, STORM_MS),
                None,
                crash=rid,
                on=rng.choice(TRIGGERS),
                down_ms=rng.randint(20, 1500),
                times=rng.randint(1, 3),
            )
        )
    return out


def widen(s: Scenario, seed: int) -> Scenario:
    """The dimensions the ordinary generator lacks (module docstring), from their own RNG
    stream: a seed's ordinary scenario stays what it was."""
    rng = random.Random(f"pbft-fuzz-widen/{seed}/{s.f}")
    n = s.n
    cluster = _cluster_knobs(rng) if rng.random() < CLUSTER_SHARE else s.cluster
    net = list(s.network)
    if rng.random() < FILTER_SHARE:
        net += [_filtered_fault(rng, n) for _ in range(rng.randint(1, 2))]
    faulty = set(s.faulty_replicas())
    crashed = {nf.crash for nf in net if nf.crash is not None}
    free = [i for i in range(n) if i not in faulty and i not in crashed]
    clients, requests = s.clients, s.requests
    if rng.random() < STORM_SHARE:
        storm = _storm(rng, n, free)
        net += storm
        free = [i for i in free if i not in {nf.crash for nf in storm}]
        clients, requests = 3, max(requests, rng.randint(*STORM_REQUESTS))
        if not cluster and rng.random() < 0.5:
            k = rng.choice([2, 3, 4])
            cluster = (("checkpoint_interval", k), ("log_window", k * rng.choice([1, 2])))
    if rng.random() < AMNESIA_SHARE and len(faulty) < s.f and free:
        rid = rng.choice(free)
        at = rng.randrange(0, STORM_MS)
        if rng.random() < 0.5:
            net.append(NetworkFault(at, at + rng.randint(50, 1500), crash=rid, amnesia=True))
        else:
            on = rng.choice(TRIGGERS)
            net.append(NetworkFault(at, None, crash=rid, amnesia=True, on=on, down_ms=rng.randint(20, 1500)))
    out = replace(s, clients=clients, requests=requests, cluster=cluster, network=tuple(net))
    if rng.random() < CATCH_UP_SHARE and not never_healed(out):
        out = replace(out, expect=replace(out.expect, catch_up=True))
    assert not out.exceeds_fault_assumption(), out
    return out


# -- mutation mode (ByzzFuzz small-scope mutations) ----------------------------------------

MUTATION_MESSAGE_KINDS = (
    ("PRE-PREPARE", 1), ("PREPARE", 2), ("COMMIT", 2), ("CHECKPOINT", 1), ("VIEW-CHANGE", 2),
    ("NEW-VIEW", 2), ("STATE-CHUNK", 1),
)
"""What a drawn rule acts on (replica-to-replica protocol traffic), with weights; on the
primary of view 0 a PRE-PREPARE weighs PRIMARY_PRE_PREPARE instead."""
PRIMARY_PRE_PREPARE = 6
MUTATION_ACTIONS = (("mutate", 4), ("equivocate", 3), ("drop", 2), ("replay", 3), ("duplicate", 2), ("delay", 1))
"""Actions a drawn rule takes, with their weights."""
MUTATION_WEIGHTS = {"batch": 3, "request": 3, "seq": 2}
"""The proposal-changing mutations come up more often (the others weigh 1)."""
ROUND_SEQS = 8
"""A drawn rule or partition scopes sequence numbers within 1..ROUND_SEQS."""


def _mutation_for(rng: random.Random, kind: str, rule: dict) -> None:
    options = [m for m in rules_mod.MUTATIONS if kind in rules_mod.MUTATION_KINDS[m]]
    weights = [MUTATION_WEIGHTS.get(o, 1) for o in options]
    if kind == "STATE-CHUNK":  # its data, not its digest or seq, is what a liar changes
        weights = [3 if o == "random" else 1 for o in options]
    m = rng.choices(options, weights)[0]
    rule["mutate"] = m
    if m == "view":
        rule["by"] = rng.choice([-1, 1])
    elif m == "seq":
        rule["by"] = rng.choice([-1, 1, 1, 64])  # 64: beyond the high water mark
    elif m in ("batch", "request") and rng.random() < 0.5:
        rule["keep_digest"] = True


def _random_rule(rng: random.Random, n: int, rid: int) -> dict:
    """One rule for replica `rid`, scoped to a round (ByzzFuzz's small scope)."""
    weights = [PRIMARY_PRE_PREPARE if k == "PRE-PREPARE" and rid == 0 else w for k, w in MUTATION_MESSAGE_KINDS]
    kind = rng.choices([k for k, _ in MUTATION_MESSAGE_KINDS], weights)[0]
    action = rng.choices([a for a, _ in MUTATION_ACTIONS], [w for _, w in MUTATION_ACTIONS])[0]
    rule: dict = {}
    receive = action == "replay" and rng.random() < 0.4  # an echo of what it receives
    if receive:
        rule["direction"] = "receive"
    rule["kinds"] = [kind]
    r = rng.random()
    if kind == "STATE-CHUNK":
        pass  # its seq is a checkpoint's and it has no view: the whole run is its round
    elif kind not in ("VIEW-CHANGE", "NEW-VIEW") and r < 0.55:
        lo = rng.randint(1, ROUND_SEQS)
        rule["seq_min"], rule["seq_max"] = lo, lo + rng.randint(0, 3)
    elif kind != "CHECKPOINT" and r < 0.85:
        rule["views"] = [rng.choice([1, 1, 2] if kind in ("VIEW-CHANGE", "NEW-VIEW") else [0, 0, 0, 1, 2])]
    peers = [i for i in range(n) if i != rid]
    if not receive and action != "equivocate" and rng.random() < 0.3:
        rule["to"] = sorted(rng.sample(peers, rng.randint(1, len(peers) - 1)))
    if rng.random() < 0.2:
        rule["probability"] = round(rng.uniform(0.3, 0.9), 2)
    rule["action"] = action
    if action in ("mutate", "equivocate"):
        _mutation_for(rng, kind, rule)
        if action == "equivocate" and rng.random() < 0.3:
            rule["split"] = sorted(rng.sample(peers, rng.randint(1, len(peers) - 1)))
    elif action == "replay":
        rule["pick"] = rng.choice(["this", "this", "previous", "oldest", "random"])
        rule["delay_ms"] = rng.choice([0, 0, rng.randint(1, 1500)])
        if rng.random() < 0.3:
            _mutation_for(rng, kind, rule)
    elif action == "duplicate":
        rule["copies"] = rng.randint(1, 3)
        if rng.random() < 0.5:
            _mutation_for(rng, kind, rule)
    elif action == "delay":
        rule["delay_ms"] = rng.randint(50, 1500)
    return rule


ROUND_DROP_KINDS = ("PRE-PREPARE", "PREPARE", "COMMIT")


def _round_fault(rng: random.Random, n: int) -> NetworkFault:
    """A network fault of one round, within a time window so that it heals: a partition
    of the replicas for the messages of one view (often only a few sequence numbers), or
    the loss of one phase of a round (the PRE-PREPAREs, PREPAREs or COMMITs of one view and
    a few sequence numbers) on the way to some replicas."""
    if rng.random() < 0.5:
        return _round_partition(rng, n)
    lo = rng.randint(1, ROUND_SEQS)
    to = tuple(sorted(rng.sample(range(n), rng.randint(1, n - 1))))
    return NetworkFault(
        0, rng.randint(300, WINDOW_MS), drop=1.0, kinds=(rng.choice(ROUND_DROP_KINDS),),
        to=to, views=(rng.choice([0, 0, 1]),), seqs=tuple(range(lo, lo + rng.randint(1, 3))),
    )


def _round_partition(rng: random.Random, n: int) -> NetworkFault:
    """A partition of the replicas for the messages of one view (and, often, a few
    sequence numbers), within a time window so that it heals."""
    ids = list(range(n))
    rng.shuffle(ids)
    cut = rng.randint(1, n - 1)
    groups = (tuple(sorted(ids[:cut])), tuple(sorted(ids[cut:])))
    views = (rng.choice([0, 0, 1]),)
    seqs: tuple[int, ...] = ()
    if rng.random() < 0.6:
        lo = rng.randint(1, ROUND_SEQS)
        seqs = tuple(range(lo, lo + rng.randint(1, 4)))
    until = rng.randint(300, WINDOW_MS)
    return NetworkFault(0, until, partition=groups, views=views, seqs=seqs)


def mutation_scenario(seed: int, f: int = 1) -> Scenario:
    """The scenario of mutation-mode fuzz seed `seed` (module docstring, "Modes")."""
    rng = random.Random(f"pbft-fuzz-mutation/{seed}/{f}")
    n = 3 * f + 1
    clients = rng.randint(2, 3)
    requests = rng.randint(6, 16)
    k = rng.randint(1, f)
    faulty = [0] if rng.random() < 0.5 else []
    faulty += rng.sample([i for i in range(n) if i not in faulty], k - len(faulty))
    byz = tuple(
        ByzantineSpec("replica", rid, "", {"rule": [_random_rule(rng, n, rid) for _ in range(rng.randint(1, 3))]})
        for rid in sorted(faulty)
    )
    net = tuple(_round_fault(rng, n) for _ in range(rng.choice([0, 1, 1, 2])))
    cluster: tuple[tuple[str, int], ...] = ()
    if rng.random() < 0.3:
        ci = rng.choice([2, 3, 4])
        cluster = (("checkpoint_interval", ci), ("log_window", ci * rng.choice([2, 4])))
    s = Scenario(
        name=f"mutation fuzz seed {seed}",
        f=f,
        seed=seed,
        clients=clients,
        requests=requests,
        byzantine=byz,
        network=net,
        cluster=cluster,
        expect=Expect(all_requests_complete=True, catch_up=rng.random() < 0.3),
    )
    if any(_needs_view_change(r) for b in byz for r in b.params["rule"]):
        s = replace(s, network=s.network + (_stall(rng, n, f),))
    if any("STATE-CHUNK" in r["kinds"] for b in byz for r in b.params["rule"]):
        # A rule on state transfer needs a replica that fetches state: one crashes early
        # and restarts from its store (a benign fault) while the others move on.
        rid = rng.choice([i for i in range(n) if i not in faulty])
        at = rng.randint(10, 100)
        lag = NetworkFault(at, at + rng.randint(200, 600), crash=rid)
        s = replace(s, network=s.network + (lag,), clients=3, requests=max(s.requests, rng.randint(20, 30)),
                    expect=replace(s.expect, catch_up=True))
    assert not s.exceeds_fault_assumption(), s
    return s


def _needs_view_change(rule: dict) -> bool:
    """A rule that acts only in a view change or a later view."""
    return bool(set(rule["kinds"]) & {"VIEW-CHANGE", "NEW-VIEW"}) or any(v > 0 for v in rule.get("views", ()))


def _stall(rng: random.Random, n: int, f: int) -> NetworkFault:
    """The loss of the COMMIT phase of a few view-0 rounds on the way to f+1 or more
    replicas, for longer than the view-change timeout: those slots are prepared but not
    committed there, and the view changes with prepared certificates to carry. Added when
    a drawn rule acts only in a view change or a later view, which would never fire
    without one."""
    lo = rng.randint(1, ROUND_SEQS)
    to = tuple(sorted(rng.sample(range(n), rng.randint(f + 1, n - 1))))
    return NetworkFault(0, rng.randint(1500, WINDOW_MS), drop=1.0, kinds=("COMMIT",), to=to,
                        views=(0,), seqs=tuple(range(lo, lo + rng.randint(1, 3))))


MODES = ("random", "mutation")


def scenario_of(seed: int, f: int = 1, mode: str = "random", broken: str = "",
                behaviours: list[str] | None = None) -> Scenario:
    """Fuzz seed `seed`'s scenario in `mode`, on broken core `broken` if given."""
    s = mutation_scenario(seed, f) if mode == "mutation" else random_scenario(seed, f, behaviours=behaviours)
    return replace(s, broken=broken) if broken else s


def _fails(s: Scenario, check: str) -> RunResult | None:
    r = run_scenario(s)
    if r.violations and r.violations[0].check == check:
        return r
    return None


def _candidates(s: Scenario):
    for i in range(len(s.network)):
        yield replace(s, network=s.network[:i] + s.network[i + 1 :])
    for i in range(len(s.byzantine)):
        yield replace(s, byzantine=s.byzantine[:i] + s.byzantine[i + 1 :])
    for i, b in enumerate(s.byzantine):  # one rule fewer (the last one goes with its entry)
        raw = b.params.get("rule")
        if isinstance(raw, list) and len(raw) > 1:
            for j in range(len(raw)):
                spec = replace(b, params={**b.params, "rule": raw[:j] + raw[j + 1 :]})
                yield replace(s, byzantine=s.byzantine[:i] + (spec,) + s.byzantine[i + 1 :])
    if s.reconfigure:  # the last change (an earlier one may be what a later one needs)
        yield replace(s, reconfigure=s.reconfigure[:-1])
    if s.requests > 1:
        yield replace(s, requests=max(1, s.requests // 2))
        yield replace(s, requests=s.requests - 1)
    if s.clients > 1 and all(b.target != "client" or b.index < s.clients - 1 for b in s.byzantine):
        yield replace(s, clients=s.clients - 1)


def shrink(s: Scenario, check: str, budget: int = MAX_SHRINK_RUNS) -> Scenario:
    """Greedy one-step-at-a-time shrinking while `check` still fails first."""
    runs = 0
    improved = True
    while improved and runs < budget:
        improved = False
        for cand in _candidates(s):
            runs += 1
            if _fails(cand, check) is not None:
                s = cand
                improved = True
                break
            if runs >= budget:
                break
    return s


def describe(s: Scenario) -> str:
    """What a fuzz scenario draws, in a few words: `equivocate@0 rules(2)@3 client-replay@c1
    partition drop crash 2 broken:NAME`."""
    parts = []
    for b in s.byzantine:
        rules = b.params.get("rule")
        what = b.behaviour or ""
        if isinstance(rules, list):
            what = f"{what}+rules({len(rules)})" if what else f"rules({len(rules)})"
        parts.append(f"{what}@{b.node}")
    for nf in s.network:
        if nf.twin is not None:
            parts.append(f"twin {nf.twin}")
        elif nf.crash is not None:
            parts.append(f"crash {nf.crash}" + (f" on {nf.on}" if nf.on else "") + (" amnesia" if nf.amnesia else ""))
        else:
            kinds = [k for k, v in (("partition", nf.partition), ("drop", nf.drop), ("delay", nf.delay_ms),
                                     ("duplicate", nf.duplicate), ("reorder", nf.reorder), ("one-way", nf.one_way)) if v]
            parts.append("+".join(kinds) + ("(filtered)" if nf.filtered else ""))
    if s.broken:
        parts.append(f"broken:{s.broken}")
    return " ".join(parts) or "no faults"


def fuzz(
    seeds: int,
    start: int = 0,
    f: int = 1,
    progress: IO[str] | None = None,
    mode: str = "random",
    broken: str = "",
    behaviours: list[str] | None = None,
    stop_at_first: bool = False,
    trace_dir: str | None = None,
    on_run: Callable[[int, Scenario, RunResult], None] | None = None,
    on_trace: Callable[[str], str] | None = None,
) -> FuzzReport:
    """Run `seeds` fuzz seeds from `start`; shrink each failure. With `trace_dir`, the
    shrunk scenario of every failing seed is run once more with a trace, written to
    `trace_dir/fuzz-SEED.jsonl` (pbft.sim.trace). `on_run(seed, scenario, result)` is
    called after every seed's run (the command line's progress bar); `on_trace(path)`
    after each trace is written, returning the path of a page made from it (the command
    line's viewer page, which this layer cannot import) or "" for none."""
    found: list[FuzzViolation] = []
    t0 = time.perf_counter()
    runs = 0
    for seed in range(start, start + seeds):
        s = scenario_of(seed, f, mode, broken, behaviours)
        r = run_scenario(s)
        runs += 1
        if on_run is not None:
            on_run(seed, s, r)
        if not r.violations:
            continue
        v, tail = shrunk_violation(seed, s, r, trace_dir, on_trace)
        found.append(v)
        if progress is not None:
            print_violation(v, tail, progress)
        if stop_at_first:
            break
    return FuzzReport(runs, found, time.perf_counter() - t0)


def shrunk_violation(
    seed: int,
    s: Scenario,
    r: RunResult,
    trace_dir: str | None = None,
    on_trace: Callable[[str], str] | None = None,
) -> tuple[FuzzViolation, list[str]]:
    """Seed `seed`'s failing run `r` of scenario `s`, shrunk (`shrink`) and run once more
    (with a trace in `trace_dir/fuzz-SEED.jsonl` if given): the violation, and the last
    events of the shrunk run."""
    small = shrink(s, r.violations[0].check)
    final = run_scenario(small)
    if not final.violations:  # defensive: shrinking only keeps failing schedules
        small, final = s, r
    fv = final.violations[0]
    path = page = ""
    if trace_dir is not None:
        path = os.path.join(trace_dir, f"fuzz-{seed}.jsonl")
        with TraceWriter(path) as tw:
            Simulation(small, trace=tw).run()
        if on_trace is not None:
            page = on_trace(path)
    return FuzzViolation(seed, fv.check, fv.detail, to_toml(small), path, page), list(final.trace_tail)


def print_violation(v: FuzzViolation, tail: list[str], out: IO[str], file: str = "", noun: str = "seed") -> None:
    """A shrunk violation as the fuzzer prints it: the seed (`noun`: or a Twins case), the
    check, where its trace, page and scenario `file` are, the scenario itself and the last
    events."""
    print(f"{noun} {v.seed}: {v.check}: {v.detail}", file=out)
    if v.trace:
        print(f"  trace: {v.trace}", file=out)
    if v.page:
        print(f"  viewer: {v.page} (opens at the violation)", file=out)
    if file:
        print(f"  scenario file: {file} (`pbft scenario run {file}` replays it)", file=out)
    else:
        print("  shrunk schedule (save as a .toml file and `pbft scenario run` it):", file=out)
    for line in v.toml.splitlines():
        print(f"    {line}", file=out)
    for line in tail:
        print(f"    | {line}", file=out)
