"""pbft trace shiviz / mermaid / history: a trace exported for ShiViz (vector clocks that
respect every send/deliver pair, a log its documented regex parses), Mermaid (a window,
lies and equivocations marked, truncation said) and Porcupine/Knossos (the client
operations of the run, each with its result)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pbft.cli.main import main
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation
from pbft.sim.trace import TraceWriter, read_trace
from pbft.trace.export import (
    SHIVIZ_REGEX,
    HistoryFormat,
    Window,
    history_lines,
    mermaid_lines,
    operations,
    shiviz_events,
    shiviz_lines,
)

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def _trace(tmp_path: Path, name: str, seed: int | None = None, **overrides) -> tuple[str, object]:
    path = str(tmp_path / f"{name}.jsonl")
    scenario = load_scenario(str(SCENARIOS / name))
    with TraceWriter(path) as w:
        result = Simulation(scenario, seed, trace=w).run()
    return path, result


@pytest.fixture(scope="module")
def equivocate(tmp_path_factory):
    return _trace(tmp_path_factory.mktemp("eq"), "byz-equivocate.toml")


@pytest.fixture(scope="module")
def partition(tmp_path_factory):
    return _trace(tmp_path_factory.mktemp("part"), "net-partition-heals.toml")


def _dominates(a: dict[str, int], b: dict[str, int]) -> bool:
    return all(a.get(h, 0) >= c for h, c in b.items())


def test_shiviz_clocks_respect_every_send_and_deliver(partition):
    path, _ = partition
    records = list(read_trace(path))
    events = list(shiviz_events(records))
    sends: dict[tuple, list[dict[str, int]]] = {}
    delivered = 0
    own: dict[str, int] = {}
    for ev in events:
        # each host's own entry counts its events, one by one
        own[ev.host] = own.get(ev.host, 0) + 1
        assert ev.clock[ev.host] == own[ev.host]
        if ev.text.startswith("send "):
            key = (ev.host, ev.text.split(" to ")[1].split(" ")[0], ev.text.split("[")[1].split("]")[0])
            sends.setdefault(key, []).append(ev.clock)
        elif ev.text.startswith("deliver "):
            src = ev.text.split(" from ")[1].split(" ")[0]
            key = (src, ev.host, ev.text.split("[")[1].split("]")[0])
            # some earlier send of these bytes on this link is dominated by the delivery
            assert any(_dominates(ev.clock, c) for c in sends[key]), (ev, sends[key])
            delivered += 1
    assert delivered == sum(r["type"] == "deliver" for r in records) > 0
    # the partition dropped messages: they are events of their sender
    assert any("dropped (partition" in ev.text for ev in events)


def test_shiviz_log_parses_with_its_regex(equivocate, tmp_path, capsys):
    path, _ = equivocate
    out = tmp_path / "t.log"
    assert main(["trace", "shiviz", path, "-o", str(out)]) == 0
    text = out.read_text()
    first, body = text.split("\n", 1)
    assert first == SHIVIZ_REGEX
    # ShiViz's regex is JavaScript's: (?<name>...) is Python's (?P<name>...)
    regex = re.compile(first.replace("(?<", "(?P<").replace(r"\n", "\n"))
    matches = list(regex.finditer(body))
    assert len(matches) == len(body.splitlines()) // 2 == len(list(shiviz_lines(read_trace(path)))) // 2
    hosts = set()
    for m in matches:
        clock = json.loads(m["clock"])
        assert m["host"] in clock and all(isinstance(v, int) and v > 0 for v in clock.values())
        hosts.add(m["host"])
    assert {"r0", "r1", "r2", "r3", "c0"} <= hosts
    assert any("MUTATED, replaces" in m["event"] for m in matches)


def test_mermaid_marks_lies_equivocations_and_what_was_left_out(equivocate):
    path, _ = equivocate
    lines = list(mermaid_lines(read_trace(path), Window(limit=30)))
    assert lines[0] == "sequenceDiagram"
    assert "    participant r0 as replica 0 (Byzantine)" in lines
    arrows = [ln for ln in lines if re.match(r"    \w+(->>|-x|--x)\w+: ", ln)]
    assert len(arrows) == 30
    assert any("-x" in a and "MUTATED PRE-PREPARE v0 n1" in a for a in arrows)
    assert any(ln.startswith("    Note over r0: mutated, replaces ") for ln in lines)
    assert any(ln.startswith("    Note over r0: EQUIVOCATION PRE-PREPARE v0 n1: d=") for ln in lines)
    total = sum(r["type"] == "send" for r in read_trace(path))
    assert lines[-1] == f"    Note over r0,c2: {total - 30} more messages left out (--max 30)"
    assert not any(";" in ln or "#" in ln for ln in lines)


def test_mermaid_window_and_the_violation(tmp_path):
    path, _ = _trace(tmp_path, "fuzz-2000239-resources.toml")
    records = list(read_trace(path))
    sends = [r["t"] for r in records if r["type"] == "send"]
    lo, hi = sends[len(sends) // 2], sends[len(sends) // 2 + 40]
    lines = list(mermaid_lines(records, Window(lo, hi, 10_000)))
    arrows = [ln for ln in lines if re.match(r"    \w+(->>|-x|--x)\w+: ", ln)]
    assert len(arrows) == sum(lo <= t <= hi for t in sends)
    # The violation (the oracle's, at the end of the run) is drawn whatever the cut.
    end = records[-1]["t"]
    failed = [*records[:-1], {"t": end, "type": "violation", "check": "agreement", "detail": "a; b #1"}]
    lines = list(mermaid_lines(failed, Window(limit=5)))
    assert lines[-1].startswith("    Note over r0,c2: VIOLATION agreement: a, b no. 1")
    assert "more messages left out" in lines[-2]
    assert not any("VIOLATION" in ln for ln in mermaid_lines(failed, Window(0, end - 1)))


def test_the_history_has_every_client_operation_with_its_result(equivocate):
    path, result = equivocate
    ops = operations(read_trace(path))
    assert len(ops) == result.requests_total and all(o.ret is not None for o in ops)
    assert {o.f for o in ops} <= {"put", "get", "delete"}
    puts = [o for o in ops if o.f == "put"]
    assert puts and all(o.result is True and o.value and o.key for o in puts)

    porc = json.loads("".join(history_lines(read_trace(path), HistoryFormat.PORCUPINE)))
    assert len(porc) == len(ops)
    for op in porc:
        assert set(op) == {"ClientId", "Input", "Call", "Output", "Return"} and op["Call"] < op["Return"]
    gets = [op for op in porc if op["Input"]["Op"] == "get"]
    assert gets and all(set(op["Output"]) == {"Value"} for op in gets)

    edn = list(history_lines(read_trace(path), HistoryFormat.KNOSSOS))
    assert len(edn) == 2 * len(ops)
    assert edn[0].startswith("{:process ") and ":type :invoke" in edn[0] and edn[0].endswith(":index 0}")
    assert sum(":type :ok" in ln for ln in edn) == len(ops)
    # every process invokes, then completes, before it invokes again
    state: dict[str, str] = {}
    for ln in edn:
        proc = re.search(r":process (\d+)", ln)[1]
        kind = re.search(r":type :(\w+)", ln)[1]
        assert (kind == "invoke") == (state.get(proc, "ok") != "invoke")
        state[proc] = kind


def test_an_operation_that_never_completes_is_info_and_its_client_a_new_process(tmp_path):
    path = tmp_path / "t.jsonl"
    recs = [
        {"type": "header", "version": 1, "scenario": "x", "seed": 1, "n": 4, "f": 1, "byzantine": [],
         "clients": ["c0"], "mode": "sim"},
        {"t": 1, "type": "submit", "client": "c0", "timestamp": 1, "op": "put k v", "read_only": False,
         "op_hex": "8363707574416b4176"},
        {"t": 9, "type": "submit", "client": "c0", "timestamp": 2, "op": "get k", "read_only": True,
         "op_hex": "8263676574416b"},
        {"t": 12, "type": "complete", "client": "c0", "timestamp": 2, "result": "v", "result_hex": "4176"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    edn = list(history_lines(read_trace(str(path)), HistoryFormat.KNOSSOS))
    assert edn == [
        '{:process 0, :type :invoke, :f :write, :value ["k" "v"], :time 1000000, :index 0}',
        '{:process 1, :type :invoke, :f :read, :value ["k" nil], :time 9000000, :index 1}',
        '{:process 1, :type :ok, :f :read, :value ["k" "v"], :time 12000000, :index 2}',
        '{:process 0, :type :info, :f :write, :value ["k" "v"], :time 12000000, :index 3}',
    ]
    porc = json.loads("".join(history_lines(read_trace(str(path)), HistoryFormat.PORCUPINE)))
    assert porc[0]["Output"] == {"Unknown": True} and porc[0]["Return"] > porc[1]["Return"]


def test_the_commands_say_one_sentence_for_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    for argv in (["trace", "shiviz", str(bad)], ["trace", "mermaid", str(bad)],
                 ["trace", "history", str(bad), "--format", "knossos"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "is this a trace file?" in err, err


def test_the_commands_write_to_stdout_or_a_file(equivocate, tmp_path, capsys):
    path, _ = equivocate
    assert main(["trace", "mermaid", path, "--from", "0", "--to", "5", "--max", "3"]) == 0
    assert capsys.readouterr().out.startswith("sequenceDiagram\n")
    out = tmp_path / "h.json"
    assert main(["trace", "history", path, "--format", "porcupine", "-o", str(out)]) == 0
    assert json.loads(out.read_text())[0]["ClientId"] == 0
    assert main(["trace", "mermaid", path, "--max", "0"]) == 2
    assert "--max" in capsys.readouterr().err


def test_a_merged_real_trace_exports_too(tmp_path):
    """Real traces: float times, `start` records, a driver's result texts, odd names."""
    recs = [
        {"type": "header", "version": 1, "scenario": "x", "seed": 1, "n": 4, "f": 1, "byzantine": [],
         "clients": ["c0", "obs erver"], "mode": "real", "origin": 1796447313700.341},
        {"t": 0.0, "type": "start", "replica": 1, "pid": 7, "view": 0, "last_executed": 0},
        {"t": 81.962, "type": "submit", "client": "c0", "timestamp": 17, "op": "get k", "read_only": True,
         "op_hex": "8263676574416b"},
        {"t": 82.1, "type": "send", "from": "c0", "to": 1, "kind": "REQUEST", "id": "aa", "client": "c0",
         "timestamp": 17, "size": 90},
        {"t": 82.9, "type": "deliver", "from": "c0", "to": 1, "kind": "REQUEST", "id": "aa"},
        {"t": 83.5, "type": "send", "from": 1, "to": "obs erver", "kind": "REPLY", "id": "bb", "size": 9},
        {"t": 115.9, "type": "complete", "client": "c0", "timestamp": 17, "result": "(not found)"},
        {"t": 120.0, "type": "submit", "client": "c0", "timestamp": 18, "op": "put k v", "read_only": False,
         "op_hex": "8363707574416b4176"},
        {"t": 130.25, "type": "complete", "client": "c0", "timestamp": 18, "result": "ok"},
    ]
    path = tmp_path / "real.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    records = list(read_trace(str(path)))
    events = list(shiviz_events(records))
    assert events[0].host == "r1" and events[0].text.startswith("start (pid 7")
    deliver = next(e for e in events if e.text.startswith("deliver"))
    assert deliver.clock == {"c0": 2, "r1": 2}
    assert any(e.host == "r1" and "to obs_erver" in e.text for e in events)
    lines = list(mermaid_lines(records, Window(82.0, 100.0)))
    # Mermaid reads a space as syntax: the lane gets a name of its own (export._mermaid_id).
    assert "    participant c_obs_erver_539d9e as client obs erver" in lines
    assert "    r1->>c_obs_erver_539d9e: REPLY" in lines and "    c0->>r1: REQUEST c0 t=17" in lines
    assert not any("submit" in ln for ln in lines)  # at 81.962: outside the window
    edn = list(history_lines(records, HistoryFormat.KNOSSOS))
    assert edn[1] == '{:process 0, :type :ok, :f :read, :value ["k" nil], :time 115900000, :index 1}'
    assert edn[3].startswith('{:process 0, :type :ok, :f :write, :value ["k" "v"], :time 130250000,')


def test_no_string_of_a_trace_changes_the_mermaid_or_shiviz_structure():
    # Found by a red-team pass: a line break of any kind (Mermaid reads "\r" as one,
    # ShiViz's regex stops at U+2028) in a label, an unescaped note, or a client name
    # that Mermaid reads as syntax or as a keyword added statements or events of its own.
    header = {"type": "header", "version": 1, "scenario": "s", "seed": 1, "n": 2, "f": 0, "byzantine": [0],
              "clients": ["end", "x-y", "r1", "c0"], "mode": "sim"}
    evil = "ok\r    participant EVIL\u2028r9 {\"r9\": 1}\u2029%%{init: {}}%%\n    r0->>r1: fake"
    records = [
        header,
        {"t": 1, "type": "send", "from": 0, "to": 1, "kind": "PREPARE", "view": 0, "seq": 1, "digest": "d1",
         "id": "a", "size": 1, "lie": "mutated", "honest": evil, "honest_digest": evil},
        {"t": 2, "type": "send", "from": "x-y", "to": 0, "kind": "REQUEST", "client": "x-y", "timestamp": 1,
         "id": "b", "size": 1},
        {"t": 3, "type": "note", "replica": 1, "text": evil},
        {"t": 4, "type": "complete", "client": "end", "timestamp": 1, "result": evil, "latency_ms": 1},
    ]
    lines = list(mermaid_lines(records))
    body = lines[1:]
    assert all(line.startswith("    ") and "\r" not in line and "\u2028" not in line for line in body), body
    # The text is kept, inside its own statement: no statement of its own.
    assert not any(line.strip().startswith(("participant EVIL", "r0->>r1: fake")) for line in body)
    assert not any("%%" in line for line in lines)
    ids = [line.split()[1] for line in body if line.startswith("    participant ")]
    assert len(set(ids)) == len(ids) == 6  # r0, r1 and four clients, none sharing a lane
    assert "c0" in ids and "end" not in ids and "x-y" not in ids and ids.count("r1") == 1
    shiviz = list(shiviz_lines(records))
    assert not any(ch in line for line in shiviz for ch in "\r\n\u2028\u2029\x85")
