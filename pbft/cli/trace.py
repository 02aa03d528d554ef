"""`pbft trace ...`: the handlers of the trace commands (docs/viewer.md)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from typing import Any

from ..errors import UsageError


def _records(path: str, run: str | None) -> list[dict[str, Any]]:
    """One run of the trace (`--run`), or one sentence (UsageError) on what is wrong."""
    from ..trace.runs import load

    chosen = load(path, run)
    if len(chosen.names) > 1:
        print(f"{path} holds {len(chosen.names)} runs; this is run {chosen.index} "
              f"({chosen.names[chosen.index - 1]})", file=sys.stderr)
    return chosen.records


def _write(out: str | None, lines: Iterable[str], what: str) -> None:
    """`lines` to the file `out`, or stdout for None or "-"."""
    if out in (None, "-"):
        for line in lines:
            sys.stdout.write(line + "\n")
        return
    text = "".join(line + "\n" for line in lines)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"-o: cannot write {out}: {exc.strerror or exc}.") from None
    print(f"{what}: {out}", file=sys.stderr)


def cmd_trace_shiviz(args) -> int:
    """The trace in ShiViz's log format (vector clocks), for its space-time diagram."""
    from ..trace.export import shiviz_lines

    _write(args.out, shiviz_lines(_records(args.file, args.run)), "ShiViz log (paste the first line as its regex)")
    return 0


def cmd_trace_mermaid(args) -> int:
    """A Mermaid sequence diagram of a window of the trace."""
    from ..trace.export import Window, mermaid_lines

    if args.max < 1:
        raise UsageError("--max must be at least 1.")
    for flag, ms in (("--from", args.start), ("--to", args.end)):
        if ms is not None and not (math.isfinite(ms) and ms >= 0):
            raise UsageError(f"{flag} {ms:g}: give a time in ms, 0 or more.")
    if args.start is not None and args.end is not None and args.start > args.end:
        raise UsageError("--from must not be after --to.")
    window = Window(args.start, args.end, args.max)
    _write(args.out, mermaid_lines(_records(args.file, args.run), window), "Mermaid diagram")
    return 0


def cmd_trace_history(args) -> int:
    """The client operations as a Porcupine or Knossos history."""
    from ..trace.export import HistoryFormat, history_lines

    _write(args.out, history_lines(_records(args.file, args.run), HistoryFormat(args.format)), f"{args.format} history")
    return 0


def cmd_trace_html(args) -> int:
    """`pbft trace html FILE -o OUT.html [--at T|violation] [--run K]`: the viewer page of
    one run of a trace."""
    from ..trace import html, model, runs

    started = time.perf_counter()
    chosen = runs.load(args.file, args.run)
    m = model.from_records(chosen.records)
    at = html.resolve_at(m, args.at)
    out = args.output or _default_output(args.file)
    size = html.write(m, out, at)
    took = time.perf_counter() - started
    where = f", opens at {html.ms_text(at - m.t_start)} ms" if at is not None else ""
    print(f"{out}: {len(m.arrows)} messages, {len(m.equivocations)} equivocations, "
          f"{len(m.violations)} violations{where} ({size / 1e6:.2f} MB, {took:.2f} s)")
    if m.ignored:
        print(f"  ({m.ignored} records of kinds this version does not draw were left out)",
              file=sys.stderr)
    if len(chosen.names) > 1:
        print(f"  {args.file} holds {len(chosen.names)} runs; the page shows run {chosen.index} "
              "(* below); --run K for another:")
        for line in chosen.others():
            print(f"    {line}")
    return 0



def _default_output(path: str) -> str:
    """FILE.jsonl -> FILE.html, beside the trace."""
    if path.endswith(".jsonl"):
        return path[: -len(".jsonl")] + ".html"
    if path == "-":
        raise UsageError("give the page's file with -o OUT.html.")
    return path + ".html"


def cmd_trace_merge(args) -> int:
    """Merge real processes' traces into `--out`; one line per source with its clock
    offset, then the totals."""
    from ..trace.merge import merge_files

    merged = merge_files(args.files, args.out)
    for o in merged.header["clock_offsets"]:
        if o["estimated"]:
            how = f"offset {o['offset_ms']:+.3f} ms (error at most {o['bound_ms']:.3f} ms)"
        else:
            how = "offset not estimated (no messages both ways with an estimated source): 0 assumed"
        print(f"  {o['source']} ({o['node']}): {how}")
    clamped = merged.clamped
    print(f"merged {len(args.files)} traces, {len(merged.records)} records, into {args.out}"
          + (f"; {clamped} deliveries clamped to after their send" if clamped else ""))
    return 0
