"""A replica process's trace: `pbft replica --trace FILE` (docs/formats.md, "Traces of real processes").

Theory of operation. The process writes the simulator's trace records (pbft.sim.trace,
`TraceWriter`) with `t` in wall-clock Unix milliseconds (a float, microsecond
resolution), so that traces of several processes, on one host or several, can be merged
(`pbft trace merge`, which estimates clock offsets between hosts; the header names the
host, as `socket.gethostname()` says, so processes of one host are known to share a clock). `open_trace` opens the
file for appending: a new or empty file gets a header; a file that already holds this
replica's trace (a restarted process) gets nothing more than the `start` record every
start writes, so one file tells the replica's whole story across crashes (half a record
left by a process killed in the middle of a flush is cut first). A file holding
another replica's trace, or something else, is a usage error (one sentence).

The file is written through a 64 KiB buffer and flushed every FLUSH_S by the node's tick
task and when the process stops: a record costs no system call, and a SIGKILLed process
loses at most the last FLUSH_S of its trace.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from ..errors import UsageError
from ..sim.trace import VERSION, TraceWriter

FLUSH_S = 0.5
"""How often a replica's trace buffer is handed to the OS."""
BUFFER = 64 * 1024


def wall_ms() -> float:
    """Now, in Unix milliseconds (microsecond resolution): a real trace's `t`."""
    return time.time_ns() // 1000 / 1000  # exact to 3 decimals, and 5x cheaper than round()


def open_trace(path: str, node: Any, n: int, f: int, byzantine: list[int], clients: list[str],
               **extra: Any) -> TraceWriter:
    """The trace writer of process `node` appending to `path` (header written if the
    file is new or empty); UsageError if it cannot be written or holds another trace."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    if size:
        _check_existing(path, node)
        _drop_partial_line(path, size)
    try:
        writer = TraceWriter(path, append=True, buffering=BUFFER)
    except OSError as exc:
        raise UsageError(f"--trace: cannot write {path}: {exc.strerror or exc}.") from None
    if not size:
        writer.header_real(node, n, f, byzantine, clients, wall_ms(), host=socket.gethostname(),
                           pid=os.getpid(), **extra)
        writer.flush()  # a process killed at once still leaves a trace file that reads
    return writer


def _drop_partial_line(path: str, size: int) -> None:
    """A process killed in the middle of a flush leaves half a record at the end: cut it,
    so that what the restarted process appends starts on a line of its own."""
    try:
        with open(path, "rb+") as fh:
            fh.seek(max(0, size - BUFFER))
            tail = fh.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            if cut >= 0:
                fh.truncate(size - len(tail) + cut + 1)
    except OSError as exc:
        raise UsageError(f"--trace: cannot write {path}: {exc.strerror or exc}.") from None


def _check_existing(path: str, node: Any) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except OSError as exc:
        raise UsageError(f"--trace: cannot read {path}: {exc.strerror or exc}.") from None
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("type") != "header" or head.get("mode") != "real":
        raise UsageError(f"--trace: {path} is not empty and not a real process's trace; give another file.")
    if head.get("version") != VERSION:
        raise UsageError(f"--trace: {path} is a trace of version {head.get('version')!r}, this pbft writes {VERSION}.")
    if head.get("node") != node:
        raise UsageError(f"--trace: {path} holds the trace of {head.get('node')!r}, not of {node!r}; give another file.")
