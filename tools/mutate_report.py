"""The report of a mutation run (docs/mutation.md): kill rate and survivors, per module.

    python tools/mutate_report.py --workdir build/mutate/suite [--mode suite] [-o build/mutate/suite-report]

Reads mutmut's results (<workdir>/mutants/**/*.py.meta), writes OUT.json and OUT.txt, and
prints the text. Mutants listed in tools/mutation_equivalent.txt (one mutant name per line,
then `#` and why it cannot be told apart from the original) are counted apart: the kill
rate is killed (a test failed, or the tests timed out) over the mutants run that are not
listed as equivalent. A listed mutant that a test kills, or that no longer exists, is named
in the report so that the list is kept true.

Mutants listed in tools/mutation_killed.txt (a mutant name, the test that kills it, then
`#` and a note) are counted as killed when mutmut recorded them as survivors: mutmut
chooses a mutant's tests from a map of which test reaches which function, made before the
test was written, or the mutated function runs only at import time, before mutmut switches
the mutant on. `python tools/mutate.py --recheck` runs each listed test against its mutant
again (mutmut's MUTANT_UNDER_TEST switch in its copy of the tree) and names any that no
longer fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT_FILE = ROOT / "tools" / "mutation_equivalent.txt"
KILLED_FILE = ROOT / "tools" / "mutation_killed.txt"

# mutmut's exit statuses (mutmut/stats.py), folded into what the report counts.
STATUS = {
    1: "killed", 3: "killed",
    0: "survived",
    5: "no tests", 33: "no tests",
    36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
    None: "not checked",
    2: "interrupted",
    34: "skipped",
    37: "killed",  # by a type checker: none is configured
}
KINDS = ("killed", "timeout", "survived", "no tests", "suspicious", "equivalent", "not checked")


def status_of(code) -> str:
    return STATUS.get(code, "suspicious")


def load_equivalent(path: Path = EQUIVALENT_FILE) -> dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, why = line.partition("#")
            out[name.strip()] = why.strip()
    return out


def load_killed(path: Path = KILLED_FILE) -> dict[str, str]:
    """Mutant name -> the test that kills it (`static` for an import-time function)."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, test = line.partition(" ")
                out[name] = test.strip()
    return out


def module_of(name: str) -> str:
    """pbft.protocol.log.xǁMessageLogǁadvance__mutmut_3 -> pbft/protocol/log.py"""
    return name.split(".x")[0].replace(".", "/") + ".py" if ".x" in name else name


def function_of(name: str) -> str:
    tail = name.rpartition(".")[2].rsplit("__mutmut_", 1)[0]
    if tail.startswith("x_"):
        return tail[2:]
    return tail[1:].replace("ǁ", ".").strip(".")


def read_results(workdir: Path, only: list[str]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    base = workdir / "mutants"
    for meta in sorted(base.glob("pbft/**/*.py.meta")):
        rel = str(meta.relative_to(base))[: -len(".meta")]
        if only and not any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in only):
            continue
        data = json.loads(meta.read_text())
        durations = data.get("durations_by_key", {})
        for name, code in data["exit_code_by_key"].items():
            results[name] = {
                "module": rel,
                "function": function_of(name),
                "status": status_of(code),
                "exit_code": code,
                "seconds": durations.get(name),
            }
    return results


def diffs(workdir: Path, names: list[str]) -> dict[str, str]:
    """Each mutant's diff, by mutmut's own code (run in the work directory)."""
    if not names:
        return {}
    here = os.getcwd()
    os.chdir(workdir)
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        out = {}
        for name in names:
            try:
                out[name] = get_diff_for_mutant(name, path=module_of(name))
            except Exception as e:  # a report must not fail on one mutant
                out[name] = f"(no diff: {e})"
        return out
    finally:
        os.chdir(here)


def summarize(results: dict[str, dict], equivalent: dict[str, str], killed: dict[str, str] | None = None) -> dict:
    per_module: dict[str, Counter] = defaultdict(Counter)
    for name, r in results.items():
        kind = r["status"]
        if name in equivalent and kind == "survived":
            kind = "equivalent"
        elif killed and name in killed and kind in ("survived", "no tests"):
            kind = "killed"
            per_module[r["module"]]["by hand"] += 1
        per_module[r["module"]][kind] += 1

    def rates(c: Counter) -> dict:
        run = sum(c[k] for k in ("killed", "timeout", "survived", "no tests", "suspicious", "equivalent"))
        judged = run - c["equivalent"]
        detected = c["killed"] + c["timeout"]
        return {
            **{k: c[k] for k in KINDS},
            "by hand": c["by hand"],
            "total": sum(c.values()) - c["by hand"],
            "run": run,
            "kill_rate": round(detected / judged, 4) if judged else None,
        }

    total = sum(per_module.values(), Counter())
    seconds = [r["seconds"] for r in results.values() if r["seconds"] is not None]
    by_status: dict[str, list[float]] = defaultdict(list)
    for r in results.values():
        if r["seconds"] is not None:
            by_status[r["status"]].append(r["seconds"])
    return {
        "totals": rates(total),
        "per_module": {m: rates(c) for m, c in sorted(per_module.items())},
        "seconds_per_mutant": round(sum(seconds) / len(seconds), 2) if seconds else None,
        "seconds_per_mutant_by_status": {k: round(sum(v) / len(v), 2) for k, v in sorted(by_status.items())},
        "seconds_total": round(sum(seconds), 1),
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion k/n: what the kill rate of a random sample
    says of the kill rate of all the mutants it was drawn from."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def text_report(mode: str, summary: dict, survivors: list[dict], stale: list[str]) -> str:
    t = summary["totals"]
    head = ("module", "total", "run", "killed", "(by hand)", "timeout", "survived", "no tests", "suspicious",
            "equivalent", "kill rate")
    rows = [head]
    for m, c in list(summary["per_module"].items()) + [("all", t)]:
        rate = "-" if c["kill_rate"] is None else f"{100 * c['kill_rate']:.1f}%"
        rows.append((m, c["total"], c["run"], c["killed"], c["by hand"], c["timeout"], c["survived"], c["no tests"],
                     c["suspicious"], c["equivalent"], rate))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = [f"mutation run, {mode} mode"]
    lines += ["  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
              for r in rows]
    rate = "-" if t["kill_rate"] is None else f"{100 * t['kill_rate']:.1f}%"
    lines.append(
        f"kill rate {rate}"
        f" (killed or timed out, of the {t['run'] - t['equivalent']} mutants run that are not listed as equivalent;"
        f" {t['by hand']} of the killed by a test run against the mutant by hand, tools/mutation_killed.txt);"
        f" {t['not checked']} not run yet; {summary['seconds_per_mutant']} s per mutant ("
        + ", ".join(f"{k} {v} s" for k, v in summary["seconds_per_mutant_by_status"].items()) + ")"
    )
    if t["not checked"]:
        judged = t["run"] - t["equivalent"]
        lo, hi = wilson(t["killed"] + t["timeout"], judged)
        lines.append(f"not every mutant was run: if those run are a random sample (`--sample`), the kill rate "
                     f"of all is between {100 * lo:.1f}% and {100 * hi:.1f}% (95% Wilson interval)")
    if stale:
        lines.append("listed as equivalent but killed or gone (fix tools/mutation_equivalent.txt): " + ", ".join(stale))
    if survivors:
        lines += ["", f"survivors ({len(survivors)}):"]
        for s in survivors:
            lines += ["", f"{s['name']}  [{s['status']}]", s["diff"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutate" / "suite")
    ap.add_argument("--mode", default="suite")
    ap.add_argument("--only", nargs="*", default=[], help="count only these files or directories")
    ap.add_argument("-o", "--output", type=Path, help="write OUTPUT.json and OUTPUT.txt")
    ap.add_argument("--quiet", action="store_true", help="print the table only, not the survivors")
    ap.add_argument("--names", type=Path, help="count only the mutants named in this file (a sample)")
    args = ap.parse_args(argv)

    results = every = read_results(args.workdir, args.only)
    if args.names:
        wanted = set(args.names.read_text().split())
        results = {n: r for n, r in results.items() if n in wanted}
    if not results:
        print(f"no mutmut results under {args.workdir}/mutants: run `make mutate` first", file=sys.stderr)
        return 2
    equivalent = load_equivalent()
    killed = load_killed()
    summary = summarize(results, equivalent, killed)
    open_names = sorted(n for n, r in results.items()
                        if r["status"] in ("survived", "no tests", "suspicious") and n not in equivalent
                        and not (n in killed and r["status"] in ("survived", "no tests")))
    d = diffs(args.workdir, open_names)
    survivors = [{"name": n, **results[n], "diff": d.get(n, "")} for n in open_names]
    # Judged over every result: a listed mutant left out of a sample is not gone.
    stale = sorted(n for n in equivalent
                   if n in every and every[n]["status"] in ("killed", "timeout")
                   or (n not in every and any(module_of(n) == r["module"] for r in every.values())))
    doc = {"mode": args.mode, **summary, "survivors": survivors, "equivalent_but_killed_or_gone": stale,
           "mutants": results}
    text = text_report(args.mode, summary, survivors, stale)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        args.output.with_suffix(".txt").write_text(text)
    if args.quiet:
        text = text.split("\n\nsurvivors")[0] + "\n"
    sys.stdout.write(text)
    if args.output:
        print(f"written: {args.output.with_suffix('.json')}, {args.output.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
