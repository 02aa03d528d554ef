"""A user's attacker that misbehaves as a program, in the loader and the simulator: an
`async def` hook is refused at load (it would silently do nothing), and whatever the
user's code prints never reaches stdout, which is the tool's (`--json`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from pbft.adversary import loader
from pbft.errors import UsageError

pytestmark = pytest.mark.timeout(60)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("base", "hook", "target"),
    [("Behaviour", "on_send", "replica"), ("Behaviour", "setup", "replica"),
     ("ClientBehaviour", "on_tick", "client")],
)
def test_an_async_hook_is_refused_at_load(tmp_path, base, hook, target):
    arg = "self, out" if hook == "on_send" else "self"
    write(tmp_path, "asynchook.py", f"""
        from pbft.adversary import {base}


        class AsyncHook({base}):
            async def {hook}({arg}):
                pass
        """)
    with pytest.raises(UsageError) as err:
        loader.load("asynchook.py:AsyncHook", target, str(tmp_path))
    text = str(err.value)
    assert f"AsyncHook.{hook} is an async def" in text and "asynchook.py line 6" in text
    assert "\n" not in text


CHATTY = """
    from pbft.adversary import Behaviour, ClientBehaviour

    print("chatty attacks loaded")


    class ChattyReplica(Behaviour):
        def setup(self):
            print("set up")

        def on_send(self, out):
            if out.kind == "COMMIT":
                print("commit", out.seq)


    class ChattyClient(ClientBehaviour):
        def on_output(self, actions):
            print("client sends", len(actions))
            return actions
    """

CHATTY_TOML = """
    name = "chatty"
    f = 1
    seed = 3
    [workload]
    clients = 3
    requests = 5
    [[byzantine]]
    replica = 2
    behaviour = "chatty.py:ChattyReplica"
    [[byzantine]]
    client = 2
    behaviour = "chatty.py:ChattyClient"
    """


def test_prints_of_user_code_leave_the_simulators_json_parseable(tmp_path):
    write(tmp_path, "chatty.py", CHATTY)
    toml = write(tmp_path, "chatty.toml", CHATTY_TOML)
    proc = subprocess.run([sys.executable, "-m", "pbft", "scenario", "run", str(toml), "--json"],
                          capture_output=True, text=True, timeout=50, cwd=tmp_path)
    (result,) = json.loads(proc.stdout)  # nothing but the JSON on stdout
    assert result["verdict"] == "PASS", proc.stderr[-2000:]
    assert "chatty attacks loaded" in proc.stderr and "commit" in proc.stderr and "client sends" in proc.stderr
