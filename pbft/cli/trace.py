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
