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

Only in the main thread (signals are delivered there), only if nobody else handles
SIGVTALRM, never nested. `PBFT_HOOK_TIMEOUT` (seconds; 0 turns it off) overrides the
default HOOK_TIMEOUT_S. A hook that catches the exception and carries on is interrupted
again after another limit, and so on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from ..adversary.base import HOOKS, RUNNING, HookTimeout
from ..errors import UsageError

HOOK_TIMEOUT_S = 10.0
"""CPU seconds one call of a user's hook may run."""
TICK_S = 0.25
"""How often the timer looks (CPU seconds): the limit is met to within this."""
ENV = "PBFT_HOOK_TIMEOUT"


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


class _Ticks:
    __slots__ = ("entry", "count", "needed", "limit")

    def __init__(self, limit_s: float) -> None:
        self.entry = -1
        self.count = 0
        self.limit = limit_s
        self.needed = max(1, round(limit_s / TICK_S))

    def __call__(self, signum, frame) -> None:
        hook = RUNNING.hook
        if hook is None:
            return
        if RUNNING.entry != self.entry:  # another call than at the last tick
            self.entry = RUNNING.entry
            self.count = 0
        self.count += 1
        if self.count >= self.needed:
            self.count = 0  # a hook that swallows it is stopped again after another limit
            while frame is not None and frame.f_code.co_name not in HOOKS:
                frame = frame.f_back
            name = frame.f_code.co_name if frame is not None else hook
            raise HookTimeout(f"hook {name} ran for more than {self.limit:g} s of CPU time")


_active = False


@contextlib.contextmanager
def hook_watchdog() -> Iterator[None]:
    """While inside, a user's hook call that runs over the limit raises HookTimeout.
    Does nothing off the main thread, with the limit 0, when another handler owns
    SIGVTALRM, or inside another hook_watchdog()."""
    global _active
    seconds = limit()
    if (
        _active or seconds <= 0
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGVTALRM) not in (signal.SIG_DFL, None)
    ):
        yield
        return
    previous = signal.signal(signal.SIGVTALRM, _Ticks(seconds))
    _active = True
    signal.setitimer(signal.ITIMER_VIRTUAL, TICK_S, TICK_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous if previous is not None else signal.SIG_DFL)
        _active = False
