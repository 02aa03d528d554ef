"""Mutation testing of the protocol core with mutmut (`make mutate`, docs/mutation.md).

    python tools/mutate.py [--mode suite|fuzz] [--jobs N] [--sample P [--seed S]] [PATH ...] [-- MUTANT-GLOB ...]

Each mode has its own work directory, build/mutate/<mode>/, holding links to the tree
(pbft, tests, examples, docs) and a pyproject.toml whose [tool.mutmut] table is the
repository's, narrowed: `only_mutate` to the PATHs given (default: all of pbft/protocol),
and in the fuzz mode the tests to the short fuzz campaign alone
(tests/sim/test_fuzz_short.py). mutmut copies the tree into <workdir>/mutants/ and keeps
its results there, so a run that is stopped goes on where it was, and a mutant whose
function has not changed is not run again. Mutant names after `--` (globs such as
'pbft.protocol.quorum.*') are run again even if they have a result. At the end the report
(tools/mutate_report.py) is written next to the work directory.

`--sample P` runs a uniform random sample of each module's mutants, P percent of them (at
least one), drawn with `--seed` from every mutant of the module and run unless it already
has a result: the kill rate of the sample is an estimate of the module's. The same seed
draws the same sample, so a stopped sampled run goes on where it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "mutate"
LINKS = ("pbft", "tests", "examples", "docs")
FUZZ_SELECTION = ["tests/sim/test_fuzz_short.py"]
MODES = ("suite", "fuzz")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def mutmut_table(mode: str, paths: list[str]) -> dict:
    """The repository's [tool.mutmut], narrowed to `paths` and to the mode's tests."""
    table = dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"])
    if paths:
        table["only_mutate"] = [
            p if p.endswith(".py") or p.endswith("*") else p.rstrip("/") + "/*" for p in paths
        ]
    if mode == "fuzz":
        table["pytest_add_cli_args_test_selection"] = list(FUZZ_SELECTION)
    return table


def write_pyproject(workdir: Path, table: dict) -> None:
    """The repository's pyproject.toml (pytest's options with it) with `table` in place of
    its [tool.mutmut]; rewritten only when it changes, so mutmut's cache is kept."""
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    out, skipping = [], False
    for line in lines:
        if line.startswith("["):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            out.append(line)
    out += ["", "[tool.mutmut]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    text = "\n".join(out) + "\n"
    target = workdir / "pyproject.toml"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def prepare(mode: str, paths: list[str]) -> Path:
    workdir = BUILD / mode
    workdir.mkdir(parents=True, exist_ok=True)
    for name in LINKS:
        link = workdir / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    table = mutmut_table(mode, paths)
    write_pyproject(workdir, table)
    # mutmut records which tests reach which function for the functions it mutated when
    # it collected its stats, and does not collect them again for modules added since:
    # when the modules change, collect them again (one run of the tests).
    # mutmut 3.8 copies the tests (and docs, examples, and the modules it does not
    # mutate) into mutants/ once, when they are missing, and never again: a test added or
    # changed since would not judge any mutant (a survivor's new test would not kill it).
    # Remove those copies before every run; mutmut copies them afresh in a second or two.
    # The copies of the mutated modules stay: mutmut regenerates one whose source is newer.
    copies = workdir / "mutants"
    for name in ("tests", "docs", "examples"):
        shutil.rmtree(copies / name, ignore_errors=True)
    for copy in (copies / "pbft").glob("**/*.py"):
        if not copy.with_name(copy.name + ".meta").exists():
            copy.unlink()
    # mutmut 3.8 also resets every result when the tests it runs change (a test file added
    # to the selection): the record it compares against is kept with its stats, so removing
    # the stats when the selection changes keeps the results. Tests added can only kill
    # more; a survivor is run again by naming it.
    selection = workdir / "selection.txt"
    wanted_tests = json.dumps([table.get(k) for k in ("pytest_add_cli_args_test_selection",
                                                      "pytest_add_cli_args")]) + "\n"
    if not selection.exists() or selection.read_text() != wanted_tests:
        (workdir / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        selection.write_text(wanted_tests)
    mark = workdir / "only_mutate.txt"
    wanted = "\n".join(table["only_mutate"]) + "\n"
    if not mark.exists() or mark.read_text() != wanted:
        (workdir / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        # mutmut takes a copy newer than its source for one it mutated already, and a
        # module copied unmutated by an earlier run is newer: remove every copy. The
        # results stay (*.meta) and are kept for the functions that did not change.
        for copy in (workdir / "mutants" / "pbft").glob("**/*.py"):
            copy.unlink()
        mark.write_text(wanted)
    return workdir


GENERATE = """
import os, sys
import mutmut.__main__ as m
m.set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
m.copy_src_dir()
m.copy_also_copy_files()
m.setup_source_paths()
m.create_mutants(int(sys.argv[1]))
"""


def generate(workdir: Path, jobs: int) -> None:
    """Have mutmut write its mutants (and their names, in each module's .meta) without
    running anything: a sample is drawn from the names."""
    subprocess.run([sys.executable, "-c", GENERATE, str(jobs)], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)


def draw_sample(workdir: Path, percent: float, seed: int) -> tuple[list[str], list[str]]:
    """The names drawn, per module, that have no result yet; and all the names drawn. The
    same seed draws the same names while a module's mutants stay the same (an edit to a
    function renames its mutants, and the module's sample changes)."""
    todo: list[str] = []
    drawn: list[str] = []
    metas = sorted((workdir / "mutants" / "pbft").glob("**/*.py.meta"))
    wanted = set((workdir / "only_mutate.txt").read_text().split())
    for meta in metas:
        module = str(meta.relative_to(workdir / "mutants"))[: -len(".meta")]
        if not any(module == w or (w.endswith("*") and module.startswith(w[:-1])) for w in wanted):
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        names = sorted(codes)
        k = max(1, math.ceil(len(names) * percent / 100)) if names else 0
        # One generator per module, seeded by the module's name: adding a module to the
        # run does not change the others' samples.
        pick = random.Random(f"{seed}:{module}").sample(names, k)
        drawn += pick
        todo += [n for n in pick if codes[n] is None]
    return todo, drawn


def recheck(workdir: Path, only: list[str]) -> int:
    """Run each test of tools/mutation_killed.txt against its mutant in mutmut's copy of the
    tree (MUTANT_UNDER_TEST, as mutmut does): every one must fail. `static` entries (an
    import-time function, checked by applying the mutant to a copy of the source) are
    listed, not run. Returns the number that did not fail."""
    sys.path.insert(0, str(ROOT / "tools"))
    from mutate_report import load_killed, module_of

    copies = workdir / "mutants"
    if not (copies / "tests").exists():
        print(f"mutate: no copy of the tree in {copies}: run `make mutate` first", file=sys.stderr)
        return 1
    # This checkout's tests, not those of mutmut's last run (copied over, not removed
    # first: a mutmut run going on in the same copy keeps finding its files).
    shutil.copytree(ROOT / "tests", copies / "tests", dirs_exist_ok=True)
    alive = 0
    for mutant, test in load_killed().items():
        if only and not any(module_of(mutant) == p or module_of(mutant).startswith(p.rstrip("/") + "/")
                            for p in only):
            continue
        if test == "static":
            print(f"static  {mutant}")
            continue
        env = {**os.environ, "MUTANT_UNDER_TEST": mutant}
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider",
               *test.split()]
        code = subprocess.call(cmd, cwd=copies, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        verdict = "killed" if code == 1 else ("ALIVE" if code == 0 else f"exit {code}")
        alive += code != 1
        print(f"{verdict:7} {mutant}  {test}", flush=True)
    return alive


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, names = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", help="files or directories under pbft/protocol (default: all)")
    ap.add_argument("--mode", choices=MODES, default="suite",
                    help="suite: the fast tests, the scenarios and a short fuzz; fuzz: the short fuzz alone")
    ap.add_argument("--jobs", "-j", type=int, default=1, help="mutants run at once (default 1)")
    ap.add_argument("--sample", type=float, metavar="P",
                    help="run a uniform random sample of P percent of each module's mutants")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    ap.add_argument("--recheck", action="store_true",
                    help="run the tests of tools/mutation_killed.txt against their mutants, and stop")
    ap.add_argument("--report-only", action="store_true", help="only write the report of the results so far")
    args = ap.parse_args(argv)
    for p in args.paths:
        if not (ROOT / p).exists() or not p.startswith("pbft/protocol"):
            ap.error(f"{p}: not a path under pbft/protocol")
    if args.sample is not None and not (0 < args.sample <= 100):
        ap.error("--sample: a percentage above 0 and at most 100")
    if args.sample is not None and names:
        ap.error("--sample draws the mutants to run: give no names after --")

    if args.recheck:
        return 1 if recheck(BUILD / args.mode, args.paths) else 0
    # A report only reads the results: it must not touch mutmut's state.
    workdir = BUILD / args.mode if args.report_only else prepare(args.mode, args.paths)
    status = 0
    sample_file = workdir / "sample.txt"
    if args.sample is not None:
        if not args.report_only:
            generate(workdir, args.jobs)
        todo, drawn = draw_sample(workdir, args.sample, args.seed)
        sample_file.write_text("\n".join(drawn) + "\n")
        print(f"mutate: sample of {args.sample:g}% (seed {args.seed}): {len(drawn)} mutants drawn, "
              f"{len(todo)} without a result", flush=True)
        if args.report_only or not todo:
            args.report_only = True
        else:
            names = todo
    if not args.report_only:
        mutmut = Path(sys.executable).parent / "mutmut"
        cmd = [str(mutmut), "run", "--max-children", str(args.jobs), *names]
        shown = cmd[1:] if len(names) <= 10 else [*cmd[1:4], f"<{len(names)} mutants>"]
        print(f"mutate: {args.mode} mode in {workdir.relative_to(ROOT)}: {' '.join(shown)}", flush=True)
        status = subprocess.call(cmd, cwd=workdir)
    report = [sys.executable, str(ROOT / "tools" / "mutate_report.py"), "--workdir", str(workdir),
              "--mode", args.mode, "-o", str(BUILD / f"{args.mode}-report")]
    if args.paths:
        report += ["--only", *args.paths]
    if args.sample is not None:  # the report of the sample alone: an estimate of the whole
        report += ["--names", str(sample_file)]
    return subprocess.call(report) or status


if __name__ == "__main__":
    sys.exit(main())
