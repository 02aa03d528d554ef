"""A KeyboardInterrupt the service's own code raises is its error result; a real Ctrl-C
still stops the process (pbft/service/api.py: operator_interrupt, _user_call).

Red-team finding 6: a service whose `execute` raised KeyboardInterrupt (a library giving
up) was taken for Ctrl-C: every replica stopped, and stopped again on each restart when
it replayed the operation; the simulator exited 130 without a word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pbft.protocol import codec
from pbft.service.api import Hosted, Service

ROOT = Path(__file__).resolve().parent.parent.parent


class Poison(Service):
    def execute(self, state, operation, client):
        state.put(b"k", b"v")
        if operation == b"poison":
            raise KeyboardInterrupt("library gave up")
        return b"ok"

    def query(self, state, operation, client):
        if operation == b"poison":
            raise KeyboardInterrupt("library gave up")
        return None


class CtrlC(Service):
    """Sends this process a real SIGINT from inside execute, as an operator's Ctrl-C
    arriving while the service runs."""

    def execute(self, state, operation, client):
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next check of the interpreter
            pass
        return b"not reached"


def test_a_keyboard_interrupt_raised_by_the_service_is_its_error_result():
    h = Hosted(Poison())
    assert codec.decode(h.execute(b"poison", "c0")) == {"error": "KeyboardInterrupt: library gave up"}
    assert h.store.get(b"k") is None  # its writes are discarded like any failure's
    assert codec.decode(h.query(b"poison", "c0")) == {"error": "KeyboardInterrupt: library gave up"}
    assert h.execute(b"x", "c0") == b"ok"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after each call


def test_a_keyboard_interrupt_raised_in_setup_is_the_services_failure():
    from pbft.service.api import ServiceError

    class BadSetup(Service):
        def setup(self, state):
            raise KeyboardInterrupt

        def execute(self, state, operation, client):
            return b""

    with pytest.raises(ServiceError, match="setup raised KeyboardInterrupt"):
        Hosted(BadSetup())


def test_a_real_ctrl_c_while_the_service_runs_still_stops_the_process():
    h = Hosted(CtrlC())
    with pytest.raises(KeyboardInterrupt):
        h.execute(b"x", "c0")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_under_trio_too_only_a_real_ctrl_c_stops():
    """In a replica process Trio's SIGINT handler is in force (not Python's default)."""

    async def main():
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert codec.decode(Hosted(Poison()).execute(b"poison", "c0"))["error"].startswith("KeyboardInterrupt")
        Hosted(CtrlC()).execute(b"x", "c0")

    with pytest.raises(KeyboardInterrupt):
        trio.run(main)


def test_a_service_off_the_main_thread_cannot_be_interrupted_by_a_signal():
    import threading

    out = []
    t = threading.Thread(target=lambda: out.append(Hosted(Poison()).execute(b"poison", "c0")))
    t.start()
    t.join()
    assert codec.decode(out[0]) == {"error": "KeyboardInterrupt: library gave up"}


POISON_FILE = '''
import cbor2
from pbft.service.api import Service

class Poison(Service):
    name = "test.poison"
    def execute(self, state, operation, client):
        if cbor2.loads(operation) == ["poison"]:
            raise KeyboardInterrupt("library gave up")
        state.put(b"n", operation)
        return b"ok"
    def sample_operation(self, rng, client, clients):
        return cbor2.dumps(["poison"] if rng.random() < 0.3 else ["x", rng.randrange(9)]), False

class CtrlC(Service):
    name = "test.ctrlc"
    def execute(self, state, operation, client):
        import signal
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):
            pass
        return b"ok"
    def sample_operation(self, rng, client, clients):
        return cbor2.dumps(["x"]), False
'''


def _scenario(tmp_path, cls):
    (tmp_path / "poison.py").write_text(POISON_FILE)
    path = tmp_path / f"{cls}.toml"
    path.write_text(f'name = "{cls}"\nseed = 1\n[service]\nclass = "poison.py:{cls}"\n'
                    "[workload]\nclients = 2\nrequests = 8\n")
    return path


def test_the_simulator_judges_a_service_that_raises_keyboard_interrupt(tmp_path):
    path = _scenario(tmp_path, "Poison")
    run = subprocess.run([sys.executable, "-m", "pbft", "scenario", "run", str(path)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "PASS" in run.stdout


def test_a_real_ctrl_c_during_a_simulated_run_still_stops_it(tmp_path):
    path = _scenario(tmp_path, "CtrlC")
    run = subprocess.run([sys.executable, "-m", "pbft", "scenario", "run", str(path)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 130, (run.stdout, run.stderr)


RANDOM_SETUP = '''
import os
from pbft.service.api import Service

class RandSetup(Service):
    def setup(self, state):
        state.put(b"seed", os.urandom(16))
    def execute(self, state, operation, client):
        return b"ok"

class FixedSetup(Service):
    def setup(self, state):
        state.put(b"seed", b"0123")
    def execute(self, state, operation, client):
        return b"ok"
'''


def test_a_setup_that_writes_another_state_each_time_is_refused_when_loaded(tmp_path):
    """Smaller point of the red-team report: every replica would start from another
    genesis state and never agree on a checkpoint; caught at load (keygen, replica start)."""
    from pbft.adversary.loader import make_service
    from pbft.errors import UsageError
    from pbft.protocol.config import ServiceSpec

    (tmp_path / "setups.py").write_text(RANDOM_SETUP)
    with pytest.raises(UsageError, match="setup wrote a different initial state each time"):
        make_service(ServiceSpec("setups.py:RandSetup", (), str(tmp_path)))
    make_service(ServiceSpec("setups.py:FixedSetup", (), str(tmp_path)))
