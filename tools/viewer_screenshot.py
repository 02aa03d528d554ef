"""Regenerates docs/img/viewer.png, the viewer's picture in the README (tools only).

    .venv/bin/python tools/viewer_screenshot.py [--out docs/img/viewer.png] [--keep DIR]

Runs tests/scenarios/byz-equivocate.toml (seed 1) in the simulator with a trace, makes
its viewer page (`pbft trace html`), and has headless Chromium (Debian's `chromium`)
screenshot it at 1400x900, zoomed on the first 12 ms where the primary equivocates, with
the certificate of replica 3's first prepared slot highlighted. The page's hash picks the
window and the mark (viewer.js, "start").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pbft.sim.scenario import load_scenario  # noqa: E402
from pbft.sim.simulation import Simulation  # noqa: E402
from pbft.sim.trace import TraceWriter  # noqa: E402
from pbft.trace import html  # noqa: E402
from pbft.trace.model import build  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000", "--window-size=1400,900", "--hide-scrollbars"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "viewer.png"))
    ap.add_argument("--keep", default=None, metavar="DIR", help="keep the trace and page here")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("viewer_screenshot: chromium is not installed (make browser).", file=sys.stderr)
        return 2
    work = Path(args.keep or tempfile.mkdtemp(prefix="viewer-shot-"))
    work.mkdir(parents=True, exist_ok=True)
    trace, page = work / "equivocate.jsonl", work / "equivocate.html"
    with TraceWriter(str(trace)) as tw:
        Simulation(load_scenario(str(ROOT / "tests" / "scenarios" / "byz-equivocate.toml")), None, trace=tw).run()
    model = build(str(trace))
    html.write(model, str(page))
    data = html.pack(model)
    # replica 3's first prepared mark (in the page's numbering of marks)
    lane3 = model.lane_of("3")
    prepared = data["S"].index("prepared")
    mark = next(j for j, (lane, y) in enumerate(zip(data["M"]["l"], data["M"]["y"], strict=True))
                if lane == lane3 and y == prepared)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([chromium, *FLAGS, f"--user-data-dir={work / 'profile'}", f"--screenshot={out}",
                           f"{page.as_uri()}#t=-0.4_11.5&mark={mark}"], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0 or not out.exists():
        print(f"viewer_screenshot: chromium failed: {proc.stderr[-500:]}", file=sys.stderr)
        return 1
    print(f"{out}: {out.stat().st_size} bytes (page {page})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
