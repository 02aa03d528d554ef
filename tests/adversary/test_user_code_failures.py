"""A user's code that raises oddly or hands back nonsense is the user's failure, in one
sentence or the verdict ATTACKER-FAILED, never a traceback or a protocol FAIL (red-team
findings 3, 4, 5, 10 and 12): exceptions outside `Exception`, exceptions whose `__str__`
raises or is huge, actions with fields of the wrong type or to nodes not in the cluster,
services whose `identity`, `setup` or `sample_operation` fail, and bad declarations."""

from __future__ import annotations

import textwrap

import pytest

from pbft.adversary import Param
from pbft.adversary.base import ByzantineReplica
from pbft.errors import UsageError, exception_text, safe_str
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation


def write(tmp_path, name: str, body: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def scenario(tmp_path, behaviour: str, target: str = "replica = 2", extra: str = "") -> str:
    path = write(tmp_path, "s.toml", f"""
        name = "user"
        f = 1
        seed = 5
        [workload]
        clients = 2
        requests = 3
        [[byzantine]]
        {target}
        behaviour = "{behaviour}"
        {extra}
    """)
    return str(path)


def run(path: str):
    sim = Simulation(load_scenario(path), None)
    return sim.run()


def attacker_failed(result) -> str:
    assert result.violations == [], result.violations
    assert result.verdict == "ATTACKER-FAILED"
    return result.attacker_failures[0]


BADSTR = """
    from pbft.adversary import Behaviour

    class E(Exception):
        def __str__(self):
            raise RuntimeError("nested")
"""


# -- the error text itself -------------------------------------------------------------------


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("nested")

    def __repr__(self):
        raise RuntimeError("nested too")


def test_a_users_exception_is_formatted_safely_and_briefly():
    assert exception_text(KeyError("k")) == "KeyError: 'k'"
    assert exception_text(SystemExit()) == "SystemExit"
    assert exception_text(_Unprintable()) == "_Unprintable: <unprintable>"
    text = exception_text(ValueError("x" * 10_000_000))
    assert len(text) < 400 and "cut, 10000000 characters" in text
    assert safe_str(ValueError("two\nlines")) == "two lines"


# -- finding 3: exceptions not derived from Exception, and unprintable ones -------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("class X(BaseException):\n    pass\n\nraise X('boom')\n", "line 4: loading it raised X: boom"),
        ("raise GeneratorExit\n", "line 1: loading it raised GeneratorExit"),
        (textwrap.dedent(BADSTR) + "\nraise E()\n", r"line 8: loading it raised E: E\(\)"),
    ],
)
def test_whatever_a_file_raises_while_loading_is_one_sentence(tmp_path, body, expected):
    write(tmp_path, "b.py", body)
    with pytest.raises(UsageError, match=expected) as info:
        load_scenario(scenario(tmp_path, "b.py:B"))
    assert "\n" not in str(info.value)


def test_setup_raising_an_unprintable_exception_is_one_sentence(tmp_path):
    write(tmp_path, "b.py", BADSTR + """
    class B(Behaviour):
        def setup(self):
            raise E()
    """)
    with pytest.raises(UsageError, match=r"raised E: E\(\) in setup \(.*b.py line 10\)"):
        Simulation(load_scenario(scenario(tmp_path, "b.py:B")), None)


@pytest.mark.parametrize(
    ("hook", "raises", "expected"),
    [
        ("on_tick", "raise X('b')", "raised X: b in on_tick"),
        ("on_tick", "raise GeneratorExit", "raised GeneratorExit in on_tick"),
        ("on_send", "raise E()", "raised E: E() in on_send"),
        ("on_send", "raise ValueError('x' * 10_000_000)", "(cut, 10000000 characters) in on_send"),
    ],
)
def test_a_hook_raising_anything_is_the_attackers_failure(tmp_path, hook, raises, expected):
    write(tmp_path, "b.py", BADSTR + f"""
    class X(BaseException):
        pass

    class B(Behaviour):
        def {hook}(self, *args):
            {raises}
    """)
    first = attacker_failed(run(scenario(tmp_path, "b.py:B")))
    assert expected in first and "b.py line 13" in first and len(first) < 600, first


def test_ctrl_c_in_a_hook_still_stops_the_run(tmp_path):
    write(tmp_path, "b.py", """
        from pbft.adversary import Behaviour

        class B(Behaviour):
            def on_tick(self):
                raise KeyboardInterrupt
    """)
    with pytest.raises(KeyboardInterrupt):
        run(scenario(tmp_path, "b.py:B"))


# -- finding 4: what on_output / on_input / a client's on_tick return is checked field by field


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ('[Send(to="zz", data=5)]', "a Send whose to is str 'zz'"),
        ("acts + [Send(1, 5)]", "a Send whose data is int 5"),
        ('acts + [Broadcast("hello")]', "a Broadcast whose data is str 'hello'"),
        ('acts + [Send(99, b"x")]', "a Send to 99, which is not a replica of the cluster (0 to 3)"),
        ('acts + [Send(-1, b"x")]', "a Send whose to is int -1"),
        ('acts + [SendClient(5, b"x")]', "a SendClient whose client is int 5"),
        ('acts + [SendClient("nobody", b"x")]', "a SendClient to 'nobody', which is not a client of the cluster"),
        ("acts + [Persist(1, 2, 3, 4, 5)]", "a Persist whose record is int 1"),
    ],
)
def test_actions_with_bad_fields_or_to_nodes_outside_the_cluster_are_the_attackers_failure(
    tmp_path, returned, expected
):
    write(tmp_path, "b.py", f"""
        from pbft.adversary import Behaviour
        from pbft.protocol.events import Broadcast, Persist, Send, SendClient

        class B(Behaviour):
            def on_output(self, acts):
                return {returned}
    """)
    first = attacker_failed(run(scenario(tmp_path, "b.py:B")))
    assert expected in first and "b.py line 6 (what on_output returned)" in first, first


def test_an_event_with_bad_fields_is_the_attackers_failure_not_the_cores(tmp_path):
    write(tmp_path, "b.py", """
        from pbft.adversary import Behaviour
        from pbft.protocol.events import Received

        class B(Behaviour):
            def on_input(self, event):
                return [Received(0, 5)] if isinstance(event, Received) else [event]
    """)
    first = attacker_failed(run(scenario(tmp_path, "b.py:B")))
    assert "on_input returned a Received whose data is int 5" in first, first


def test_the_honest_steps_of_a_checked_behaviour_pass_unchanged(tmp_path):
    write(tmp_path, "b.py", """
        from pbft.adversary import Behaviour

        class B(Behaviour):
            def on_send(self, out):
                out.duplicate(2)

            def on_output(self, acts):
                return list(super().on_output(acts))
    """)
    result = run(scenario(tmp_path, "b.py:B"))
    assert result.verdict == "PASS" and result.attacker_failure_count == 0


def test_a_client_behaviour_sending_outside_the_cluster_is_the_attackers_failure(tmp_path):
    write(tmp_path, "c.py", """
        from pbft.adversary import ClientBehaviour
        from pbft.protocol.events import Send

        class C(ClientBehaviour):
            def on_tick(self):
                return [Send(99, b"x")]
    """)
    first = attacker_failed(run(scenario(tmp_path, "c.py:C", target="client = 1")))
    assert "on_tick returned a Send to 99, which is not a replica of the cluster" in first, first


def test_the_wrapper_never_lets_a_bad_action_through(tmp_path):
    """On one wrapped core: the step runs unaltered and the failure is recorded."""
    from conftest import make_config, replica_key

    from pbft.adversary import Behaviour
    from pbft.protocol.events import Send, Tick
    from pbft.protocol.replica import Replica
    from pbft.service.kv import KeyValueStore

    class Bad(Behaviour):
        def on_output(self, actions):
            actions.append(Send(7, b"x"))  # the list it is given is a copy
            return actions

    cfg = make_config(1)
    core = Replica(cfg, 1, replica_key(1), KeyValueStore())
    import random

    byz = ByzantineReplica(core, Bad(core, replica_key(1), {}, random.Random(0)))
    ready = byz.step(Tick())
    assert all(not (isinstance(a, Send) and a.to == 7) for a in ready.actions)
    assert byz.failure_count == 1 and "not a replica of the cluster" in byz.failures[0].error


# -- finding 5: a user's service ------------------------------------------------------------


def service_scenario(tmp_path, body: str) -> str:
    write(tmp_path, "svc.py", "from pbft.service.api import Service\n" + textwrap.dedent(body))
    path = write(tmp_path, "s.toml", """
        name = "svc"
        [service]
        class = "svc.py:S"
        [workload]
        clients = 2
        requests = 3
    """)
    return str(path)


EXECUTE = "class S(Service):\n    def execute(self, state, operation, client):\n        return b'x'\n"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    @classmethod\n    def identity(cls):\n        raise RuntimeError('id')\n",
         r"svc.py:S: its identity\(\) raised RuntimeError: id \(.*svc.py line 7\)"),
        ("    @classmethod\n    def identity(cls):\n        return 5\n", r"its identity\(\) returned int, not a string"),
        ("    def setup(self, state):\n        raise RuntimeError('setup')\n",
         r"svc.py:S: its setup raised RuntimeError: setup \(.*svc.py line 6\)"),
        ("    def sample_operation(self, rng, client, clients):\n        raise RuntimeError('s')\n",
         r"svc.py:S: sample_operation raised RuntimeError: s \(.*svc.py line 6\)"),
        ("    def sample_operation(self, rng, client, clients):\n        return 5\n",
         r"sample_operation must return None or \(operation bytes, read_only bool\), not 5"),
        ("    def sample_operation(self, rng, client, clients):\n        return ('get', True)\n",
         r"sample_operation must return None or \(operation bytes, read_only bool\), not \('get', True\)"),
    ],
)
def test_a_service_whose_hooks_fail_is_one_sentence_before_the_run(tmp_path, extra, expected):
    path = service_scenario(tmp_path, EXECUTE + extra)
    with pytest.raises(UsageError, match=expected) as info:
        Simulation(load_scenario(path), None)
    assert "\n" not in str(info.value)


def test_a_service_raising_an_unprintable_exception_gets_an_error_result(tmp_path):
    path = service_scenario(tmp_path, """
        class E(Exception):
            def __str__(self):
                raise RuntimeError("nested")

        class X(BaseException):
            pass

        class S(Service):
            def execute(self, state, operation, client):
                raise E() if operation[:1] == b"p" else X()
    """)
    result = run(path)
    assert result.verdict == "PASS", result.violations


def test_an_unprintable_exception_is_the_same_error_result_everywhere():
    from pbft.protocol import codec
    from pbft.service.api import exception_result

    assert codec.decode(exception_result(_Unprintable())) == {"error": "_Unprintable: <unprintable>"}


# -- findings 10 and 12: declarations, and `scenario list` ------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Param.integer(500, lo=0, hi=10), "the default 500 is outside its own bounds"),
        (lambda: Param.number(-1.5, lo=0), "outside its own bounds"),
        (lambda: Param.integer("5"), "the default '5' is not an integer"),
        (lambda: Param.integer(1, lo=5, hi=2), "lo 5 is above hi 2"),
        (lambda: Param.choice([]), "options must be a non-empty list"),
        (lambda: Param.choice(["a", "b"], "c"), "the default 'c' is not one of its options"),
        (lambda: Param.boolean(1), "not true or false"),
        (lambda: Param.text(3, help=5), "help must be a string"),
    ],
)
def test_a_param_that_contradicts_itself_is_refused(make, expected):
    with pytest.raises(ValueError, match=expected):
        make()


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        ("parameters = 5", r"b.py line 4: B.parameters must be a dict of name to Param, not int\."),
        ('parameters = {"x": 5}', r"B.parameters: 'x' must be a Param"),
        ("parameters = {5: Param.integer(1)}", r"a parameter's name must be a non-empty string, not 5"),
        ('parameters = {"rule": Param.integer(1)}', r"'rule' is a key of the scenario's \[\[byzantine\]\] table"),
        ('parameters = {"x": Param.integer(500, lo=0, hi=10)}',
         r"b.py line 5: loading it raised ValueError: Param.integer: the default 500 is outside its own bounds"),
        ("name = 5", r"B.name must be a string, not int"),
    ],
)
def test_a_bad_declaration_is_one_sentence_for_run_and_list(tmp_path, capsys, declaration, expected):
    from pbft.cli.main import main

    write(tmp_path, "b.py", f"""
        from pbft.adversary import Behaviour, Param

        class B(Behaviour):
            {declaration}
    """)
    with pytest.raises(UsageError, match=expected):
        load_scenario(scenario(tmp_path, "b.py:B"))
    assert main(["scenario", "list", f"{tmp_path}/b.py:B"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_scenario_list_of_a_file_raising_an_unprintable_exception_is_one_sentence(tmp_path, capsys):
    from pbft.cli.main import main

    write(tmp_path, "b.py", textwrap.dedent(BADSTR) + "\nraise E()\n")
    assert main(["scenario", "list", f"{tmp_path}/b.py:B"]) == 2
    err = capsys.readouterr().err
    assert "loading it raised E: E()" in err and err.count("\n") == 1


# -- finding 6: a hook that never returns ------------------------------------------------------


LOOPS = """
    from pbft.adversary import Behaviour

    class Ticks(Behaviour):
        def on_tick(self):
            while True:
                try:
                    pass
                except Exception:
                    pass

    class Sets(Behaviour):
        def setup(self):
            while True:
                pass
"""


def test_a_hook_that_never_returns_is_stopped_and_the_run_ends(tmp_path, monkeypatch):
    monkeypatch.setenv("PBFT_HOOK_TIMEOUT", "0.5")
    write(tmp_path, "loops.py", LOOPS)
    result = run(scenario(tmp_path, "loops.py:Ticks"))
    first = attacker_failed(result)
    assert "HookTimeout: hook on_tick ran for more than 0.5 s of CPU time" in first, first
    assert "loops.py line" in first
    assert result.attacker_failure_count == 1  # its hooks are called no more
    assert result.requests_completed == result.requests_total


def test_a_setup_that_never_returns_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("PBFT_HOOK_TIMEOUT", "0.5")
    write(tmp_path, "loops.py", LOOPS)
    with pytest.raises(UsageError, match=r"hook setup ran for more than 0.5 s of CPU time in setup \(.*loops.py line"):
        Simulation(load_scenario(scenario(tmp_path, "loops.py:Sets")), None)


def test_a_bad_hook_timeout_setting_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("PBFT_HOOK_TIMEOUT", "soon")
    write(tmp_path, "loops.py", LOOPS)
    with pytest.raises(UsageError, match=r"^\$PBFT_HOOK_TIMEOUT must be a number of seconds"):
        Simulation(load_scenario(scenario(tmp_path, "loops.py:Ticks")), None)


def test_the_watchdog_leaves_the_signal_as_it_found_it(tmp_path):
    import signal

    from pbft.sim.watchdog import hook_watchdog

    before = signal.getsignal(signal.SIGVTALRM)
    with hook_watchdog():
        assert signal.getitimer(signal.ITIMER_VIRTUAL)[0] > 0
        with hook_watchdog():  # nested: the outer one keeps watching
            pass
        assert signal.getitimer(signal.ITIMER_VIRTUAL)[0] > 0
    assert signal.getsignal(signal.SIGVTALRM) == before
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
