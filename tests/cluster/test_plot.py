"""`pbft bench --plot` (pbft.cluster.plot): the curves are computed from the samples the
report's figures come from, and the SVG is well formed and self-contained."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from pbft.cluster.plot import Series, buckets, cdf, svg

NS = "{http://www.w3.org/2000/svg}"


def steady(rps: int, seconds: float, latency_ms: float) -> list[tuple[float, float]]:
    count = int(rps * seconds)
    return [((i + 0.5) / rps, latency_ms / 1000) for i in range(count)]


def test_buckets_give_throughput_and_percentiles():
    s = Series("x", steady(100, 2.0, 10.0), 2.0)
    rows = buckets(s, 0.5)
    assert len(rows) == 4
    for _mid, rps, p50, p99 in rows:
        assert rps == pytest.approx(100, rel=0.05) and p50 == pytest.approx(10) and p99 == pytest.approx(10)
    assert [r[0] for r in rows] == [0.25, 0.75, 1.25, 1.75]


def test_an_empty_bucket_has_no_latency():
    s = Series("x", [(0.1, 0.005), (1.9, 0.007)], 2.0)
    rows = buckets(s, 0.5)
    assert rows[1][1] == 0 and math.isnan(rows[1][2])


def test_cdf_rises_to_one():
    s = Series("x", [(0.0, ms / 1000) for ms in range(1, 1001)], 1.0)
    points = cdf(s)
    assert points[0][0] == pytest.approx(1.0) and points[-1] == (pytest.approx(1000.0), 1.0)
    assert all(a[1] <= b[1] for a, b in zip(points, points[1:], strict=False))
    assert cdf(Series("empty", [], 1.0)) == []


def test_the_svg_is_well_formed_with_three_panels_and_a_line_per_run():
    runs = [Series("fault-free", steady(200, 3.0, 8.0), 3.0), Series("attack <x>", steady(50, 3.0, 30.0), 3.0)]
    doc = svg(runs, "title & more")
    root = ET.fromstring(doc)
    assert root.tag == f"{NS}svg"
    texts = [t.text or "" for t in root.iter(f"{NS}text")]
    assert "fault-free (600 requests)" in texts and "attack <x> (150 requests)" in texts
    assert sum(t.startswith(("throughput", "latency (ms)", "latency distribution")) for t in texts) == 3
    # throughput 2 lines, latency 2 per run, CDF 2: 8 polylines
    assert len(list(root.iter(f"{NS}polyline"))) == 8
    assert "http" not in doc.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_a_run_without_requests_still_draws():
    ET.fromstring(svg([Series("idle", [], 1.0)], "nothing"))


def test_a_client_sweep_adds_throughput_against_latency():
    runs = [Series("bench", steady(100, 1.0, 5.0), 1.0)]
    root = ET.fromstring(svg(runs, "t", sweep=[(16, 900.0, 9.0, 30.0), (1, 200.0, 4.0, 8.0)]))
    texts = [t.text or "" for t in root.iter(f"{NS}text")]
    assert any(t.startswith("client sweep") for t in texts)
    assert "1 client" in texts and "16 clients" in texts


def test_sweep_counts_are_checked():
    from pbft.cli.cluster import _sweep
    from pbft.errors import UsageError

    assert _sweep("4, 16,64") == [4, 16, 64] and _sweep(None) == []
    for bad in ("4,x", "0", "100000"):
        with pytest.raises(UsageError, match="--sweep"):
            _sweep(bad)
