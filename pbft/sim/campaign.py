"""Fuzz campaigns: many seeds over several processes, in shards, merged (issue 21, item 2).

Theory of operation. A fuzz seed's run depends on nothing but the seed and the campaign's
options (`Options`: f, mode, broken core, behaviours): `pbft.sim.fuzz.scenario_of` draws
its scenario from RNGs seeded by it, and the simulator is deterministic. So a campaign can
run its seeds in any order, in any process, and on any machine, and get the same runs.

* `run_seed` is one seed's whole job: generate, run, and on a violation shrink it at once,
  write the shrunk scenario file (`OUT_DIR/fuzz-SEED.toml`, the scenario file format,
  replayable with `pbft scenario run`) and, with a trace directory, its trace and viewer
  page. It returns a `SeedOutcome`: small and picklable, what the parent needs to report.
  An exception that escapes a run (a bug of the simulator or of the generator, not a
  protocol violation: those are the oracle's `exception` check) becomes the outcome's
  `crash`, a traceback summary, and the seed's scenario is written with it as comments.
* `run_campaign` runs seeds with `jobs` worker processes (a `spawn` context: a worker
  starts from a fresh interpreter, nothing inherited by accident) or, with one job, in
  this process. Seeds are handed out in order, at most 2 x jobs at a time, and outcomes
  stream back as they finish, each passed to `on_outcome` (the command line prints a
  violation and redraws its progress line there). A worker process that dies (killed,
  out of memory) breaks the pool: the seeds it had in hand are run again one at a time,
  each in a fresh process, so that the seed that kills its process is reported as a crash
  and the others get their runs; the campaign then goes on with a new pool. Ctrl-C (or
  SIGTERM, which the command line turns into it) stops the campaign: workers ignore
  SIGINT and are terminated by the parent, files already written stay (each is written
  to a temporary name and renamed), and the result says `interrupted`.
* `shard_range(start, seeds, I, K)` is the I-th of K contiguous parts of the range, as
  equal as can be: disjoint, and together exactly the range. A shard is a campaign of its
  own; `merge` combines shard results, refusing results of different options and seed
  ranges that overlap.

A `Campaign` result is JSON (`Campaign.to_json`, docs/formats.md "Fuzz results"): the
options, the planned range and shard, the `ranges` of seeds actually run, the violations
and crashes in seed order, and `runs_digest`, the XOR over the seeds run of
SHA-256("SEED TRACE_DIGEST"): order-free, so the digest of a merge is the XOR of its
parts', and two campaigns over the same seeds have equal digests exactly when (barring
collisions) every seed ran the same. Timing fields (`seconds`, `runs_per_second`,
`jobs`, `merged_from`) aside, the merge of a campaign's shards equals the unsharded
campaign's result.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import hashlib
import json
import math
import multiprocessing
import os
import re
import signal
import stat
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .coverage import never_reached
from .fuzz import FuzzViolation, describe, scenario_of, shrunk_violation
from .scenario import to_toml
from .simulation import run_scenario

FORMAT = "pbft-fuzz/1"
"""The `format` field of a campaign's JSON result."""
TIMING_FIELDS = ("seconds", "runs_per_second", "jobs", "merged_from")
"""Fields of a result that depend on the machine and the way it ran, not on the runs."""
IN_FLIGHT = 2
"""Seeds handed out per worker at a time: one running, one queued."""
CRASH_LINES = 12
"""Lines of a crash's traceback kept (the last ones)."""


def default_jobs() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def shard_range(start: int, seeds: int, index: int, count: int) -> range:
    """The `index`-th (from 0) of `count` contiguous parts of seeds start .. start+seeds-1,
    their sizes differing by at most one."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be from 0 to {count - 1}")
    return range(start + seeds * index // count, start + seeds * (index + 1) // count)


def parse_shard(text: str) -> tuple[int, int]:
    """`I/K` (0 <= I < K) as (I, K); ValueError (one sentence) otherwise."""
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"expected I/K, the I-th of K shards counting from 0 (as 0/4), not {text!r}") from None
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"{text!r}: K must be at least 1 and I from 0 to K-1")
    return i, k


@dataclass(frozen=True)
class Options:
    """What a seed's run depends on besides the seed: results of campaigns with equal
    options can be merged."""

    f: int = 1
    mode: str = "random"
    broken: str = ""
    behaviours: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SeedOutcome:
    seed: int
    what: str
    """What the seed's scenario draws (`pbft.sim.fuzz.describe`)."""
    digest: str = ""
    """The run's trace digest ("" after a crash)."""
    violation: FuzzViolation | None = None
    tail: tuple[str, ...] = ()
    """The shrunk run's last events, with a violation."""
    crash: str = ""
    """A traceback summary when the run raised (or its process died)."""
    scenario: str = ""
    """With a crash: the seed's scenario file, if it was generated."""
    file: str = ""
    """The scenario file written to the output directory, if any."""
    coverage: tuple[tuple[str, int], ...] = ()
    """What the seed's run reached (pbft.sim.coverage)."""


class NotRegularFile(OSError):
    """`_write`'s refusal of a path naming a directory, a device, a FIFO or a socket."""


def output_target(path: str) -> str:
    """The file a write to `path` replaces: `path` with its symbolic links followed.
    NotRegularFile if that is something other than a regular file (a directory, a device,
    a FIFO, a socket): replacing it by a regular file would destroy it."""
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if stat.S_ISDIR(mode):
        raise NotRegularFile(errno.EISDIR, "it is a directory", path)
    if not stat.S_ISREG(mode):
        raise NotRegularFile(errno.EINVAL, "it is not a regular file (a device, a FIFO or a socket)", path)
    return target


def _write(path: str, text: str) -> None:
    """`text` to `path` whole or not at all (an interrupted campaign leaves no half file):
    to a temporary file beside it, renamed onto it. A symbolic link is followed (its target
    is written); a directory, device, FIFO or socket is refused (NotRegularFile)."""
    target = output_target(path)
    tmp = f"{target}.tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a stale one (a reused process id): never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _summary(exc: BaseException) -> str:
    lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join(lines[-CRASH_LINES:])


def run_seed(
    seed: int,
    opts: Options,
    out_dir: str | None = None,
    trace_dir: str | None = None,
    on_trace: Callable[[str], str] | None = None,
) -> SeedOutcome:
    """One seed's run, shrunk and written on a violation (module docstring)."""
    s = None
    try:
        behaviours = list(opts.behaviours) if opts.behaviours is not None else None
        s = scenario_of(seed, opts.f, opts.mode, opts.broken, behaviours)
        what = describe(s)
        r = run_scenario(s)
        reached = tuple(r.coverage.items())
        if not r.violations:
            return SeedOutcome(seed, what, r.trace_digest or "", coverage=reached)
        v, tail = shrunk_violation(seed, s, r, trace_dir, on_trace)
        path = ""
        if out_dir is not None:
            path = os.path.join(out_dir, f"fuzz-{seed}.toml")
            head = f"# pbft fuzz: seed {seed}, {v.check}: {v.detail}\n".replace("\n", " ").rstrip() + "\n"
            _write(path, head + v.toml)
        return SeedOutcome(seed, what, r.trace_digest or "", v, tuple(tail), file=path, coverage=reached)
    except Exception as exc:  # noqa: BLE001 - a crash is reported with its seed, never fatal
        crash = _summary(exc)
        text = to_toml(s) if s is not None else ""
        path = ""
        if out_dir is not None and text:
            path = os.path.join(out_dir, f"fuzz-{seed}.toml")
            comments = "".join(f"# {line}\n" for line in crash.splitlines())
            _write(path, f"# pbft fuzz: seed {seed} crashed the simulator:\n{comments}{text}")
        return SeedOutcome(seed, describe(s) if s is not None else "", crash=crash, scenario=text, file=path)


Runner = Callable[..., SeedOutcome]


def _guarded(runner: Runner, seed: int, *args) -> SeedOutcome:
    """`runner(seed, *args)`, an exception it lets out made a crash outcome."""
    try:
        return runner(seed, *args)
    except Exception as exc:  # noqa: BLE001
        return SeedOutcome(seed, "", crash=_summary(exc))


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _seed_hash(seed: int, digest: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed} {digest or 'crash'}".encode()).digest(), "big")


def coalesce(seeds: Iterable[int]) -> list[list[int]]:
    """Sorted seeds as half-open [first, end) ranges: [0, 1, 2, 5] -> [[0, 3], [5, 6]]."""
    out: list[list[int]] = []
    for s in sorted(seeds):
        if out and out[-1][1] == s:
            out[-1][1] = s + 1
        else:
            out.append([s, s + 1])
    return out


@dataclass
class Campaign:
    """A campaign's result; `to_json` is its JSON form (docs/formats.md)."""

    opts: Options
    start: int
    seeds: int
    shard: str | None = None
    jobs: int = 1
    done: set[int] = field(default_factory=set)
    violations: list[SeedOutcome] = field(default_factory=list)
    crashes: list[SeedOutcome] = field(default_factory=list)
    digest: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    coverage: Counter = field(default_factory=Counter)
    """What the runs reached, summed (pbft.sim.coverage)."""

    @property
    def runs(self) -> int:
        return len(self.done)

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> bool:
        return bool(self.violations or self.crashes)

    def add(self, o: SeedOutcome) -> None:
        self.done.add(o.seed)
        self.digest ^= _seed_hash(o.seed, o.digest)
        for item, count in o.coverage:
            self.coverage[item] += count
        if o.violation is not None:
            self.violations.append(o)
        if o.crash:
            self.crashes.append(o)

    def to_json(self) -> dict:
        def violation(o: SeedOutcome) -> dict:
            v = o.violation
            assert v is not None
            return {"seed": v.seed, "check": v.check, "detail": v.detail, "scenario": v.toml,
                    **({"trace": v.trace} if v.trace else {}), **({"page": v.page} if v.page else {}),
                    **({"file": o.file} if o.file else {})}

        def crash(o: SeedOutcome) -> dict:
            return {"seed": o.seed, "error": o.crash, "scenario": o.scenario, **({"file": o.file} if o.file else {})}

        return {
            "format": FORMAT,
            "mode": self.opts.mode,
            "f": self.opts.f,
            "broken": self.opts.broken,
            "behaviours": list(self.opts.behaviours) if self.opts.behaviours is not None else None,
            "start": self.start,
            "seeds": self.seeds,
            "shard": self.shard,
            "ranges": coalesce(self.done),
            "runs": self.runs,
            "violations": [violation(o) for o in sorted(self.violations, key=lambda o: o.seed)],
            "crashes": [crash(o) for o in sorted(self.crashes, key=lambda o: o.seed)],
            "runs_digest": f"{self.digest:064x}",
            "interrupted": self.interrupted,
            "jobs": self.jobs,
            "seconds": round(self.seconds, 3),
            "runs_per_second": round(self.runs_per_second, 2),
            "coverage": dict(sorted(self.coverage.items())),
            "never_reached": never_reached(self.coverage),
        }


def run_campaign(
    seeds: range,
    opts: Options,
    jobs: int = 1,
    out_dir: str | None = None,
    trace_dir: str | None = None,
    on_trace: Callable[[str], str] | None = None,
    on_outcome: Callable[[SeedOutcome], None] | None = None,
    start: int | None = None,
    total: int | None = None,
    shard: str | None = None,
    runner: Runner = run_seed,
) -> Campaign:
    """Run every seed of `seeds` (module docstring). `start`/`total`: the campaign's whole
    range when `seeds` is a shard of it (`shard`, as "I/K"). `runner` is `run_seed` but
    for tests (a module-level function, so that a worker can import it)."""
    result = Campaign(opts, seeds.start if start is None else start, len(seeds) if total is None else total,
                      shard, jobs)
    for d in (out_dir, trace_dir):
        if d:
            os.makedirs(d, exist_ok=True)
    args = (opts, out_dir, trace_dir, on_trace)

    def take(o: SeedOutcome) -> None:
        result.add(o)
        if on_outcome is not None:
            on_outcome(o)

    t0 = time.perf_counter()
    try:
        if jobs <= 1 or len(seeds) <= 1:
            for seed in seeds:
                take(_guarded(runner, seed, *args))
        else:
            _parallel(iter(seeds), min(jobs, len(seeds)), runner, args, take)
    except KeyboardInterrupt:
        result.interrupted = True
    result.seconds = time.perf_counter() - t0
    return result


def _pool(jobs: int) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_worker_init)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (Ctrl-C, or a broken pool)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)


def _parallel(seeds, jobs: int, runner: Runner, args: tuple, take: Callable[[SeedOutcome], None]) -> None:
    pool = _pool(jobs)
    pending: dict[cf.Future, int] = {}
    try:
        while True:
            lost: list[int] = []
            while len(pending) < IN_FLIGHT * jobs:
                seed = next(seeds, None)
                if seed is None:
                    break
                try:
                    pending[pool.submit(_guarded, runner, seed, *args)] = seed
                except cf.process.BrokenProcessPool:  # a worker died since the last wait
                    lost.append(seed)
                    break
            if not pending and not lost:
                return
            if not lost:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda fu: pending[fu]):
                    seed = pending.pop(fut)
                    try:
                        outcome = fut.result()
                    except cf.process.BrokenProcessPool:
                        lost.append(seed)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. an outcome that would not pickle
                        outcome = SeedOutcome(seed, "", crash=_summary(exc))
                    take(outcome)
            if lost:
                # A worker died: every seed in hand is lost with the pool. Each is run
                # again alone, so that the one that kills its process is named.
                lost += list(pending.values())
                pending.clear()
                _stop(pool)
                for seed in sorted(lost):
                    take(_alone(seed, runner, args))
                pool = _pool(jobs)
    finally:
        _stop(pool)


def _alone(seed: int, runner: Runner, args: tuple) -> SeedOutcome:
    pool = _pool(1)
    try:
        return pool.submit(_guarded, runner, seed, *args).result()
    except cf.process.BrokenProcessPool:
        return SeedOutcome(seed, "", crash="the worker process running this seed died (killed, out of "
                                             "memory, or it exited); run it alone with --jobs 1 to see why")
    finally:
        _stop(pool)


class MergeError(ValueError):
    """Results that cannot be merged; the message is one sentence."""


MATCH_FIELDS = ("mode", "f", "broken", "behaviours")
REQUIRED_FIELDS = (*MATCH_FIELDS, "start", "seeds", "ranges", "runs", "violations", "runs_digest", "seconds")
MAX_SEED = 2**63 - 1
"""The largest seed (a scenario file's `seed` is 0 .. 2**63-1); also the bound of every
count in a result file."""
MAX_SECONDS = 2.0**63
"""The bound of a result's `seconds`: the sum over any merge stays finite."""
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SHOWN = 40


class _NotJSONConstant(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NotJSONConstant(name)


def load_result(name: str, data: bytes) -> dict:
    """A result file's bytes (`name`: the file, for messages) parsed and checked against
    the format (docs/formats.md "Fuzz results", `check_result`); MergeError (one
    sentence) if it is not UTF-8, not JSON, or not a result."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MergeError(f"{name} is not a fuzz result file: byte {exc.start} is not UTF-8 text.") from None
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except _NotJSONConstant as exc:
        raise MergeError(f"{name} is not a fuzz result file: it holds {exc}, which is not a JSON number.") from None
    except json.JSONDecodeError as exc:
        raise MergeError(f"{name} is not JSON: {exc}.") from None
    except RecursionError:
        raise MergeError(f"{name} is not a fuzz result file: its JSON is nested too deeply.") from None
    except ValueError:  # an integer of more digits than Python converts
        raise MergeError(f"{name} is not a fuzz result file: it holds a number too long to read.") from None
    check_result(name, doc)
    return doc


def _shown(value) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _is_int(value, lo: int = 0, hi: int = MAX_SEED) -> bool:
    return type(value) is int and lo <= value <= hi


def check_result(name: str, r) -> None:
    """MergeError (one sentence naming the file `name` and the field) unless `r` is a
    result in the documented format: every field `merge` reads of the right type and
    range, `ranges` sorted, disjoint, inside the planned range and holding `runs` seeds,
    and every violation and crash of a seed that ran."""
    if not isinstance(r, dict) or r.get("format") != FORMAT:
        raise MergeError(f"{name} is not a result of `pbft fuzz --json` or `-o` (no \"format\": \"{FORMAT}\").")
    lacking = [k for k in REQUIRED_FIELDS if k not in r]
    if lacking:
        raise MergeError(f"{name} lacks the field{'s' if len(lacking) > 1 else ''} {', '.join(lacking)}.")

    def bad(key: str, what: str, value=None, where: str = "") -> MergeError:
        value = r[key] if value is None and not where else value
        return MergeError(f"{name}: {where or repr(key)} must be {what}, not {_shown(value)}.")

    if not isinstance(r["mode"], str) or not r["mode"]:
        raise bad("mode", "a non-empty string")
    if not _is_int(r["f"], 1):
        raise bad("f", "a positive integer")
    if not isinstance(r["broken"], str):
        raise bad("broken", "a string (\"\" for none)")
    behaviours = r["behaviours"]
    if behaviours is not None and not (isinstance(behaviours, list)
                                       and all(isinstance(b, str) and b for b in behaviours)):
        raise bad("behaviours", "null or a list of behaviour names")
    if not _is_int(r["start"]):
        raise bad("start", f"an integer from 0 to {MAX_SEED}")
    if not _is_int(r["seeds"]) or r["start"] + r["seeds"] > MAX_SEED + 1:
        raise bad("seeds", f"a non-negative integer with start + seeds at most {MAX_SEED + 1}")
    shard = r.get("shard")
    if shard is not None:
        try:
            if not isinstance(shard, str):
                raise ValueError
            parse_shard(shard)
        except ValueError:
            raise bad("shard", "null or \"I/K\" (0 <= I < K)", shard) from None
    ranges = r["ranges"]
    if not isinstance(ranges, list):
        raise bad("ranges", "a list of [first, end) pairs")
    lo, hi = r["start"], r["start"] + r["seeds"]
    at = lo
    for i, pair in enumerate(ranges):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(x, 0, MAX_SEED + 1) for x in pair)
                and pair[0] < pair[1]):
            raise bad("ranges", "a pair of integers [first, end) with first < end", pair, f"'ranges' item {i}")
        if pair[0] < lo or pair[1] > hi:
            raise bad("ranges", f"inside the planned seeds, {lo} to {hi - 1} ('start', 'seeds')", pair,
                      f"'ranges' item {i}")
        if pair[0] < at:
            raise bad("ranges", "after the one before it (the pairs sorted and disjoint)", pair,
                      f"'ranges' item {i}")
        at = pair[1]
    ran = sum(b - a for a, b in ranges)
    if not _is_int(r["runs"]):
        raise bad("runs", "a non-negative integer")
    if r["runs"] != ran:
        raise MergeError(f"{name}: 'runs' is {r['runs']} but 'ranges' hold {ran} seeds.")

    def ran_seed(seed) -> bool:
        return _is_int(seed) and any(a <= seed < b for a, b in ranges)

    entries = {"violations": (("check", "detail", "scenario"), ("file", "trace", "page")),
               "crashes": (("error", "scenario"), ("file",))}
    for key, (needed, optional) in entries.items():
        items = r.get(key, [])
        if not isinstance(items, list):
            raise bad(key, "a list", items)
        for i, item in enumerate(items):
            where = f"{key!r} item {i}"
            if not isinstance(item, dict):
                raise bad(key, "an object", item, where)
            if not ran_seed(item.get("seed")):
                raise bad(key, "the seed of a run in 'ranges'", item.get("seed"), f"{where}'s 'seed'")
            for k in needed:
                if not isinstance(item.get(k), str):
                    raise bad(key, "a string", item.get(k), f"{where}'s {k!r}")
            for k in optional:
                if k in item and not isinstance(item[k], str):
                    raise bad(key, "a string", item[k], f"{where}'s {k!r}")
    if not isinstance(r["runs_digest"], str) or not _HEX64.fullmatch(r["runs_digest"]):
        raise bad("runs_digest", "64 hex digits")
    if not isinstance(r.get("interrupted", False), bool):
        raise bad("interrupted", "true or false")
    if not _is_int(r.get("jobs", 1), 1):
        raise bad("jobs", "a positive integer")
    for key in ("seconds", "runs_per_second"):
        value = r.get(key, 0)
        if type(value) not in (int, float) or not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
            raise bad(key, "a non-negative number", value)
    coverage = r.get("coverage", {})
    if not isinstance(coverage, dict):
        raise bad("coverage", "an object of counts", coverage)
    for item, count in coverage.items():
        if not _is_int(count):
            raise bad("coverage", "a non-negative integer", count, f"'coverage' item {item!r}")
    for key in ("never_reached", "merged_from"):
        value = r.get(key, [])
        if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            raise bad(key, "a list of strings", value)
    if "twins" in r and not isinstance(r["twins"], dict):
        raise bad("twins", "an object", r["twins"])


def merge(results: list[tuple[str, dict]]) -> dict:
    """One result of several (`(name, JSON)` pairs, e.g. a campaign's shards): each a
    valid result (`check_result`), equal options, no seed run twice (MergeError otherwise)."""
    if not results:
        raise MergeError("nothing to merge.")
    for name, r in results:
        check_result(name, r)
    first_name, first = results[0]
    for name, r in results[1:]:
        for key in MATCH_FIELDS:
            if r.get(key) != first.get(key):
                raise MergeError(f"{name} and {first_name} ran different campaigns: {key} "
                                 f"{_shown(r.get(key))} and {_shown(first.get(key))}.")
    spans = sorted((a, b, name) for name, r in results for a, b in r["ranges"])
    for (_, b1, n1), (a2, b2, n2) in zip(spans, spans[1:], strict=False):
        if a2 < b1:
            both = f"{n1} and {n2} both" if n1 != n2 else f"{n1} twice"
            raise MergeError(f"{both} ran seeds {a2} to {min(b1, b2) - 1}: the results overlap.")
    digest = 0
    for _, r in results:
        digest ^= int(r["runs_digest"], 16)
    lo = min(r["start"] for _, r in results)
    hi = max(r["start"] + r["seeds"] for _, r in results)
    seconds = sum(r["seconds"] for _, r in results)
    runs = sum(r["runs"] for _, r in results)
    out = {key: first.get(key) for key in ("format", *MATCH_FIELDS)}
    out.update(
        start=lo,
        seeds=hi - lo,
        shard=None,
        ranges=coalesce_ranges([[a, b] for a, b, _ in spans]),
        runs=runs,
        violations=sorted((v for _, r in results for v in r["violations"]), key=lambda v: v["seed"]),
        crashes=sorted((c for _, r in results for c in r.get("crashes", [])), key=lambda c: c["seed"]),
        runs_digest=f"{digest:064x}",
        interrupted=any(r.get("interrupted") for _, r in results),
        jobs=max(r.get("jobs", 1) for _, r in results),
        seconds=round(seconds, 3),
        runs_per_second=round(runs / seconds, 2) if seconds > 0 else 0.0,
        merged_from=[name for name, _ in results],
    )
    total: Counter = Counter()
    for _, r in results:
        for item, count in r.get("coverage", {}).items():
            total[item] += count
    out["coverage"] = dict(sorted(total.items()))
    out["never_reached"] = never_reached(total)
    return out


def coalesce_ranges(spans: list[list[int]]) -> list[list[int]]:
    """Sorted, disjoint half-open ranges with the adjacent ones joined."""
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b])
    return out


def missing(result: dict) -> list[list[int]]:
    """The seeds of a result's planned range it did not run, as half-open ranges."""
    lo, hi = result["start"], result["start"] + result["seeds"]
    if result.get("shard"):
        i, k = parse_shard(result["shard"])
        r = shard_range(lo, hi - lo, i, k)
        lo, hi = r.start, r.stop
    out, at = [], lo
    for a, b in result["ranges"]:
        if a > at:
            out.append([at, a])
        at = max(at, b)
    if at < hi:
        out.append([at, hi])
    return out
