"""The `replay:` line `pbft scenario run` prints reproduces the run: every option that
changed the run (`--broken`, `--service`, `--service-param`) is on it."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from pbft.cli import main as cli

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

FLAKY = '''
from pbft.service.api import Service


class Flaky(Service):
    name = "test.flaky"
    version = "1"
    calls = 0

    def __init__(self, flaky: bool = False) -> None:
        self.flaky = flaky

    def execute(self, state, operation, client):
        if self.flaky:  # a different result on every replica: the checks catch it
            Flaky.calls += 1
            return str(Flaky.calls).encode()
        return b"ok"

    def query(self, state, operation, client):
        return None

    def sample_operation(self, rng, client, clients):
        return b"x", False
'''


def _replay(out: str) -> list[str]:
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("replay: ")]
    assert len(lines) == 1, out
    argv = shlex.split(lines[0].removeprefix("replay: "))
    assert argv[:3] == ["pbft", "scenario", "run"], argv
    return argv[1:]


def _violation(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if line.strip().startswith("seed "))


def test_the_replay_line_carries_broken(capsys):
    path = str(SCENARIOS / "rules-new-view-batch.toml")
    assert cli.main(["scenario", "run", path, "--broken", "new-view-not-recomputed"]) == 1
    out = capsys.readouterr().out
    argv = _replay(out)
    assert argv[-2:] == ["--broken", "new-view-not-recomputed"], argv
    assert cli.main(argv) == 1  # the replay fails the same way
    again = capsys.readouterr().out
    assert _violation(again) == _violation(out)


def test_the_replay_line_carries_the_service_and_its_parameters(tmp_path, capsys, monkeypatch):
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "s.toml").write_text("name = 'flaky'\n[workload]\nclients = 1\nrequests = 2\n")
    monkeypatch.chdir(tmp_path)
    argv = ["scenario", "run", "s.toml", "--service", "flaky.py:Flaky", "--service-param", "flaky=true"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    replay = _replay(out)
    assert replay == ["scenario", "run", "s.toml", "--seed", "0", "--service", "flaky.py:Flaky",
                      "--service-param", "flaky=true"], replay
    assert cli.main(replay) == 1
    assert _violation(capsys.readouterr().out) == _violation(out)
    # Without the parameter the same service passes: the parameter is what failed the run.
    assert cli.main(["scenario", "run", "s.toml", "--service", "flaky.py:Flaky"]) == 0
    assert os.path.exists("flaky.py")


def test_a_real_run_says_how_to_run_it_again_with_every_option():
    from argparse import Namespace

    from pbft.cli.scenario import replay_command, run_options

    args = Namespace(broken="b", service="svc.py:S", service_param=["a=1", "b=two words"])
    line = replay_command("my file.toml", 5, run_options(args, real=True))
    assert shlex.split(line) == ["pbft", "scenario", "run", "my file.toml", "--seed", "5", "--real",
                                 "--broken", "b", "--service", "svc.py:S", "--service-param", "a=1",
                                 "--service-param", "b=two words"]
