"""`pbft scenario run`, `pbft scenario list`, `pbft fuzz`, `pbft fuzz merge` and `pbft
twins` (README, "Attacking it on purpose"; docs/fuzzing.md).

Exit status: 0 every scenario met its [expect] (or no violation was fuzzed), 1 a check
failed (for fuzz: a violation or a crash of the simulator), 2 usage (raised as
`UsageError`, printed by pbft.cli), 130 a fuzz campaign stopped by Ctrl-C or SIGTERM
(its partial result reported and written). A scenario that gives more
than f replicas a behaviour is run and reported as exceeding the fault assumption; it does
not fail the command, since the protocol promises nothing there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import sys
import time
from dataclasses import replace

from ..adversary.catalogue import CLIENT_REGISTRY, REGISTRY, lookup
from ..errors import UsageError
from ..sim.result import RunResult, result_json
from ..sim.scenario import check_broken, load_scenario
from ..sim.simulation import Simulation
from ..sim.trace import TraceWriter


def replay_command(path: str, seed: int, options: tuple[str, ...] = ()) -> str:
    """`pbft scenario run PATH --seed SEED` and every other option that changed the run
    (`options`, from `run_options`), quoted for a shell."""
    return " ".join(shlex.quote(word) for word in ("pbft", "scenario", "run", path, "--seed", str(seed), *options))


def run_options(args, real: bool = False) -> tuple[str, ...]:
    """The options of `pbft scenario run` besides the files and the seed that change what a
    run does, as given (a replay runs from the same directory): `--real`, `--broken NAME`,
    `--service REF` and each `--service-param KEY=VALUE`. `--trace` and `--json` change
    only what is written, not the run."""
    words: list[str] = ["--real"] if real else []
    if getattr(args, "broken", None):
        words += ["--broken", args.broken]
    if getattr(args, "service", None) is not None:
        words += ["--service", args.service]
        for item in getattr(args, "service_param", None) or []:
            words += ["--service-param", item]
    return tuple(words)


def print_violation(r: RunResult, out=None, path: str = "FILE", options: tuple[str, ...] = ()) -> None:
    """The first violation, the command that replays it (`path`: the scenario file;
    `options`: the other options the run was given, `run_options`) and the trace leading
    to it."""
    out = out or sys.stdout
    for v in r.violations[:1]:
        print(f"  seed {r.seed}: {v.check}: {v.detail}", file=out)
        print(f"  replay: {replay_command(path, r.seed, options)}", file=out)
        print(f"  last {len(r.trace_tail)} events:", file=out)
        for line in r.trace_tail:
            print(f"    {line}", file=out)


def _verdict(r: RunResult) -> str:
    """RunResult.verdict: PASS and EXCEEDS (more faulty replicas than f, never counted
    as a protocol failure) exit 0; FAIL, INCOMPLETE (a real run could not apply part of
    its scenario) and ATTACKER-FAILED (a behaviour's script raised) exit 1."""
    return r.verdict


FAILING = ("FAIL", "INCOMPLETE", "ATTACKER-FAILED")


CHECK_UNITS = {
    "agreement": "executed slots",
    "prepared-uniqueness": "prepared slots",
    "exactly-once": "executed requests",
    "validity": "requests",
    "checkpoint-digests": "stable checkpoints",
    "client-correctness": "client results",
    "resources": "audits",
    "accounting": "refusals, notes and tallies",
    "view-agreement": "live correct replicas in one view",
}


def print_checks(r: RunResult, out=None) -> None:
    """What the oracle checked, one line per check with its figures, then one line per
    faulty node: what it sent, its lies, what the correct replicas refused of it and the
    evidence they collected."""
    out = out or sys.stdout
    order = list(CHECK_UNITS)  # the checks in one order whatever order they first counted in
    checks = sorted(r.checks.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    rows = [(name, f"{n} {CHECK_UNITS.get(name, '')}".rstrip()) for name, n in checks]
    rows = [(name, text + _resources_text(r) if name == "resources" else text) for name, text in rows]
    if r.latency is not None:
        rows.append(("liveness", _latency_text(r.latency)))
    if rows:
        print("  checks:", file=out)
        width = max(len(name) for name, _ in rows)
        for name, text in rows:
            print(f"    {name:<{width}}  {text}", file=out)
    for node, reasons in r.refused.items():
        faulty = r.faulty.get(node)
        head = f"  faulty {node}: "
        if faulty is not None:
            head += f"sent {faulty.sent} messages"
            if faulty.lies is not None:
                lies = sum(faulty.lies.values())
                kinds = ", ".join(f"{n} {k}" for k, n in faulty.lies.items() if n)
                head += f", {lies} lies" + (f" ({kinds})" if kinds else "")
            head += "; "
        print(head + _refused_text(reasons) + (_evidence_text(faulty.evidence) if faulty else ""), file=out)


def _refused_text(reasons: dict[str, int]) -> str:
    total = sum(reasons.values())
    detail = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
    return f"the correct replicas refused {total} of its messages" + (f" ({detail})" if detail else "")


def _evidence_text(evidence: dict[str, int]) -> str:
    if not evidence:
        return "; no evidence against it"
    return "; evidence against it: " + ", ".join(f"{kind} {n}" for kind, n in evidence.items())


def _latency_text(lat) -> str:
    text = f"{lat.completed} requests, worst latency {lat.worst_ms} ms"
    if lat.heal_ms:
        text += (f"; after the last fault healed at {lat.heal_ms} ms, {lat.after_heal} completed, "
                 f"worst {lat.worst_after_heal_ms} ms")
    if lat.bound_ms is None:
        return text + " (not bounded: the scenario does not expect every request to complete)"
    return text + f" (bound {lat.bound_ms} ms)"


def _resources_text(r: RunResult, shown: int = 3) -> str:
    """How many structures were audited and the few that came nearest their bounds."""
    if not r.resources:
        return ""
    near = sorted(
        ((name, p) for name, p in r.resources.items() if p.peak and p.bound),
        key=lambda kv: (-kv[1].peak / kv[1].bound, kv[0]),
    )[:shown]
    text = f" of {len(r.resources)} bounded structures"
    if near:
        text += "; nearest their bound: " + ", ".join(f"{name} {p.peak}/{p.bound}" for name, p in near)
    return text


def print_attacker_failures(r: RunResult, out=None) -> None:
    out = out or sys.stdout
    if r.attacker_failed:
        print(f"  the attacker failed {r.attacker_failure_count} time(s) (not a protocol violation; "
              "those steps ran unaltered):", file=out)
        for line in r.attacker_failures[:3]:
            print(f"    {line}", file=out)


def cmd_scenario_real(args) -> int:
    """`--real`: each file against a throwaway cluster of real processes, one at a time.
    SIGTERM and SIGHUP stop it as Ctrl-C does; however it stops, no replica process and
    no temporary directory is left behind (`_RealRunGuard`)."""
    scenarios, _ = load_guarded(args)
    with _RealRunGuard():
        return _scenario_real(args, scenarios)


class _RealRunGuard:
    """While `--real` runs. SIGTERM and SIGHUP (a `kill`, a CI job cancelled, a terminal
    closed) are handled as Ctrl-C: the SIGINT handler in force is called (Trio's while a
    run's event loop runs, which raises KeyboardInterrupt where that is safe); a later one
    SIGKILLs every replica group at once (launcher.kill_everything) and raises nothing.
    Every temporary directory of the runs is made inside one of this guard's own
    (`tempfile.tempdir`), removed on the way out whatever happened. On the way out nothing
    may interrupt the cleanup: SIGINT, SIGTERM and SIGHUP only SIGKILL the replicas then;
    every replica group still known is SIGKILLed and reaped (a second Ctrl-C that cut the
    runner's own stop short), then the directory is removed."""

    SIGNALS = ("SIGTERM", "SIGHUP")

    def __enter__(self) -> _RealRunGuard:
        import signal
        import tempfile

        self.stopping = False
        self.old: dict[int, object] = {}
        self.parent = tempfile.mkdtemp(prefix="pbft-real-")
        self.tempdir, tempfile.tempdir = tempfile.tempdir, self.parent
        for name in self.SIGNALS:
            sig = getattr(signal, name)
            try:
                self.old[sig] = signal.signal(sig, self._as_ctrl_c)
            except ValueError:  # not the main thread (a test's runner): leave them
                break
        return self

    def _as_ctrl_c(self, signum, frame) -> None:
        import signal

        from ..cluster import launcher

        if self.stopping:
            launcher.kill_everything()
            return
        self.stopping = True
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)  # Trio's defers it to a safe place, the default raises
            return
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        import shutil
        import signal
        import tempfile

        from ..cluster import launcher

        def kill_now(signum, frame) -> None:
            launcher.kill_everything()

        held: dict[int, object] = {}
        try:
            for sig in (signal.SIGINT, *self.old):
                held[sig] = signal.signal(sig, kill_now)
        except ValueError:
            pass
        try:
            launcher.end_everything()
            shutil.rmtree(self.parent, ignore_errors=True)
        finally:
            tempfile.tempdir = self.tempdir
            for sig, handler in held.items():
                signal.signal(sig, self.old.get(sig, handler))  # type: ignore[arg-type]


def load_guarded(args) -> tuple[list, str | None]:
    """load_all, with the user's modules the files name run under a guard
    (watchdog.loading_user_modules): a module that blocks or loops at import is stopped
    after the hook limit, and one that calls os._exit is refused, each one sentence with
    exit status 2 instead of a runner that hangs or vanishes without a word."""
    from ..adversary.base import HookTimeout
    from ..errors import exception_text
    from ..sim.watchdog import ExitCalled, loading_user_modules

    try:
        with loading_user_modules(_loading_given_up):
            return load_all(args)
    except (HookTimeout, ExitCalled) as exc:
        raise UsageError(f"loading the scenario files: {exception_text(exc)}.") from None


def _loading_given_up(hook: str, seconds: float) -> None:
    """A user's module still loading after being interrupted (it swallowed the timeout):
    one sentence, exit status 2 (nothing was started yet)."""
    from ..sim.watchdog import REAL_EXIT

    try:
        sys.stderr.write(f"pbft: a module the scenario names did not finish loading within {seconds:g} s "
                         "of wall-clock time, even after being interrupted; nothing was run.\n")
        sys.stderr.flush()
    finally:
        REAL_EXIT(2)


def _scenario_real(args, scenarios) -> int:
    from ..cluster import realscenario

    trace = getattr(args, "trace", None)
    if trace:
        from .main import check_output_file

        check_output_file(trace, "--trace")  # before the run, not after it
        open(trace, "w", encoding="utf-8").close()  # noqa: SIM115 - each run appends below
    results = []
    failed = False
    for s in scenarios:
        # Each run merges its processes' traces into a file of its own, then joins OUT:
        # the runs follow one another, as in the simulator's traces.
        path = trace + f".run{len(results) + 1}.tmp" if trace else None
        if not args.json:
            for line in realscenario.unapplied(s):
                print(f"INCOMPLETE: {line}", flush=True)
            print(f"running {s.name} with real processes (f = {s.f}, {s.n} replicas)", flush=True)
        r = realscenario.run_real(s, args.seed, out=None if args.json else sys.stdout, trace=path)
        results.append(r)
        if path is not None:
            _append_run(path, trace)
            path = trace
        failed |= _verdict(r) in FAILING
        if not args.json:
            print_run(r, s, f"{r.wall_ms / 1000:.2f} s", trace=path or "", replay_broken=getattr(args, "broken", None))
            realscenario.print_result(r)
            if _verdict(r) in FAILING:
                # Real processes: the same seed gives the same faults, not the same timing.
                print(f"  run again: {replay_command(s.source or 'FILE', r.seed, run_options(args, real=True))} "
                      "(real processes: the same faults and seed, not the same timing)")
    if args.json:
        print(json.dumps([result_json(r) for r in results], indent=2))
    return 1 if failed else 0


def _append_run(part: str, out: str) -> None:
    """One real run's merged trace (`part`, removed after) at the end of `out`."""
    if not os.path.exists(part):  # the run failed before its trace was merged
        return
    with open(part, encoding="utf-8") as src, open(out, "a", encoding="utf-8") as dst:
        for line in src:
            dst.write(line)
    os.remove(part)


def _check_output(path: str, flag: str = "-o") -> None:
    """UsageError (one sentence) now, rather than after a campaign or a merge, if a JSON
    result could not be written to `path` by `_write_json`: its directory missing or not
    writable, or `path` (symbolic links followed) a directory, a device, a FIFO or a socket,
    which a write would replace by a regular file. Nothing is created or changed."""
    from ..sim import campaign

    try:
        target = campaign.output_target(path)
        if os.path.lexists(target) and not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        probe = f"{target}.tmp{os.getpid()}"  # what `_write_json` creates beside it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))
        os.unlink(probe)
    except campaign.NotRegularFile as exc:
        raise UsageError(f"{flag}: will not write {path}: {exc.strerror}.") from None
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write {path}: {exc.strerror or exc}.") from None


def _check_seed(seed: int | None, flag: str = "--seed") -> None:
    """A run's seed is what a scenario file's `seed` may be: 0 .. 2**63-1."""
    from ..sim.campaign import MAX_SEED

    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{flag} must be from 0 to {MAX_SEED} (2**63-1), not {seed}.")


def print_run(r: RunResult, s, figures: str, trace: str = "", replay_broken: str | None = None) -> None:
    """One run's verdict line and what qualifies it, the same for the simulator and
    `--real` (`figures`: what only that mode measures)."""
    mode = ", real" if r.real else ""
    print(f"{_verdict(r)} {r.name} (seed {r.seed}{mode}): {r.requests_completed}/{r.requests_total} "
          f"requests, {r.view_changes} view changes, {figures}")
    if trace:
        print(f"  trace: {trace}")
    print_attacker_failures(r)
    print_checks(r)
    if r.exceeds_fault_assumption:
        print(f"  exceeds the fault assumption: {len(s.faulty_replicas())} faulty replicas with "
              f"f = {s.f}; not a protocol failure")
    if s.broken:
        print(_broken_note(s.broken) + (f" (replay with --broken {replay_broken})" if replay_broken else ""))


def _broken_note(name: str) -> str:
    return (f"  broken on purpose: the correct replicas ran the broken core {name!r} "
            "(pbft.adversary.broken); a FAIL shows the checks catch it")


def load_all(args) -> tuple[list, str | None]:
    """The scenario files, each with `--broken NAME` and `--service REF` applied if given."""
    from ..adversary.loader import service_from_options

    broken = getattr(args, "broken", None)
    if broken is not None:
        check_broken(broken, "--broken")
    ref = getattr(args, "service", None)
    if ref is not None:
        _check_service_file(ref)
    service = service_from_options(ref, getattr(args, "service_param", []), os.getcwd())
    scenarios = [load_scenario(path) for path in args.files]
    if broken:
        scenarios = [replace(s, broken=broken) for s in scenarios]
    if service is not None:
        scenarios = [replace(s, service=service) for s in scenarios]
    return scenarios, broken


def _check_service_file(ref: str) -> None:
    """`--service FILE.py:Class` with no such file: UsageError naming the full path looked
    at (a FILE is relative to the working directory)."""
    from ..adversary.loader import is_file, resolve_path

    where, sep, _ = ref.rpartition(":")
    if sep and where and is_file(where):
        path = resolve_path(where)
        if not os.path.lexists(path):
            raise UsageError(f"--service {ref}: no such service file: looked for {path} (relative to the "
                             "working directory).")


def cmd_scenario_run(args) -> int:
    trace = getattr(args, "trace", None)
    _check_seed(args.seed)
    if args.real:
        return cmd_scenario_real(args)
    scenarios, broken = load_guarded(args)
    paths = [trace] * len(scenarios)
    # One writer for every run: each run writes its header when it starts, so the runs
    # follow one another in the file (pbft.sim.trace.split_runs).
    writer: TraceWriter | None = None
    if trace:
        try:
            writer = TraceWriter(trace)
        except OSError as exc:
            raise UsageError(f"--trace: cannot write {exc.filename}: {exc.strerror}.") from None
    try:
        # Build every simulation first: a bad behaviour parameter is reported before any run.
        sims = [Simulation(s, args.seed, trace=writer) for s in scenarios]
        return _run_sims(args, scenarios, sims, broken, paths)
    finally:
        if writer is not None:
            writer.close()


def _run_sims(args, scenarios, sims, broken, paths) -> int:
    results = []
    failed = False
    for s, sim, path in zip(scenarios, sims, paths, strict=True):
        started = time.perf_counter()
        r = sim.run()
        elapsed = time.perf_counter() - started
        results.append(r)
        failed |= _verdict(r) in FAILING
        if not args.json:
            print_run(r, s, f"{r.virtual_ms} virtual ms, {r.delivered} messages, {elapsed:.2f} s",
                      trace=path, replay_broken=broken)
            if r.violations:
                print_violation(r, path=s.source or "FILE", options=run_options(args))
    if args.json:
        print(json.dumps([result_json(r) for r in results], indent=2))
    return 1 if failed else 0


def cmd_scenario_list(args) -> int:
    """One line per behaviour: name, what it targets, what it does and the parameters
    it accepts (a scenario's [[byzantine]] keys, or `--behaviour NAME:key=value`). With
    references (a name, FILE.py:Class, module:Class), each one's parameters in full."""
    if getattr(args, "refs", None):
        for ref in args.refs:
            describe(ref)
        return 0
    rows = []
    for name, cls in sorted(REGISTRY.items()):
        rows.append((name, "replica", cls.summary, _params(cls)))
    for name, cls in sorted(CLIENT_REGISTRY.items()):
        rows.append((name, "client", cls.summary, _params(cls)))
    width = max(len(r[0]) for r in rows)
    for name, target, summary, params in rows:
        print(f"{name:<{width}}  {target:<7}  {summary}{params}")
    return 0


def describe(ref: str) -> None:
    """One behaviour: its name, target and summary, then each declared parameter with its
    type, default and help (a catalogue class lists its parameter names only)."""
    from ..adversary import catalogue

    try:
        cls = catalogue.lookup(ref)
    except UsageError as first:
        try:
            cls = catalogue.lookup(ref, "client")
        except UsageError:
            raise first from None
    print(f"{ref}: {cls.name} ({cls.targets}): {cls.summary}")
    declared = getattr(cls, "parameters", {}) or {}
    for key, p in declared.items():
        default = "" if p.default is None else f", default {p.default!r}"
        print(f"  {key}: {p.describe()}{default}{'; ' + p.help if p.help else ''}")
    for key in getattr(cls, "allowed", ()):
        if key not in declared:
            print(f"  {key}")
    if not declared and not getattr(cls, "allowed", ()):
        print("  (no parameters)")


def _params(cls: type) -> str:
    allowed = tuple(cls.allowed)
    return f" (parameters: {', '.join(allowed)})" if allowed else ""


class FuzzProgress:
    """`fuzz [#####.....] 120/500 seeds  9.8 runs/s  1 violation  seed 119: equivocate@0
    partition` on stderr: redrawn in place on a terminal (at most every 0.2 s), one line
    every 10 s otherwise (a CI log). `label` (jobs, shard) goes after the counts; a crash
    of the simulator is counted too."""

    WIDTH = 24
    TTY_EVERY = 0.2
    LOG_EVERY = 10.0

    def __init__(self, seeds: int, out=None, label: str = "", title: str = "fuzz", noun: str = "seed") -> None:
        self.seeds = seeds
        self.title = title
        self.noun = noun  # what the runs are counted as: seeds, or `pbft twins`' cases
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.label = label
        self.started = time.perf_counter()
        self.last = self.started
        self.runs = 0
        self.failed = 0
        self.crashed = 0
        self.drawn = False

    def run(self, seed: int, scenario, result: RunResult) -> None:
        """After `fuzz()`'s run of a seed (its `on_run`)."""
        from ..sim.fuzz import describe

        self.tick(seed, describe(scenario), bool(result.violations))

    def outcome(self, o) -> None:
        """After a campaign's seed (`pbft.sim.campaign.SeedOutcome`)."""
        self.tick(o.seed, o.what, o.violation is not None, bool(o.crash))

    def tick(self, seed: int, what: str, failed: bool, crashed: bool = False) -> None:
        self.runs += 1
        self.failed += failed
        self.crashed += crashed
        now = time.perf_counter()
        if now - self.last < (self.TTY_EVERY if self.tty else self.LOG_EVERY) and self.runs != self.seeds:
            return
        self.last = now
        self._draw(f"{self.noun} {seed}: {what}", now)

    def _draw(self, what: str, now: float) -> None:
        filled = int(self.WIDTH * self.runs / self.seeds) if self.seeds else self.WIDTH
        rate = self.runs / (now - self.started) if now > self.started else 0.0
        crashes = f"  {self.crashed} crash{'es' if self.crashed != 1 else ''}" if self.crashed else ""
        label = f"  {self.label}" if self.label else ""
        line = (f"{self.title} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.runs}/{self.seeds} {self.noun}s  "
                f"{rate:.1f} runs/s  {self.failed} violation{'s' if self.failed != 1 else ''}{crashes}"
                f"{label}  {what}")
        if self.tty:
            self.out.write("\r" + line[:160].ljust(160))
            self.drawn = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def clear(self) -> None:
        """Before other output on a terminal: the bar's line blanked (it is drawn again)."""
        if self.drawn:
            self.out.write("\r" + " " * 160 + "\r")
            self.out.flush()
            self.drawn = False

    def done(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


def _viewer_page(trace: str) -> str:
    """The viewer page of a failing seed's trace, beside it (FILE.jsonl -> FILE.html):
    it opens at the violation. A page that cannot be made is said, never fatal."""
    from ..trace import html, model

    page = trace[: -len(".jsonl")] + ".html" if trace.endswith(".jsonl") else trace + ".html"
    try:
        m = model.build(trace)
        html.write(m, page, html.resolve_at(m, None))  # None: at the violation
    except Exception as exc:  # noqa: BLE001 - the fuzz report stands without its picture
        print(f"pbft: no viewer page for {trace}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ""
    return page


def cmd_fuzz(args) -> int:
    from ..sim import campaign

    if getattr(args, "fuzz_command", None) == "merge":
        return cmd_fuzz_merge(args)
    if args.seeds is None:
        raise UsageError("--seeds is required (how many seeds to run), or `pbft fuzz merge FILE...`.")
    if args.seeds < 0 or args.start < 0:
        raise UsageError("--seeds and --start must not be negative.")
    if args.start > campaign.MAX_SEED or args.seeds > campaign.MAX_SEED \
            or args.start + args.seeds > campaign.MAX_SEED + 1:
        raise UsageError(f"--start + --seeds must be at most {campaign.MAX_SEED + 1}: the largest seed is "
                         f"{campaign.MAX_SEED} (2**63-1).")
    if not 1 <= args.f <= 4:
        raise UsageError("--f must be from 1 to 4.")
    jobs = campaign.default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise UsageError("--jobs must be at least 1.")
    broken = getattr(args, "broken", None) or ""
    if broken:
        check_broken(broken, "--broken")
    behaviours = None
    if getattr(args, "behaviours", None) is not None:
        from ..adversary import catalogue, loader

        # A user's file by its absolute path: the scenario file a failure prints replays
        # from anywhere.
        behaviours = [
            loader.absolute(b) if catalogue.is_ref(b) else b
            for b in (b.strip() for b in args.behaviours.split(",")) if b
        ]
        if not behaviours:
            raise UsageError(f"--behaviours {args.behaviours!r} names no behaviour: give catalogue names or "
                             "FILE.py:Class references separated by commas, or leave it out for the whole "
                             "catalogue.")
        for ref in behaviours:
            try:
                lookup(ref, "replica")  # an unknown name or a user file that fails: one sentence
            except UsageError as exc:
                raise UsageError(f"--behaviours: {exc}") from None
        if args.mode != "random":
            raise UsageError("--behaviours restricts the random mode; the mutation mode draws rules.")
    seeds = range(args.start, args.start + args.seeds)
    shard = None
    if args.shard:
        try:
            i, k = campaign.parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(f"--shard: {exc}.") from None
        seeds, shard = campaign.shard_range(args.start, args.seeds, i, k), f"{i}/{k}"
    trace_dir = _make_dir(getattr(args, "trace_dir", None), "--trace-dir")
    out_dir = _make_dir(getattr(args, "out_dir", None), "--out-dir")
    if args.output:
        _check_output(args.output, "-o")
    opts = campaign.Options(args.f, args.mode, broken, tuple(behaviours) if behaviours is not None else None)
    label = f"{jobs} job{'s' if jobs != 1 else ''}"
    if shard:
        label += f", shard {shard} ({f'seeds {seeds.start}-{seeds.stop - 1}' if seeds else 'no seeds'})"
    bar = FuzzProgress(len(seeds), label=label)
    text = not args.json

    def on_outcome(o) -> None:
        bar.outcome(o)
        if not text or not (o.violation or o.crash):
            return
        bar.clear()
        if o.violation is not None:
            from ..sim.fuzz import print_violation

            print_violation(o.violation, list(o.tail), sys.stdout, o.file)
        else:
            print(f"seed {o.seed}: CRASH (a bug of the simulator or the fuzzer, not a protocol verdict)")
            if o.file:
                print(f"  scenario file: {o.file}")
            for line in o.crash.splitlines():
                print(f"    {line}")
        sys.stdout.flush()

    with _sigterm_as_interrupt():
        result = campaign.run_campaign(
            seeds, opts, jobs, out_dir=out_dir, trace_dir=trace_dir,
            on_trace=_viewer_page if trace_dir else None, on_outcome=on_outcome,
            start=args.start, total=args.seeds, shard=shard,
        )
    bar.done()
    summary = (f"{result.runs} runs, {_findings_text(result)}"
               f"{result.runs_per_second:.1f} runs/s ({jobs} job{'s' if jobs != 1 else ''})")
    return _finish_campaign(args, result, result.to_json(), summary, "seeds", broken)


def _coverage_line(doc: dict) -> str:
    """What the campaign reached, and what it never did (pbft.sim.coverage)."""
    from ..sim.coverage import UNIVERSE

    never = doc.get("never_reached", [])
    line = f"coverage: {len(UNIVERSE) - len(never)} of {len(UNIVERSE)} items reached"
    return line + (f"; never: {', '.join(never)}" if never else "")


def cmd_fuzz_merge(args) -> int:
    """`pbft fuzz merge A.json B.json ... [-o OUT]`: shard results into one (docs/fuzzing.md).
    Every file is checked against the result format before anything is merged, and OUT is
    written only once the merge is whole (an existing OUT is kept otherwise)."""
    from ..sim import campaign

    if args.output:
        _check_output(args.output, "-o")
    results = []
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}.") from None
        try:
            results.append((path, campaign.load_result(path, data)))
        except campaign.MergeError as exc:
            raise UsageError(str(exc)) from None
    try:
        merged = campaign.merge(results)
    except campaign.MergeError as exc:
        raise UsageError(str(exc)) from None
    lines = [f"{len(results)} results merged: {merged['runs']} runs (seeds {_ranges_text(merged['ranges'])}), "
             f"{len(merged['violations'])} violations"
             + (f", {len(merged['crashes'])} crashes" if merged["crashes"] else ""),
             _coverage_line(merged)]
    for v in merged["violations"]:
        lines.append(f"  seed {v['seed']}: {v['check']}: {v['detail']}" + (f" ({v['file']})" if v.get("file") else ""))
    for c in merged["crashes"]:
        last = c["error"].splitlines()[-1] if c["error"] else ""
        lines.append(f"  seed {c['seed']}: CRASH: {last}")
    gaps = campaign.missing(merged)
    if gaps:
        lines.append(f"  not run: seeds {_ranges_text(gaps)} (a shard missing or interrupted?)")
    summary = sys.stdout if args.output else sys.stderr
    if args.output:
        _write_json(args.output, merged)
    else:
        print(json.dumps(merged, indent=2, allow_nan=False))
    for line in lines:
        print(line, file=summary)
    return 1 if merged["violations"] or merged["crashes"] else 0


def _ranges_text(ranges) -> str:
    return ", ".join(f"{a}-{b - 1}" if b - a > 1 else f"{a}" for a, b in ranges) or "none"


def _make_dir(path: str | None, flag: str) -> str | None:
    if path:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{flag}: cannot create {path}: {exc.strerror}.") from None
    return path or None


def _write_json(path: str, doc: dict, flag: str = "-o") -> None:
    """`doc` to `path` whole or not at all (pbft.sim.campaign._write: a symbolic link is
    followed; a directory, device, FIFO or socket is refused, never replaced)."""
    from ..sim import campaign

    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    try:
        campaign._write(path, text)
    except campaign.NotRegularFile as exc:
        raise UsageError(f"{flag}: will not write {path}: {exc.strerror}.") from None
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write {path}: {exc.strerror or exc}.") from None


class _sigterm_as_interrupt:
    """While a campaign runs, SIGTERM (a CI job cancelled, a pod stopped) stops it as
    Ctrl-C does: workers ended, the files written kept, the partial result reported."""

    def __enter__(self):
        import signal

        def handler(signum, frame):
            raise KeyboardInterrupt

        try:
            self.old = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (a test's runner): leave it
            self.old = None
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


def cmd_twins(args) -> int:
    """`pbft twins --rounds R`: every Twins schedule of R rounds (pbft.sim.twins) on the
    campaign's process pool; each violation's scenario file written as it is found."""
    import resource
    from functools import partial

    from ..sim import campaign, twins
    from ..sim.fuzz import print_violation as print_found

    if not 1 <= args.rounds <= twins.MAX_ROUNDS:
        raise UsageError(f"--rounds must be from 1 to {twins.MAX_ROUNDS}.")
    _check_seed(args.seed)
    jobs = campaign.default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise UsageError("--jobs must be at least 1.")
    broken = getattr(args, "broken", None) or ""
    if broken:
        check_broken(broken, "--broken")
    total = len(twins.cases(args.rounds))
    indices = range(total)
    shard = None
    if args.shard:
        try:
            i, k = campaign.parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(f"--shard: {exc}.") from None
        indices, shard = campaign.shard_range(0, total, i, k), f"{i}/{k}"
    trace_dir = _make_dir(getattr(args, "trace_dir", None), "--trace-dir")
    out_dir = _make_dir(getattr(args, "out_dir", None), "--out-dir")
    if args.output:
        _check_output(args.output, "-o")
    # The mode names everything a case's run depends on besides its index, so that only
    # shards of one enumeration merge (`pbft fuzz merge`).
    opts = campaign.Options(1, f"twins R={args.rounds} seed={args.seed}", broken)
    label = f"R={args.rounds}, {jobs} job{'s' if jobs != 1 else ''}"
    if shard:
        label += f", shard {shard}"
    bar = FuzzProgress(len(indices), label=label, title="twins", noun="case")
    text = not args.json

    def on_outcome(o) -> None:
        bar.outcome(o)
        if not text or not (o.violation or o.crash):
            return
        bar.clear()
        if o.violation is not None:
            print_found(o.violation, list(o.tail), sys.stdout, o.file, noun="case")
        else:
            print(f"case {o.seed}: CRASH (a bug of the simulator or the enumerator, not a protocol verdict)")
            for line in o.crash.splitlines():
                print(f"    {line}")
        sys.stdout.flush()

    before = _cpu_seconds(resource)
    with _sigterm_as_interrupt():
        result = campaign.run_campaign(
            indices, opts, jobs, out_dir=out_dir, trace_dir=trace_dir,
            on_trace=_viewer_page if trace_dir else None, on_outcome=on_outcome,
            start=0, total=total, shard=shard, runner=partial(twins.run_case, rounds=args.rounds, seed=args.seed),
        )
    bar.done()
    cpu = _cpu_seconds(resource) - before
    doc = result.to_json()
    doc["twins"] = {"rounds": args.rounds, "seed": args.seed, "cases": total, "cpu_seconds": round(cpu, 1)}
    summary = (f"{result.runs} of {total} cases (R={args.rounds}), {_findings_text(result)}"
               f"{result.seconds:.0f} s ({cpu:.0f} s CPU, {jobs} job{'s' if jobs != 1 else ''})")
    return _finish_campaign(args, result, doc, summary, "cases", broken)


def _findings_text(result) -> str:
    crashes = f"{len(result.crashes)} crashes, " if result.crashes else ""
    return f"{len(result.violations)} violations, {crashes}"


def _finish_campaign(args, result, doc: dict, summary: str, units: str, broken) -> int:
    """What `pbft fuzz` and `pbft twins` do with a campaign's result: the JSON file, then
    the JSON or the summary, what was not run, coverage, the broken core's note; the exit
    status (130 interrupted, 1 a violation or crash, else 0)."""
    from ..sim import campaign

    if args.output:
        _write_json(args.output, doc)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(summary)
        if result.interrupted:
            print(f"interrupted: {units} not run: {_ranges_text(campaign.missing(doc))}")
        print(_coverage_line(doc))
        if broken:
            print(_broken_note(broken).strip())
    if result.interrupted:
        return 130
    return 1 if result.failed else 0


def _cpu_seconds(resource) -> float:
    """CPU time of this process and its finished children (the workers), user and system."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        use = resource.getrusage(who)
        total += use.ru_utime + use.ru_stime
    return total
