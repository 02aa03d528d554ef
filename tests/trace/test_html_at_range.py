"""`pbft trace html --at T` past the end of the run is refused in one sentence saying
where the run ends; the times it prints are plain numbers (no `1e+08`)."""

from __future__ import annotations

import pytest
import viewer_traces

from pbft.cli.main import main
from pbft.errors import UsageError
from pbft.trace import html
from pbft.trace.model import build, from_records

HEADER = {"type": "header", "version": 1, "n": 1}


def test_at_past_the_end_is_refused():
    m = from_records([HEADER, {"t": 1000, "type": "crash", "replica": 0}, {"t": 1500, "type": "end"}])
    assert html.resolve_at(m, "500") == 1500  # the last record itself is fine
    with pytest.raises(UsageError, match=r"--at 99999999: the run ends 500 ms after its first record; "
                                         r"give a time from 0 to 500 or 'violation'\."):
        html.resolve_at(m, "99999999")


def test_times_are_plain_numbers():
    assert [html.ms_text(x) for x in (1e8, 4.0, 2.5, 0.1234, 0.0, -0.0)] == ["100000000", "4", "2.5", "0.123", "0", "0"]


def test_cli_refuses_a_time_past_the_end_in_one_sentence(tmp_path, capsys):
    trace = str(viewer_traces.equivocate())
    m = build(trace)
    end = m.t_end - m.t_start
    assert main(["trace", "html", trace, "-o", str(tmp_path / "x.html"), "--at", str(end)]) == 0
    assert f"opens at {html.ms_text(end)} ms" in capsys.readouterr().out
    assert main(["trace", "html", trace, "-o", str(tmp_path / "y.html"), "--at", "99999999"]) == 2
    err = capsys.readouterr().err
    assert f"the run ends {html.ms_text(end)} ms after its first record" in err and err.count("\n") == 1, err
    assert not (tmp_path / "y.html").exists()
