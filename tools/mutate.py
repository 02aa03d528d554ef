"""Mutation testing of the protocol core with mutmut (`make mutate`, docs/mutation.md).

    python tools/mutate.py [--mode suite|fuzz] [--jobs N] [PATH ...] [-- MUTANT-GLOB ...]

Each mode has its own work directory, build/mutate/<mode>/, holding links to the tree
(pbft, tests, examples, docs) and a pyproject.toml whose [tool.mutmut] table is the
repository's, narrowed: `only_mutate` to the PATHs given (default: all of pbft/protocol),
and in the fuzz mode the tests to the short fuzz campaign alone
(tests/sim/test_fuzz_short.py). mutmut copies the tree into <workdir>/mutants/ and keeps
its results there, so a run that is stopped goes on where it was, and a mutant whose
function has not changed is not run again. Mutant names after `--` (globs such as
'pbft.protocol.quorum.*') are run again even if they have a result. At the end the report
(tools/mutate_report.py) is written next to the work directory.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--report-only", action="store_true", help="only write the report of the results so far")
    args = ap.parse_args(argv)
    for p in args.paths:
        if not (ROOT / p).exists() or not p.startswith("pbft/protocol"):
            ap.error(f"{p}: not a path under pbft/protocol")

    # A report only reads the results: it must not touch mutmut's state.
    workdir = BUILD / args.mode if args.report_only else prepare(args.mode, args.paths)
    status = 0
    if not args.report_only:
        mutmut = Path(sys.executable).parent / "mutmut"
        cmd = [str(mutmut), "run", "--max-children", str(args.jobs), *names]
        print(f"mutate: {args.mode} mode in {workdir.relative_to(ROOT)}: {' '.join(cmd[1:])}", flush=True)
        status = subprocess.call(cmd, cwd=workdir)
    report = [sys.executable, str(ROOT / "tools" / "mutate_report.py"), "--workdir", str(workdir),
              "--mode", args.mode, "-o", str(BUILD / f"{args.mode}-report")]
    if args.paths:
        report += ["--only", *args.paths]
    return subprocess.call(report) or status


if __name__ == "__main__":
    sys.exit(main())
