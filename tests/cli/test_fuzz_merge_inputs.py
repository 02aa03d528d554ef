"""Bad input to `pbft fuzz merge`, to `-o` of `pbft fuzz`, `pbft fuzz merge` and `pbft
twins`, and to the seed options (docs/fuzzing.md, docs/formats.md "Fuzz results"): one
sentence and exit status 2, never a traceback; a result file is checked whole before
anything is merged, and OUT is written only when the merge succeeds; `-o` follows a
symbolic link and refuses a directory or a FIFO rather than replacing it (red-team
findings 1, 2 and 12)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pbft.cli.main import main
from pbft.sim import campaign

pytestmark = pytest.mark.timeout(60)

SCENARIO = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scenarios", "byz-equivocate.toml")


def result(first: int, count: int, **changes) -> dict:
    """A valid result of seeds first .. first+count-1, with `changes`."""
    doc = {
        "format": "pbft-fuzz/1", "mode": "random", "f": 1, "broken": "", "behaviours": None,
        "start": first, "seeds": count, "shard": None, "ranges": [[first, first + count]], "runs": count,
        "violations": [{"seed": first, "check": "agreement", "detail": "d", "scenario": "s"}],
        "crashes": [], "runs_digest": "0" * 63 + "1", "interrupted": False, "jobs": 1, "seconds": 0.5,
        "runs_per_second": 4.0, "coverage": {"message:PREPARE": 3}, "never_reached": [],
    }
    doc.update(changes)
    return doc


@pytest.fixture
def files(tmp_path):
    a, out = tmp_path / "a.json", tmp_path / "out.json"
    a.write_text(json.dumps(result(0, 3)))
    out.write_text("keep me\n")
    return a, tmp_path / "b.json", out


def _no_traceback(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbft: ")
    return lines[0]


def test_a_valid_merge_still_works(files, capsys):
    a, b, out = files
    b.write_text(json.dumps(result(3, 2, violations=[])))
    assert main(["fuzz", "merge", str(a), str(b), "-o", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert doc["runs"] == 5 and doc["ranges"] == [[0, 5]] and doc["runs_digest"] == "0" * 64
    assert "2 results merged: 5 runs (seeds 0-4), 1 violations" in capsys.readouterr().out


@pytest.mark.parametrize("changes, message", [
    ({"runs": "2"}, "b.json: 'runs' must be a non-negative integer, not \"2\"."),
    ({"runs": -5}, "'runs' must be a non-negative integer, not -5."),
    ({"runs": 3}, "'runs' is 3 but 'ranges' hold 2 seeds."),
    ({"seconds": "x"}, "'seconds' must be a non-negative number"),
    ({"jobs": "x"}, "'jobs' must be a positive integer"),
    ({"start": "x"}, "'start' must be an integer from 0 to 9223372036854775807"),
    ({"interrupted": "yes"}, "'interrupted' must be true or false, not \"yes\"."),
    ({"violations": [{"seed": "x"}]}, "'violations' item 0's 'seed' must be the seed of a run in 'ranges'"),
    ({"violations": [{"seed": 3}]}, "'violations' item 0's 'check' must be a string, not null."),
    ({"violations": [{}]}, "'violations' item 0's 'seed'"),
    ({"violations": [5]}, "'violations' item 0 must be an object, not 5."),
    ({"violations": "x"}, "'violations' must be a list"),
    ({"violations": [{"seed": 9, "check": "c", "detail": "d", "scenario": "s"}]}, "the seed of a run"),
    ({"crashes": [None]}, "'crashes' item 0 must be an object, not null."),
    ({"crashes": "x"}, "'crashes' must be a list"),
    ({"crashes": [{"seed": 3, "error": 5, "scenario": ""}]}, "'crashes' item 0's 'error' must be a string"),
    ({"runs_digest": "zz"}, "'runs_digest' must be 64 hex digits, not \"zz\"."),
    ({"runs_digest": "ab"}, "'runs_digest' must be 64 hex digits"),
    ({"runs_digest": 5}, "'runs_digest' must be 64 hex digits"),
    ({"coverage": [1]}, "'coverage' must be an object of counts"),
    ({"coverage": {"message:PREPARE": "x"}}, "'coverage' item 'message:PREPARE' must be a non-negative integer"),
    ({"coverage": {"message:PREPARE": None}}, "'coverage' item 'message:PREPARE'"),
    ({"ranges": "x"}, "'ranges' must be a list of [first, end) pairs"),
    ({"ranges": [[3]]}, "'ranges' item 0 must be a pair of integers"),
    ({"ranges": [["a", "b"]]}, "'ranges' item 0 must be a pair of integers"),
    ({"ranges": [[5, 3]]}, "'ranges' item 0 must be a pair of integers [first, end) with first < end, not [5, 3]."),
    ({"ranges": [[3.5, 5]]}, "'ranges' item 0 must be a pair of integers"),
    ({"ranges": [[3, 4], [3, 4]], "runs": 2}, "'ranges' item 1 must be after the one before it"),
    ({"ranges": [[0, 2]]}, "'ranges' item 0 must be inside the planned seeds, 3 to 4"),
    ({"f": "1"}, "'f' must be a positive integer"),
    ({"mode": [1]}, "'mode' must be a non-empty string"),
    ({"behaviours": [[1]]}, "'behaviours' must be null or a list of behaviour names"),
    ({"shard": 5}, "'shard' must be null or \"I/K\""),
    ({"shard": "4/4"}, "'shard' must be null or \"I/K\""),
    ({"seeds": 2**63}, "'seeds' must be a non-negative integer with start + seeds at most"),
    ({"never_reached": 5}, "'never_reached' must be a list of strings"),
    ({"twins": "x"}, "'twins' must be an object"),
])
def test_a_bad_field_is_one_sentence_and_out_is_kept(files, changes, message, capsys):
    a, b, out = files
    b.write_text(json.dumps(result(3, 2, **changes)))
    assert main(["fuzz", "merge", str(a), str(b), "-o", str(out)]) == 2
    line = _no_traceback(capsys.readouterr().err)
    assert message in line and str(b) in line
    assert out.read_text() == "keep me\n"
    assert sorted(os.listdir(out.parent)) == ["a.json", "b.json", "out.json"]


@pytest.mark.parametrize("data, message", [
    (json.dumps(result(3, 2)).replace('"seconds": 0.5', '"seconds": NaN').encode(), "it holds NaN"),
    (json.dumps(result(3, 2)).replace('"seconds": 0.5', '"seconds": -Infinity').encode(), "it holds -Infinity"),
    (json.dumps(result(3, 2)).replace('"runs": 2', '"runs": ' + "9" * 5000).encode(), "a number too long"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"format": ', "is not JSON"),
    (b"", "is not JSON"),
    (b"[1, 2]", "is not a result of `pbft fuzz --json`"),
])
def test_a_file_that_is_not_a_result_is_one_sentence(files, data, message, capsys):
    a, b, out = files
    b.write_bytes(data)
    assert main(["fuzz", "merge", str(a), str(b), "-o", str(out)]) == 2
    line = _no_traceback(capsys.readouterr().err)
    assert message in line and str(b) in line
    assert out.read_text() == "keep me\n"


def test_a_merge_without_output_prints_no_json_for_a_bad_file(files, capsys):
    a, b, _ = files
    b.write_text(json.dumps(result(3, 2, violations=[{"seed": "x"}])))
    assert main(["fuzz", "merge", str(a), str(b)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "'violations' item 0's 'seed'" in _no_traceback(out.err)


def test_check_result_accepts_what_a_campaign_writes():
    c = campaign.Campaign(campaign.Options(), 5, 3, jobs=1)
    c.add(campaign.SeedOutcome(5, "x", "digest", coverage=(("message:PREPARE", 2),)))
    c.add(campaign.SeedOutcome(6, "x", crash="boom", scenario=""))
    campaign.check_result("c.json", json.loads(json.dumps(c.to_json())))


# -o: checked before anything runs; a link followed, a FIFO or a directory refused.

@pytest.mark.parametrize("where, message", [
    ("missing/x.json", "-o: cannot write {p}: No such file or directory."),
    ("", "-o: will not write {p}: it is a directory."),
])
def test_merge_checks_its_output_before_merging(files, where, message, capsys):
    a, b, out = files
    b.write_text(json.dumps(result(3, 2)))
    path = str(out.parent / where) if where else str(out.parent)
    assert main(["fuzz", "merge", str(a), str(b), "-o", path]) == 2
    assert _no_traceback(capsys.readouterr().err) == "pbft: " + message.format(p=path)


@pytest.mark.parametrize("argv", [
    ["fuzz", "merge", "A", "B"],
    ["fuzz", "--seeds", "1", "--jobs", "1"],
    ["twins", "--rounds", "1", "--jobs", "1"],
])
def test_a_fifo_as_output_is_refused_not_replaced(files, argv, capsys):
    a, b, _ = files
    b.write_text(json.dumps(result(3, 2)))
    fifo = a.parent / "fifo"
    os.mkfifo(fifo)
    argv = [str(a) if x == "A" else str(b) if x == "B" else x for x in argv]
    assert main([*argv, "-o", str(fifo)]) == 2  # before the fix: blocked opening it, or replaced it
    assert "will not write" in _no_traceback(capsys.readouterr().err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symbolic_link_as_output_is_followed(files, capsys):
    a, b, _ = files
    b.write_text(json.dumps(result(3, 2)))
    target, link = a.parent / "target.json", a.parent / "link.json"
    target.write_text("old\n")
    link.symlink_to(target.name)
    assert main(["fuzz", "merge", str(a), str(b), "-o", str(link)]) == 1
    assert os.path.islink(link) and json.loads(target.read_text())["runs"] == 5
    dangling = a.parent / "dangling.json"
    dangling.symlink_to("new.json")
    assert main(["fuzz", "merge", str(a), str(b), "-o", str(dangling)]) == 1
    assert os.path.islink(dangling) and json.loads((a.parent / "new.json").read_text())["runs"] == 5
    assert not [n for n in os.listdir(a.parent) if ".tmp" in n]


def test_write_refuses_a_fifo_and_follows_a_link(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(campaign.NotRegularFile):
        campaign._write(str(fifo), "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["fifo"]
    (tmp_path / "link").symlink_to("t.toml")
    campaign._write(str(tmp_path / "link"), "text")
    assert (tmp_path / "t.toml").read_text() == "text" and os.path.islink(tmp_path / "link")


# Seeds and --behaviours.

@pytest.mark.parametrize("seed", ["-1", str(2**63), "99999999999999999999999"])
def test_scenario_run_seed_has_the_scenario_file_bound(seed, capsys):
    assert main(["scenario", "run", SCENARIO, "--seed", seed]) == 2
    assert f"--seed must be from 0 to {2**63 - 1}" in _no_traceback(capsys.readouterr().err)


def test_twins_seed_has_the_same_bound(capsys):
    assert main(["twins", "--rounds", "1", "--seed", str(2**63)]) == 2
    assert f"--seed must be from 0 to {2**63 - 1}" in _no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [
    ["--seeds", "1", "--start", "99999999999999999999999"],
    ["--seeds", "2", "--start", str(2**63 - 1)],
    ["--seeds", str(2**63), "--start", "0"],
])
def test_fuzz_start_and_seeds_stay_below_two_to_the_63(argv, capsys):
    assert main(["fuzz", *argv, "--jobs", "1"]) == 2
    assert "--start + --seeds must be at most" in _no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("names", [",", "", " , "])
def test_fuzz_behaviours_naming_nothing_is_an_error(names, capsys):
    assert main(["fuzz", "--seeds", "1", "--jobs", "1", "--behaviours", names]) == 2
    assert "names no behaviour" in _no_traceback(capsys.readouterr().err)
