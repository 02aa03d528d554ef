"""`pbft scenario run FILE --real`: a scenario file against real replica processes.

Theory of operation. The simulator's scenario file drives a throwaway cluster on loopback:
a temporary directory, free ports, `generate_cluster` with the simulator's small-window
defaults overridden by the scenario's [cluster] table, one client per workload client plus
an observer that asks for STATUS. `LocalCluster` starts one `pbft replica` process per
replica, each with a data directory (durable, docs/architecture.md); a Byzantine replica is
started with `--behaviour FILE` (the scenario's [[byzantine]] entry for its id) or
`--behaviour NAME:key=value,...` when the scenario has no file. Crash entries are applied on
the wall clock: SIGKILL at `at_ms`, a restart on the same data directory at `until_ms`
(recovery from disk), or on an emptied one with `amnesia = true`.

A crash with `on = "checkpoint" | "transfer" | "installed" | "view-change" | "new-view"` is
triggered by the replica's own event: from `at_ms` on, its log (level info) is watched for
the line that event writes, and the replica is killed right then, restarted `down_ms`
later, `times` times; the result lists every kill and restart (`crashes`). At the end,
live correct replicas must share one view within SETTLE_S (`view-agreement`; as in the
simulator, not judged while a link fault that can keep them apart lasts the whole run).

Link faults (partition, one_way, drop, delay_ms/jitter_ms, reorder, duplicate, with their
filters and windows) are applied by a layer at the sending side of every process
(pbft.node.linkfaults): the runner writes a plan (the link faults, the seed, the twins'
addresses) into the work directory, starts every replica with `--link-faults PLAN`, and
once every replica listens fixes the epoch (scenario time 0, on the wall clock, EPOCH_LEAD_S
ahead) in the plan, which the replicas read again until it is there; its own clients get
the same plan. What the layers dropped, delayed, reordered and duplicated is added up at
the end (`link_faults`, with the messages each entry acted on). A `twin` runs as a second
process with the same identity on an extra port (`pbft replica --twin`); every sender's
transport sends it what it sends that replica. A Byzantine client runs the scenario's
client behaviour around a real client's core (`Client.misbehave`) in a child process of its
own (pbft.cluster.realattacker), started and ready before scenario time 0, so its requests
really go out over TLS while whatever its hooks do (hang, loop, `os._exit`) can neither
hold up the correct clients nor take this process down; its operations are neither checked
nor counted, and it is stopped when the correct clients are done. Before any replica
starts, every behaviour (replica and client) is built once in another child process, as
the simulator does: a bad parameter or a `setup` that raises, hangs or ends its process is
a UsageError.

What still cannot be applied to real processes (`unapplied`: a crash of a twinned
replica) is listed in the result's `incomplete`, and the verdict is INCOMPLETE (exit
status 1), never PASS.

The workload is built so that its results are checkable without the simulator's oracle:
client `cI` owns its keys (`cI/k0`, `cI/k1`, ...), so the only writer of a key is one
closed-loop client, and every get must return the last value that client put (or nothing
after a delete). Each request must complete within `liveness_ms` (capped at
`MAX_LIVENESS_S`) counted from when it was submitted or from when the last crash healed,
whichever is later. At the end the observer collects each replica's view, last executed
sequence number and stable checkpoint; `view_changes` is the highest view of a correct
replica that answered (one that did not is unknown: said in `applied`, a liveness failure
only with `expect.catch_up`; one the scenario crashed for good is not judged), against
`max_view_changes`. A correct replica process that exits on its own is a failure
(`exception`); a Byzantine one's is the attacker's failure (its script ended it). There is no `trace_digest` (null): processes and sockets make a
real run unrepeatable bit for bit. With `trace` (`--trace OUT.jsonl`), every replica
process writes its trace into the work directory (`pbft replica --trace`), the driver
writes its own (its clients' messages, every operation submitted and completed, the
crashes and restarts it applied, violations and the `end` record), and at the end all of
them are merged into OUT (pbft.trace.merge; docs/formats.md). Once every process has
stopped, what the correct replicas agreed is compared from their durable stores, read
read-only before the work directory is removed (pbft.cluster.realcheck: `agreement`,
`checkpoint-digests`, `prepared-uniqueness`).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
import tempfile
import time
from typing import Any

import trio

from ..errors import UsageError
from ..node.linkfaults import FaultPlan, sum_stats, write_plan
from ..node.tracing import wall_ms
from ..protocol.epochs import epoch_of_view, first_view
from ..sim.oracle import Violation
from ..sim.result import Latency, ReplicaReport, RunResult
from ..sim.scenario import ByzantineSpec, NetworkFault, Scenario

MAX_LIVENESS_S = 20.0
"""Longest wait for one request once faults have healed (the simulator's default bound,
30 virtual seconds, is needlessly long on a real loopback cluster)."""
STATUS_TIMEOUT_S = 3.0
SETTLE_S = 5.0
"""How long live correct replicas get, after the workload, to reach the top checkpoint and
the furthest executed request (a failure only with `expect.catch_up`)."""
OBSERVER = "observer"
TRIGGER_POLL_S = 0.02
"""How often a triggered crash looks at its replica's log."""
TRIGGER_LINES: dict[str, re.Pattern[bytes]] = {
    "checkpoint": re.compile(rb"checkpoint \d+ is stable"),
    "transfer": re.compile(rb"state transfer to checkpoint \d+ started"),
    "installed": re.compile(rb"state transfer to checkpoint \d+ done"),
    "view-change": re.compile(rb"view change to view \d+ started"),
    "new-view": re.compile(rb"view \d+ installed, primary"),
}
"""The text each trigger's event writes in the replica's log (pbft.node.node, level info)."""
REAL_MIN_TICK_MS = 10
ATTACKER_FAILED = re.compile(rb"the attacker failed \((\d+) so far\)")
"""The line a replica process logs when its behaviour's hook raised (pbft.node.node)."""
ATTACKER_STOP_S = 5.0
"""How long a client attacker's process gets to stop, over the hook limit, once asked."""
CHECK_SLACK_S = 30.0
"""How long building the behaviours may take, over the hook limit (starting Python,
importing the user's files)."""
EPOCH_LEAD_S = 0.2
"""The epoch is fixed this far ahead of when it is written, so every replica has read it
(they poll the plan every 20 ms) before scenario time 0."""


# -- the plan: what can be applied, and the workload -------------------------------------


def describe_fault(nf: NetworkFault) -> str:
    window = f" from {nf.at_ms} ms" + (f" until {nf.until_ms} ms" if nf.until_ms is not None else "")
    if nf.twin is not None:
        return f"twin of replica {nf.twin}"
    parts = []
    if nf.partition:
        parts.append("partition " + " | ".join(",".join(map(str, g)) for g in nf.partition))
    if nf.drop:
        parts.append(f"drop {nf.drop}")
    if nf.delay_ms or nf.jitter_ms:
        parts.append(f"delay {nf.delay_ms}+-{nf.jitter_ms} ms")
    if nf.duplicate:
        parts.append(f"duplicate {nf.duplicate}")
    if nf.reorder:
        parts.append(f"reorder {nf.reorder}")
    if nf.one_way is not None:
        parts.append(f"one-way cut {nf.one_way[0]} -> {nf.one_way[1]}")
    if nf.filtered:
        parts.append("(filtered)")
    return " ".join(parts) + window


def twins(s: Scenario) -> list[int]:
    return sorted({nf.twin for nf in s.network if nf.twin is not None})


def unapplied(s: Scenario) -> list[str]:
    """The scenario's entries real processes cannot apply, one line each: a run with any
    is INCOMPLETE. Everything else is applied: crashes (timed and triggered), replica and
    client behaviours, link faults with their filters and windows, twins, [[reconfigure]]
    steps (`pbft admin`, new nodes started first). A crash of a twinned replica is not
    (which of its two processes, and the simulator restarts both from their own stores at
    once), nor is removing a client."""
    twinned = set(twins(s))
    return [
        f"[[network]] crash of replica {nf.crash} {describe_crash(nf)}: not applied on real "
        f"processes (replica {nf.crash} has a twin)"
        for nf in s.network
        if nf.crash is not None and nf.crash in twinned
    ] + [
        f"[[reconfigure]] #{i + 1} at {r.at_ms} ms: removing clients is not applied on real processes "
        "(their workload would fail); the rest of the step is"
        for i, r in enumerate(s.reconfigure)
        if r.remove_clients
    ]


def describe_crash(nf: NetworkFault) -> str:
    if nf.on is not None:
        return f"on {nf.on} from {nf.at_ms} ms"
    return f"at {nf.at_ms} ms" + (f" until {nf.until_ms} ms" if nf.until_ms is not None else "")


Op = tuple[str, bytes, bytes | None]  # ("put" | "get" | "delete", key, value)


def workload(s: Scenario, seed: int) -> dict[str, list[Op]]:
    """Per client, its closed-loop operations on keys it alone writes."""
    rng = random.Random(seed)
    plan: dict[str, list[Op]] = {}
    for c in range(s.clients):
        name = f"c{c}"
        ops: list[Op] = []
        for i in range(s.requests):
            key = b"%s/k%d" % (name.encode(), rng.randrange(s.keys))
            r = rng.random()
            if r < 0.45:
                ops.append(("put", key, b"%s-%d" % (name.encode(), i)))
            elif r < 0.6:
                ops.append(("delete", key, None))
            else:
                ops.append(("get", key, None))
        plan[name] = ops
    return plan


async def perform(client, kind: str, key: bytes, value: bytes | None) -> bytes | None:
    """One workload operation on a real client; a get's result, else None."""
    if kind == "put":
        assert value is not None
        await client.put(key, value)
    elif kind == "delete":
        await client.delete(key)
    else:
        return await client.get(key)
    return None


def behaviour_arg(spec: ByzantineSpec, source: str) -> str:
    """What `pbft replica --behaviour` gets: the scenario file when there is one (it holds
    the parameters as typed), else NAME:key=value,..."""
    if source and os.path.isfile(source):
        return os.path.abspath(source)
    if not spec.params:
        return spec.behaviour
    return spec.behaviour + ":" + ",".join(f"{k}={_arg(v)}" for k, v in sorted(spec.params.items()))


def _arg(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_arg(x) for x in v) + "]"
    return str(v)


def _base(spec: ByzantineSpec) -> str:
    """Where a relative FILE.py of `spec` is looked up, as an absolute path."""
    return os.path.abspath(spec.base_dir) if spec.base_dir else os.getcwd()


def hook_limit() -> float:
    """Wall-clock seconds one call of a user's hook may run in a client attacker's or the
    check's process before that process is ended (0: no limit): the simulator's hook
    limit (`PBFT_HOOK_TIMEOUT`, CPU seconds there too: pbft.sim.watchdog runs in those
    processes as in the simulator) times its wall-clock factor, plus one limit more for a
    hook the watchdog's interruption could not reach."""
    from ..sim import watchdog

    return watchdog.limit() * (getattr(watchdog, "WALL_FACTOR", 3.0) + 1)


def attacker_command(mode: str, spec_path: str) -> list[str]:
    """A child process running the user's attacker code (pbft.cluster.realattacker),
    without the working directory on its path (-P)."""
    return [sys.executable, "-P", "-m", "pbft.cluster.realattacker", mode, spec_path]


def attacker_env() -> dict[str, str]:
    """This pbft first on the child's path, wherever it was imported from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_attacker_check(workdir: str, spec: dict[str, Any], timeout: float | None) -> str | None:
    """Run pbft.cluster.realattacker `check` on `spec`: the first problem (one sentence),
    or None."""
    import json
    import pickle
    import subprocess

    base = os.path.join(workdir, "attacker-check")
    spec = {**spec, "result": base + ".json"}
    with open(base + ".spec", "wb") as fh:
        pickle.dump(spec, fh)
    with open(base + ".log", "ab") as log:
        proc = subprocess.Popen(attacker_command("check", base + ".spec"), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, cwd=workdir, env=attacker_env())
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return (f"building the behaviours did not end within {timeout:g} s (an import or a setup that "
                f"never returns?){_log_tail(base + '.log')}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        with open(base + ".json", encoding="utf-8") as fh:
            return json.load(fh)["problem"]
    except (OSError, ValueError, KeyError):
        from .launcher import describe_exit

        return (f"building the behaviours ended with {describe_exit(proc.returncode)} and said nothing "
                f"(a behaviour ended its process?){_log_tail(base + '.log')}")


def _log_tail(path: str, limit: int = 300) -> str:
    """": LAST LINE" of a child's log (what it printed last), or ""."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return f": {lines[-1][-limit:]}" if lines else ""


def cluster_settings(s: Scenario) -> dict[str, int]:
    from ..sim.simulation import SIM_DEFAULTS

    params = dict(SIM_DEFAULTS)
    params.update(dict(s.cluster))
    params["tick_ms"] = max(params["tick_ms"], REAL_MIN_TICK_MS)
    params["log_window"] = max(params["log_window"], params["checkpoint_interval"])
    params["pipeline"] = min(params["pipeline"], params["log_window"])
    params["retransmit_ms"] = max(params["retransmit_ms"], params["tick_ms"])
    return params


# -- the run ---------------------------------------------------------------------------


class RealRun:
    def __init__(self, scenario: Scenario, seed: int | None, out=None, trace: str | None = None) -> None:
        self.s = scenario
        self.trace = trace
        """Where the merged trace goes (None: no trace)."""
        self.tracer: Any = None
        """The driver's own trace writer, while the run lasts (with `trace`)."""
        self.seed = scenario.seed if seed is None else seed
        self.out = out
        self.violations: list[Violation] = []
        self.completed = 0
        self.counts: dict[str, int] = {}
        """How much each check looked at (`RunResult.checks`, as the simulator's)."""
        self.latencies: list[tuple[int, int]] = []
        """(submitted, completed) ms since the run's start, per completed request of a
        correct client (`RunResult.latency`)."""
        self.twins = twins(scenario)
        crashes = [nf for nf in scenario.network if nf.crash is not None and nf.crash not in self.twins]
        timed = [nf for nf in crashes if nf.on is None]
        self.triggered = [nf for nf in crashes if nf.on is not None]
        self.link = [nf for nf in scenario.network if nf.is_link_fault]
        self.plan: FaultPlan | None = None
        """The link-fault plan the clients use (None: no link faults and no twins)."""
        self.plan_path = ""
        self.link_counts: dict[str, Any] = {}
        self.crashes = sorted(
            [(nf.at_ms, 0, nf.crash, False) for nf in timed]
            + [(nf.until_ms, 1, nf.crash, nf.amnesia) for nf in timed if nf.until_ms is not None]
        )
        self.heal_ms = max(
            [t for t, *_ in self.crashes] + [nf.until_ms for nf in self.link if nf.until_ms is not None],
            default=0,
        )
        self.liveness_s = min(scenario.expect.liveness_ms / 1000, MAX_LIVENESS_S)
        self.byzantine = {b.index for b in scenario.byzantine if b.target == "replica"}
        self.byz_clients = {b.node: b for b in scenario.byzantine if b.target == "client"}
        self.attacker_failures: list[str] = []
        self.attacker_failure_count = 0
        from ..sim.simulation import never_healed

        self.check_views = not never_healed(scenario) and not scenario.exceeds_fault_assumption()
        """`view-agreement` is judged as in the simulator: not while a link fault that can
        keep correct replicas apart lasts the whole run."""
        self.faulty = set(scenario.faulty_replicas())
        self.down: set[int] = set()
        self.workload_over: float | None = None  # when the clients finished
        self.crash_log: list[str] = []
        self.applied: list[str] = []
        self.cluster: Any = None
        self.workdir = ""
        self.new_nodes: list[Any] = []
        """LocalClusters of one replica each: the new nodes [[reconfigure]] steps started."""
        self.added_requests = 0  # the workload of clients a [[reconfigure]] step added
        self.retired: set[int] = set()
        """Replicas of the first cluster that a change replaced or removed (they stop)."""
        self.path = ""
        self.t0 = 0.0
        self.t0_wall = time.time()
        """Scenario time 0 on the wall clock (for the client attackers' processes)."""
        self.trace_dir: str | None = None
        self.plan_names: list[str] = []
        """Every client of the workload (a trace header lists them)."""
        self.attacker_procs: dict[str, Any] = {}
        """The client attackers' processes (killed at the end whatever happened)."""

    def ms(self) -> int:
        """Milliseconds since the run's start (Trio's clock)."""
        return int((trio.current_time() - self.t0) * 1000)

    def count(self, check: str, n: int = 1) -> None:
        self.counts[check] = self.counts.get(check, 0) + n

    def fail(self, check: str, detail: str) -> None:
        self.violations.append(Violation(check, detail))
        if self.tracer is not None:
            self.tracer.violation(wall_ms(), check, detail)

    def traced_crash(self, rid: int) -> None:
        if self.tracer is not None:
            self.tracer.crash(wall_ms(), rid)

    def traced_restart(self, rid: int, amnesia: bool) -> None:
        if self.tracer is not None:
            self.tracer.restart(wall_ms(), rid, amnesia)

    def say(self, text: str) -> None:
        if "killed" in text or "restarted" in text or "never fired" in text:
            self.crash_log.append(f"{trio.current_time() - self.t0:.2f} s: {text}")
        if self.out is not None:
            print(f"  [{trio.current_time() - self.t0:6.2f} s] {text}", file=self.out, flush=True)

    # -- faults --------------------------------------------------------------------

    async def apply_crashes(self) -> None:
        for at_ms, kind, rid, amnesia in self.crashes:
            await trio.sleep_until(self.t0 + at_ms / 1000)
            if kind == 0:
                if rid in self.down:
                    continue
                self.cluster.kill(rid)
                self.traced_crash(rid)
                self.down.add(rid)
                self.say(f"replica {rid} killed (SIGKILL)")
            elif rid in self.down:
                if amnesia:
                    shutil.rmtree(self.cluster.data_dir(rid), ignore_errors=True)
                self.cluster.spawn(rid)
                self.traced_restart(rid, amnesia)
                self.down.discard(rid)
                self.say(f"replica {rid} restarted " + ("from nothing (amnesia)" if amnesia else "from its data directory"))

    async def apply_trigger(self, nf: NetworkFault) -> None:
        """A crash triggered by the replica's own event (`on = ...`): from at_ms on, watch
        its log for the line that event writes, SIGKILL it then, restart it down_ms later
        (on the same data directory), `times` times in all. A trigger that never fires
        is said, not failed: the run just did not reach that moment."""
        rid, pattern = nf.crash, TRIGGER_LINES[nf.on]  # type: ignore[index]
        await trio.sleep_until(self.t0 + nf.at_ms / 1000)
        for _ in range(nf.times):
            path = self.cluster.log_path(rid)
            offset = os.path.getsize(path) if os.path.exists(path) else 0
            while True:
                if rid not in self.down and os.path.exists(path):
                    with open(path, "rb") as f:
                        f.seek(offset)
                        text = f.read()
                    if pattern.search(text):
                        break
                    offset += text.rfind(b"\n") + 1  # whole lines only: a line being written is read again
                if self.workload_over and trio.current_time() > self.workload_over + SETTLE_S:
                    # (Catching up after the workload may still fire it: a transfer does.)
                    self.say(f"replica {rid}: the {nf.on} trigger never fired")
                    return
                await trio.sleep(TRIGGER_POLL_S)
            self.cluster.kill(rid)
            self.traced_crash(rid)
            self.down.add(rid)
            self.say(f"replica {rid} killed (SIGKILL) on its {nf.on}")
            if nf.down_ms is None:
                return
            await trio.sleep(nf.down_ms / 1000)
            self.cluster.spawn(rid)
            self.traced_restart(rid, False)
            self.down.discard(rid)
            self.heal_ms = max(self.heal_ms, int((trio.current_time() - self.t0) * 1000))
            self.say(f"replica {rid} restarted from its data directory")

    async def apply_reconfigurations(self) -> None:
        """The [[reconfigure]] steps, as an operator makes them (pbft.cluster.admin): the
        new nodes are started first, then the change is sent; a client added runs a
        workload of its own as soon as it has taken effect."""
        from ..node.clusterfile import load_cluster
        from ..sim.scenario import client_name
        from . import admin
        from .launcher import LocalCluster, free_ports

        next_client = self.s.clients
        async with trio.open_nursery() as added_clients:
            for i, step in enumerate(self.s.reconfigure):
                await trio.sleep_until(self.t0 + step.at_ms / 1000)
                config = load_cluster(self.path)
                n = 3 * step.f + 1 if step.f is not None else config.n
                ports = free_ports(len(step.replace) + max(0, n - config.n))
                replace = {rid: f"127.0.0.1:{ports.pop()}" for rid in step.replace}
                add = {rid: f"127.0.0.1:{ports.pop()}" for rid in range(config.n, n)}
                names = [client_name(next_client + k) for k in range(step.add_clients)]
                next_client += step.add_clients
                p = admin.plan(self.path, replace=replace, f=step.f, add=add, add_clients=names,
                               out_dir=os.path.join(self.workdir, f"epoch-{config.epoch + 1}"))
                for rid, d in sorted(p.new_replicas.items()):
                    path = os.path.join(d, "cluster.toml")
                    node = LocalCluster(path, load_cluster(path), ids=[rid], log_dir=d,
                                        data_root=os.path.join(d, "data"))
                    node.start()
                    self.new_nodes.append(node)
                self.retired |= {rid for rid in replace if rid < self.s.n}
                self.retired |= {rid for rid in range(n, self.s.n)}
                answer = await admin.apply(p, timeout=self.liveness_s)
                self.say(f"[[reconfigure]] #{i + 1}: epoch {answer['epoch']} begins after checkpoint {answer['after']}")
                for name in names:
                    ops = [("put", b"%s-k%d" % (name.encode(), j), b"v%d" % j) for j in range(5)]
                    self.added_requests += len(ops)
                    added_clients.start_soon(self.run_client, name, ops)

    # -- clients -------------------------------------------------------------------

    async def run_client(self, name: str, ops: list[Op]) -> None:
        from ..node.client import open_client

        model: dict[bytes, bytes] = {}
        async with open_client(self.path, name, link_faults=self.plan, tracer=self.tracer) as client:
            for i, (kind, key, value) in enumerate(ops):
                deadline = max(trio.current_time(), self.t0 + self.heal_ms / 1000) + self.liveness_s
                since = self.traced_submit(name, client, kind, key, value)
                submitted = self.ms()
                with trio.move_on_at(deadline) as scope:
                    got = await perform(client, kind, key, value)
                if scope.cancelled_caught:
                    if self.s.expect.all_requests_complete:
                        self.fail(
                            "liveness",
                            f"client {name} request {i + 1} ({kind} {key.decode()}) did not complete "
                            f"within {self.liveness_s:g} s (after the last crash healed at {self.heal_ms} ms)",
                        )
                    return
                self.completed += 1
                self.latencies.append((submitted, self.ms()))
                self.count("client-correctness")
                self.traced_complete(name, client, kind, got, since)
                if kind == "put":
                    assert value is not None
                    model[key] = value
                elif kind == "delete":
                    model.pop(key, None)
                elif got != model.get(key):
                    self.fail(
                        "client-correctness",
                        f"client {name} request {i + 1}: get {key.decode()} returned {got!r}; the last "
                        f"value it put is {model.get(key)!r}",
                    )

    def traced_submit(self, name: str, client, kind: str, key: bytes, value: bytes | None) -> float:
        """A `submit` record for the operation about to be performed (the timestamp its
        request will carry: the client's next); returns the time, for the latency."""
        now = wall_ms()
        if self.tracer is not None:
            from ..service.kv import op_delete, op_get, op_put

            op = op_put(key, value or b"") if kind == "put" else op_delete(key) if kind == "delete" else op_get(key)
            self.tracer.submit(now, name, client.core.timestamp + 1, op, kind == "get")
        return now

    def traced_complete(self, name: str, client, kind: str, got: bytes | None, since: float) -> None:
        if self.tracer is not None:
            if kind != "get":
                result = "ok"
            elif got is None:
                result = "(not found)"
            else:
                result = got.decode("utf-8", "replace")
            self.tracer.complete(wall_ms(), name, client.core.timestamp, result, since)

    async def start_byzantine_client(self, name: str, ops: list[Op]) -> Any:
        """Start the scenario's client behaviour around a real client's core in a child
        process of its own (pbft.cluster.realattacker `client`) and wait until it is ready
        (connected, its behaviour built), before scenario time 0: whatever its hooks do
        (hang, loop, end the process) then neither blocks the correct clients nor takes
        the runner down. None if it ended before it was ready (its result says why)."""
        import subprocess

        spec = self.byz_clients[name]
        base = os.path.join(self.workdir, f"attacker-{name}")
        limit = hook_limit()
        trace_path = os.path.join(self.trace_dir, f"client-{name}.jsonl") if self.trace_dir else None
        self.write_spec(base + ".spec", {
            "cluster": self.path, "name": name, "behaviour": spec.behaviour, "params": dict(spec.params),
            "base_dir": _base(spec), "rng": f"{self.seed}/{name}", "ops": ops,
            "plan": self.plan_path or None, "heal_ms": self.heal_ms,
            "liveness_s": self.liveness_s, "limit": limit, "result": base + ".json",
            "trace": trace_path,
            "trace_header": (self.s.n, self.s.f, sorted(self.faulty), list(self.plan_names)),
        })
        with open(base + ".log", "ab") as log:
            proc = await trio.lowlevel.open_process(
                attacker_command("client", base + ".spec"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, cwd=self.workdir, env=attacker_env(),
            )
        self.attacker_procs[name] = proc
        got = b""
        with trio.move_on_after((limit if limit > 0 else 0) + CHECK_SLACK_S):
            while b"\n" not in got:
                chunk = await proc.stdout.receive_some()  # type: ignore[union-attr]
                if not chunk:
                    break
                got += chunk
        if got.startswith(b"ready"):
            return proc
        if proc.returncode is None and not got:
            proc.kill()  # not ready within the bound: stuck before its first hook
        await proc.wait()
        return None

    async def run_byzantine_client(self, name: str, proc: Any, ops: list[Op]) -> None:
        """Let client attacker `name` (started by `start_byzantine_client`) run from
        scenario time 0. Nothing it gets back is checked or counted; a request that does
        not complete in time just ends its workload. When the correct clients are done it
        is asked to stop (its stdin is closed), and killed if it has not within the hook
        limit."""
        spec = self.byz_clients[name]
        shown = spec.behaviour or "rules"
        base = os.path.join(self.workdir, f"attacker-{name}")
        limit = hook_limit()
        killed = False
        try:
            if proc is not None and proc.returncode is None:
                self.say(f"client {name} runs {shown} (in a process of its own)")
                try:
                    await proc.stdin.send_all(b"go %r\n" % self.t0_wall)  # type: ignore[union-attr]
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                await proc.wait()
        finally:
            with trio.CancelScope(shield=True):
                if proc is not None:
                    try:
                        await proc.stdin.aclose()  # type: ignore[union-attr]
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
                    with trio.move_on_after((limit if limit > 0 else 0) + ATTACKER_STOP_S):
                        await proc.wait()
                    if proc.returncode is None:
                        killed = True
                        proc.kill()
                        await proc.wait()
            status = proc.returncode if proc is not None else self.attacker_procs[name].returncode
            self.note_attacker_client(name, shown, base, status, killed, len(ops))

    def write_spec(self, path: str, spec: dict[str, Any]) -> None:
        import pickle

        with open(path, "wb") as fh:
            pickle.dump(spec, fh)

    def note_attacker_client(self, name: str, shown: str, base: str, status: int | None, killed: bool,
                             ops: int) -> None:
        """What the client attacker's process did, from its result file: frames sent,
        its behaviour's failures (the attacker's); a process that ended without a result
        (a hook ended it, or it would not stop) is the attacker's failure too; an error
        of pbft's own in it is an `exception`."""
        import json

        from .launcher import describe_exit

        try:
            with open(base + ".json", encoding="utf-8") as fh:
                got = json.load(fh)
        except (OSError, ValueError):
            got = None
        sent = got["sent"] if got else 0
        self.applied.append(
            f"client {name} ran {shown} on a real client: {sent} frames sent over TLS for {ops} operations"
        )
        for line in (got or {}).get("said", []):
            self.say(f"client {name}: {line}")
        if got is None:
            self.attacker_failure_count += 1
            if killed:
                why = "did not stop when asked (its behaviour's code is stuck)"
            else:
                why = f"exited with {describe_exit(status)} (its behaviour ended the process)"
            self.attacker_failures.append(f"client {name} (running {shown}) {why}{_log_tail(base + '.log')}")
            return
        if got.get("error"):
            self.fail("exception", f"client {name}'s process (running {shown}) failed: {got['error'][-600:]}")
        self.attacker_failure_count += got["count"]
        self.attacker_failures += [f"client {name}: {f}" for f in got["failures"]]

    def check_behaviours(self) -> None:
        """Build every replica and client behaviour once around a throwaway core, as the
        simulator does, in a child process (pbft.cluster.realattacker `check`), so a bad
        parameter, or an `__init__` or `setup` that raises, hangs past the hook limit or
        ends its process, is a UsageError (one sentence) before any replica starts."""
        s = self.s
        replicas = [(b.index, b.behaviour, dict(b.params), _base(b)) for b in s.byzantine if b.target == "replica"]
        clients = [(name, b.behaviour, dict(b.params), _base(b)) for name, b in sorted(self.byz_clients.items())]
        if not replicas and not clients:
            return
        limit = hook_limit()
        problem = run_attacker_check(
            self.workdir, {"cluster": self.path, "replicas": replicas, "clients": clients, "limit": limit},
            None if limit <= 0 else limit + CHECK_SLACK_S,
        )
        if problem:
            raise UsageError(f"{s.source or s.name}: {problem}")

    async def publish_epoch(self) -> None:
        """Fix scenario time 0 (EPOCH_LEAD_S from now, on the wall clock) in the plan the
        replicas read, and take it as this run's t0."""
        lead = EPOCH_LEAD_S if self.plan is not None else 0.0
        now = trio.current_time()
        if self.plan is not None:
            self.plan.epoch = time.time() + lead
            write_plan(self.plan_path, self.plan)
        self.t0 = now + lead
        self.t0_wall = time.time() + lead
        await trio.sleep_until(self.t0)

    async def statuses(self, observer) -> dict[int, Any]:
        return await observer.status(timeout=STATUS_TIMEOUT_S)

    async def main(self, plan: dict[str, list[Op]]) -> dict[int, Any]:
        from ..node.client import open_client

        attackers = {name: await self.start_byzantine_client(name, ops)
                     for name, ops in plan.items() if name in self.byz_clients}
        await self.publish_epoch()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.apply_crashes)
            if self.s.reconfigure:
                nursery.start_soon(self.apply_reconfigurations)
            for nf in self.triggered:
                nursery.start_soon(self.apply_trigger, nf)
            async with trio.open_nursery() as byzantine:
                async with trio.open_nursery() as clients:
                    for name, ops in plan.items():
                        if name in self.byz_clients:
                            byzantine.start_soon(self.run_byzantine_client, name, attackers[name], ops)
                        else:
                            clients.start_soon(self.run_client, name, ops)
                byzantine.cancel_scope.cancel()
            self.workload_over = trio.current_time()
            self.say(f"workload over: {self.completed} requests completed")
            # Crashes still scheduled after the workload are applied before the status.
            await trio.sleep_until(self.t0 + self.heal_ms / 1000)
        async with open_client(self.path, OBSERVER) as observer:
            statuses = await self.statuses(observer)
            statuses = await self.wait_catch_up(observer, statuses, required=self.s.expect.catch_up)
            if self.check_views:
                statuses = await self.wait_one_view(observer, statuses)
        return statuses

    async def wait_one_view(self, observer, statuses: dict[int, Any]) -> dict[int, Any]:
        """Every live correct replica must end in the same view once the faults are over
        (the simulator's view-agreement check): a replica left alone in another view
        means the group runs without the fault tolerance it was given."""
        deadline = trio.current_time() + SETTLE_S
        while True:
            views = {i: st.view for i, st in statuses.items() if i not in self.faulty and i not in self.down}
            if len(set(views.values())) <= 1:
                self.count("view-agreement", len(views))
                return statuses
            if trio.current_time() > deadline:
                shown = ", ".join(f"replica {i} in view {v}" for i, v in sorted(views.items()))
                self.fail("view-agreement", f"live correct replicas do not share one view {SETTLE_S:g} s after the faults: {shown}")
                return statuses
            await trio.sleep(0.2)
            statuses = await self.statuses(observer)

    async def wait_catch_up(self, observer, statuses: dict[int, Any], required: bool) -> dict[int, Any]:
        """Wait until every live correct replica holds the top stable checkpoint's state
        and has executed as far as the furthest one. The workload is over, so a replica
        still behind (it missed the last batch's COMMITs, or answers before it executed
        the batch f+1 others already replied to) gets there by retransmission within a
        few periods. With `expect.catch_up` not getting there is a liveness failure;
        without, the statuses are only given the time to settle."""
        deadline = trio.current_time() + SETTLE_S
        while True:
            live = {i: st for i, st in statuses.items() if i not in self.faulty}
            top = max((st.stable_seq for st in statuses.values()), default=0)
            furthest = max((st.last_executed for st in live.values()), default=0)
            # Caught up means the state is installed, not only the window moved: a replica
            # that learnt of the checkpoint jumps its water marks before the transfer ends.
            lagging = [
                i for i, st in live.items()
                if min(st.stable_seq, st.last_executed) < top or st.last_executed < furthest
            ]
            if not lagging:
                return statuses
            if trio.current_time() > deadline:
                if not required:
                    return statuses
                i = lagging[0]
                self.fail(
                    "liveness",
                    f"replica {i} is at stable checkpoint {live[i].stable_seq} (executed "
                    f"{live[i].last_executed}) {SETTLE_S:g} s after the "
                    f"workload; others reached checkpoint {top} and executed {furthest}",
                )
                return statuses
            await trio.sleep(0.2)
            statuses = await self.statuses(observer)

    # -- the whole run ---------------------------------------------------------------

    def run(self) -> RunResult:
        from ..errors import ConfigError
        from ..node.clusterfile import load_cluster
        from ..node.process import run_trio
        from .keygen import generate_cluster
        from .launcher import LaunchError, LocalCluster, free_ports

        s = self.s
        plan = workload(s, self.seed)
        started = time.monotonic()
        workdir = tempfile.mkdtemp(prefix="pbft-scenario-")
        statuses: dict[int, Any] = {}
        tail: list[str] = []
        stats_dir = os.path.join(workdir, "link-fault-counts")
        trace_dir = os.path.join(workdir, "traces") if self.trace else None
        self.trace_dir = trace_dir
        self.plan_names = list(plan)
        ran = False
        result: RunResult | None = None
        completed = False  # no exception: a result to report (and a trace to finish)
        try:
            if trace_dir is not None:
                self.open_driver_trace(trace_dir, plan)
            ports = free_ports(s.n + len(self.twins))
            replica_args: list[str] = []
            if self.link or self.twins:
                os.makedirs(stats_dir)
                self.plan = FaultPlan(
                    faults=tuple(self.link),
                    seed=self.seed,
                    clients=s.clients,
                    twins={t: ("127.0.0.1", ports[s.n + k]) for k, t in enumerate(self.twins)},
                    stats_dir=stats_dir,
                )
                self.plan_path = os.path.join(workdir, "link-faults.json")
                write_plan(self.plan_path, self.plan)
                replica_args = ["--link-faults", self.plan_path]
            self.workdir = workdir
            self.path = generate_cluster(
                workdir,
                f=s.f,
                clients=[*plan, OBSERVER],
                ports=ports[: s.n],
                cluster_id="scenario",
                force=True,
                **cluster_settings(s),
            )
            try:
                config = load_cluster(self.path)
            except ConfigError as exc:
                raise UsageError(str(exc)) from None
            behaviours = {b.index: behaviour_arg(b, s.source) for b in s.byzantine if b.target == "replica"}
            self.check_behaviours()
            self.cluster = LocalCluster(
                self.path, config, behaviours=behaviours, log_dir=workdir, replica_args=replica_args,
                per_replica_args={i: ["--broken", s.broken] for i in range(s.n) if i not in self.faulty}
                if s.broken else None,
                twins=self.plan.twins if self.plan is not None else None,
                trace_dir=trace_dir,
            )
            try:
                self.cluster.start()
            except LaunchError as exc:
                self.fail("exception", str(exc))
            else:
                statuses = run_trio(self.main, plan)
                ran = True
                for i, proc in sorted(self.cluster.procs.items(), key=lambda kv: str(kv[0])):
                    if i not in self.down and i not in self.retired and proc.poll() is not None:
                        self.exited(i, proc.returncode)
            if self.violations:
                tail = [f"replica {i}: {self.cluster.stderr_tail(i)[-400:]}" for i in self.cluster.keys]
            completed = True
        finally:
            for proc in self.attacker_procs.values():
                if proc.returncode is None:
                    try:
                        proc.kill()
                        os.waitpid(proc.pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
            for node in self.new_nodes:
                node.stop()
            if self.cluster is not None:
                self.cluster.stop()
                if ran:
                    self.check_stores()
                    if self.violations and not tail:
                        tail = [f"replica {i}: {self.cluster.stderr_tail(i)[-400:]}" for i in self.cluster.keys]
            if self.plan is not None:
                self.link_counts = sum_stats(stats_dir, len(self.link))
            if self.cluster is not None:
                self.note_twins()
                self.note_attacker_failures()
            try:
                if completed:
                    result = self.result(statuses, started, tail)
                    if trace_dir is not None:
                        self.finish_trace(trace_dir, result)
            finally:
                if self.tracer is not None:
                    self.tracer.close()
                shutil.rmtree(workdir, ignore_errors=True)
        assert result is not None
        return result

    def exited(self, key: Any, status: int) -> None:
        """Replica process `key` exited on its own during the run. A Byzantine replica's
        is the attacker's failure (its behaviour's code ended the process: `os._exit`, a
        KeyboardInterrupt it raised), never pbft's: a faulty replica that disappears is
        what PBFT tolerates. A correct replica's (or a twin's, which runs honest code) is
        an `exception`."""
        from .launcher import describe_exit

        if key in self.byzantine:
            spec = next(b for b in self.s.byzantine if b.target == "replica" and b.index == key)
            self.attacker_failure_count += 1
            self.attacker_failures.append(
                f"replica {key} (running {spec.behaviour or 'rules'}) exited with {describe_exit(status)} "
                "(its behaviour ended the process)"
            )
            return
        self.fail("exception", f"replica {key} exited on its own with {describe_exit(status)}: "
                               f"{self.cluster.stderr_tail(key)[-300:]}")

    def open_driver_trace(self, trace_dir: str, plan: dict[str, list[Op]]) -> None:
        from ..node.tracing import open_trace

        os.makedirs(trace_dir)
        s = self.s
        extra: dict[str, Any] = {"scenario": s.name, "seed": self.seed}
        if s.broken:
            extra["broken"] = s.broken
        self.tracer = open_trace(os.path.join(trace_dir, "driver.jsonl"), "driver", s.n, s.f,
                                 sorted(self.faulty), list(plan), **extra)

    def finish_trace(self, trace_dir: str, r: RunResult) -> None:
        """The `end` record, then every process's trace merged into `self.trace`."""
        from ..trace.merge import merge_files

        self.tracer.write({"t": wall_ms(), "type": "end", "verdict": r.verdict, "violations": len(r.violations),
                           "requests_completed": r.requests_completed, "requests_total": r.requests_total,
                           "view_changes": r.view_changes, "wall_ms": r.wall_ms, "trace_digest": None})
        self.tracer.close()
        self.tracer = None
        paths = [os.path.join(trace_dir, name) for name in sorted(os.listdir(trace_dir)) if name.endswith(".jsonl")]
        # A process killed before it flushed anything leaves an empty file: nothing to merge.
        paths = [p for p in paths if os.path.getsize(p) > 0]
        merge_files(paths, self.trace)

    def result(self, statuses: dict[int, Any], started: float, tail: list[str]) -> RunResult:
        s = self.s
        replicas = []
        for i in range(s.n):
            st = statuses.get(i)
            if st is None:
                replicas.append(ReplicaReport(i, i in self.faulty, -1, -1, -1, reachable=False))
            else:
                replicas.append(ReplicaReport(i, i in self.faulty, st.view, st.last_executed, st.stable_seq))
        # Views count from each epoch's first view (pbft.protocol.epochs): the view changes
        # of the current epoch (a change of configuration is not one).
        # A replica that did not answer has no view to count (unknown, not -1).
        vc = max((r.view - first_view(epoch_of_view(r.view)) for r in replicas
                  if r.id not in self.faulty and r.reachable), default=0)
        self.note_unreachable(replicas)
        limit = s.expect.max_view_changes
        if not self.violations and limit is not None and vc > limit:
            self.fail("liveness", f"{vc} view changes, more than the {limit} expected")
        if not self.violations and s.expect.all_requests_complete and s.requests and not any(
            r.reachable for r in replicas if r.id not in self.faulty
        ):
            self.fail("liveness", "no correct replica answered the final status query")
        return RunResult(
            name=s.name,
            seed=self.seed,
            violations=self.violations,
            requests_completed=self.completed,
            requests_total=(s.clients - len(self.byz_clients)) * s.requests + self.added_requests,
            view_changes=vc,
            replicas=replicas,
            wall_ms=int((time.monotonic() - started) * 1000),
            incomplete=unapplied(s),
            link_faults=self.link_fault_report(),
            exceeds_fault_assumption=s.exceeds_fault_assumption(),
            real=True,
            trace_tail=tail,
            applied=self.applied,
            crashes=self.crash_log,
            attacker_failures=self.attacker_failures,
            attacker_failure_count=self.attacker_failure_count,
            checks=dict(sorted(self.counts.items())),
            latency=self.latency_figures(),
        )

    def note_unreachable(self, replicas: list[ReplicaReport]) -> None:
        """A correct replica that did not answer the final status query is unknown, not in
        a view. As in the simulator, a replica the scenario crashed for good is not judged;
        one that should be up is said (`applied`), and is a liveness failure only with
        `expect.catch_up`, which requires every live correct replica to have caught up."""
        for r in replicas:
            if r.reachable or r.id in self.faulty or r.id in self.retired:
                continue
            if r.id in self.down:
                self.applied.append(f"replica {r.id} was down at the end (crashed by the scenario): not asked")
                continue
            self.applied.append(f"replica {r.id} did not answer the final status query: its state is unknown")
            if not self.violations and self.s.expect.catch_up and self.s.requests:
                self.fail("liveness", f"replica {r.id} did not answer the final status query "
                                      f"(expect.catch_up needs every live correct replica caught up)")

    def latency_figures(self) -> Latency:
        """Correct clients' latencies (wall ms), overall and after the last heal, as the
        simulator reports them."""
        bound = int(self.liveness_s * 1000) if self.s.expect.all_requests_complete else None
        return Latency.of(self.latencies, self.heal_ms, bound)

    def check_stores(self) -> None:
        """Compare what the correct replicas agreed, from their durable stores, now that
        every process has stopped (pbft.cluster.realcheck: `agreement`,
        `checkpoint-digests`, `prepared-uniqueness`). Twins and other faulty replicas are
        not compared."""
        from .realcheck import check_stores

        dirs = {i: self.cluster.data_dir(i) for i in range(self.s.n) if i not in self.faulty}
        found, notes = check_stores(dirs, self.counts)
        for note in notes:
            if self.out is not None:
                print(f"  {note}", file=self.out, flush=True)
        for v in found:
            self.fail(v.check, v.detail)

    def note_attacker_failures(self) -> None:
        """A Byzantine replica process logs each failure of its behaviour's hooks (the
        attacker's bug, pbft.node.node: "the attacker failed (N so far): SENTENCE"): the
        first few word for word, then a count now and then and at its stop; gather them,
        as the simulator does. A restarted process counts from 1 again (its log file is
        appended to), so the total is the sum of each process's last count."""
        for key in self.cluster.keys:
            path = self.cluster.log_path(key)
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                lines = [ln.decode(errors="replace") for ln in f if ATTACKER_FAILED.search(ln)]
            last = 0
            for line in lines:
                sentence = line.split("so far): ", 1)[-1].strip()
                match = ATTACKER_FAILED.search(line.encode())
                n = int(match.group(1)) if match else last + 1
                if n <= last:  # a new process (restarted): its count starts again
                    self.attacker_failure_count += last
                last = n
                if len(self.attacker_failures) < 20:
                    self.attacker_failures.append(f"replica {key}: {sentence}")
            self.attacker_failure_count += last

    def note_twins(self) -> None:
        """One line per twin: its second process, where it listened, and its stop line
        (which says how far it executed)."""
        from .launcher import twin_key

        for t in self.twins:
            lines = [ln for ln in self.cluster.stderr_tail(twin_key(t)).splitlines() if "stopped" in ln]
            said = lines[-1].split(": ", 1)[-1] if lines else "no stop line"
            host, port = self.plan.twins[t]  # type: ignore[union-attr]
            self.applied.append(f"replica {t}'s twin ran as a second process on {host}:{port}: {said}")

    def link_fault_report(self) -> dict[str, Any]:
        """What the link-fault layers of every process did, added up: dropped, delayed,
        reordered, duplicated, and per [[network]] link-fault entry the messages it acted
        on (empty without link faults)."""
        if not self.link:
            return {}
        counts = dict(self.link_counts) or {"dropped": 0, "delayed": 0, "reordered": 0, "duplicated": 0}
        per = counts.pop("per_fault", [0] * len(self.link))
        counts["entries"] = [{"fault": describe_fault(nf), "messages": c} for nf, c in zip(self.link, per, strict=True)]
        return counts


def run_real(scenario: Scenario, seed: int | None = None, out=None, trace: str | None = None) -> RunResult:
    """Run `scenario` on real processes; with `trace`, write the run's merged trace there."""
    return RealRun(scenario, seed, out, trace).run()


def print_result(r: RunResult, out=None) -> None:
    from ..node.health import view_text

    out = out or sys.stdout
    if r.incomplete:
        n = len(r.incomplete)
        print(f"  {n} scenario {'entry' if n == 1 else 'entries'} not applied (listed above): verdict INCOMPLETE", file=out)
    if r.link_faults:
        lf = r.link_faults
        print(
            f"  link faults applied: {lf['dropped']} dropped, {lf['delayed']} delayed, "
            f"{lf['reordered']} reordered, {lf['duplicated']} duplicated",
            file=out,
        )
        for e in lf["entries"]:
            print(f"    [[network]] {e['fault']}: {e['messages']} messages", file=out)
    for rep in r.replicas:
        state = (
            f"{view_text(rep.view)}, executed {rep.last_executed}, stable {rep.stable_checkpoint}"
            if rep.reachable
            else "unreachable"
        )
        print(f"  replica {rep.id}{' (faulty)' if rep.byzantine else ''}: {state}", file=out)
    for line in r.applied:
        print(f"  {line}", file=out)
    for v in r.violations[:3]:
        print(f"  {v.check}: {v.detail}", file=out)
    if r.violations:
        for line in r.trace_tail:
            print(f"    | {line}", file=out)
