"""The README's command examples run against a throwaway cluster, so they cannot drift from
the tool: the quick path of "Running a cluster" is executed as written (keys made, four
replicas started one command each, the client lines print what their comments say, status
says healthy), and every `pbft ...` line anywhere in the README names a real command with
options that command has."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TIMEOUT = 60

pytestmark = pytest.mark.timeout(240)


def shell_blocks() -> list[list[str]]:
    """The README's ```sh blocks, as lists of command lines (comments kept)."""
    text = README.read_text()
    return [
        [line for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
    ]


def pbft_lines() -> list[str]:
    return [line for block in shell_blocks() for line in block if line.startswith("pbft ")]


def block_with(first: str) -> list[str]:
    return next(block for block in shell_blocks() if block and block[0].startswith(first))


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *argv], capture_output=True, text=True, timeout=TIMEOUT, **kw
    )


def split(line: str, tmp: Path, base_port: int) -> tuple[list[str], str]:
    """A README line as argv (after `pbft`), with keys/demo moved to `tmp` and the ports to
    `base_port`; and what its comment says it prints ('' if nothing)."""
    command, _, comment = line.partition("#")
    command = command.replace("keys/demo", str(tmp / "demo")).replace("--base-port 7000", f"--base-port {base_port}")
    prints = comment.strip().removeprefix("prints:").strip() if "prints:" in comment else ""
    return shlex.split(command)[1:], prints


def free_base_port(count: int = 4) -> int:
    for base in range(24000, 60000, 97):
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


def test_every_pbft_line_in_the_readme_names_a_real_command_and_its_options():
    lines = pbft_lines()
    assert len(lines) > 20
    helps: dict[tuple[str, ...], str] = {}
    for line in lines:
        words = shlex.split(line.partition("#")[0].replace("[", "").replace("]", ""))[1:]
        lead: list[str] = []
        for w in words[:2]:
            if w.startswith("-"):
                break
            lead.append(w)
        command = tuple(lead)
        if command not in helps:
            result = run([*command, "--help"])
            if result.returncode != 0 or len(command) > 1 and "usage: pbft " + " ".join(command) not in result.stdout:
                command = command[:1]  # `client ... put`: the second word is an argument
                result = run([*command, "--help"])
            assert result.returncode == 0, (line, result.stderr)
            helps[command] = result.stdout
        for option in [w for w in words if w.startswith("--")]:
            name = option.split("=")[0]
            known = re.search(re.escape(name) + r"(?![\w-])", helps[command])
            assert known or name in ("--log-level", "--log-format"), (line, name)


def test_the_readme_quick_path_runs_as_written(tmp_path):
    base = free_base_port()
    [keygen, check] = block_with("pbft keygen --dir keys/demo")
    argv, _ = split(keygen, tmp_path, base)
    made = run(argv)
    assert made.returncode == 0, made.stderr
    argv, _ = split(check, tmp_path, base)
    checked = run(argv)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    starts = block_with("pbft replica --config keys/demo")
    assert len(starts) == 4
    procs = []
    try:
        for line in starts:
            argv, _ = split(line, tmp_path, base)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pbft", *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 30
        for port in range(base, base + 4):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the README's replicas did not start"
                    assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll()]
                    time.sleep(0.1)
        clients = block_with("pbft client --config keys/demo")
        for line in clients:
            argv, prints = split(line, tmp_path, base)
            result = run(argv)
            if argv[0] == "client":
                assert result.returncode == 0 and result.stdout.strip() == prints, (line, result)
            else:  # status: each replica, and a verdict
                assert result.returncode == 0, (line, result.stdout, result.stderr)
                assert result.stdout.strip().splitlines()[-1].startswith("healthy"), result.stdout
        # "after any edit: every problem at once", and its JSON form.
        [_, _, as_json] = block_with("pbft config check keys/demo")
        argv, _ = split(as_json, tmp_path, base)
        doc = json.loads(run(argv).stdout)
        assert {"errors", "warnings", "notes"} <= set(doc)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
