"""Reading the files a person hands pbft (cluster files, scenario files, plans): every
way one cannot be read becomes a few words the caller puts in its own sentence, never a
traceback or a read that blocks for ever.

Rank 0 (tests/test_layers.py): imports nothing from pbft, so every layer may use it.
"""

from __future__ import annotations

import os
import stat
import tomllib


class Unreadable(ValueError):
    """Why a file cannot be read or parsed, as a predicate ("is not UTF-8 text")."""


def check_regular(path: str | os.PathLike[str]) -> None:
    """Unreadable if `path` could never be read as a file, or reading it could block: a
    NUL in the name, a directory, a pipe or a device. A missing or forbidden file is
    left to `open`, whose error the caller words."""
    path = os.fspath(path)
    if "\x00" in path:
        raise Unreadable("has a NUL character in its name")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        raise Unreadable("is a directory, not a file")
    if not stat.S_ISREG(mode):
        # Opening a FIFO waits for a writer; a device may never end.
        raise Unreadable("is not a regular file (a pipe or a device)")


def parse_toml(data: bytes) -> dict:
    """The TOML document in `data`; Unreadable if it is not UTF-8, not TOML, or nested
    deeper than the parser's recursion allows."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Unreadable(f"is not valid TOML: {exc}") from None
    except RecursionError:
        raise Unreadable("nests arrays or tables too deeply to be read") from None
