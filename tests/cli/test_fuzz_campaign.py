"""`pbft fuzz --jobs/--shard/--out-dir/-o` and `pbft fuzz merge` (docs/fuzzing.md): the
merge of a campaign's shards is its unsharded result, merge refuses what does not fit, and
Ctrl-C or SIGTERM stops the workers and leaves what was written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pbft.cli.main import main
from pbft.sim.campaign import TIMING_FIELDS

pytestmark = pytest.mark.timeout(60)

CAMPAIGN = ["--seeds", "6", "--mode", "mutation", "--broken", "weak-prepare-quorum"]
"""Seeds 0 and 1 of these fail (agreement), fast."""


def load(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def test_merged_shards_equal_the_unsharded_campaign(tmp_path, capsys):
    whole = tmp_path / "whole.json"
    assert main(["fuzz", *CAMPAIGN, "--jobs", "2", "-o", str(whole), "--out-dir", str(tmp_path / "out")]) == 1
    text = capsys.readouterr().out
    assert "seed 0: agreement:" in text and f"scenario file: {tmp_path / 'out' / 'fuzz-0.toml'}" in text
    assert "6 runs, 2 violations" in text and "(2 jobs)" in text
    shards = []
    for i in range(3):
        shards.append(str(tmp_path / f"shard-{i}.json"))
        code = main(["fuzz", *CAMPAIGN, "--jobs", "1", "--shard", f"{i}/3", "-o", shards[-1],
                     "--out-dir", str(tmp_path / "out")])
        assert code == (1 if i == 0 else 0)
        assert load(shards[-1])["shard"] == f"{i}/3" and load(shards[-1])["ranges"] == [[2 * i, 2 * i + 2]]
    capsys.readouterr()
    merged = tmp_path / "merged.json"
    assert main(["fuzz", "merge", *shards, "-o", str(merged)]) == 1
    summary = capsys.readouterr().out
    assert "3 results merged: 6 runs (seeds 0-5), 2 violations" in summary
    a, b = load(whole), load(merged)
    assert b["merged_from"] == shards
    assert {k: v for k, v in a.items() if k not in TIMING_FIELDS} == {
        k: v for k, v in b.items() if k not in TIMING_FIELDS}
    assert [v["seed"] for v in b["violations"]] == [0, 1] and a["format"] == "pbft-fuzz/1"


def test_json_keeps_its_old_fields(capsys):
    assert main(["fuzz", "--seeds", "2", "--start", "5", "--json", "--jobs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 2 and out["violations"] == [] and out["runs_per_second"] > 0
    assert out["ranges"] == [[5, 7]] and out["jobs"] == 1 and out["shard"] is None


def test_merge_without_output_prints_json_and_refuses_overlaps(tmp_path, capsys):
    a = tmp_path / "a.json"
    assert main(["fuzz", "--seeds", "2", "--jobs", "1", "-o", str(a)]) == 0
    capsys.readouterr()
    assert main(["fuzz", "merge", str(a)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["runs"] == 2 and "1 results merged: 2 runs (seeds 0-1)" in out.err
    assert main(["fuzz", "merge", str(a), str(a)]) == 2
    assert "twice ran seeds 0 to 1: the results overlap" in capsys.readouterr().err
    b = tmp_path / "b.json"
    b.write_text(json.dumps({**load(a), "f": 2, "start": 2, "ranges": [[2, 4]], "violations": [], "crashes": []}))
    assert main(["fuzz", "merge", str(a), str(b)]) == 2
    assert "ran different campaigns: f 2 and 1" in capsys.readouterr().err
    assert main(["fuzz", "merge", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([], "--seeds is required"),
    (["--seeds", "4", "--shard", "4/4"], "--shard:"),
    (["--seeds", "4", "--jobs", "0"], "--jobs must be at least 1"),
])
def test_usage_mistakes_are_one_sentence(argv, message, capsys):
    assert main(["fuzz", *argv]) == 2
    assert message in capsys.readouterr().err


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_the_workers_and_keeps_what_was_written(tmp_path, sig):
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbft", "fuzz", "--seeds", "100000", "--jobs", "2", "-o", str(out),
         "--out-dir", str(tmp_path / "found"), "--mode", "mutation", "--broken", "weak-prepare-quorum"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "found" / "fuzz-0.toml").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "found" / "fuzz-0.toml").exists(), "seed 0's violation was never written"
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole group
        else:
            proc.send_signal(sig)  # a pod or CI job stopped: the main process alone
        stdout, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    deadline = time.monotonic() + 10
    while not _gone(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(proc.pid), "worker processes outlived the campaign"
    doc = load(out)
    assert doc["interrupted"] and doc["runs"] >= 1 and doc["violations"][0]["seed"] == 0
    assert "interrupted: seeds not run:" in stdout
    assert not [n for n in os.listdir(tmp_path / "found") if ".tmp" in n]
