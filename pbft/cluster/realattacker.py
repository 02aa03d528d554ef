"""The user's attacker code that `pbft scenario run --real` runs itself, each in a child
process of its own (testing only; pbft.cluster.realscenario).

Theory of operation. A Byzantine replica runs its behaviour in its own replica process. The
rest of a user's attacker code would otherwise run in the runner (the driver): building
every behaviour once before anything starts (a bad parameter or a `setup` that raises is
one sentence, exit status 2, as in the simulator), and a Byzantine client's hooks, around
a real client's core, for the whole run. Code that hangs, busy-loops or ends its process
(`os._exit`) must neither hang the runner, nor charge its time to the correct clients'
deadlines, nor kill the runner and leave the replicas running. So both run here:

* `check SPEC`: builds every replica and client behaviour of the scenario around a
  throwaway core (`catalogue.check` for a replica, which is what the replica process does
  again at start-up) and writes the first problem, one sentence, to the result file.
* `client SPEC`: one Byzantine client: `open_client`, `Client.misbehave`, its workload
  with the runner's deadlines, until its operations are done or the runner closes this
  process's stdin (the correct clients are done). At the end it writes what it did (frames
  sent, its behaviour's failures, counted exactly) to the result file.

In both, a watchdog thread looks at which of the user's hooks runs (`adversary.base.RUNNING`,
as the simulator's watchdog does) and for how long, on the wall clock: a call that does not
return within the hook limit (`pbft.sim.watchdog.limit()`, `PBFT_HOOK_TIMEOUT`) is the
attacker's failure, written with the user's line, and the process ends at once. A hook that
ends the process (`os._exit`) is written as such before it does; a `KeyboardInterrupt` a
hook raises is its failure too (this process ignores SIGINT: Ctrl-C is the runner's to
handle, which then ends this process). The process also dies with the runner
(a thread watches it). Whatever it prints goes to its log, never to the runner's stdout.

The spec is a pickle the runner wrote (the scenario's parameters as typed); the result is
JSON: {"problem": sentence} for `check`; {"sent", "failures", "count", "said", "error"}
for `client`.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import sys
import sysconfig
import threading
import time
import traceback
from typing import Any

WATCH_POLL_S = 0.05
"""How often the watchdog thread looks at the running hook."""
EXIT_STALLED = 3
"""Exit status of a process whose attacker's hook ran over the limit (result written)."""

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STDLIB = os.path.abspath(sysconfig.get_paths()["stdlib"])
_LIBRARIES = tuple(
    os.path.abspath(p) + os.sep
    for p in {_PACKAGE, _STDLIB, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)


def users(filename: str) -> bool:
    """A frame of the user's own code: outside pbft, the standard library and installed
    packages (trio, ...)."""
    return not os.path.abspath(filename).startswith(_LIBRARIES)


class Result:
    """The result file, written once (the first writer wins: the end of the run, the
    watchdog, or a hook ending the process)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.done = False

    def write(self, data: dict[str, Any]) -> bool:
        with self.lock:
            if self.done:
                return False
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)
            self.done = True
            return True


def user_place(frames: list[traceback.FrameSummary]) -> str:
    """"FILE line N" of the deepest frame of the user's (outside pbft, preferably
    outside the standard library), else "unknown place"."""
    theirs = [fr for fr in frames if not os.path.abspath(fr.filename).startswith(_PACKAGE + os.sep)]
    own = [fr for fr in theirs if users(fr.filename)]
    frame = (own or theirs or [None])[-1]
    return f"{frame.filename} line {frame.lineno}" if frame is not None else "unknown place"


def main_thread_place() -> str:
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    return user_place(traceback.extract_stack(frame)) if frame is not None else "unknown place"


class Watchdog:
    """Ends the process when one call of a user's hook runs longer than `limit_s` on the
    wall clock, after `on_stall(sentence)` has written it down."""

    def __init__(self, limit_s: float, behaviour, on_stall) -> None:
        self.limit_s = limit_s
        self.behaviour = behaviour
        self.on_stall = on_stall

    def start(self) -> None:
        if self.limit_s > 0:
            threading.Thread(target=self._watch, name="hook-watchdog", daemon=True).start()

    def _watch(self) -> None:
        from ..adversary.base import RUNNING

        entry, since = -1, 0.0
        while True:
            time.sleep(WATCH_POLL_S)
            hook, now = RUNNING.hook, time.monotonic()
            if hook is None:
                entry = -1
                continue
            if RUNNING.entry != entry:
                entry, since = RUNNING.entry, now
                continue
            if now - since > self.limit_s:
                sentence = (
                    f"behaviour {self.behaviour()} did not return from {hook} within {self.limit_s:g} s "
                    f"of wall-clock time ({main_thread_place()})"
                )
                self.on_stall(sentence)
                os._exit(EXIT_STALLED)


def _die_with_parent() -> None:
    """End this process when the runner dies (it is then adopted by another process). A
    thread that looks, not PR_SET_PDEATHSIG: that one fires when the runner's *thread*
    that started this process ends, and trio starts processes from worker threads."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_POLL_S * 4)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _watch_exit(result: Result, behaviour: str, extra) -> None:
    """`os._exit` from the user's code writes the result (naming where) before it ends the
    process: nothing else of this process would say why it ended."""
    from ..adversary.base import RUNNING

    real_exit = os._exit

    def _exit(status: int) -> None:
        place = user_place(traceback.extract_stack(sys._getframe(1)))
        hook = RUNNING.hook or "a hook"
        sentence = f"behaviour {behaviour} ended its process with os._exit({status}) in {hook} ({place})"
        try:
            result.write(extra(sentence))
        finally:
            real_exit(status)

    os._exit = _exit  # type: ignore[assignment]


# -- check -----------------------------------------------------------------------------


def check(spec: dict[str, Any], result: Result) -> int:
    """Build each behaviour once; the first problem, one sentence, in the result."""
    from ..node.clusterfile import load_cluster
    from ..sim.watchdog import hook_watchdog

    config = load_cluster(spec["cluster"])
    current = {"who": "", "behaviour": ""}

    def stalled(sentence: str) -> None:
        result.write({"problem": f"{current['who']}: {sentence} while being built."})

    Watchdog(spec["limit"], lambda: current["behaviour"], stalled).start()
    _watch_exit(result, "", lambda s: {"problem": f"{current['who']}: {s} while being built."})
    with hook_watchdog():  # a setup that computes for ever: HookTimeout, as in the simulator
        return _check_all(spec, result, config, current)


def _check_all(spec: dict[str, Any], result: Result, config, current: dict[str, str]) -> int:
    from ..adversary import catalogue
    from ..adversary.base import failure_of
    from ..errors import UsageError, safe_str
    from ..protocol.client import ClientCore
    from ..protocol.crypto import KeyPair

    for rid, ref, params, base_dir in spec["replicas"]:
        current["who"], current["behaviour"] = f"replica {rid}", ref or "rules"
        try:
            catalogue.check(ref, params, config, rid, base_dir)
        except UsageError as exc:
            result.write({"problem": f"replica {rid}: {safe_str(exc, None)}"})
            return 2
        except BaseException as exc:  # noqa: BLE001 - a KeyboardInterrupt the user's setup raised
            failure = failure_of(ref, "setup", exc)
            result.write({"problem": f"replica {rid}: {failure.sentence()} while being built."})
            return 2
    for name, ref, params, base_dir in spec["clients"]:
        current["who"], current["behaviour"] = f"client {name}", ref or "rules"
        key = KeyPair.generate()
        try:
            catalogue.build(ref, dict(params), ClientCore(config, name, key), key, random.Random(0), config,
                            target="client", base_dir=base_dir)
        except UsageError as exc:
            result.write({"problem": f"client {name}: {safe_str(exc, None)}"})
            return 2
        except (ValueError, TypeError) as exc:
            result.write({"problem": f"client {name}: {safe_str(exc)}"})
            return 2
        except BaseException as exc:  # noqa: BLE001 - the user's __init__ (even KeyboardInterrupt)
            failure = failure_of(ref, "setup", exc)
            result.write({"problem": f"client {name}: {failure.sentence()} while being built."})
            return 2
    result.write({"problem": None})
    return 0


# -- client ----------------------------------------------------------------------------


def client(spec: dict[str, Any], result: Result, ready_fd: int) -> int:
    import trio

    from ..adversary.base import failure_of
    from .realscenario import perform

    state: dict[str, Any] = {"client": None, "said": [], "scope": None}
    behaviour = spec["behaviour"] or "rules"

    def report(extra_failure: str | None = None, error: str | None = None) -> dict[str, Any]:
        c = state["client"]
        core = getattr(c, "core", None)
        failures = [f.sentence() for f in getattr(core, "failures", [])]
        count = getattr(core, "failure_count", 0)
        if extra_failure is not None:
            failures.append(extra_failure)
            count += 1
        return {"sent": getattr(c, "sent", 0), "failures": failures, "count": count,
                "said": state["said"], "error": error}

    def name() -> str:
        from ..adversary.base import name_of

        wrapped = getattr(getattr(state["client"], "core", None), "behaviour", None)
        return name_of(wrapped) if wrapped is not None else behaviour

    Watchdog(spec["limit"], name, lambda s: result.write(report(s))).start()
    _watch_exit(result, behaviour, report)

    def listen(token, go: trio.Event) -> None:
        """The runner's word on stdin: "go T0" (scenario time 0, wall clock), then EOF
        (stop)."""
        buf = b""
        try:
            while True:
                chunk = os.read(0, 4096)
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf and "t0" not in state:
                    state["t0"] = float(buf.split(b"\n", 1)[0].split()[1])
                    token.run_sync_soon(go.set)
        except (OSError, ValueError, IndexError, trio.RunFinishedError):
            pass
        scope = state["scope"]
        if scope is not None:
            try:
                token.run_sync_soon(scope.cancel)
            except trio.RunFinishedError:
                pass

    async def run() -> None:
        from ..node.client import open_client
        from ..node.linkfaults import load_plan

        plan = load_plan(spec["plan"]) if spec["plan"] else None
        tracer = None
        if spec["trace"]:
            from ..node.tracing import open_trace

            tracer = open_trace(spec["trace"], f"client-{spec['name']}", *spec["trace_header"])
        go = trio.Event()
        try:
            with trio.CancelScope() as scope:
                state["scope"] = scope
                token = trio.lowlevel.current_trio_token()
                threading.Thread(target=listen, args=(token, go), name="runner", daemon=True).start()
                async with open_client(spec["cluster"], spec["name"], link_faults=plan, tracer=tracer) as c:
                    state["client"] = c
                    c.misbehave(spec["behaviour"], dict(spec["params"]), random.Random(spec["rng"]),
                                spec["base_dir"])
                    os.write(ready_fd, b"ready\n")
                    await go.wait()
                    await trio.sleep_until(trio.current_time() + state["t0"] - time.time())
                    heal_at = state["t0"] + spec["heal_ms"] / 1000
                    for kind, key, value in spec["ops"]:
                        now = trio.current_time()
                        deadline = max(now, now + heal_at - time.time()) + spec["liveness_s"]
                        with trio.move_on_at(deadline) as op_scope:
                            try:
                                await perform(c, kind, key, value)
                            except Exception as exc:  # noqa: BLE001 - its own lies may confuse it
                                state["said"].append(f"{type(exc).__name__}: {exc}")
                                return
                        if op_scope.cancelled_caught:
                            return
        finally:
            if tracer is not None:
                tracer.close()

    from ..sim.watchdog import hook_watchdog

    try:
        with hook_watchdog():  # a hook that computes for ever: HookTimeout, as in the simulator
            trio.run(run)
    except BaseException as exc:  # noqa: BLE001 - a hook's KeyboardInterrupt, or pbft's own bug
        leaves = _leaves(exc)
        first = leaves[0] if leaves else exc
        if not any(users(fr.filename) for fr in traceback.extract_tb(first.__traceback__)):
            result.write(report(error="".join(traceback.format_exception(first))[-2000:]))
            return 1
        result.write(report(failure_of(behaviour, "", first).sentence()))
        return 0
    result.write(report())
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # Whatever the user's code prints goes to this process's log (stderr); the runner
    # reads "ready" on what was stdout.
    ready_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    mode, spec_path = argv[1], argv[2]
    with open(spec_path, "rb") as fh:
        spec = pickle.load(fh)
    result = Result(spec["result"])
    if mode == "check":
        return check(spec, result)
    return client(spec, result, ready_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
