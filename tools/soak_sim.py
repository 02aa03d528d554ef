"""Soak runs of the simulator: are the replicas' structures and memory bounded over a long run?

Theory of operation. `SoakSimulation` is an unmodified `pbft.sim.Simulation` with two hooks:
`_perform_replica` (called after every step of every replica instance) samples the size of
each bounded structure of every correct replica every `every` steps, and the process memory
(tracemalloc current/peak, RSS from /proc/self/status) every `mem_every` steps; `_tick`
watches a lagging replica after the heal to time its catch-up in virtual milliseconds. The
oracle still runs after every step, so a soak run is also a long safety run.

Every structure is reported with its bound, derived from pbft/protocol (see `bounds`):
a maximum above its bound is a leak or a missing limit in the core.

    .venv/bin/python tools/soak_sim.py                          # 20 clients x 1500 = 30,000
    .venv/bin/python tools/soak_sim.py --production             # K=128, L=256
    .venv/bin/python tools/soak_sim.py --catch-up               # catch-up times only
    .venv/bin/python tools/soak_sim.py --clients 4 --requests 750 --json out.json

Known simulator quirk (reported, pbft/sim is not ours): when one replica step makes several
checkpoints stable at once, `Simulation._perform_replica` judges every `CheckpointStable` of
the step against the replica's *latest* `stable_proof` and reports a false "made checkpoint
N stable on 0 valid matching CHECKPOINTs". `LatestProofOracle` judges only the checkpoint
whose proof the replica still holds; `--strict-proof` turns that off.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbft.protocol import codec  # noqa: E402
from pbft.protocol.config import ClusterConfig  # noqa: E402
from pbft.protocol.evidence import EVIDENCE_MEMORY
from pbft.protocol.messages import Checkpoint, envelope_from_bytes, from_body  # noqa: E402
from pbft.protocol.verified import VERIFIED_CACHE  # noqa: E402
from pbft.sim.oracle import Oracle  # noqa: E402
from pbft.sim.result import RunResult  # noqa: E402
from pbft.sim.scenario import Scenario, load_scenario, parse_scenario  # noqa: E402
from pbft.sim.simulation import Simulation  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent.parent / "tests" / "scenarios"

STRUCTURES = (
    "log",
    "checkpoint_votes",
    "own_checkpoints",
    "claims",
    "future",
    "future_per_peer",
    "waiting",
    "pending",
    "deferred_reads",
    "verified",
    "safety_signed",
    "prepared_certs",
    "view_changes",
    "clients",
    "evidence_seen",
    "rejects",
)


def sizes(node: Any) -> dict[str, int]:
    """The size of every bounded structure of one replica core."""
    per_peer = node.future.count
    return {
        "log": len(node.log),
        "checkpoint_votes": len(node.checkpoints.votes),
        "own_checkpoints": len(node.checkpoints.own),
        "claims": sum(len(c) for c in node.checkpoints.claims.values()),
        "future": len(node.future.messages),
        "future_per_peer": max(per_peer.values(), default=0),
        "waiting": len(node.requests.waiting),
        "pending": len(node.batching.pending),
        "deferred_reads": len(node.reads.waiting),
        "verified": len(node.verified.cache),
        "safety_signed": len(node.safety.signed),
        "prepared_certs": len(node.prepared_certs),
        "view_changes": len(node.view_changes.received),
        "clients": len(node.replies.records),
        "evidence_seen": len(node.evidence.seen),
        "rejects": len(node.rejects),
    }


def bounds(cfg: ClusterConfig, views: int = 1) -> dict[str, int]:
    """Each structure's bound, derived from pbft/protocol (K = checkpoint_interval,
    L = log_window, n replicas, c clients; `views` = distinct views a window can span,
    1 + the view changes of the run)."""
    K, L, n, c = cfg.checkpoint_interval, cfg.log_window, cfg.n, len(cfg.clients)
    per_peer = 3 * L + 4 * n  # FutureViews.per_signer
    return {
        # MessageLog: slots only for h < seq <= h + L.
        "log": L,
        # on_checkpoint keeps votes in the window only; multiples of K in (h, h + L].
        "checkpoint_votes": L // K,
        # own checkpoints at seq >= h, taken at seq <= last_executed <= h + L.
        "own_checkpoints": L // K + 1,
        # _on_checkpoint_claim keeps the latest two per signing replica.
        "claims": 2 * n,
        # per-peer limit; peers are replicas and clients (and None).
        "future": per_peer * (n + c + 1),
        "future_per_peer": per_peer,
        # one entry per client (a client has one request outstanding, section 4.1).
        "waiting": c,
        "pending": c,
        "deferred_reads": c,
        # LRU of checked request signatures.
        "verified": VERIFIED_CACHE,
        # (phase, view, seq) with seq > h: a primary signs pre-prepare + commit, a backup
        # prepare + commit, per slot and view, plus one CHECKPOINT per multiple of K.
        "safety_signed": 2 * L * views + L // K,
        # one prepared certificate per slot of the window.
        "prepared_certs": L,
        # the latest valid VIEW-CHANGE per replica.
        "view_changes": n,
        # the reply cache: one record per registered client.
        "clients": c,
        "evidence_seen": EVIDENCE_MEMORY,
        # Counter keyed by (peer, Reason): peers x reasons; no named bound in the core.
        "rejects": (n + c + 1) * 32,
    }


def deep_size(root: object, skip: set[int]) -> int:
    """Bytes reachable from `root` (sys.getsizeof over gc referents), not counting objects
    in `skip` (shared by all replicas: config, verifier, keys) or types, modules, functions."""
    seen = set(skip)
    stack = [root]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type | ModuleType | FunctionType | BuiltinFunctionType):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return total


def replica_bytes(node: Any) -> tuple[int, int, int]:
    """Bytes of one replica core without its two bounded caches, and of each cache: the
    request-signature LRU (VERIFIED_CACHE entries) and the verified partition-tree nodes
    kept across state transfers (statetransfer.KNOWN_NODES; several MiB once full: they
    fill up as the replica transfers, which is warm-up, not a leak)."""
    shared = {id(node.config), id(node.verifier), id(node.safety._key), id(node.verified.cache),
              id(node.tree_nodes)}
    return deep_size(node, shared), deep_size(node.verified.cache, set()), deep_size(node.tree_nodes, set())


def rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class LatestProofOracle(Oracle):
    """The oracle, except that a `CheckpointStable` is judged only against a proof for that
    checkpoint: the core keeps only the latest proof, so for earlier checkpoints made stable
    in the same step the simulator passes a proof of a later one (see module docstring)."""

    def check_stable_proof(self, rid, seq, digest, proof, verify) -> None:  # type: ignore[override]
        seqs = set()
        for data in proof:
            try:
                msg = from_body(envelope_from_bytes(data).body)
            except codec.CodecError:
                continue
            if isinstance(msg, Checkpoint):
                seqs.add(msg.seq)
        if seqs and min(seqs) > seq:
            return
        super().check_stable_proof(rid, seq, digest, proof, verify)


@dataclass
class MemSample:
    step: int
    virtual_ms: int
    completed: int
    traced_kb: int
    peak_kb: int
    rss_kb: int
    replica_kb: int = 0  # correct replica cores, summed, without their bounded caches
    verified_kb: int = 0  # their _verified LRUs (bounded by VERIFIED_CACHE entries)
    oracle_kb: int = 0  # the checker's own history (grows with the run by design)
    tree_kb: int = 0  # their known partition-tree nodes (bounded by KNOWN_NODES entries)


@dataclass
class CatchUp:
    replica: int
    heal_ms: int
    stable_ms: int | None = None  # heal -> its stable checkpoint is the others' latest
    executed_ms: int | None = None  # heal -> its last_executed reaches the slowest other's
    same_digest: bool = False  # at the end: same last_executed and state_digest() as all
    behind_at_heal: int = 0  # sequence numbers the others had executed beyond it at the heal
    stable_at_heal: tuple[int, int] = (0, 0)  # (its stable checkpoint, the others' latest)
    transfers: int = 0  # state transfers it completed


@dataclass
class SoakReport:
    name: str
    seed: int
    passed: bool
    violations: list[str]
    requests_completed: int
    requests_total: int
    virtual_ms: int
    wall_s: float
    view_changes: int
    steps: int
    maxima: dict[str, int]
    bounds: dict[str, int]
    memory: list[MemSample] = field(default_factory=list)
    catch_up: CatchUp | None = None

    @property
    def over(self) -> dict[str, tuple[int, int]]:
        return {k: (v, self.bounds[k]) for k, v in self.maxima.items() if v > self.bounds[k]}


class SoakSimulation(Simulation):
    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        *,
        every: int = 50,
        mem_every: int = 5000,
        lagger: int | None = None,
        strict_proof: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(scenario, seed, **kw)
        if not strict_proof:
            self.oracle.__class__ = LatestProofOracle
        self.every = every
        self.mem_every = mem_every
        self.steps = 0
        self.maxima = dict.fromkeys(STRUCTURES, 0)
        self.memory: list[MemSample] = []
        self.catch_up = None if lagger is None else CatchUp(lagger, self.heal)

    def _perform_replica(self, rid: int, inst: Any, actions: list) -> None:
        super()._perform_replica(rid, inst, actions)
        self.steps += 1
        if self.steps % self.every == 0:
            self.sample_structures()
        if self.mem_every and self.steps % self.mem_every == 0:
            self.sample_memory()

    def sample_structures(self) -> None:
        m = self.maxima
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                for k, v in sizes(inst.node).items():
                    if v > m[k]:
                        m[k] = v

    def sample_memory(self) -> None:
        cur, peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
        core = lru = tree = 0
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                a, b, c = replica_bytes(inst.node)
                core, lru, tree = core + a, lru + b, tree + c
        self.memory.append(
            MemSample(self.steps, self.now, self.completed, cur // 1024, peak // 1024, rss_kb(), core // 1024, lru // 1024,
                      deep_size(self.oracle, {id(self.config)}) // 1024, tree // 1024)
        )

    def _tick(self) -> None:
        super()._tick()
        cu = self.catch_up
        if cu is None or self.now < cu.heal_ms or not self.replicas[cu.replica]:
            return
        me = self.replicas[cu.replica][0].node
        others = [i.node for r in sorted(self.correct) if r != cu.replica for i in self.replicas[r]]
        if not others:
            return
        if cu.stable_ms is None and cu.executed_ms is None and not cu.stable_at_heal[1]:
            cu.behind_at_heal = max(o.last_executed for o in others) - me.last_executed
            cu.stable_at_heal = (me.stable_seq, max(o.stable_seq for o in others))
        if cu.stable_ms is None and me.stable_seq >= max(o.stable_seq for o in others):
            cu.stable_ms = self.now - cu.heal_ms
        if cu.executed_ms is None and me.last_executed >= min(o.last_executed for o in others):
            cu.executed_ms = self.now - cu.heal_ms

    def finish(self) -> None:
        self.sample_structures()
        self.sample_memory()
        cu = self.catch_up
        if cu is not None and self.replicas[cu.replica]:
            live = [i.node for r in sorted(self.correct) for i in self.replicas[r]]
            cu.transfers = self.replicas[cu.replica][0].node.transfers_completed
            cu.same_digest = (
                len({n.last_executed for n in live}) == 1 and len({n.state_digest() for n in live}) == 1
            )


def soak(
    scenario: Scenario,
    seed: int | None = None,
    *,
    every: int = 50,
    mem_every: int = 5000,
    lagger: int | None = None,
    strict_proof: bool = False,
    trace_memory: bool = True,
) -> SoakReport:
    gc.collect()
    if trace_memory:
        tracemalloc.start()
    try:
        sim = SoakSimulation(
            scenario, seed, every=every, mem_every=mem_every, lagger=lagger, strict_proof=strict_proof
        )
        sim.sample_memory()
        t0 = time.perf_counter()
        r: RunResult = sim.run()
        wall = time.perf_counter() - t0
        sim.finish()
    finally:
        if trace_memory:
            tracemalloc.stop()
    return SoakReport(
        name=r.name,
        seed=r.seed,
        passed=r.passed,
        violations=[f"{v.check}: {v.detail}" for v in r.violations],
        requests_completed=r.requests_completed,
        requests_total=r.requests_total,
        virtual_ms=r.virtual_ms,
        wall_s=wall,
        view_changes=r.view_changes,
        steps=sim.steps,
        maxima=sim.maxima,
        bounds=bounds(sim.config, views=1 + r.view_changes),
        memory=sim.memory,
        catch_up=sim.catch_up,
    )


def soak_scenario(
    clients: int = 20,
    requests: int = 1500,
    *,
    seed: int = 1,
    checkpoint_interval: int | None = None,
    log_window: int | None = None,
    drop: float = 0.01,
    duplicate: float = 0.01,
    reorder: float = 0.05,
    keys: int = 64,
) -> Scenario:
    """A long closed-loop workload on mild link faults for the whole run."""
    cluster = {}
    if checkpoint_interval is not None:
        cluster["checkpoint_interval"] = checkpoint_interval
    if log_window is not None:
        cluster["log_window"] = log_window
    net: dict[str, Any] = {"drop": drop, "duplicate": duplicate, "reorder": reorder, "reorder_ms": 30}
    if not (drop or duplicate or reorder):
        net = {}
    data: dict[str, Any] = {
        "name": f"soak {clients}x{requests}",
        "seed": seed,
        "workload": {"clients": clients, "requests": requests, "keys": keys},
        "network": [net] if net else [],
        "cluster": cluster,
        "expect": {"liveness_ms": 60_000},
    }
    return parse_scenario(data, "<soak>")


CATCH_UP_FILES = {
    "catch-up-crash-restart.toml": 3,
    "catch-up-partition.toml": 3,
    "catch-up-lying-source.toml": 3,
}
"""The catch-up scenario files and their lagging replica."""


def measure_catch_up(path: Path, lagger: int, seed: int | None = None) -> SoakReport:
    return soak(load_scenario(str(path)), seed, lagger=lagger, mem_every=0, trace_memory=False)


# -- printing -------------------------------------------------------------------------------


def print_report(rep: SoakReport, out=sys.stdout) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    status = "PASS" if rep.passed else "FAIL"
    p(f"{rep.name} (seed {rep.seed}): {status}, {rep.requests_completed}/{rep.requests_total} requests, "
      f"{rep.view_changes} view changes, {rep.virtual_ms} virtual ms, {rep.steps} replica steps")
    for v in rep.violations[:3]:
        p(f"  violation {v}")
    rate = rep.requests_completed / rep.wall_s if rep.wall_s else 0.0
    p(f"  simulation speed: {rate:.0f} requests/s, {rep.steps / rep.wall_s:.0f} steps/s ({rep.wall_s:.1f} s wall)")
    p(f"  {'structure':<18}{'max':>8}{'bound':>8}")
    for k in STRUCTURES:
        flag = "  OVER" if rep.maxima[k] > rep.bounds[k] else ""
        p(f"  {k:<18}{rep.maxima[k]:>8}{rep.bounds[k]:>8}{flag}")
    if rep.memory and rep.memory[-1].rss_kb:
        p(f"  {'step':>10}{'req done':>10}{'traced KiB':>12}{'peak KiB':>10}{'RSS KiB':>10}"
          f"{'replicas KiB':>14}{'_verified KiB':>15}{'tree KiB':>10}{'oracle KiB':>12}")
        for s in coarse(rep.memory, 10):
            p(f"  {s.step:>10}{s.completed:>10}{s.traced_kb:>12}{s.peak_kb:>10}{s.rss_kb:>10}"
              f"{s.replica_kb:>14}{s.verified_kb:>15}{s.tree_kb:>10}{s.oracle_kb:>12}")
        start, mid, end = memory_points(rep.memory)
        for what in ("traced_kb", "rss_kb", "replica_kb", "verified_kb", "tree_kb", "oracle_kb"):
            p(f"  memory start/middle/end {what}: {getattr(start, what)} / {getattr(mid, what)} / {getattr(end, what)}")
    if rep.catch_up is not None:
        cu = rep.catch_up
        p(f"  catch-up of replica {cu.replica}: at the heal ({cu.heal_ms} ms) {cu.behind_at_heal} seqs behind, "
          f"stable checkpoint {cu.stable_at_heal[0]} vs the others' {cu.stable_at_heal[1]}")
        p(f"    latest stable checkpoint after {cu.stable_ms} virtual ms, executing with the others after "
          f"{cu.executed_ms} virtual ms, {cu.transfers} state transfer(s), same last_executed and "
          f"state_digest() at the end: {cu.same_digest}")


def coarse(samples: list[MemSample], k: int) -> list[MemSample]:
    if len(samples) <= k:
        return samples
    idx = sorted({round(i * (len(samples) - 1) / (k - 1)) for i in range(k)})
    return [samples[i] for i in idx]


def memory_points(samples: list[MemSample]) -> tuple[MemSample, MemSample, MemSample]:
    """Start (after the first tenth of the run: warmed up), middle and end."""
    return samples[len(samples) // 10], samples[len(samples) // 2], samples[-1]


# -- the real-process variant ---------------------------------------------------------------


def real_catch_up(clients: int = 8, warmup_s: float = 2.0, down_s: float = 10.0, victim: int = 3,
                  limit_s: float = 60.0) -> dict:
    """A real loopback cluster (separate processes, TLS): closed-loop puts, SIGKILL backup
    `victim` for `down_s` under load, restart it on its data dir, and time (wall clock) until
    its STATUS shows the others' last_executed. Not for CI (it takes ~20 s)."""
    import os
    import shutil
    import tempfile

    import trio

    from pbft.cluster.keygen import generate_cluster
    from pbft.cluster.launcher import LocalCluster, free_ports
    from pbft.node.client import open_client
    from pbft.node.clusterfile import load_cluster

    workdir = tempfile.mkdtemp(prefix="pbft-soak-")
    names = [f"c{i}" for i in range(clients)]
    path = generate_cluster(os.path.join(workdir, "keys"), f=1, clients=names + ["obs"],
                            ports=free_ports(4), cluster_id="soak")
    config = load_cluster(path)
    cluster = LocalCluster(path, config, log_dir=workdir, log_level="warning")
    out: dict[str, Any] = {"victim": victim, "down_s": down_s, "clients": clients,
                           "checkpoint_interval": config.checkpoint_interval, "log_window": config.log_window}
    done = [0]

    async def run() -> None:
        stop = trio.Event()

        async def writer(name: str) -> None:
            async with open_client(path, name, timeout=limit_s) as c:
                j = 0
                while not stop.is_set():
                    await c.put(b"%s-%d" % (name.encode(), j % 16), b"%d" % j)
                    j += 1
                    done[0] += 1

        async with open_client(path, "obs", timeout=limit_s) as obs, trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(writer, name)
            await trio.sleep(warmup_s)
            before = await obs.status()
            out["killed_at_last_executed"] = before[victim].last_executed if victim in before else None
            cluster.kill(victim)
            n0, t0 = done[0], time.monotonic()
            await trio.sleep(down_s)
            out["requests_while_down"] = done[0] - n0
            out["throughput_while_down_rps"] = round((done[0] - n0) / (time.monotonic() - t0))
            t_spawn = time.monotonic()
            await trio.to_thread.run_sync(cluster.restart, victim)
            t_ready = time.monotonic()
            out["restart_to_listening_s"] = round(t_ready - t_spawn, 3)
            first = None
            with trio.move_on_after(limit_s):
                while True:
                    st = await obs.status(timeout=1.0)
                    others = [st[r].last_executed for r in st if r != victim]
                    if first is None and victim in st:
                        first = st[victim].last_executed
                        out["behind_after_restart"] = max(others) - first
                        out["stable_after_restart"] = (st[victim].stable_seq, max(st[r].stable_seq for r in st))
                    if victim in st and others and st[victim].last_executed >= min(others):
                        out["catch_up_s_from_listening"] = round(time.monotonic() - t_ready, 3)
                        out["catch_up_s_from_spawn"] = round(time.monotonic() - t_spawn, 3)
                        break
                    await trio.sleep(0.05)
            await trio.sleep(1.0)
            stop.set()
            t_stop = time.monotonic()
            with trio.move_on_after(15):
                while True:  # load stopped: every replica reports the same last_executed
                    st = await obs.status(timeout=1.0)
                    out["final_last_executed"] = {r: s.last_executed for r, s in st.items()}
                    if len(st) == config.n and len(set(out["final_last_executed"].values())) == 1:
                        out["all_equal_s_after_load_stopped"] = round(time.monotonic() - t_stop, 3)
                        break
                    await trio.sleep(0.2)
            out["requests_total"] = done[0]
            nursery.cancel_scope.cancel()

    try:
        cluster.start()
        trio.run(run)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=1500, help="per client")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--production", action="store_true", help="K=128, L=256 instead of the sim's 8/32")
    ap.add_argument("--checkpoint-interval", type=int)
    ap.add_argument("--log-window", type=int)
    ap.add_argument("--drop", type=float, default=0.01)
    ap.add_argument("--duplicate", type=float, default=0.01)
    ap.add_argument("--reorder", type=float, default=0.05)
    ap.add_argument("--every", type=int, default=50, help="sample structures every N replica steps")
    ap.add_argument("--mem-every", type=int, default=20_000, help="sample memory every N replica steps")
    ap.add_argument("--tracemalloc", action="store_true", help="trace allocations (several times slower)")
    ap.add_argument("--strict-proof", action="store_true", help="the simulator's own stable-proof check")
    ap.add_argument("--catch-up", action="store_true", help="only time the catch-up scenarios")
    ap.add_argument("--no-catch-up", action="store_true", help="skip the catch-up scenarios")
    ap.add_argument("--real", action="store_true", help="only the real-process catch-up (about 20 s)")
    ap.add_argument("--json", help="write the reports here")
    a = ap.parse_args(argv)
    if a.real:
        res = real_catch_up()
        print(json.dumps(res, indent=1))
        return 0 if "catch_up_s_from_listening" in res else 1
    reports = []
    ok = True
    if not a.catch_up:
        k, w = a.checkpoint_interval, a.log_window
        if a.production:
            k, w = k or 128, w or 256
        s = soak_scenario(
            a.clients, a.requests, seed=a.seed, checkpoint_interval=k, log_window=w,
            drop=a.drop, duplicate=a.duplicate, reorder=a.reorder,
        )
        rep = soak(s, every=a.every, mem_every=a.mem_every, strict_proof=a.strict_proof,
                   trace_memory=a.tracemalloc)
        print_report(rep)
        reports.append(rep)
        ok = ok and rep.passed and not rep.over
    if not a.no_catch_up:
        for name, lagger in CATCH_UP_FILES.items():
            rep = measure_catch_up(SCENARIOS / name, lagger)
            print(f"[{name}]")
            print_report(rep)
            reports.append(rep)
            ok = ok and rep.passed and not rep.over
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in reports], indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
