"""`pbft trace merge`: clock offsets between hosts, clamping, ordering, and one-sentence
errors for what is not a real process's trace (pbft.trace.merge)."""

from __future__ import annotations

import json

import pytest

from pbft.cli.main import main
from pbft.errors import UsageError
from pbft.sim.trace import read_trace
from pbft.trace.merge import Source, estimate_offsets, merge, merge_files

BASE = 1_800_000_000_000.0


def header(node, host, n=4, **extra) -> dict:
    return {"type": "header", "version": 1, "mode": "real", "node": node, "n": n, "f": 1,
            "byzantine": [], "clients": [], "origin": BASE, "host": host, **extra}


def exchange(a: list, b: list, na, nb, skew: float, delay_ab: float, delay_ba: float, count: int = 5) -> None:
    """Messages both ways between na (clock true) and nb (clock `skew` ms ahead); the first
    pair of each direction is the fastest."""
    for k in range(count):
        t = BASE + 10 * k
        mid = f"ab{na}{nb}{k}"
        a.append({"t": t, "type": "send", "from": na, "to": nb, "kind": "PREPARE", "id": mid, "size": 9})
        b.append({"t": t + delay_ab + k + skew, "type": "deliver", "from": na, "to": nb, "kind": "PREPARE", "id": mid})
        mid = f"ba{na}{nb}{k}"
        b.append({"t": t + 5 + skew, "type": "send", "from": nb, "to": na, "kind": "COMMIT", "id": mid, "size": 9})
        a.append({"t": t + 5 + delay_ba + k, "type": "deliver", "from": nb, "to": na, "kind": "COMMIT", "id": mid})


def write(path, head: dict, records: list) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for r in [head, *sorted(records, key=lambda r: r["t"])]:
            fh.write(json.dumps(r) + "\n")
    return str(path)


def test_offsets_are_estimated_within_their_bound_and_chained(tmp_path):
    r0, r1, r2 = [], [], []
    exchange(r0, r1, 0, 1, skew=50.0, delay_ab=1.0, delay_ba=3.0)  # asymmetric delays
    exchange(r1, r2, 1, 2, skew=-20.0, delay_ab=2.0, delay_ba=2.0)  # r2 is 30 ms ahead of r0
    sources = [Source("r1.jsonl", header(1, "h1"), r1), Source("r0.jsonl", header(0, "h0"), r0),
               Source("r2.jsonl", header(2, "h2"), r2)]
    offsets = estimate_offsets(sources)
    assert offsets[1].offset_ms == 0 and offsets[1].bound_ms == 0  # replica 0 is the reference
    o1, o2 = offsets[0], offsets[2]
    assert o1.estimated and o1.offset_ms == pytest.approx(49.0) and o1.bound_ms == pytest.approx(2.0)
    assert abs(o1.offset_ms - 50.0) <= o1.bound_ms
    assert o2.estimated and o2.via == "h1" and abs(o2.offset_ms - 30.0) <= o2.bound_ms
    assert o2.bound_ms == pytest.approx(4.0)


def test_processes_of_one_host_share_a_clock(tmp_path):
    r0, r1 = [], []
    exchange(r0, r1, 0, 1, skew=0.0, delay_ab=0.1, delay_ba=0.5)
    offsets = estimate_offsets([Source("a", header(0, "h"), r0), Source("b", header(1, "h"), r1)])
    assert [o.offset_ms for o in offsets] == [0.0, 0.0]


def test_merge_sorts_by_corrected_time_and_clamps_what_it_cannot_order(tmp_path):
    r0, r1 = [], []
    exchange(r0, r1, 0, 1, skew=50.0, delay_ab=1.0, delay_ba=3.0)
    r1.append({"t": BASE + 100 + 50, "type": "executed", "replica": 1, "view": 0, "seq": 1, "digest": "ab"})
    # A driver on a third host, its clock 40 ms ahead, that only sends: not estimated,
    # so its message seems delivered before it was sent, and is clamped.
    drv = [{"t": BASE + 160 + 40, "type": "submit", "client": "c0", "timestamp": 1, "op": "get k", "read_only": True},
           {"t": BASE + 160 + 40, "type": "send", "from": "c0", "to": 0, "kind": "REQUEST", "id": "req", "size": 9},
           {"t": BASE + 300, "type": "end", "verdict": "PASS", "violations": 0}]
    r0.append({"t": BASE + 170, "type": "deliver", "from": "c0", "to": 0, "kind": "REQUEST", "id": "req"})
    paths = [write(tmp_path / "r0.jsonl", header(0, "h0"), r0), write(tmp_path / "r1.jsonl", header(1, "h1"), r1),
             write(tmp_path / "d.jsonl", header("driver", "h2", scenario="s", seed=3, clients=["c0"]), drv)]
    out = str(tmp_path / "m.jsonl")
    merged = merge_files(paths, out)
    recs = list(read_trace(out))
    head = recs[0]
    assert head["mode"] == "real" and head["scenario"] == "s" and head["seed"] == 3 and head["clients"] == ["c0"]
    assert head["clock_reference"] == "r0.jsonl"
    by_source = {o["source"]: o for o in head["clock_offsets"]}
    assert by_source["r1.jsonl"]["offset_ms"] == pytest.approx(49.0)
    assert by_source["d.jsonl"]["estimated"] is False
    assert merged.clamped == head["clamped"] == 1
    times = [r["t"] for r in recs[1:]]
    assert times == sorted(times) and times[0] == 0
    send = next(r for r in recs if r["type"] == "send" and r["id"] == "req")
    deliver = next(r for r in recs if r["type"] == "deliver" and r["id"] == "req")
    assert deliver["t"] > send["t"]
    end = recs[-1]
    assert end["type"] == "end" and end["delivered"] == 11 and end["dropped"] == 0
    executed = next(r for r in recs if r["type"] == "executed")
    assert executed["t"] == pytest.approx(100 + 50 - 49.0, abs=0.01)  # corrected, from origin BASE


@pytest.mark.parametrize("content, sentence", [
    ("not json\n", "not a JSON object"),
    ('{"type": "send", "t": 1}\n', "first line is not a trace header"),
    ('{"type": "header", "version": 9, "mode": "real", "node": 0}\n', "version 9"),
    ('{"type": "header", "version": 1, "mode": "sim", "n": 4, "f": 1, "byzantine": [], "clients": []}\n',
     "not a real process's trace"),
    (json.dumps(header(0, "h")) + '\n{"type": "send"}\n', "without a numeric 't'"),
    ("", "empty file"),
])
def test_malformed_input_is_one_sentence(tmp_path, capsys, content, sentence):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    good = write(tmp_path / "good.jsonl", header(0, "h"), [])
    assert main(["trace", "merge", good, str(bad), "-o", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert sentence in err and err.count("\n") == 1 and "Traceback" not in err


def test_traces_of_different_clusters_and_missing_files_are_refused(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", header(0, "h"), [])
    b = write(tmp_path / "b.jsonl", header(1, "h", n=7), [])
    with pytest.raises(UsageError, match="different clusters"):
        merge_files([a, b], str(tmp_path / "o.jsonl"))
    assert main(["trace", "merge", a, str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["trace", "merge", a, "-o", str(tmp_path / "no" / "o.jsonl")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_cli_merge_says_each_offset(tmp_path, capsys):
    r0, r1 = [], []
    exchange(r0, r1, 0, 1, skew=7.0, delay_ab=1.0, delay_ba=1.0)
    paths = [write(tmp_path / "r0.jsonl", header(0, "h0"), r0), write(tmp_path / "r1.jsonl", header(1, "h1"), r1)]
    assert main(["trace", "merge", *paths, "-o", str(tmp_path / "m.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "r1.jsonl (1): offset +7.000 ms (error at most 1.000 ms)" in out
    assert "merged 2 traces, 20 records" in out
    with pytest.raises(UsageError, match="nothing to merge"):
        merge([])


def test_half_a_last_record_is_left_out_and_said(tmp_path):
    # A process SIGKILLed in the middle of a flush leaves half a line at the end.
    r0, r1 = [], []
    exchange(r0, r1, 0, 1, skew=0.0, delay_ab=1.0, delay_ba=1.0)
    a = write(tmp_path / "r0.jsonl", header(0, "h"), r0)
    b = write(tmp_path / "r1.jsonl", header(1, "h"), r1)
    with open(b, "a", encoding="utf-8") as fh:
        fh.write('{"t": 1, "type": "se')
    merged = merge_files([a, b], str(tmp_path / "m.jsonl"))
    assert merged.header["truncated"] == ["r1.jsonl"] and len(merged.records) == 20
    # Half a line anywhere else is damage, not a crash: refused.
    with open(b, "a", encoding="utf-8") as fh:
        fh.write("\n{}\n")
    with pytest.raises(UsageError, match="line 12"):
        merge_files([a, b], str(tmp_path / "m.jsonl"))


def test_a_replica_restarted_with_a_behaviour_is_marked_byzantine(tmp_path):
    # `pbft demo` restarts a correct replica as a liar: its file's header says nothing,
    # its second `start` record names the behaviour, and the merged header lists it.
    r0, r1 = [], []
    exchange(r0, r1, 0, 1, skew=0.0, delay_ab=0.1, delay_ba=0.1)
    r1.append({"t": BASE + 50, "type": "start", "replica": 1, "pid": 2, "view": 0, "last_executed": 3,
               "behaviour": "wrong-digest-vote"})
    merged = merge([Source("a", header(0, "h"), r0), Source("b", header(1, "h"), r1)])
    assert merged.header["byzantine"] == [1]


def _line(rec: dict) -> str:
    return json.dumps(rec) + "\n"


_DELIVER = {"t": BASE + 2, "type": "deliver", "from": 0, "to": 1, "kind": "PREPARE", "id": "ab"}


@pytest.mark.parametrize("content, sentence", [
    (_line(header(1, [1])), "line 1: the header has 'host' [1], not a string"),
    (_line(header(1, "h", byzantine=[[1]])), "line 1: the header has 'byzantine' [[1]]"),
    (_line(header([1], "h")), "line 1: the header has 'node' [1]"),
    (_line(header(1, "h", origin="x")), "line 1: the header has 'origin' \"x\""),
    (_line(header(1, "h")) + _line({**_DELIVER, "id": [1]}), "line 2: a 'deliver' record has 'id' [1]"),
    (_line(header(1, "h")) + _line({**_DELIVER, "id": {"a": 1}}), "line 2: a 'deliver' record has 'id' {\"a\": 1}"),
    (_line(header(1, "h")) + _line({**_DELIVER, "from": [0]}), "line 2: a 'deliver' record has 'from' [0]"),
    (_line(header(1, "h")) + _line({k: v for k, v in _DELIVER.items() if k != "id"}), "has no 'id'"),
    (_line(header(1, "h")) + _line(_DELIVER).replace(str(BASE + 2), "NaN"), "line 2: NaN is not a number"),
    (_line(header(1, "h")) + _line({**_DELIVER, "t": 1e300}), "line 2: a 'deliver' record has 't' 1e+300"),
    (_line(header(1, "h")) + _line({**_DELIVER, "t": -1e300}), "line 2: a 'deliver' record has 't' -1e+300"),
    (_line(header(1, "h")) + _line({**_DELIVER, "t": "x"}), "line 2: a 'deliver' record has 't' \"x\""),
    (_line(header(1, "h")) + _line({"t": BASE, "type": "start", "replica": "x"}), "'replica' \"x\""),
    (_line(header(1, "h")) + _line(header(1, "h")), "line 2: a second header"),
    (_line({**header(1, "h"), "node": None}), "a header naming no process"),
    (_line({k: v for k, v in header(1, "h").items() if k != "node"}), "a header naming no process"),
])
def test_a_bad_field_is_one_sentence_and_nothing_is_written(tmp_path, capsys, content, sentence):
    r0, r1 = [], []
    exchange(r0, r1, 0, 1, skew=0.0, delay_ab=1.0, delay_ba=1.0)
    good = write(tmp_path / "r0.jsonl", header(0, "a"), r0)
    bad = tmp_path / "r1.jsonl"
    bad.write_text(content)
    out = tmp_path / "o.jsonl"
    assert main(["trace", "merge", good, str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pbft: {bad}") and sentence in err and err.count("\n") == 1, err
    assert not out.exists()
