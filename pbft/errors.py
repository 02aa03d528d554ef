"""The errors an operator sees as one sentence (exit status 2), in one place.

Every layer raises them and `pbft.cli` prints them, so they live below every layer and
import nothing from pbft (tests/test_layers.py: rank 0).
"""

from __future__ import annotations


class UsageError(Exception):
    """An operator mistake: printed as one sentence, exit status 2."""


class ConfigError(ValueError):
    """An operator mistake in the cluster file: one clear sentence."""


USER_CODE_FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit, GeneratorExit)
"""The common exceptions a user's code (a service, a behaviour) may raise. A call site of
user code catches every BaseException and lets only `is_interrupt` ones through (see
`user_failure`): a class deriving from BaseException itself is the user's failure too,
and cannot be named in a tuple that leaves KeyboardInterrupt out."""


def is_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is the operator's Ctrl-C, the one thing user code may raise that
    still stops the process (every other BaseException is the user's failure)."""
    return isinstance(exc, KeyboardInterrupt)


MAX_MESSAGE = 300
"""Characters of a user's exception message kept in a sentence (`exception_text`)."""


def safe_str(exc: BaseException, limit: int | None = MAX_MESSAGE, one_line: bool = True) -> str:
    """`str(exc)` for a sentence, never raising: a `__str__` that raises falls back to
    `repr`, then to "<unprintable>"; with `one_line`, line breaks become spaces; a message
    longer than `limit` (None: no limit) is cut, saying how long it was."""
    try:
        text = str(exc)
    except BaseException as err:  # noqa: BLE001 - the user's __str__
        if is_interrupt(err):
            raise
        try:
            text = repr(exc)
        except BaseException as err2:  # noqa: BLE001 - the user's __repr__
            if is_interrupt(err2):
                raise
            text = "<unprintable>"
        if not isinstance(text, str):
            text = "<unprintable>"
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... (cut, {len(text)} characters)"
    if one_line and ("\n" in text or "\r" in text):
        text = " ".join(text.split())
    return text


def exception_text(exc: BaseException, limit: int = MAX_MESSAGE) -> str:
    """`TypeName: message` of a user's exception for a one-sentence report (`safe_str`),
    or `TypeName` alone when the message is empty."""
    message = safe_str(exc, limit)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name
