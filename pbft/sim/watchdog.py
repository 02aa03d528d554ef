"""A limit on how long one call of a user's behaviour hook may run (docs/behaviours.md).

Theory of operation. The wrappers in pbft.adversary mark each call of a user's hook in
`RUNNING` (which hook, and a count of calls): two attribute writes, no clock, so the pure
layer stays pure and a run costs nothing more. While a simulation runs, `hook_watchdog()`
arms a timer of process CPU time (ITIMER_VIRTUAL, SIGVTALRM: neither pytest-timeout's
SIGALRM nor the mutation watchdog's SIGPROF) that fires every TICK_S CPU seconds. The
handler counts the ticks that land in one and the same call; once they add up to the limit
it raises `HookTimeout` inside the hook, which the wrapper records like any exception of
the user's: the verdict is ATTACKER-FAILED, "hook on_tick ran for more than 10 s of CPU
time", at the user's line, and that node's behaviour is called no more (its honest core
runs on), so the run ends. CPU time, not wall time: on a busy machine a hook that is merely
slow is not stopped; a hook that blocks without computing (a sleep) is not either.

A hook that blocks without computing (a sleep, a socket, `input()`) uses no CPU time, so a
thread watches wall-clock time too (`_WallWatch`): it looks every TICK_S seconds which
call runs, and once one call has run WALL_FACTOR times the limit of wall-clock time it
sends SIGVTALRM to the main thread (a real signal, so that the blocking call is
interrupted), whose handler raises HookTimeout there ("did not return within 30 s of
wall-clock time"). Generous on purpose: on a busy machine a hook that computes is stopped
by its CPU time first; a run whose hooks all return in time never hears from the thread,
so simulated runs stay bit-exact.

Only in the main thread (signals are delivered there), only if nobody else handles
SIGVTALRM, never nested. `PBFT_HOOK_TIMEOUT` (seconds; 0 turns it off) overrides the
default HOOK_TIMEOUT_S. A hook that catches the exception and carries on is interrupted
again after another limit, and so on.

`wall_watchdog()` is the same guard for a process whose event loop runs a user's hooks in
wall-clock time (a replica started with `--behaviour`, the scenario runner loading a
user's file): a call of a hook that runs the limit in wall-clock time (a busy loop and a
sleep alike: the event loop stalls meanwhile) gets HookTimeout raised inside it, which the
wrapper records as the attacker's failure (the replica logs it: "the attacker failed (1 so
far): behaviour X raised HookTimeout: hook on_send ran for more than 10 s of wall-clock
time in on_send (FILE line N)") and that behaviour is called no more. A call that is still
running GIVE_UP_AFTER limits later (it swallowed the exception, or is stuck where no signal
reaches) is given up on: `on_give_up` (a replica: one line on stderr, then the process
ends with HOOK_STALLED_EXIT, the attacker's failure). While a user's module is loaded the
caller marks RUNNING with IMPORT, so the same guard bounds a module that blocks at import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

from ..adversary.base import HOOKS, RUNNING, HookTimeout
from ..errors import UsageError

HOOK_TIMEOUT_S = 10.0
"""CPU seconds one call of a user's hook may run."""
TICK_S = 0.25
"""How often the timer looks (CPU seconds): the limit is met to within this."""
ENV = "PBFT_HOOK_TIMEOUT"
WALL_FACTOR = 3.0
"""In the simulator, a call of a hook is also stopped after this many times the limit of
wall-clock time (a hook that blocks uses no CPU time)."""
GIVE_UP_AFTER = 3
"""`wall_watchdog`: limits a call may run on after its first HookTimeout before the guard
gives up on it (`on_give_up`)."""
HOOK_STALLED_EXIT = 88
"""The exit status of a replica process whose behaviour's hook never returned, even after
being interrupted (`stalled_exit`): the attacker's failure, not the protocol's."""
REAL_EXIT = os._exit
"""os._exit itself (`loading_user_modules` replaces it for a while)."""
IMPORT = "import"
"""RUNNING.hook while a user's module is loaded (its module-level code)."""


def limit() -> float:
    """The limit in CPU seconds: $PBFT_HOOK_TIMEOUT, else HOOK_TIMEOUT_S; 0 is no limit."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return HOOK_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"${ENV} must be a number of seconds, 0 for no limit, not {text!r}.")
    return value


def _hook_name(frame, hook: str) -> str:
    """The innermost hook on the interrupted stack, else `hook`."""
    while frame is not None and frame.f_code.co_name not in HOOKS:
        frame = frame.f_back
    return frame.f_code.co_name if frame is not None else hook


def _over(hook: str, frame, seconds: float, clock: str) -> HookTimeout:
    if hook == IMPORT:
        return HookTimeout(f"the module did not finish loading within {seconds:g} s of {clock} time")
    return HookTimeout(f"hook {_hook_name(frame, hook)} ran for more than {seconds:g} s of {clock} time")


class _WallWatch:
    """A thread that looks every TICK_S seconds which call of a hook runs (RUNNING); once
    one call has run `limit_s` of wall-clock time, it sets `fired` to that call and sends
    `signum` to the thread that made it (the caller's handler raises HookTimeout there if
    that call still runs); again after each further `limit_s`. After `give_up_after`
    signals for one call, `on_give_up(hook, seconds)` is called from this thread instead."""

    def __init__(self, limit_s: float, signum: int, give_up_after: int = 0,
                 on_give_up: Callable[[str, float], None] | None = None) -> None:
        self.limit = limit_s
        self.signum = signum
        self.target = threading.get_ident()
        self.fired = -1
        self.pending = False
        self.give_up_after = give_up_after
        self.on_give_up = on_give_up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pbft-hook-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def take(self, frame) -> HookTimeout | None:
        """In the signal handler: the exception to raise, if this signal is ours and the
        call it was sent for still runs."""
        if not self.pending:
            return None
        self.pending = False
        hook = RUNNING.hook
        if hook is None or self.fired != RUNNING.entry:
            return None
        self.fired = -1
        return _over(hook, frame, self.limit, "wall-clock")

    def _watch(self) -> None:
        seen, since, times = -1, 0.0, 0
        while not self._stop.wait(TICK_S):
            entry, hook = RUNNING.entry, RUNNING.hook
            now = time.monotonic()
            if hook is None or entry != seen:
                seen, since, times = entry, now, 0
                continue
            if now - since < self.limit:
                continue
            since = now
            times += 1
            if self.on_give_up is not None and self.give_up_after and times > self.give_up_after:
                self.on_give_up(hook, self.limit * times)
                return
            self.fired = entry
            self.pending = True
            try:
                signal.pthread_kill(self.target, self.signum)
            except (OSError, ValueError):  # the thread is gone
                return


class _Ticks:
    __slots__ = ("entry", "count", "needed", "limit", "wall")

    def __init__(self, limit_s: float) -> None:
        self.entry = -1
        self.count = 0
        self.limit = limit_s
        self.needed = max(1, round(limit_s / TICK_S))
        self.wall: _WallWatch | None = None

    def __call__(self, signum, frame) -> None:
        hook = RUNNING.hook
        wall = self.wall
        if wall is not None and wall.pending:  # the wall-clock thread's signal, not a tick
            exc = wall.take(frame)
            if exc is not None:
                raise exc
            return
        if hook is None:
            return
        if RUNNING.entry != self.entry:  # another call than at the last tick
            self.entry = RUNNING.entry
            self.count = 0
        self.count += 1
        if self.count >= self.needed:
            self.count = 0  # a hook that swallows it is stopped again after another limit
            raise _over(hook, frame, self.limit, "CPU")


class _WallOnly:
    """The handler of `wall_watchdog`: raises what its `_WallWatch` sent the signal for."""

    __slots__ = ("wall",)

    def __init__(self) -> None:
        self.wall: _WallWatch | None = None

    def __call__(self, signum, frame) -> None:
        exc = self.wall.take(frame) if self.wall is not None else None
        if exc is not None:
            raise exc


def _discard_pending(signum: int) -> None:
    """Take a `signum` still pending for this thread, so that restoring its default
    action (which ends the process) cannot meet one."""
    if not hasattr(signal, "sigtimedwait"):  # not on macOS: the thread was joined anyway
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    try:
        while signal.sigtimedwait({signum}, 0) is not None:
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_active = False


def _usable(seconds: float) -> bool:
    return not (
        _active or seconds <= 0
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGVTALRM) not in (signal.SIG_DFL, None)
    )


@contextlib.contextmanager
def hook_watchdog() -> Iterator[None]:
    """While inside, a user's hook call that runs over the limit of CPU time (or
    WALL_FACTOR times it of wall-clock time) raises HookTimeout.
    Does nothing off the main thread, with the limit 0, when another handler owns
    SIGVTALRM, or inside another hook_watchdog()."""
    global _active
    seconds = limit()
    if not _usable(seconds):
        yield
        return
    ticks = _Ticks(seconds)
    previous = signal.signal(signal.SIGVTALRM, ticks)
    _active = True
    wall = ticks.wall = _WallWatch(seconds * WALL_FACTOR, signal.SIGVTALRM)
    signal.setitimer(signal.ITIMER_VIRTUAL, TICK_S, TICK_S)
    wall.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        wall.stop()
        _discard_pending(signal.SIGVTALRM)
        signal.signal(signal.SIGVTALRM, previous if previous is not None else signal.SIG_DFL)
        _active = False


def stalled_exit(hook: str, seconds: float) -> None:
    """`wall_watchdog`'s `on_give_up` for a replica process: one line on stderr (its
    log), then the process ends at once with HOOK_STALLED_EXIT."""
    what = "the module" if hook == IMPORT else f"hook {hook}"
    line = (f"pbft: the attacker failed: {what} of this process's behaviour did not return "
            f"within {seconds:g} s of wall-clock time, even after being interrupted; the "
            f"process ends with status {HOOK_STALLED_EXIT}\n")
    try:
        os.write(2, line.encode("utf-8", "replace"))
    finally:
        REAL_EXIT(HOOK_STALLED_EXIT)


@contextlib.contextmanager
def wall_watchdog(on_give_up: Callable[[str, float], None] | None = None) -> Iterator[None]:
    """While inside, a user's hook call (or module load, RUNNING.hook == IMPORT) that runs
    over the limit of wall-clock time raises HookTimeout; with `on_give_up`, a call still
    running GIVE_UP_AFTER limits later is given up on (stalled_exit for a replica).
    The same conditions as hook_watchdog(); the two never nest."""
    global _active
    seconds = limit()
    if not _usable(seconds):
        yield
        return
    handler = _WallOnly()
    previous = signal.signal(signal.SIGVTALRM, handler)
    _active = True
    wall = handler.wall = _WallWatch(seconds, signal.SIGVTALRM, GIVE_UP_AFTER, on_give_up)
    wall.start()
    try:
        yield
    finally:
        wall.stop()
        _discard_pending(signal.SIGVTALRM)
        signal.signal(signal.SIGVTALRM, previous if previous is not None else signal.SIG_DFL)
        _active = False


class ExitCalled(BaseException):
    """Raised instead of ending the process when a user's module calls os._exit while it
    loads (`loading_user_modules`): the loader reports it as that module's failure."""


@contextlib.contextmanager
def loading_user_modules(on_give_up: Callable[[str, float], None] | None = None) -> Iterator[None]:
    """While a user's files (behaviours, services) are looked up and their modules run:
    RUNNING says IMPORT, so `wall_watchdog` stops a module that blocks or loops at
    import (HookTimeout, which the loader turns into one sentence naming the file), and
    `os._exit` raises ExitCalled instead of ending the process without a word."""
    real_exit = os._exit

    def refuse_exit(status: object = 0) -> None:
        raise ExitCalled(f"it called os._exit({status!r}), which would end the whole process")

    hook, RUNNING.hook = RUNNING.hook, IMPORT
    RUNNING.entry += 1
    os._exit = refuse_exit  # type: ignore[assignment]
    try:
        with wall_watchdog(on_give_up):
            yield
    finally:
        os._exit = real_exit
        RUNNING.hook = hook
