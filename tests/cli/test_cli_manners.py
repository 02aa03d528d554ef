"""Command-line manners (issue 14, item 7): --version, defaults in every --help, a
checked --timeout, global options after the command, quiet ends when the reader goes
away, progress redrawn only on a terminal, the package's ConfigError from open_client,
parameters in `scenario list`, the replay hint's file name, faulty replicas by id.

Loopback only; every subprocess has a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest
import trio

import pbft
from pbft.cli import main as cli
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports

SCENARIOS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scenarios")


def pbft_cmd(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL, **kw,
    )


@pytest.fixture
def cluster_path(tmp_path):
    return generate_cluster(
        str(tmp_path / "keys"), f=1, clients=["alice"], ports=free_ports(4), cluster_id="manners"
    )


def test_version_comes_from_the_package(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pbft {cli.version()}"
    assert cli.version() == "0.1.0"


def test_every_help_shows_the_defaults(capsys):
    parser = cli.build_parser()
    missing = []
    for p in [parser, *cli._subparsers(parser)]:
        for a in p._actions:
            if a.option_strings and a.default is not None and a.default is not False \
                    and a.default != argparse.SUPPRESS and a.default != [] \
                    and not isinstance(a, argparse._HelpAction | argparse._VersionAction):
                if "default" not in (a.help or ""):
                    missing.append((p.prog, a.option_strings[0]))
    assert not missing, missing
    with pytest.raises(SystemExit):
        cli.main(["client", "--help"])
    out = capsys.readouterr().out
    assert "(default: 30.0)" in out and "(default: warning)" in out
    with pytest.raises(SystemExit):
        cli.main(["fuzz", "--help"])
    assert "default: 0" in capsys.readouterr().out


TIMEOUT_COMMANDS = {
    "client": ["client", "--config", "{c}", "--id", "alice", "get", "k"],
    "status": ["status", "--config", "{c}"],
    "admin replace": ["admin", "replace", "--config", "{c}", "1", "127.0.0.1:1"],
    "admin change": ["admin", "change", "--config", "{c}", "--add-client", "zed"],
    "admin apply": ["admin", "apply", "{c}.epoch-1.plan"],
}
"""Every command that takes a --timeout, with the rest of a valid command line: one
argparse type (`positive_seconds`) checks it for all of them (red team 2, finding 7:
`status` and `admin` crashed in trio, `admin` after writing the new nodes' files)."""


@pytest.mark.parametrize("command", sorted(TIMEOUT_COMMANDS))
@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_timeout_is_rejected(bad, command, cluster_path, capsys):
    before = sorted(os.listdir(os.path.dirname(cluster_path)))
    argv = [a.format(c=cluster_path) for a in TIMEOUT_COMMANDS[command]]
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--timeout", bad])
    assert info.value.code == 2
    assert "argument --timeout: " in capsys.readouterr().err
    assert sorted(os.listdir(os.path.dirname(cluster_path))) == before  # nothing written


def test_every_timeout_option_is_checked_by_one_type():
    parser = cli.build_parser()
    found = {}
    for p in [parser, *cli._subparsers(parser)]:
        for a in p._actions:
            if "--timeout" in a.option_strings:
                found[p.prog] = a.type
    assert len(found) >= len(TIMEOUT_COMMANDS), found
    assert set(found.values()) == {cli.positive_seconds}, found


def test_evidence_out_is_checked_before_anything_is_read(cluster_path, tmp_path, capsys):
    for out, why in [(str(tmp_path), "will not write .*: it is a directory, not a file"),
                     (str(tmp_path / "missing" / "x.json"), "cannot write .*: No such file or directory")]:
        assert cli.main(["evidence", "--config", cluster_path, "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.match(rf"pbft: --out: {why}\.$", err), err
    # A good path with nothing to export: the data error, and no empty file left behind.
    out = tmp_path / "ev.json"
    assert cli.main(["evidence", "--config", cluster_path, "--out", str(out)]) == 2
    assert "no replica data directory" in capsys.readouterr().err
    assert not out.exists()


def test_admin_paths_are_checked_before_anything_is_written(cluster_path, tmp_path, capsys):
    directory = os.path.dirname(cluster_path)
    before = sorted(os.listdir(directory))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (["admin", "replace", "--config", cluster_path, "1", "127.0.0.1:1", "--out", f"{a_file}/x"],
         "the new replicas' directory .* cannot be made: .*a-file is not a directory"),
        (["admin", "change", "--config", cluster_path, "--add-client", "zed", "--plan-only",
          "--plan-file", str(tmp_path)], "--plan-file: will not write .*: it is a directory"),
        (["admin", "change", "--config", cluster_path, "--add-client", "zed", "--plan-only",
          "--plan-file", str(tmp_path / "missing" / "p")], "--plan-file: cannot write .*: No such file"),
    ]
    for argv, why in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.match(f"pbft: {why}", err), err
        assert sorted(os.listdir(directory)) == before, argv
    assert sorted(os.listdir(tmp_path)) == ["a-file", "keys"]


def test_global_options_after_the_command(cluster_path):
    # No replica runs: the call times out, and its debug log shows the level applied.
    result = pbft_cmd("client", "--config", cluster_path, "--id", "alice", "--timeout", "0.5",
                      "get", "k", "--log-level", "debug", "--log-format", "json")
    assert result.returncode == 1, result
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["level"] == "debug" for line in lines), result.stderr
    # Before the command still works, and the later one wins.
    args = cli.build_parser().parse_args(["--log-level", "info", "scenario", "list", "--log-level", "DEBUG"])
    assert args.log_level == "debug"
    args = cli.build_parser().parse_args(["--log-level", "info", "scenario", "list"])
    assert args.log_level == "info" and args.log_format == "text"


def run_into_closed_pipe(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run pbft with stdout a pipe whose reader has already gone (`| head` that has
    read its fill): every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "pbft", *args], stdout=write, stderr=subprocess.PIPE,
            text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=cwd,
        )
    finally:
        os.close(write)


def test_output_cut_short_ends_quietly(cluster_path, tmp_path):
    export = tmp_path / "empty.json"
    export.write_text(json.dumps({"format": "pbft-evidence/1", "cluster": "manners", "records": []}))
    for args in (
        ["scenario", "list"],
        ["scenario", "run", os.path.join(SCENARIOS, "byz-equivocate.toml")],
        ["evidence", "--config", cluster_path, "--verify", str(export)],
    ):
        result = run_into_closed_pipe(*args)
        assert result.returncode == cli.EXIT_BROKEN_PIPE, (args, result.stderr)
        assert result.stderr == "", (args, result.stderr)
    # And through a real shell pipeline.
    shell = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m pbft scenario list | head -1"],
        capture_output=True, text=True, timeout=60,
    )
    assert shell.returncode == 0 and shell.stderr == "" and len(shell.stdout.splitlines()) == 1


def test_progress_is_redrawn_only_on_a_terminal(capsys, monkeypatch):
    from pbft.cluster.demo import Progress

    bar = Progress(3, "workload")
    for _ in range(3):
        bar.advance()
    bar.finish()
    err = capsys.readouterr().err
    assert "\r" not in err and err == "workload [" + "#" * 30 + "] 3/3\n"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = Progress(3, "workload")
    bar.advance()
    bar.finish()
    assert "\r" in capsys.readouterr().err


async def test_open_client_raises_the_package_configerror(cluster_path, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\n")
    for path, name, fragment in (
        (str(bad), "alice", "not valid TOML"),
        (str(tmp_path / "nowhere.toml"), "alice", "nowhere.toml"),
        (cluster_path, "mallory", "'mallory' is not listed"),
    ):
        with trio.fail_after(5):
            with pytest.raises(pbft.ConfigError, match=fragment) as info:
                async with pbft.open_client(path, name):
                    pass
        assert not isinstance(info.value, cli.UsageError)
    with pytest.raises(ValueError, match="timeout"):
        async with pbft.open_client(cluster_path, "alice", timeout=0):
            pass


def test_scenario_list_shows_parameters(capsys):
    assert cli.main(["scenario", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["equivocate"].endswith("(parameters: from_seq, reflect)")
    assert rows["client-abuse"].endswith("(parameters: rate, modes)")
    assert "(param " not in "".join(rows.values())


def test_the_replay_hint_names_the_file(tmp_path, capsys):
    dead = tmp_path / "dead scenario.toml"
    dead.write_text(
        "name = 'no quorum'\n[workload]\nclients = 1\nrequests = 2\n"
        "[[network]]\ncrash = 1\n[[network]]\ncrash = 2\n[expect]\nliveness_ms = 1000\n"
    )
    assert cli.main(["scenario", "run", str(dead), "--seed", "7"]) == 1
    out = capsys.readouterr().out
    assert f"replay: pbft scenario run '{dead}' --seed 7" in out, out


def test_faulty_replicas_are_printed_as_ids():
    from pbft.cli.replica import _replica_ids

    assert _replica_ids([]) == "none"
    assert _replica_ids([2]) == "replica 2"
    assert _replica_ids([1, 3]) == "replicas 1, 3"


def test_admin_takes_back_what_it_wrote_when_a_later_write_fails(cluster_path, tmp_path, capsys):
    # The new replica's directory is taken by a file: found only once the new client's
    # key and certificate are written, which are then removed again.
    directory = os.path.dirname(cluster_path)
    before = sorted(os.listdir(directory))
    out = tmp_path / "new"
    out.mkdir()
    (out / "replica-1").write_text("in the way")
    argv = ["admin", "change", "--config", cluster_path, "--add-client", "zed",
            "--replace", "1=127.0.0.1:1", "--out", str(out), "--timeout", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write the new nodes' files" in err, err
    assert err.endswith("nothing was written."), err
    assert sorted(os.listdir(directory)) == before
    assert os.listdir(out) == ["replica-1"]
