"""The viewer page (pbft.trace.html) and `pbft trace html`: one self-contained file whose
embedded data is the model, and one-sentence errors."""

from __future__ import annotations

import json
import re

import pytest
import viewer_traces

from pbft.cli.main import main
from pbft.trace import html
from pbft.trace.model import build, from_records


def embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert m, "no data element"
    return json.loads(m.group(1))


def test_the_page_is_self_contained():
    page = html.render(build(str(viewer_traces.equivocate())))
    lowered = page.lower()
    for external in ("http://", "https://", "<link", " src=", "@import", "url(", "fetch(", "xmlhttprequest"):
        assert external not in lowered, external
    assert "/*@" not in page and "@DATA@" not in page and "@TITLE@" not in page
    assert page.count("<script") == 3  # data, drawn, the viewer


def test_the_data_is_the_model_in_columns():
    m = build(str(viewer_traces.equivocate()))
    d = embedded(html.render(m))
    A, S = d["A"], d["S"]
    assert len(A["t0"]) == len(m.arrows) == len(A["k"]) == len(A["b"])
    i = next(i for i, a in enumerate(m.arrows) if a.lie)
    assert S[A["k"][i]] == m.arrows[i].kind and S[A["hd"][i]] == m.arrows[i].honest_digest
    assert A["b"][i] & 3 == int(m.arrows[i].lie)
    assert [e[2] for e in d["E"]] == [e.label for e in m.equivocations]
    assert len(d["C"]) == len(m.certificates)
    assert d["lanes"][0] == ["0", "replica", 1] and d["at"] is None and d["V"] == []


def test_a_script_end_in_the_data_cannot_end_the_element():
    header = {"type": "header", "version": 1, "scenario": "</script><b>x", "seed": 1, "n": 1, "f": 0,
              "byzantine": [], "clients": [], "mode": "sim"}
    page = html.render(from_records([header]))
    assert embedded(page)["header"]["scenario"] == "</script><b>x"
    assert "<title>pbft trace: &lt;/script&gt;&lt;b&gt;x (seed 1)</title>" in page


@pytest.mark.parametrize(
    "scenario",
    ["<!-- a comment, then <script> later", "name @DATA@ and @TITLE@", "lone \udc80 surrogate", "a & b > c"],
    ids=["comment then script", "placeholders", "lone surrogate", "ampersand"],
)
def test_no_string_of_a_trace_can_change_the_page(scenario):
    # Found by a red-team pass: "<!--" and later "<script" in any string made the parser
    # swallow the rest of the page (the viewer's script with it); "@DATA@" in a name put
    # the data in the title; a lone surrogate could not be written.
    header = {"type": "header", "version": 1, "scenario": scenario, "seed": 1, "n": 1, "f": 0,
              "byzantine": [], "clients": [], "mode": "sim"}
    page = html.render(from_records([header]))
    page.encode("utf-8")  # writable
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data and "&" not in data and data.isascii()
    assert json.loads(data)["header"]["scenario"] == scenario
    assert page.count("<script") == 3 and page.count("</script>") == 3
    title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert "<" not in title and '"A":' not in title


def test_the_page_runs_its_own_script_only():
    # A Content-Security-Policy with the hash of the viewer's script: nothing else runs,
    # nothing is loaded (tests/trace/test_browser.py shows the page still draws under it).
    import base64
    import hashlib

    page = html.render(build(str(viewer_traces.equivocate())))
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page).group(1)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy.startswith("default-src 'none'; ") and f"script-src 'sha256-{digest}';" in policy


def test_the_page_opens_at_the_violation_by_default():
    m = build(str(viewer_traces.violation()))
    assert embedded(html.render(m, html.resolve_at(m, None)))["at"] == 4
    assert html.resolve_at(m, "2.5") == 2.5


def test_cli_writes_the_page(tmp_path, capsys):
    out = tmp_path / "run.html"
    assert main(["trace", "html", str(viewer_traces.equivocate()), "-o", str(out)]) == 0
    assert "2 equivocations, 0 violations" in capsys.readouterr().out
    assert embedded(out.read_text())["header"]["n"] == 4


def test_cli_default_output_is_beside_the_trace(tmp_path, capsys):
    trace = tmp_path / "v.jsonl"
    trace.write_bytes(viewer_traces.violation().read_bytes())
    assert main(["trace", "html", str(trace), "--at", "violation"]) == 0
    assert "opens at 4 ms" in capsys.readouterr().out
    assert (tmp_path / "v.html").exists()


@pytest.mark.parametrize("args, words", [
    (["--at", "violation"], "has no violation"),
    (["--at", "soon"], "give a time in ms"),
])
def test_cli_bad_at_is_one_sentence(tmp_path, capsys, args, words):
    assert main(["trace", "html", str(viewer_traces.equivocate()), "-o", str(tmp_path / "x.html"), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("content", [None, "", "garbage\n", '{"type": "send", "t": 1}\n'])
def test_cli_malformed_trace_is_one_sentence(tmp_path, capsys, content):
    path = tmp_path / "t.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["trace", "html", str(path), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pbft: ") and err.count("\n") == 1


def test_cli_unwritable_output_is_one_sentence(tmp_path, capsys):
    assert main(["trace", "html", str(viewer_traces.equivocate()), "-o", str(tmp_path / "no" / "x.html")]) == 2
    assert "cannot write the page" in capsys.readouterr().err


def test_at_counts_from_the_first_record():
    header = {"type": "header", "version": 1, "n": 1}
    m = from_records([header, {"t": 1000, "type": "crash", "replica": 0}, {"t": 1500, "type": "end"}])
    at = html.resolve_at(m, "250")
    assert at == 1250 and embedded(html.render(m, at))["at"] == 250


def test_a_binary_file_is_one_sentence(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\xd0\xcf\x11\xe0" * 50)
    assert main(["trace", "html", str(path), "-o", str(tmp_path / "x.html")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_a_header_of_odd_types_still_makes_a_page():
    header = {"type": "header", "version": 1, "n": "four", "byzantine": "0", "clients": 5, "seed": [1]}
    m = from_records([header, {"t": 1, "type": "prepared", "replica": "zz", "view": "v"},
                      {"t": 2, "type": "submit", "client": "c0", "timestamp": [1], "op": "x"},
                      {"t": 3, "type": "complete", "client": "c0", "timestamp": [1], "result": "y"},
                      {"t": 4, "type": "violation"}])
    d = embedded(html.render(m))
    assert d["header"] == {"version": 1}
    assert [b[4] for b in d["B"]] == ["x \u2192 y"]


def test_a_fuzz_failure_gets_a_page_that_opens_at_its_violation(tmp_path, capsys):
    # `pbft fuzz --trace-dir` writes, beside each failing seed's trace, its viewer page;
    # the page's data says to open at the violation's time.
    import json as _json
    import re

    from pbft.cli.main import main as cli

    code = cli(["fuzz", "--seeds", "30", "--mode", "mutation", "--broken", "weak-prepare-quorum",
                "--trace-dir", str(tmp_path), "--json"])
    assert code == 1
    report = _json.loads(capsys.readouterr().out)
    v = report["violations"][0]
    assert v["page"] == v["trace"][: -len(".jsonl")] + ".html"
    text = open(v["page"], encoding="utf-8").read()
    data = _json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))
    violation = [r for r in map(_json.loads, open(v["trace"], encoding="utf-8")) if r["type"] == "violation"][0]
    first = _json.loads(open(v["trace"], encoding="utf-8").readlines()[1])["t"]
    assert data["at"] == violation["t"] - first
