"""`pbft trace ...`: the handlers of the trace commands (docs/viewer.md)."""

from __future__ import annotations

import sys
import time

from ..errors import UsageError


def cmd_trace_html(args) -> int:
    """`pbft trace html FILE -o OUT.html [--at T|violation]`: the viewer page of a trace."""
    from ..trace import html, model

    started = time.perf_counter()
    m = model.build(args.file)
    at = html.resolve_at(m, args.at)
    out = args.output or _default_output(args.file)
    size = html.write(m, out, at)
    took = time.perf_counter() - started
    where = f", opens at {at - m.t_start:g} ms" if at is not None else ""
    print(f"{out}: {len(m.arrows)} messages, {len(m.equivocations)} equivocations, "
          f"{len(m.violations)} violations{where} ({size / 1e6:.2f} MB, {took:.2f} s)")
    if m.ignored:
        print(f"  ({m.ignored} records of kinds this version does not draw were left out)",
              file=sys.stderr)
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
