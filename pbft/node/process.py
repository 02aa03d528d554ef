"""What every process of ours shares: its log set-up and `trio.run` with one-sentence errors.

`setup_logging` reads the global options every command has (`--log-level`,
`--log-format`; pbft.cli.main) and, for `pbft replica`, its `--id`; `run_trio` re-raises a
UsageError or ConfigError from inside a nursery as itself, so pbft.cli prints it as one
sentence. The replica process, the whole-cluster tools and the command line use both.
"""

from __future__ import annotations

import json
import logging
import sys

import trio

from ..errors import ConfigError, UsageError
from ..protocol.config import ClusterConfig


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, replica, event, fields, msg, logger.

    `event` and `fields` come from `extra=` (pbft.node.node.event_log); a line without
    them is the event "log" with no fields. `replica` is the record's, else the process's
    (set by `pbft replica --id`), else null."""

    def __init__(self, replica: int | None = None) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "replica": getattr(record, "replica", self.replica),
            "event": getattr(record, "event", "log"),
            "fields": getattr(record, "fields", {}),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(args) -> None:
    """Log to stderr at --log-level, as text or one JSON object per line (--log-format)."""
    name = str(args.log_level).upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise UsageError(f"unknown log level {name.lower()!r}; use debug, info or warning.")
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        replica = args.id if args.command == "replica" else None
        handler.setFormatter(_JsonFormatter(replica))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def load_config(path: str) -> ClusterConfig:
    from .clusterfile import load_cluster

    try:
        return load_cluster(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def run_trio(async_fn, *args):
    """trio.run, with a UsageError or ConfigError raised inside a nursery re-raised as
    itself (pbft.cli prints either as one sentence)."""
    try:
        return trio.run(async_fn, *args)
    except BaseExceptionGroup as group:
        usage = _first(group, UsageError) or _first(group, ConfigError)
        if usage is not None:
            raise usage from None
        if _first(group, KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        raise


def _first(group: BaseExceptionGroup, kind: type[BaseException]) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None
