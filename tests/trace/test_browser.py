"""The viewer page in a real browser (issue 17, item 6): headless Chromium opens pages made
from real traces and the page says, in #drawn, what it drew; a screenshot of each is saved
under the test's tmp_path. Skipped, with the reason, where Chromium is missing (`make
browser` installs Debian's package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import viewer_traces

from pbft.trace import html
from pbft.trace.model import build

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium tries the network even for a file: page.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000", "--window-size=1400,900"]


def chromium(tmp_path: Path, *args: str) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make browser installs it; Debian package 'chromium')")
    profile = tmp_path / "profile"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def open_page(trace: Path, tmp_path: Path, name: str, at: str | None = None, hash: str = "") -> dict:
    """Makes the page, dumps its DOM after drawing and screenshots it; what it drew."""
    page = tmp_path / f"{name}.html"
    m = build(str(trace))
    html.write(m, str(page), html.resolve_at(m, at))
    dom = chromium(tmp_path, "--dump-dom", page.as_uri() + hash)
    found = re.search(r'<script type="application/json" id="drawn">(.*?)</script>', dom, re.S)
    assert found, dom[:2000]
    shot = tmp_path / f"{name}.png"
    chromium(tmp_path, f"--screenshot={shot}", page.as_uri() + hash)
    assert shot.stat().st_size > 10_000
    return json.loads(found.group(1))


def test_the_equivocation_is_drawn_and_labelled(tmp_path):
    drawn = open_page(viewer_traces.equivocate(), tmp_path, "equivocate")
    assert drawn["lanes"] == 7  # four replicas, three clients
    assert drawn["arrows"] > 10 and not drawn["density"]
    marks = drawn["marks"]
    assert marks.get("equivocation", 0) >= 1, marks
    assert marks.get("lie", 0) >= 2, marks
    assert drawn["window"][0] <= 1 <= drawn["window"][1]  # opens at the start


def test_a_failing_run_opens_at_its_violation(tmp_path):
    drawn = open_page(viewer_traces.violation(), tmp_path, "violation")
    assert drawn["lanes"] == 7 and drawn["arrows"] > 0
    assert drawn["marks"].get("violation") == 1, drawn["marks"]
    assert drawn["marks"].get("equivocation", 0) >= 1
    a, b = drawn["window"]
    assert a <= 4 <= b  # the violation is at 4 ms


def test_a_certificate_is_highlighted_for_a_selected_mark(tmp_path):
    data = html.pack(build(str(viewer_traces.equivocate())))
    # the first prepared mark with a full certificate (2f+1 = 3 replicas)
    mark, arrows, _votes = next(c for c in data["C"] if c[2] == 3)
    t = data["M"]["t"][mark]
    drawn = open_page(viewer_traces.equivocate(), tmp_path, "certificate", hash=f"#t={t - 8}_{t + 2}&mark={mark}")
    assert drawn["marks"].get("certificate") == len(arrows), drawn["marks"]


def test_crashes_drops_and_state_transfer_are_drawn(tmp_path):
    m = build(str(viewer_traces.crash()))
    crash = next(x for x in m.marks if x.type == "crash")
    drawn = open_page(viewer_traces.crash(), tmp_path, "crash", at=str(crash.t))
    marks = drawn["marks"]
    assert marks.get("down", 0) >= 1 and marks.get("crash", 0) >= 1, marks
    assert marks.get("dropped", 0) >= 1, marks


def test_hover_click_zoom_pan_keys_and_filters_work(tmp_path):
    # #selftest makes the page send itself mouse, wheel and key events (viewer.js, selftest)
    drawn = open_page(viewer_traces.equivocate(), tmp_path, "selftest", hash="#t=-0.4_11.5&selftest")
    result = drawn["selftest"]
    assert result["errors"] == []
    assert result["hover"] and result["certificate"] == 3, result
    assert all(result[k] for k in ("click", "zoom", "pan", "key", "filter")), result


def test_a_real_run_shows_its_equivocation(tmp_path):
    trace = viewer_traces.real()
    m = build(str(trace))
    assert m.header["mode"] == "real" and m.equivocations
    first = m.equivocations[0]
    drawn = open_page(trace, tmp_path, "real", at=str(first.t - m.t_start))
    assert drawn["lanes"] >= 7 and drawn["arrows"] > 0
    assert drawn["marks"].get("equivocation", 0) >= 1 and drawn["marks"].get("lie", 0) >= 1, drawn["marks"]


def test_a_trace_whose_strings_look_like_html_still_draws(tmp_path):
    # Found by a red-team pass: "<!--" and then "<script" in the trace's strings made the
    # browser swallow the page's own script, so nothing was drawn.
    lines = viewer_traces.equivocate().read_text().splitlines()
    header = json.loads(lines[0])
    header["scenario"] = "<!-- x <script>document.body.dataset.pwned=1</script> @DATA@"
    trace = tmp_path / "html-like.jsonl"
    trace.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    drawn = open_page(trace, tmp_path, "html-like")
    assert drawn["lanes"] == 7 and drawn["arrows"] > 10
