"""A pytest plugin for mutation runs (`make mutate`, docs/mutation.md): a test that uses
more than PBFT_MUTATE_TEST_TIMEOUT seconds of CPU (default 120) ends the whole pytest
process with exit status 36, which mutmut records as a *timeout* (a mutant that makes the
core loop for ever), not as a kill by a failing assertion. CPU time, not wall time: on a
machine shared with other work a slow test is not a hang.

pytest-timeout (the project's `timeout = 120`) would turn the same hang into an ordinary
failure; mutation runs disable it (`-p no:timeout`) and load this instead
(`-p tests.mutate_watchdog`). It is not loaded by `make test`.
"""

from __future__ import annotations

import os
import signal

import pytest

TIMEOUT_EXIT_STATUS = 36  # mutmut's exit status for "timeout"


def _limit() -> float:
    return float(os.environ.get("PBFT_MUTATE_TEST_TIMEOUT", "120"))


def _expired(signum, frame):  # pragma: no cover - only when a test hangs
    os.write(2, b"mutate_watchdog: a test ran over its CPU time limit\n")
    os._exit(TIMEOUT_EXIT_STATUS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    previous = signal.signal(signal.SIGPROF, _expired)
    signal.setitimer(signal.ITIMER_PROF, _limit())
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
