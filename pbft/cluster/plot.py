"""`pbft bench --plot FILE.svg`: one self-contained SVG of a bench run.

Theory of operation. The bench's workers hand in one sample per completed request: when
it completed (seconds into the window) and how long it took. From those this module draws,
with no plotting library and nothing fetched (the file opens offline in any browser):

- throughput over time: completed requests per bucket of `bucket_s`, in requests per second;
- latency over time: the median and the 99th percentile of the requests completed in each
  bucket, in milliseconds;
- the latency distribution: the CDF of every request's latency (log-scaled milliseconds).

A run with an attack (`--behaviour`) is drawn over the fault-free one in a second colour,
so the attack's cost is visible at a glance. Everything is computed here from the samples:
the figures in the bench's summary and these curves come from the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

Sample = tuple[float, float]
"""(completed at, seconds into the window; latency, seconds)."""

WIDTH = 900
PANEL_H = 220
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 20, 34, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    samples: Sequence[Sample]
    duration_s: float


def buckets(series: Series, bucket_s: float) -> list[tuple[float, float, float, float]]:
    """(bucket middle s, throughput rps, p50 ms, p99 ms) per bucket of the window; a bucket
    with no request has throughput 0 and no latency (nan)."""
    count = max(1, math.ceil(series.duration_s / bucket_s))
    lat: list[list[float]] = [[] for _ in range(count)]
    for at, latency in series.samples:
        i = min(count - 1, max(0, int(at / bucket_s)))
        lat[i].append(latency * 1000)
    out = []
    for i, xs in enumerate(lat):
        xs.sort()
        width = min(bucket_s, series.duration_s - i * bucket_s) or bucket_s
        p50 = _pct(xs, 50) if xs else math.nan
        p99 = _pct(xs, 99) if xs else math.nan
        out.append(((i + 0.5) * bucket_s, len(xs) / width, p50, p99))
    return out


def _pct(sorted_xs: list[float], p: float) -> float:
    k = max(0, min(len(sorted_xs) - 1, math.ceil(p / 100 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def cdf(series: Series, points: int = 200) -> list[tuple[float, float]]:
    """(latency ms, share of requests at or below it), at most `points` steps."""
    xs = sorted(latency * 1000 for _, latency in series.samples)
    if not xs:
        return []
    step = max(1, len(xs) // points)
    out = [(xs[i], (i + 1) / len(xs)) for i in range(0, len(xs), step)]
    if out[-1][1] < 1.0:
        out.append((xs[-1], 1.0))
    return out


SweepPoint = tuple[int, float, float, float]
"""(clients, throughput rps, p50 ms, p99 ms) of one run of a client sweep."""


def svg(series: Sequence[Series], title: str, bucket_s: float = 0.5,
        sweep: Sequence[SweepPoint] | None = None) -> str:
    """The whole SVG document for one or more runs (and a client sweep, if given)."""
    panels = 4 if sweep else 3
    height = MARGIN_T + panels * (PANEL_H + MARGIN_T + MARGIN_B)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{MARGIN_L}" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    legend_x = WIDTH - MARGIN_R - 10
    for i, s in enumerate(series):
        y = 20 + 14 * i
        parts.append(f'<text x="{legend_x}" y="{y}" text-anchor="end" fill="{COLOURS[i % len(COLOURS)]}">'
                     f"{escape(s.label)} ({len(s.samples)} requests)</text>")
    per_bucket = [buckets(s, bucket_s) for s in series]
    top = MARGIN_T + 10
    span = max((s.duration_s for s in series), default=1.0)
    parts += _panel(
        top, f"throughput (requests/s, per {bucket_s:g} s)", "seconds into the window",
        [[(t, rps) for t, rps, _, _ in b] for b in per_bucket], (0, span), log_x=False,
    )
    top += PANEL_H + MARGIN_T + MARGIN_B
    lines = []
    for b in per_bucket:
        lines.append([(t, p50) for t, _, p50, _ in b])
        lines.append([(t, p99) for t, _, _, p99 in b])
    parts += _panel(top, "latency (ms): median solid, 99th percentile dashed", "seconds into the window",
                    lines, (0, span), log_x=False, paired=True)
    top += PANEL_H + MARGIN_T + MARGIN_B
    parts += _panel(top, "latency distribution (share of requests at or below)", "latency (ms, log scale)",
                    [cdf(s) for s in series], None, log_x=True, y_range=(0.0, 1.0))
    if sweep:
        top += PANEL_H + MARGIN_T + MARGIN_B
        pts = sorted(sweep)
        parts += _panel(
            top, "client sweep: latency (ms) against throughput; median solid, 99th percentile dashed",
            "throughput (requests/s)",
            [[(rps, p50) for _, rps, p50, _ in pts], [(rps, p99) for _, rps, _, p99 in pts]],
            (0, max(rps for _, rps, _, _ in pts) * 1.1 or 1.0), log_x=False, paired=True,
            labels=[(rps, p99, f"{c} client{'s' if c != 1 else ''}") for c, rps, _, p99 in pts],
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(
    top: float,
    title: str,
    xlabel: str,
    lines: list[list[tuple[float, float]]],
    x_range: tuple[float, float] | None,
    log_x: bool,
    paired: bool = False,
    y_range: tuple[float, float] | None = None,
    labels: Sequence[tuple[float, float, str]] = (),
) -> list[str]:
    left, right = MARGIN_L, WIDTH - MARGIN_R
    bottom = top + PANEL_H
    pts = [(x, y) for line in lines for x, y in line if not math.isnan(y) and (x > 0 or not log_x)]
    if x_range is None:
        xs = [x for x, _ in pts] or [1.0]
        x_range = (min(xs), max(xs))
    x0, x1 = x_range
    if log_x:
        x0, x1 = math.log10(max(x0, 1e-3)), math.log10(max(x1, 1e-3))
    if x1 <= x0:
        x1 = x0 + 1
    if y_range is None:
        y_range = (0.0, max([y for _, y in pts] or [1.0]) * 1.1 or 1.0)
    y0, y1 = y_range

    def sx(x: float) -> float:
        v = math.log10(max(x, 1e-3)) if log_x else x
        return left + (v - x0) / (x1 - x0) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    out = [
        f'<text x="{left}" y="{top - 8}" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{PANEL_H}" fill="none" stroke="#888"/>',
        f'<text x="{(left + right) / 2}" y="{bottom + 30}" text-anchor="middle">{escape(xlabel)}</text>',
    ]
    for k in range(5):  # y grid and labels
        y = y0 + (y1 - y0) * k / 4
        out.append(f'<line x1="{left}" x2="{right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_num(y)}</text>')
    for k in range(6):  # x labels
        v = x0 + (x1 - x0) * k / 5
        x = 10**v if log_x else v
        out.append(f'<text x="{sx(x):.1f}" y="{bottom + 15}" text-anchor="middle">{_num(x)}</text>')
    for i, line in enumerate(lines):
        colour = COLOURS[(i // 2 if paired else i) % len(COLOURS)]
        dash = ' stroke-dasharray="5,3"' if paired and i % 2 else ""
        segment: list[str] = []
        for x, y in line:
            if math.isnan(y) or (log_x and x <= 0):
                if len(segment) > 1:
                    out.append(_polyline(segment, colour, dash))
                segment = []
                continue
            segment.append(f"{sx(x):.1f},{sy(y):.1f}")
        if len(segment) > 1:
            out.append(_polyline(segment, colour, dash))
        elif len(segment) == 1:
            cx, cy = segment[0].split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
    for x, y, text in labels:
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{COLOURS[0]}"/>')
        out.append(f'<text x="{sx(x) + 5:.1f}" y="{sy(y) - 5:.1f}">{escape(text)}</text>')
    return out


def _polyline(points: list[str], colour: str, dash: str) -> str:
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{" ".join(points)}"/>'


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}"
    return f"{v:.2g}"
