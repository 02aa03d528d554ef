"""The errors an operator sees as one sentence (exit status 2), in one place.

Every layer raises them and `pbft.cli` prints them, so they live below every layer and
import nothing from pbft (tests/test_layers.py: rank 0).
"""

from __future__ import annotations


class UsageError(Exception):
    """An operator mistake: printed as one sentence, exit status 2."""


class ConfigError(ValueError):
    """An operator mistake in the cluster file: one clear sentence."""


USER_CODE_FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit)
"""What a user's code (a service, a behaviour) may raise that pbft turns into a result or
a reported failure rather than a crash: every exception, and `sys.exit()` too. Only
KeyboardInterrupt (the operator's Ctrl-C) still stops the process."""
