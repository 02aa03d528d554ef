"""Choosing one run of a trace file that holds several (`pbft scenario run A B --trace
OUT` writes every run into OUT, each starting with its header).

`--run` of the trace commands takes a run's number (1 for the first) or a piece of its
scenario's name; without it, the first run with a violation, or else the first run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..sim.trace import TraceError, read_trace, split_runs


@dataclass(frozen=True)
class Chosen:
    index: int
    """1 for the file's first run."""
    records: list[dict[str, Any]]
    names: list[str]
    """Every run's scenario name, in file order (one: the file holds one run)."""
    violated: list[int]
    """The numbers of the runs with a violation."""

    def others(self) -> list[str]:
        """One line per run, for a file with several: its number, name, and whether it
        failed; the chosen one marked."""
        return [
            f"{'*' if i == self.index else ' '} --run {i}: {name}{'  (violation)' if i in self.violated else ''}"
            for i, name in enumerate(self.names, 1)
        ]


def load(path: str, run: str | None = None) -> Chosen:
    """One run of the trace at `path` (module docstring); UsageError (one sentence) for a
    file that is not a trace or a `run` that names none of its runs."""
    try:
        runs = split_runs(read_trace(path))
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; is this a trace file?") from None
    names = [str(r[0].get("scenario", "")) for r in runs]
    violated = [i for i, r in enumerate(runs, 1) if any(rec.get("type") == "violation" for rec in r)]
    k = _pick(path, run, names, violated)
    return Chosen(k, runs[k - 1], names, violated)


def _pick(path: str, run: str | None, names: list[str], violated: list[int]) -> int:
    if run is None:
        return violated[0] if violated else 1
    if run.isdigit():
        k = int(run)
        if 1 <= k <= len(names):
            return k
        raise UsageError(f"--run {run}: {path} holds {len(names)} run{'s' if len(names) != 1 else ''}.")
    matches = [i for i, name in enumerate(names, 1) if run.lower() in name.lower()]
    if not matches:
        raise UsageError(f"--run {run!r}: no run of {path} has that in its scenario's name.")
    return matches[0]
