"""A user's own behaviour: loaded by reference, driven through the public hooks only.

What a user writes (a file the project has never seen) must load from a scenario file
(relative to it), as `module:Class`, and from the command line's `REF[:k=v]`; every
mistake in it is one sentence naming the file and line; its hooks can drop, delay,
duplicate, replace, inject and read the core; and a hook that raises is the attacker's
failure, never a protocol violation.
"""

from __future__ import annotations

import random
import sys
import textwrap

import pytest
from conftest import DEFAULT_CLIENTS, make_config, put, replica_key, sign_pre_prepare

from pbft.adversary import Behaviour, Param, catalogue
from pbft.adversary.base import ByzantineReplica
from pbft.errors import UsageError
from pbft.protocol.events import Broadcast, Received, Send, Tick
from pbft.protocol.messages import Commit, Prepare, decode_envelope
from pbft.protocol.replica import Replica
from pbft.service.kv import KeyValueStore
from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation


def write(tmp_path, name: str, body: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def scenario(tmp_path, behaviour: str, extra: str = "", requests: int = 8, replica: int = 2) -> str:
    path = write(tmp_path, "s.toml", f"""
        name = "user"
        f = 1
        seed = 5
        [workload]
        clients = 2
        requests = {requests}
        [[byzantine]]
        replica = {replica}
        behaviour = "{behaviour}"
        {extra}
    """)
    return str(path)


def run(path: str):
    sim = Simulation(load_scenario(path), None)
    result = sim.run()
    behaviours = [inst.node.behaviour for insts in sim.replicas.values() for inst in insts
                  if isinstance(inst.node, ByzantineReplica)]
    return result, behaviours


COUNTING = """
    from pbft.adversary import Behaviour, Param

    class Counting(Behaviour):
        '''Counts what passes; drops COMMITs to `victim`.'''
        parameters = {"victim": Param.integer(1, lo=0, hi=3)}

        def setup(self):
            self.sent = {}
            self.dropped = 0
            self.ticks = 0

        def on_send(self, out):
            self.sent[out.kind] = self.sent.get(out.kind, 0) + 1
            if out.kind == "COMMIT" and out.to == self.args.victim:
                out.drop()
                self.dropped += 1

        def on_tick(self):
            self.ticks += 1
"""


# -- loading -----------------------------------------------------------------------------


def test_a_file_next_to_the_scenario_loads_and_runs_its_hooks(tmp_path):
    write(tmp_path, "counting.py", COUNTING)
    result, [b] = run(scenario(tmp_path, "counting.py:Counting", "victim = 3"))
    assert result.verdict == "PASS", result.violations
    assert type(b).name == "Counting" and b.args.victim == 3
    assert b.dropped > 0 and b.sent["PREPARE"] > 0 and b.ticks > 0


def test_a_module_path_loads(tmp_path, monkeypatch):
    pkg = tmp_path / "myattacks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write(pkg, "counting.py", COUNTING)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert catalogue.lookup("myattacks.counting:Counting").__name__ == "Counting"
    result, [b] = run(scenario(tmp_path, "myattacks.counting:Counting"))
    assert result.passed and b.dropped > 0
    sys.modules.pop("myattacks.counting", None)
    sys.modules.pop("myattacks", None)


def test_a_command_line_reference_splits_from_its_parameters():
    assert catalogue.parse_spec("a/b.py:Slow:delay_ms=3,x=[1,2]") == ("a/b.py:Slow", {"delay_ms": 3, "x": [1, 2]})
    assert catalogue.parse_spec("pkg.mod:Slow") == ("pkg.mod:Slow", {})
    assert catalogue.parse_spec("double-vote:leak=false") == ("double-vote", {"leak": False})
    with pytest.raises(UsageError):
        catalogue.parse_spec("double-vote:leak")


@pytest.mark.parametrize(
    ("body", "ref", "expected"),
    [
        (None, "missing.py:X", r"missing.py: no such behaviour file"),
        ("x = (\n", "bad.py:X", r"bad.py line 1: syntax error"),
        ("import os\nraise RuntimeError('boom')\n", "bad.py:X", r"bad.py line 2: loading it raised RuntimeError: boom"),
        ("import no_such_module_here\n", "bad.py:X", r"bad.py line 1: loading it raised ModuleNotFoundError"),
        (COUNTING, "bad.py:Countng", r"bad.py has no class Countng \(did you mean 'Counting'\?\)"),
        ("class NotOne:\n    pass\n", "bad.py:NotOne", r"bad.py line 1: NotOne does not derive from pbft.adversary.Behaviour"),
        ("from pbft.adversary import ClientBehaviour\n\n\nclass C(ClientBehaviour):\n    pass\n",
         "bad.py:C", r"does not derive from pbft.adversary.Behaviour \(it is a client behaviour\)"),
    ],
)
def test_a_bad_file_is_one_sentence_naming_file_and_line(tmp_path, body, ref, expected):
    if body is not None:
        write(tmp_path, ref.split(":")[0], body)
    with pytest.raises(UsageError, match=expected) as info:
        load_scenario(scenario(tmp_path, ref))
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_a_missing_module_says_so():
    with pytest.raises(UsageError, match="no such module"):
        catalogue.lookup("no_such_pkg.attacks:X")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("victm = 1", r"no parameter 'victm' \(did you mean 'victim'\?\); it accepts: victim"),
        ("victim = 9", r"'victim' must be an integer from 0 to 3, not 9"),
        ('victim = "one"', r"'victim' must be an integer"),
    ],
)
def test_parameters_are_declared_and_checked(tmp_path, extra, expected):
    write(tmp_path, "counting.py", COUNTING)
    path = scenario(tmp_path, "counting.py:Counting", extra)
    with pytest.raises(UsageError, match=expected):
        Simulation(load_scenario(path), None)


def test_setup_that_raises_is_a_usage_error_naming_the_line(tmp_path):
    write(tmp_path, "b.py", """
        from pbft.adversary import Behaviour

        class B(Behaviour):
            def setup(self):
                raise KeyError("nope")
    """)
    with pytest.raises(UsageError, match=r"behaviour b.py:B raised KeyError: 'nope' in setup \(.*b.py line 6\)"):
        Simulation(load_scenario(scenario(tmp_path, "b.py:B")), None)


# -- a hook that raises is the attacker's failure -------------------------------------


def test_a_raising_hook_is_the_attackers_failure_not_a_violation(tmp_path):
    write(tmp_path, "oops.py", """
        from pbft.adversary import Behaviour

        class Oops(Behaviour):
            def on_send(self, out):
                if out.kind == "PREPARE":
                    {}["missing"]
    """)
    result, _ = run(scenario(tmp_path, "oops.py:Oops"))
    assert result.violations == []
    assert result.verdict == "ATTACKER-FAILED" and result.attacker_failure_count > 0
    first = result.attacker_failures[0]
    assert "behaviour Oops raised KeyError: 'missing' in on_send" in first and "oops.py line 7" in first


def test_the_cli_exits_1_on_an_attackers_failure(tmp_path, capsys):
    from pbft.cli.main import main

    write(tmp_path, "oops.py", """
        from pbft.adversary import Behaviour

        class Oops(Behaviour):
            def on_tick(self):
                raise RuntimeError("tick")
    """)
    assert main(["scenario", "run", scenario(tmp_path, "oops.py:Oops")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("ATTACKER-FAILED") and "RuntimeError: tick in on_tick" in out


# -- the hooks, one by one, on one wrapped core -------------------------------------------


def pre_prepare(seq: int) -> bytes:
    return sign_pre_prepare(seq, (put(DEFAULT_CLIENTS[0], seq),))


def wrapped(cls: type[Behaviour], params: dict | None = None, rid: int = 1):
    cfg = make_config()
    core = Replica(cfg, rid, replica_key(rid), KeyValueStore())
    key = replica_key(rid)
    return ByzantineReplica(core, cls(core, key, params or {}, random.Random(1)))


def sends(actions) -> list[tuple[int, object]]:
    out = []
    for a in actions:
        if isinstance(a, Send):
            out.append((a.to, decode_envelope(a.data)[1]))
        elif isinstance(a, Broadcast):
            out += [(r, decode_envelope(a.data)[1]) for r in (0, 2, 3) if r != 1]
    return out


class Mangle(Behaviour):
    parameters = {"mode": Param.choice(("delay", "duplicate", "replace", "pass"))}

    def on_send(self, out):
        if out.kind != "PREPARE":
            return
        if self.args.mode == "delay":
            out.delay(2 * self.state.tick_ms)
        elif self.args.mode == "duplicate":
            out.duplicate(2)
        elif self.args.mode == "replace":
            out.replace(Commit(out.view, out.seq, b"\x01" * 32))


def test_on_send_delays_duplicates_and_replaces():
    pp = pre_prepare(1)
    for mode, now, later in (("pass", 3, 0), ("delay", 0, 3), ("duplicate", 9, 0)):
        node = wrapped(Mangle, {"mode": mode})
        first = [m for _, m in sends(node.step(Received(0, pp))) if isinstance(m, Prepare)]
        assert len(first) == now, mode
        held = []
        for _ in range(3):
            held += [m for _, m in sends(node.step(Tick())) if isinstance(m, Prepare)]
        assert len(held) >= later, mode
    node = wrapped(Mangle, {"mode": "replace"})
    out = sends(node.step(Received(0, pp)))
    assert [type(m) for _, m in out] == [Commit] * 3 and all(m.digest == b"\x01" * 32 for _, m in out)


class Deaf(Behaviour):
    def on_message(self, msg):
        if msg.kind == "PRE-PREPARE":
            msg.drop()


def test_on_message_keeps_a_message_from_the_core():
    node = wrapped(Deaf)
    assert sends(node.step(Received(0, pre_prepare(1)))) == []
    assert node.core.log.get(1) is None or node.core.log.get(1).pre_prepare is None


class Chatty(Behaviour):
    def on_tick(self):
        self.broadcast(Commit(self.state.view, 7, b"\x02" * 32))
        self.send(0, Commit(self.state.view, 8, b"\x03" * 32), delay_ms=self.state.tick_ms)


def test_on_tick_and_send_inject_signed_messages():
    node = wrapped(Chatty)
    first = sends(node.step(Tick()))
    assert sorted(r for r, m in first if m.seq == 7) == [0, 2, 3]
    second = sends(node.step(Tick()))
    assert (0, Commit(0, 8, b"\x03" * 32)) in second


def test_the_state_view_is_read_only_and_copies():
    node = wrapped(Behaviour)
    node.step(Received(0, pre_prepare(1)))
    st = node.behaviour.state
    assert (st.id, st.n, st.f, st.view, st.primary, st.is_primary) == (1, 4, 1, 0, 0, False)
    slot = st.slot(1)
    assert slot is not None and slot.seq == 1 and slot.pre_prepare is not None and not slot.prepared
    with pytest.raises(AttributeError):
        st.view = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        slot.seq = 2  # type: ignore[misc]


def test_a_user_behaviour_replays_exactly_from_its_seed(tmp_path):
    write(tmp_path, "rand.py", """
        from pbft.adversary import Behaviour

        class Rand(Behaviour):
            def on_send(self, out):
                if self.rng.random() < 0.3:
                    out.delay(self.rng.randrange(100))
    """)
    path = scenario(tmp_path, "rand.py:Rand", requests=12)
    digests = {run(path)[0].trace_digest for _ in range(2)}
    assert len(digests) == 1


def test_check_builds_a_command_line_reference_before_anything_listens(tmp_path):
    write(tmp_path, "counting.py", COUNTING)
    cfg = make_config()
    ref = str(tmp_path / "counting.py") + ":Counting"
    catalogue.check(ref, {"victim": 2}, cfg, 1)
    with pytest.raises(UsageError, match="did you mean 'victim'"):
        catalogue.check(ref, {"vctim": 2}, cfg, 1)


def test_scenario_list_describes_a_users_parameters(tmp_path, capsys):
    from pbft.cli.main import main

    write(tmp_path, "counting.py", COUNTING)
    assert main(["scenario", "list", f"{tmp_path}/counting.py:Counting", "client-replay"]) == 0
    out = capsys.readouterr().out
    assert "Counting (replica): Counts what passes; drops COMMITs to `victim`." in out
    assert "  victim: an integer from 0 to 3, default 1" in out
    assert "client-replay (client)" in out
    assert main(["scenario", "list", "no-such"]) == 2
    assert "unknown behaviour no-such" in capsys.readouterr().err


def test_fuzz_draws_a_users_behaviour(tmp_path, capsys, monkeypatch):
    from pbft.cli.main import main
    from pbft.sim.fuzz import random_scenario

    write(tmp_path, "counting.py", COUNTING)
    monkeypatch.chdir(tmp_path)
    assert main(["fuzz", "--seeds", "6", "--start", "300", "--behaviours", "counting.py:Counting", "--json"]) == 0
    assert '"runs": 6' in capsys.readouterr().out
    drawn = {b.behaviour for seed in range(300, 306) for b in random_scenario(seed, behaviours=["x.py:C"]).byzantine
             if b.target == "replica"}
    assert drawn <= {"x.py:C"}


def test_bench_takes_a_users_file_by_absolute_path(tmp_path, monkeypatch):
    from pbft.cli.cluster import _absolute_behaviour, _check_args

    write(tmp_path, "counting.py", COUNTING)
    monkeypatch.chdir(tmp_path)
    spec = _absolute_behaviour("counting.py:Counting:victim=2")
    assert spec == f"{tmp_path}/counting.py:Counting:victim=2"
    assert _absolute_behaviour("double-vote:leak=true") == "double-vote:leak=true"
    _check_args(1, 4, 1.0, spec)
    with pytest.raises(UsageError, match="no class Countin"):
        _check_args(1, 4, 1.0, _absolute_behaviour("counting.py:Countin"))


MISUSE = """
    from pbft.adversary import Behaviour, Commit

    class SendFar(Behaviour):
        def on_tick(self):
            self.send(99, Commit(0, 1, bytes(32)))

    class ReplaceJunk(Behaviour):
        def on_send(self, out):
            out.replace("junk")

    class BadInput(Behaviour):
        def on_input(self, event):
            return [None]

    class BadOutput(Behaviour):
        def on_output(self, actions):
            return 42

    class SendJunk(Behaviour):
        def on_tick(self):
            self.send(1, 12345)

    class Flood(Behaviour):
        def on_send(self, out):
            out.duplicate(10**9)
"""


@pytest.mark.parametrize(
    ("cls", "line", "text"),
    [
        ("SendFar", 6, "99 is neither a replica 0 to 3 nor a client"),
        ("ReplaceJunk", 10, "replace takes a protocol message or signed bytes, not str"),
        ("BadInput", 13, "on_input returned NoneType None, which is not one of the events"),
        ("BadOutput", 17, "on_output must return a list of actions, not int"),
        ("SendJunk", 22, "forge takes a protocol message"),
        ("Flood", 26, "duplicate: at most 1000 copies"),
    ],
)
def test_misusing_the_api_is_the_attackers_failure_at_its_line(tmp_path, cls, line, text):
    write(tmp_path, "misuse.py", MISUSE)
    result, _ = run(scenario(tmp_path, f"misuse.py:{cls}", requests=3))
    assert result.violations == [] and result.verdict == "ATTACKER-FAILED"
    first = result.attacker_failures[0]
    assert text in first and f"misuse.py line {line}" in first, first


def test_a_behaviour_that_calls_sys_exit_is_an_attacker_failure_not_an_exit(tmp_path):
    write(tmp_path, "quitter.py", """
        import sys
        from pbft.adversary import Behaviour

        class Quitter(Behaviour):
            def on_tick(self):
                sys.exit("bye")
    """)
    result, _ = run(scenario(tmp_path, "quitter.py:Quitter"))
    assert result.verdict == "ATTACKER-FAILED" and result.violations == []
    assert "SystemExit" in result.attacker_failures[0]


def test_a_file_that_exits_while_loading_is_one_sentence(tmp_path):
    write(tmp_path, "exits.py", "import sys\nsys.exit(2)\n")
    with pytest.raises(UsageError, match="loading it raised SystemExit"):
        load_scenario(scenario(tmp_path, "exits.py:Nothing"))
