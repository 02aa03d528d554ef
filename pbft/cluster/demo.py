"""`pbft demo`: the embedded default, with no setup.

Theory of operation. A throwaway cluster is made in a temporary directory (keys,
certificates and a cluster file on free loopback ports, with a small checkpoint interval
so checkpoints happen), its 4 replicas are started as real processes, and this process
runs the demo's phases against it with real async clients over mutual TLS. Each phase is
an async function taking the shared `Demo` state and appending what went wrong to
`demo.failures`; phases run in order (`PHASES`), so a primary crash or a Byzantine replica
is one more function in the list. A summary goes to stdout, progress to stderr. The
processes are always stopped and the directory always removed. Exit 0 when every check
held, 1 otherwise.

The phases: a workload; a second workload during which the primary is crashed (SIGKILL),
with an observer client polling STATUS to show the view change (OSDI'99 4.4) as it
happens; a third workload with the crashed replica restarted as a Byzantine backup
(`--behaviour`), so there is never more than f = 1 faulty replica; then the summary. Each
workload writes its own keys under its own prefix, so "every get returns the last put"
is checked per phase.

Every figure printed comes from one measurement and says what it measures: the header
announces the requests every phase will send (`planned`, --requests for the first
workload, half as many in each of the other two), the summary counts the requests
actually sent and completed, and the view change is timed once, from the moment the
primary was killed: the first backup starting a view change and a quorum installing the
new view from the replicas' own (JSON, wall-clock) log lines, the first request answered
in the new view from the client. The live lines on stderr show progress and no times.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio

from ..node.tracing import wall_ms
from ..protocol.config import ClusterConfig

CHECKPOINT_INTERVAL = 32
"""Small, so a few hundred requests cross several checkpoints."""
VIEW_CHANGE_TIMEOUT_MS = 500
"""Short, so the crash phase takes a couple of seconds: clients retransmit to every replica
after 2x this, and backups start a view change this long after they hear of a request."""
BYZANTINE_BEHAVIOUR = "wrong-digest-vote"
"""Votes for digests nobody pre-prepared; needs no view change to do its damage."""
OBSERVER = "observer"
"""An extra client that only polls STATUS during the crash phase."""
STATUS_POLL = 0.1
CALL_TIMEOUT = 30.0
"""Seconds one client call may take before the demo counts it as failed."""
KEYS_PER_CLIENT = 8
MAX_CLIENTS = 64


@dataclass
class Demo:
    cluster_path: str
    config: ClusterConfig
    cluster: object  # launcher.LocalCluster
    client_names: list[str]
    requests: int
    clients: list = field(default_factory=list)
    """pbft.node.client.Client, one per name, open while the phases run."""
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    """Summary lines, printed after the phases in order."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per completed request, every phase."""
    busy: float = 0.0
    """Seconds spent in workloads, every phase."""
    counts: dict[str, int] = field(default_factory=lambda: {"put": 0, "get": 0})
    """Completed requests by operation, every phase."""
    sent: int = 0
    """Requests sent (completed or not), every phase."""
    observer: object = None
    """A client used only for STATUS polls."""
    crashed: int | None = None
    """The replica the crash phase killed (the Byzantine phase restarts it)."""
    tracer: Any = None
    """The demo's own trace writer (its clients' requests and replies, the crash and the
    restart), merged with the replicas' traces into the viewer page at the end."""


Phase = Callable[[Demo], Awaitable[None]]


def planned(requests: int) -> dict[str, int]:
    """The requests each workload phase sends for `--requests N`: the header adds these
    up, each phase sends its own."""
    half = max(2, requests // 2)
    return {"workload": requests, "crash": half, "byzantine": half}


class Progress:
    """A plain-text progress bar on stderr: `[#####.....] 150/300`, redrawn in place
    (`\r`) only on a terminal; elsewhere (a log file, a pipe) one line when finished."""

    WIDTH = 30

    def __init__(self, total: int, label: str) -> None:
        self.total = max(1, total)
        self.label = label
        self.done = 0
        self._last = -1.0
        self._tty = sys.stderr.isatty()

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.done == self.total or now - self._last >= 0.1:
            self._last = now
            self.draw()

    def draw(self, final: bool = False) -> None:
        if not (self._tty or final):
            return
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        start = "\r" if self._tty else ""
        sys.stderr.write(f"{start}{self.label} [{bar}] {self.done}/{self.total}")
        sys.stderr.flush()

    def finish(self) -> None:
        self.draw(final=True)
        sys.stderr.write("\n")
        sys.stderr.flush()


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# -- phases -----------------------------------------------------------------------------


async def run_workload(
    demo: Demo, total: int, label: str, prefix: bytes, on_done: Callable[[int], None] | None = None
) -> tuple[int, float]:
    """Concurrent clients doing signed puts and gets; every get must see the last put.

    Each client writes only its own keys (under `prefix`, new in each phase), so the
    value the last put of a key wrote is exactly what a later get of it must return (puts
    and gets are linearizable). `on_done(k)` runs after the k-th completed request.
    Returns (completed, elapsed seconds)."""
    from ..node.client import ClientError

    n = len(demo.clients)
    shares = [total // n + (1 if i < total % n else 0) for i in range(n)]
    completed = 0
    progress = Progress(total, label)
    progress.draw()

    async def run_one(index: int, client, share: int) -> None:
        nonlocal completed
        expected: dict[bytes, bytes | None] = {}
        for j in range(share):
            key = b"%s/%s/k%d" % (prefix, client.id.encode(), j % KEYS_PER_CLIENT)
            is_get = j % 3 == 2
            start = trio.current_time()
            try:
                if is_get:
                    demo.sent += 1
                    got = await client.get(key)
                    if got != expected.get(key):
                        demo.failures.append(
                            f"{client.id}: get {key!r} returned {got!r}, expected {expected.get(key)!r}"
                        )
                else:
                    value = b"v%d-%d" % (index, j)
                    demo.sent += 1
                    await client.put(key, value)
                    expected[key] = value
            except (TimeoutError, ClientError) as exc:
                demo.failures.append(f"{label}: {client.id}: request {j} failed: {exc}")
                return
            demo.latencies.append(trio.current_time() - start)
            demo.counts["get" if is_get else "put"] += 1
            completed += 1
            progress.advance()
            if on_done is not None:
                on_done(completed)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i, (client, share) in enumerate(zip(demo.clients, shares, strict=True)):
            nursery.start_soon(run_one, i, client, share)
    elapsed = trio.current_time() - started
    progress.finish()
    demo.busy += elapsed
    if completed != total:
        demo.failures.append(f"{label}: only {completed} of {total} requests completed")
    return completed, elapsed


def _phase_line(label: str, done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{label:<12} {done} of {total} requests in {elapsed:.2f} s ({rate:.1f} req/s)"


async def _views(demo: Demo, timeout: float) -> dict[int, int]:
    return {i: s.view for i, s in (await demo.observer.status(timeout=timeout)).items()}


async def phase_workload(demo: Demo) -> None:
    total = planned(demo.requests)["workload"]
    done, elapsed = await run_workload(demo, total, "workload", b"w")
    demo.lines.append(_phase_line("workload", done, total, elapsed))


async def phase_primary_crash(demo: Demo) -> None:
    """Kill the primary halfway through a workload; watch the view change; finish.

    The view change is measured once, from the kill (taken on both clocks at the same
    instant): the replicas' log lines give when the first backup started it and when a
    quorum had installed the new view, the clients when the first request was answered
    in it. The observer's STATUS polls only say, live, that the view moved."""
    total = planned(demo.requests)["crash"]
    views = await _views(demo, timeout=2.0)
    view = max(views.values(), default=0)
    primary = demo.config.primary(view)
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    t: dict[str, float] = {}
    """Trio-clock instants: kill, answered (the first reply in a later view)."""
    kill_wall = 0.0
    """time.time() at the kill, to compare with the replicas' log timestamps."""
    killed = trio.Event()
    phase_start = trio.current_time()

    def on_done(k: int) -> None:
        nonlocal kill_wall
        if k >= total // 2 and not killed.is_set():
            demo.cluster.kill(primary)
            if demo.tracer is not None:
                demo.tracer.crash(wall_ms(), primary)
            t["kill"], kill_wall = trio.current_time(), time.time()
            killed.set()
        if "kill" in t and "answered" not in t:
            later = [c.core.view for c in demo.clients if c.core.view > view]
            if later:
                t["answered"] = trio.current_time()
                answered_view.append(min(later))

    moved: list[int] = []
    answered_view: list[int] = []

    async def watch() -> None:
        await killed.wait()
        say(f"\nview change: primary {primary} killed (SIGKILL) {t['kill'] - phase_start:.2f} s into the phase")
        while len(moved) < demo.config.quorum:
            seen = await _views(demo, timeout=STATUS_POLL)
            moved[:] = sorted(i for i, v in seen.items() if v > view)
        say(f"\nview change: replicas {', '.join(map(str, moved))} report a view above {view}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        done, elapsed = await run_workload(demo, total, "crash", b"c", on_done)
        with trio.move_on_after(5):
            await killed.wait()
            while len(moved) < demo.config.quorum:
                await trio.sleep(STATUS_POLL)
        nursery.cancel_scope.cancel()
    demo.lines.append(_phase_line("crash", done, total, elapsed))
    if "kill" not in t:
        demo.failures.append("the primary was never stopped")
        return
    alive = [i for i in demo.config.replica_ids() if i != primary]
    new_view = answered_view[0] if answered_view else view + 1
    started = _first_log_times(demo, alive, f"view change to view {view + 1} started", kill_wall)
    installed = sorted(_first_log_times(demo, alive, f"view {new_view} installed", kill_wall))
    q = demo.config.quorum
    parts = []
    if started:
        parts.append(f"{(min(started) - kill_wall) * 1000:.0f} ms the first backup starts a view change (its log)")
    if len(installed) >= q:
        parts.append(f"{(installed[q - 1] - kill_wall) * 1000:.0f} ms view {new_view} installed "
                     f"on a quorum ({q} replicas; their logs)")
    else:
        demo.failures.append(f"view {new_view} was installed on {len(installed)} replicas, not a quorum of {q}")
    if "answered" in t:
        parts.append(f"{(t['answered'] - t['kill']) * 1000:.0f} ms the first request answered in "
                     f"the new view (its client)")
    else:
        demo.failures.append("no request was answered in the new view")
    vct = demo.config.view_change_timeout_ms
    demo.lines.append(
        f"view change  primary {primary} killed (SIGKILL) {t['kill'] - phase_start:.2f} s into "
        f"the crash phase; after the kill:"
    )
    demo.lines += [f"             {part}" for part in parts]
    demo.lines.append(
        f"             (timers: clients retransmit to every replica after {vct // 4} ms; a "
        f"backup starts a view change when a request it heard of is not ordered within "
        f"{vct // 2} ms or not executed within {vct} ms)"
    )
    demo.crashed = primary


def _first_log_times(demo: Demo, ids: list[int], needle: str, after: float) -> list[float]:
    """Per replica, the wall-clock time of its first JSON log line containing `needle`
    logged after `after`."""
    found = []
    for i in ids:
        try:
            with open(demo.cluster.log_path(i), encoding="utf-8", errors="replace") as fh:  # type: ignore[attr-defined]
                for line in fh:
                    if needle not in line:
                        continue
                    try:
                        ts = float(json.loads(line)["ts"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if ts >= after:
                        found.append(ts)
                        break
        except OSError:
            pass
    return found


async def phase_byzantine(demo: Demo) -> None:
    """Restart the crashed replica as a Byzantine backup and run a workload: at most f
    replicas are faulty, so every request completes and every get sees the last put."""
    from .launcher import LaunchError

    views = await _views(demo, timeout=2.0)
    view = max(views.values(), default=0)
    target = demo.crashed
    if target is None or target == demo.config.primary(view):
        target = next(i for i in demo.config.replica_ids() if i != demo.config.primary(view))
    cluster = demo.cluster
    cluster.behaviours[target] = BYZANTINE_BEHAVIOUR  # type: ignore[attr-defined]
    print(
        f"byzantine: replica {target} restarted with --behaviour {BYZANTINE_BEHAVIOUR} "
        f"(a backup in view {view})",
        file=sys.stderr,
    )
    try:
        await trio.to_thread.run_sync(cluster.restart, target)  # type: ignore[attr-defined]
        if demo.tracer is not None:
            demo.tracer.restart(wall_ms(), target, False)
    except LaunchError as exc:
        demo.failures.append(f"replica {target} did not restart: {exc}")
        return
    total = planned(demo.requests)["byzantine"]
    done, elapsed = await run_workload(demo, total, "byzantine", b"b")
    demo.lines.append(_phase_line("byzantine", done, total, elapsed))
    outcome = "every request completed" if done == total else f"{total - done} requests did not complete"
    demo.lines.append(
        f"byzantine    replica {target} ran {BYZANTINE_BEHAVIOUR} (PREPAREs and COMMITs for digests "
        f"nobody pre-prepared); {outcome}"
    )


def phase_summary_lines(demo: Demo) -> None:
    lat = sorted(x * 1000 for x in demo.latencies)
    done = len(lat)
    n = len(demo.clients)
    demo.lines += [
        f"requests     {demo.sent} sent, {done} completed ({demo.counts['put']} puts, "
        f"{demo.counts['get']} gets) by {n} clients",
        f"throughput   {done / demo.busy if demo.busy > 0 else 0.0:.1f} req/s ({done} completed "
        f"in {demo.busy:.2f} s of workload, every phase)",
        f"latency ms   p50 {_percentile(lat, 50):.1f}  p90 {_percentile(lat, 90):.1f}  "
        f"p99 {_percentile(lat, 99):.1f}  (per completed request, as its client saw it)",
    ]


async def phase_status(demo: Demo) -> None:
    """The totals, and each replica's view, last executed sequence number and stable
    checkpoint."""
    phase_summary_lines(demo)
    statuses = await demo.observer.status(timeout=5.0)
    demo.lines.append(f"{'replica':>7}  {'view':>5}  {'executed':>8}  {'stable':>8}")
    for i in demo.config.replica_ids():
        demo.lines.append(status_row(i, statuses.get(i)))
    if len(statuses) < demo.config.quorum:
        demo.failures.append(f"only {len(statuses)} replicas answered the status query")


def status_row(replica: int, s: Any) -> str:
    """One replica's line of the summary (`s` its STATUS, None if it did not answer). A
    stable checkpoint above what it executed means it learnt of a checkpoint 2f+1 others
    took before it got there (the Byzantine phase restarts a replica, which then lags):
    it is fetching that checkpoint's state, which the line says."""
    if s is None:
        return f"{replica:>7}  unreachable"
    line = f"{replica:>7}  {s.view:>5}  {s.last_executed:>8}  {s.stable_seq:>8}"  # epoch 0: no changes here
    if s.last_executed < s.stable_seq:
        line += "  catching up: fetching the state of its stable checkpoint (state transfer)"
    return line


PHASES: list[Phase] = [phase_workload, phase_primary_crash, phase_byzantine, phase_status]


# -- driver -----------------------------------------------------------------------------


async def run_phases(demo: Demo, phases: list[Phase]) -> None:
    from ..node.client import open_client

    async with AsyncExitStack() as stack:
        for name in demo.client_names:
            client = await stack.enter_async_context(
                open_client(demo.cluster_path, name, timeout=CALL_TIMEOUT, tracer=demo.tracer)
            )
            demo.clients.append(client)
        demo.observer = await stack.enter_async_context(
            open_client(demo.cluster_path, OBSERVER, timeout=CALL_TIMEOUT)
        )
        for phase in phases:
            await phase(demo)


# -- the viewer page of the run --------------------------------------------------------------


def open_demo_trace(trace_dir: str, config: ClusterConfig, names: list[str]) -> Any:
    """The demo's own trace (its clients' messages, the kill and the restart), beside the
    replicas' (`LocalCluster(trace_dir=...)`)."""
    from ..node.tracing import open_trace

    os.makedirs(trace_dir, exist_ok=True)
    return open_trace(os.path.join(trace_dir, "driver.jsonl"), "driver", config.n, config.f, [], names,
                      scenario="pbft demo")


def write_viewer(demo: Demo, trace_dir: str, html_path: str | None) -> str:
    """Merge every trace of the run and write its viewer page (pbft trace html); the
    summary line naming the page, or why there is none. Never raises: the demo's
    verdict does not depend on its picture."""
    from ..trace import html, model
    from ..trace.merge import merge_files

    try:
        if demo.tracer is not None:
            demo.tracer.close()
            demo.tracer = None
        out_dir = os.path.dirname(os.path.abspath(html_path)) if html_path else tempfile.mkdtemp(prefix="pbft-demo-view-")
        page = os.path.abspath(html_path) if html_path else os.path.join(out_dir, "run.html")
        os.makedirs(out_dir, exist_ok=True)
        trace = page[: -len(".html")] + ".jsonl" if page.endswith(".html") else page + ".jsonl"
        paths = [os.path.join(trace_dir, f) for f in sorted(os.listdir(trace_dir)) if f.endswith(".jsonl")]
        merge_files([p for p in paths if os.path.getsize(p) > 0], trace)
        m = model.build(trace)
        html.write(m, page)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, never fatal
        return f"viewer       not written: {type(exc).__name__}: {exc}"
    return (f"viewer       file://{page} ({len(m.arrows)} messages; open it in a browser: the crash, "
            f"the view change and the Byzantine replica's messages, drawn)")
