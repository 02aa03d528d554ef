"""`pbft trace ...`: the handlers of the trace commands (docs/viewer.md)."""

from __future__ import annotations


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
