"""A person's files that cannot be read are one sentence, never a traceback or a read
that never returns (pbft/files.py): a NUL in a name, a directory, a pipe or a device, a
file that is not UTF-8, TOML nested past the parser's recursion. Found by a red-team pass
over the command line (a FIFO named as the CA hung `pbft config check`; a deeply nested
cluster or scenario file, and a scenario file that is not UTF-8, gave tracebacks)."""

from __future__ import annotations

import os

import pytest

from pbft.cluster.admin import load_plan
from pbft.cluster.configcheck import check_cluster_file
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.errors import ConfigError, UsageError
from pbft.files import Unreadable, check_regular, parse_toml
from pbft.node.clusterfile import read_cluster_table
from pbft.sim.scenario import load_scenario

DEEP = b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n"


def test_a_name_that_no_file_can_have_or_that_could_block_is_refused_before_opening(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    regular = tmp_path / "file"
    regular.write_text("x")
    for path, why in (
        ("a\x00b", "has a NUL character in its name"),
        (str(tmp_path), "is a directory, not a file"),
        (str(fifo), "is not a regular file (a pipe or a device)"),
        ("/dev/null", "is not a regular file (a pipe or a device)"),
    ):
        with pytest.raises(Unreadable) as caught:
            check_regular(path)
        assert str(caught.value) == why
    check_regular(str(regular))
    check_regular(str(tmp_path / "missing"))  # left to open(), in the caller's words


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe", "is not UTF-8 text"),
        (DEEP, "nests arrays or tables too deeply to be read"),
        (b"[[a\n", "is not valid TOML: "),
    ],
    ids=["not UTF-8", "nested too deeply", "not TOML"],
)
def test_what_is_not_a_toml_document_is_said_in_words(data, why):
    with pytest.raises(Unreadable) as caught:
        parse_toml(data)
    assert str(caught.value).startswith(why)


def test_a_scenario_file_that_cannot_be_read_is_one_sentence(tmp_path):
    fifo = tmp_path / "s.toml"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.toml"
    deep.write_bytes(DEEP)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    for path, why in ((fifo, "is not a regular file (a pipe or a device)"),
                      (deep, "nests arrays or tables too deeply to be read"),
                      (binary, "is not UTF-8 text")):
        with pytest.raises(UsageError) as caught:
            load_scenario(str(path))
        assert str(caught.value) == f"the scenario file {str(path)!r} {why}."


def test_a_cluster_file_and_the_files_it_names_that_cannot_be_read_are_errors_of_the_check(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_bytes(DEEP)
    with pytest.raises(ConfigError, match="nests arrays or tables too deeply"):
        read_cluster_table(str(deep))

    path = generate_cluster(str(tmp_path / "keys"), f=1, clients=["alice"], ports=free_ports(4), cluster_id="files")
    ca = os.path.join(os.path.dirname(path), "ca.pem")
    os.remove(ca)
    os.mkfifo(ca)  # a check that opened it would wait for a writer for ever
    report = check_cluster_file(path)
    assert any("is not a regular file (a pipe or a device)" in e for e in report.errors), report.errors

    with open(path) as fh:
        text = fh.read()
    with open(path, "w") as fh:
        fh.write(text.replace('ca = "ca.pem"', 'ca = "ca\\u0000.pem"'))
    report = check_cluster_file(path)
    assert "[tls]: 'ca' must be a path without a NUL character." in report.errors, report.errors


def test_a_plan_that_is_a_pipe_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "plan.toml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="is not a plan written by"):
        load_plan(str(fifo))


def test_a_path_object_is_taken_as_its_string(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("x")
    check_regular(regular)
    with pytest.raises(Unreadable, match="is a directory"):
        check_regular(tmp_path)


def test_a_real_runs_trace_is_not_written_to_a_pipe_or_a_directory(tmp_path):
    from pbft.cli.main import check_output_file

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, why in ((str(fifo), "is not a regular file (a pipe or a device)"),
                      (str(tmp_path), "is a directory, not a file")):
        with pytest.raises(UsageError) as caught:
            check_output_file(path, "--trace")
        assert str(caught.value) == f"--trace: will not write {path}: it {why}."
    check_output_file(str(tmp_path / "trace.jsonl"), "--trace")
    assert not (tmp_path / "trace.jsonl").exists()  # checked, not left behind
