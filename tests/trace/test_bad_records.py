"""Every trace command reads only well-formed records: `read_trace` checks each record as
it reads it (docs/formats.md, "The trace file"), so a record of a known type with a field
missing or of the wrong type, NaN, a line nested too deeply or a header with absurd
counts is one sentence naming the line (exit 2), never a traceback or a hang; records of
types this version does not know are passed on."""

from __future__ import annotations

import json

import pytest

from pbft.cli.main import main
from pbft.sim.trace import TraceError, read_trace

pytestmark = pytest.mark.timeout(60)

HEADER = {"type": "header", "version": 1, "scenario": "s", "seed": 1, "n": 4, "f": 1, "byzantine": [0],
          "clients": ["c0"], "mode": "sim"}
SEND = {"t": 1, "type": "send", "from": 0, "to": 1, "kind": "PREPARE", "id": "aa", "view": 0, "seq": 1,
        "digest": "d1", "size": 9}
RECORDS = [
    HEADER,
    {"t": 0, "type": "submit", "client": "c0", "timestamp": 1, "op": "put k v", "read_only": False,
     "op_hex": "8363707574416b4176"},
    SEND,
    {"t": 1, "type": "send", "from": 0, "to": 2, "kind": "PREPARE", "id": "ab", "view": 0, "seq": 1,
     "digest": "d2", "size": 9, "lie": "mutated", "honest": "aa", "honest_digest": "d1"},
    {"t": 1, "type": "withhold", "from": 0, "to": 3, "kind": "PREPARE", "id": "aa", "view": 0, "seq": 1,
     "digest": "d1"},
    {"t": 1, "type": "delay", "from": 0, "to": 1, "kind": "PREPARE", "id": "aa", "ms": 5, "reordered": False,
     "faults": [0]},
    {"t": 1, "type": "duplicate", "from": 0, "to": 1, "kind": "PREPARE", "id": "aa", "copies": 2,
     "arrive": [3, 9]},
    {"t": 1, "type": "drop", "from": 0, "to": 2, "kind": "PREPARE", "id": "ab", "reason": "drop", "fault": 0},
    {"t": 3, "type": "deliver", "from": 0, "to": 1, "kind": "PREPARE", "id": "aa"},
    {"t": 4, "type": "prepared", "replica": 1, "view": 0, "seq": 1, "digest": "d1"},
    {"t": 4, "type": "executed", "replica": 1, "view": 0, "seq": 1, "digest": "d1", "requests": [["c0", 1]],
     "faulty": True},
    {"t": 4, "type": "checkpoint-stable", "replica": 1, "seq": 1, "digest": "d1"},
    {"t": 4, "type": "view-change-started", "replica": 2, "view": 1},
    {"t": 4, "type": "view-installed", "replica": 2, "view": 1, "primary": 1},
    {"t": 4, "type": "rejected", "replica": 2, "reason": "bad-digest", "peer": 0, "detail": "x"},
    {"t": 4, "type": "evidence", "replica": 2, "culprit": 0, "kind": "PREPARE"},
    {"t": 5, "type": "crash", "replica": 3},
    {"t": 6, "type": "restart", "replica": 3, "amnesia": False},
    {"t": 6, "type": "start", "replica": 3, "pid": 7, "view": 0, "last_executed": 0},
    {"t": 7, "type": "complete", "client": "c0", "timestamp": 1, "result": "ok", "result_hex": "f5", "latency": 7},
    {"t": 8, "type": "violation", "check": "agreement", "detail": "two digests"},
    {"t": 9, "type": "end", "verdict": "FAIL", "violations": 1, "requests_completed": 1, "requests_total": 1,
     "view_changes": 1, "delivered": 1, "dropped": 1, "trace_digest": "00"},
]
COMMANDS = (["mermaid"], ["shiviz"], ["history", "--format", "knossos"], ["history", "--format", "porcupine"],
            ["html", "-o", "{out}"])


def write(path, lines) -> str:
    path.write_text("".join(x if isinstance(x, str) else json.dumps(x) + "\n" for x in lines))
    return str(path)


def run(argv: list[str], tmp_path) -> int:
    return main([a.replace("{out}", str(tmp_path / "page.html")) for a in argv])


def without(rec: dict, key: str) -> dict:
    return {k: v for k, v in rec.items() if k != key}


def test_the_well_formed_trace_reads_and_every_command_takes_it(tmp_path, capsys):
    path = write(tmp_path / "t.jsonl", RECORDS)
    assert list(read_trace(path)) == RECORDS
    for cmd in COMMANDS:
        assert run(["trace", cmd[0], path, *cmd[1:]], tmp_path) == 0, cmd
    capsys.readouterr()


# (the record put as line 3, in place of SEND; words of the sentence)
BAD_RECORDS = [
    (without(SEND, "from"), "a 'send' record has no 'from'"),
    (without(SEND, "id"), "a 'send' record has no 'id'"),
    (without(SEND, "kind"), "a 'send' record has no 'kind'"),
    ({**SEND, "kind": 5}, "a 'send' record has 'kind' 5, not a string"),
    ({**SEND, "id": [1]}, "'id' [1], not a string"),
    ({**SEND, "id": {"a": 1}}, "'id' {\"a\": 1}, not a string"),
    ({**SEND, "from": [1]}, "'from' [1], not a replica id or a client name"),
    ({**SEND, "from": None}, "'from' null"),
    ({**SEND, "to": True}, "'to' true"),
    ({**SEND, "to": 1.5}, "'to' 1.5"),
    ({**SEND, "to": -3}, "'to' -3"),
    ({**SEND, "to": 100}, "'to' 100"),
    ({**SEND, "seq": [1]}, "'seq' [1], not an integer"),
    ({**SEND, "view": "x"}, "'view' \"x\""),
    ({**SEND, "digest": 5}, "'digest' 5"),
    ({**SEND, "size": "x"}, "'size' \"x\""),
    ({**SEND, "t": "x"}, "a 'send' record has 't' \"x\", not a time"),
    ({**SEND, "t": -5}, "'t' -5"),
    ({**SEND, "t": 1e300}, "'t' 1e+300"),
    (without(SEND, "t"), "a 'send' record without a numeric 't'"),
    ({"t": 1, "type": "zzz"} | {"t": [1]}, "a 'zzz' record has 't' [1]"),  # unknown types need a time too
    ({"t": 1, "type": "violation"}, "a 'violation' record has no 'check'"),
    ({"t": 1, "type": "violation", "check": 5, "detail": None}, "'check' 5"),
    ({"t": 1, "type": "crash"}, "a 'crash' record has no 'replica'"),
    ({"t": 1, "type": "crash", "replica": "x"}, "'replica' \"x\", not a replica id"),
    ({"t": 1, "type": "crash", "replica": 1000}, "'replica' 1000"),
    ({"t": 1, "type": "submit", "client": "c0", "op": "get k"}, "a 'submit' record has no 'timestamp'"),
    ({"t": 1, "type": "submit", "client": "c0", "timestamp": "x", "op": "get k"}, "'timestamp' \"x\""),
    ({"t": 1, "type": "submit", "client": 5, "timestamp": 1, "op": "get k"}, "'client' 5, not a client name"),
    ({"t": 1, "type": "submit", "client": "c0", "timestamp": 1, "op": "get k", "op_hex": 5}, "'op_hex' 5"),
    ({"t": 1, "type": "submit", "client": "c0", "timestamp": 1, "op": 5}, "'op' 5"),
    ({"t": 1, "type": "submit", "client": "c0", "timestamp": 1, "op": "x", "read_only": "x"}, "'read_only' \"x\""),
    ({"t": 1, "type": "complete", "client": "c0", "result": "ok"}, "a 'complete' record has no 'timestamp'"),
    ({"t": 1, "type": "complete", "client": "c0", "timestamp": 1, "result": [1]}, "'result' [1]"),
    ({"t": 1, "type": "complete", "client": "c0", "timestamp": 1, "result": "ok", "latency": "x"}, "'latency'"),
    ({"t": 1, "type": "executed", "replica": 1, "view": 0, "seq": 1, "digest": "d", "requests": [[1]]},
     "an 'executed' record has 'requests' [[1]]"),
    ({"t": 1, "type": "prepared", "replica": 1, "view": 0, "seq": 1}, "a 'prepared' record has no 'digest'"),
    ({"t": 1, "type": "duplicate", "from": 0, "to": 1, "kind": "", "id": "a", "copies": 10**9}, "'copies'"),
    ({"t": 1, "type": "end", "verdict": 5}, "an 'end' record has 'verdict' 5"),
    ({"t": 1, "type": "end", "checks": 5}, "'checks' 5, not an object"),
    ("[" * 100000 + "]" * 100000 + "\n", "nested too deeply"),
    ('{"t": NaN, "type": "crash", "replica": 0}\n', "NaN is not a number JSON allows"),
    ('{"t": Infinity, "type": "crash", "replica": 0}\n', "Infinity is not a number JSON allows"),
    ('{"t": -Infinity, "type": "crash", "replica": 0}\n', "-Infinity is not a number JSON allows"),
    ('{"t": 1e400, "type": "crash", "replica": 0}\n', "'t' Infinity"),
    ('{"t": 1, "type": "crash", "replica": 1' + "0" * 5000 + "}\n", "not a JSON object"),
    (b"\xff\xfe\n", "not UTF-8 text"),
]


@pytest.mark.parametrize(("bad", "words"), BAD_RECORDS, ids=[w for _, w in BAD_RECORDS])
def test_a_bad_record_is_one_sentence_naming_its_line(tmp_path, capsys, bad, words):
    path = tmp_path / "t.jsonl"
    if isinstance(bad, bytes):
        path.write_bytes(json.dumps(HEADER).encode() + b"\n" + json.dumps(RECORDS[1]).encode() + b"\n" + bad)
    else:
        write(path, [HEADER, RECORDS[1], bad, *RECORDS[3:]])
    with pytest.raises(TraceError) as info:
        list(read_trace(str(path)))
    assert str(info.value).startswith(f"{path} line 3: ") and words in str(info.value), str(info.value)
    for cmd in COMMANDS:
        assert run(["trace", cmd[0], str(path), *cmd[1:]], tmp_path) == 2, cmd
        err = capsys.readouterr().err
        assert err == f"pbft: {info.value}\n", err


BAD_HEADERS = [
    ({"n": 10**9}, "the header has 'n' 1000000000, not a number of replicas (1 to 100)"),
    ({"n": -1}, "'n' -1"),
    ({"n": 0}, "'n' 0"),
    ({"n": "4"}, "'n' \"4\""),
    ({"n": True}, "'n' true"),
    ({"n": None}, "'n' null"),
    ({"f": 99}, "'f' 99"),
    ({"byzantine": [{}]}, "'byzantine' [{}], not a list of replica ids"),
    ({"byzantine": [[1]]}, "'byzantine' [[1]]"),
    ({"byzantine": "0"}, "'byzantine' \"0\""),
    ({"clients": "c0"}, "'clients' \"c0\""),
    ({"clients": [5, None]}, "'clients' [5, null]"),
    ({"clients": [f"c{i}" for i in range(5000)]}, "not a list of at most 4096 client names"),
    ({"mode": "x"}, "'mode' \"x\""),
    ({"scenario": 5}, "'scenario' 5"),
    ({"seed": "x"}, "'seed' \"x\""),
    ({"version": "1"}, "trace version \"1\", this pbft reads version 1"),
    ({"version": True}, "trace version true"),
]


@pytest.mark.parametrize(("change", "words"), BAD_HEADERS, ids=[w for _, w in BAD_HEADERS])
def test_a_bad_header_is_one_sentence(tmp_path, capsys, change, words):
    path = write(tmp_path / "t.jsonl", [{**HEADER, **change}, *RECORDS[1:]])
    with pytest.raises(TraceError, match="line 1: ") as info:
        list(read_trace(path))
    assert words in str(info.value), str(info.value)
    assert run(["trace", "mermaid", path], tmp_path) == 2  # n = 10**9 hung here, drawing lanes
    assert capsys.readouterr().err == f"pbft: {info.value}\n"


def test_what_this_version_does_not_know_is_passed_on(tmp_path, capsys):
    # Unknown record types and fields (the writer may grow), and null for an optional
    # field (a message whose digest could not be read), are not errors.
    extra = [{"t": 2, "type": "gossip", "what": [1, {"x": None}]},
             {**SEND, "digest": None, "new-field": {"a": [1]}},
             {"t": 3, "type": "crash", "replica": 2, "why": "power"}]
    path = write(tmp_path / "t.jsonl", [{**HEADER, "future": [1]}, *RECORDS[1:-1], *extra, RECORDS[-1]])
    assert len(list(read_trace(path))) == len(RECORDS) + len(extra)
    for cmd in COMMANDS:
        assert run(["trace", cmd[0], path, *cmd[1:]], tmp_path) == 0, cmd
    # the viewer leaves out the `gossip` record (and the `withhold`, which it does not draw)
    assert "2 records of kinds this version does not draw" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "words"), [
    (["html", "{trace}", "-o", "{out}", "--at", "nan"], "--at nan: give a time in ms from 0"),
    (["html", "{trace}", "-o", "{out}", "--at", "-5"], "--at -5: "),
    (["html", "{trace}", "-o", "{out}", "--at", "inf"], "--at inf: "),
    (["mermaid", "{trace}", "--from", "nan"], "--from nan: give a time in ms, 0 or more"),
    (["mermaid", "{trace}", "--from", "-1"], "--from -1: "),
    (["mermaid", "{trace}", "--to", "inf"], "--to inf: "),
])
def test_a_time_that_is_no_time_is_refused(tmp_path, capsys, argv, words):
    path = write(tmp_path / "t.jsonl", RECORDS)
    assert run(["trace", *[a.replace("{trace}", path) for a in argv]], tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("pbft: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "page.html").exists()


def test_a_pipe_or_a_directory_is_one_sentence_not_a_read_that_never_returns(tmp_path, capsys):
    import os

    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path, words in ((fifo, "is not a regular file (a pipe or a device)"), (tmp_path, "is a directory"),
                        (f"{tmp_path}/a\x00b", "has a NUL character in its name")):
        for cmd in (*COMMANDS, ["merge", "-o", "{out}"]):
            assert run(["trace", cmd[0], str(path), *cmd[1:]], tmp_path) == 2, cmd
            err = capsys.readouterr().err
            assert err.startswith("pbft: ") and words in err and err.count("\n") == 1, err
