"""A trace file with several runs (`pbft scenario run A B --trace OUT`): every trace
command takes one of them with `--run` (pbft/trace/runs.py), by default the first with a
violation, and says which it took."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pbft.cli.main import main

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    # The same two attacks the issue names (byz-equivocate*.toml), one run each.
    out = tmp_path_factory.mktemp("runs") / "t.jsonl"
    files = sorted(str(p) for p in SCENARIOS.glob("byz-equivocate*.toml"))
    assert len(files) == 2
    assert main(["scenario", "run", *files, "--trace", str(out), "--json"]) == 0
    return out


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))


def test_the_page_of_a_two_run_file_shows_the_equivocation_and_lists_the_runs(two_runs, capsys):
    capsys.readouterr()
    page = two_runs.with_suffix(".html")
    assert main(["trace", "html", str(two_runs), "-o", str(page)]) == 0
    out = capsys.readouterr().out
    assert "holds 2 runs; the page shows run 1" in out and "--run 2:" in out
    assert page_data(page)["E"]  # the equivocations drawn
    assert main(["trace", "html", str(two_runs), "-o", str(page), "--run", "2"]) == 0
    assert "* --run 2" in capsys.readouterr().out


def test_a_run_is_picked_by_a_piece_of_its_name(two_runs, capsys):
    assert main(["trace", "mermaid", str(two_runs), "--run", "PARTITION", "--max", "5"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("sequenceDiagram")
    assert "this is run" in captured.err


@pytest.mark.parametrize(("run", "words"), [("3", "holds 2 runs"), ("0", "holds 2 runs"),
                                            ("no such thing", "no run of")])
def test_a_run_that_is_not_there_is_one_sentence(two_runs, capsys, run, words):
    assert main(["trace", "shiviz", str(two_runs), "--run", run]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_the_default_is_the_first_run_with_a_violation(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    files = [str(SCENARIOS / "net-one-way.toml"), str(SCENARIOS / "byz-equivocate.toml")]
    assert main(["scenario", "run", *files, "--broken", "weak-prepare-quorum", "--trace", str(out), "--json"]) == 1
    from pbft.trace.runs import load

    chosen = load(str(out))
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    failing = [i for i, r in enumerate(names, 1) if i in chosen.violated]
    assert chosen.index == (failing[0] if failing else 1)
