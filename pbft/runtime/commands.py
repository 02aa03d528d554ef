"""The runtime's commands: `pbft replica`, `up`, `client`, `status` (DESIGN.md section 5).

Each `cmd_*` takes the parsed arguments and returns the exit status: 0 success, 1 a check
failed (no answer in time, key not found), 2 an operator mistake (raised as UsageError,
printed by pbft.cli as one sentence). Nothing here decides anything about the protocol.

Output conventions:
* `client put K V` prints `ok`; `client get K` prints the value, or `(not found)` and
  exits 1 (like grep, so scripts can test for a key); `client delete K` prints `deleted`,
  or `(not found)` and exits 1. No answer within --timeout: one line naming what the
  client saw (refused connections, a TLS refusal, held timestamps), exit 1. A key or
  value over its limit is refused before anything is sent: one line naming the limit,
  exit 2.
* `status` prints one line per replica (view, primary, last executed, stable checkpoint,
  log size, how far behind) or `unreachable`, then one verdict line; `--json` prints one
  JSON object instead. It signs its query as `--id`, else as the first client in the
  cluster file. Its exit status is the verdict's: 0 healthy, 3 degraded, 4 unavailable
  (pbft.runtime.health), so that scripts can tell them from 1 and 2.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import time

import trio

from ..cli import UsageError
from ..protocol.config import ClusterConfig, ConfigError

# -- helpers ----------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, replica, event, fields, msg, logger.

    `event` and `fields` come from `extra=` (pbft.runtime.node.event_log); a line without
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
    name = str(getattr(args, "log_level", "warning") or "warning").upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise UsageError(f"unknown log level {name.lower()!r}; use debug, info or warning.")
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "log_format", "text") == "json":
        replica = getattr(args, "id", None) if getattr(args, "command", None) == "replica" else None
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


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


# -- pbft replica --behaviour NAME[:key=value,...] | SCENARIO.toml ------------------------


def parse_behaviour_value(text: str) -> object:
    """One parameter value from the command line: true/false, an integer, a float, a
    list in brackets (`[prepare,commit]`, items parsed alike), else the text itself."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_behaviour_value(item) for item in _split_top(inner)] if inner else []
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_behaviour_spec(spec: str) -> tuple[str, dict[str, object]]:
    """`NAME` or `NAME:key=value,key=value` -> (name, params); UsageError if malformed."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"--behaviour {spec!r} names no behaviour.")
    params: dict[str, object] = {}
    for item in _split_top(rest) if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(
                f"--behaviour {spec!r}: expected key=value after the name, not {item.strip()!r}."
            )
        if key in params:
            raise UsageError(f"--behaviour {spec!r} gives {key!r} twice.")
        params[key] = parse_behaviour_value(value)
    return name, params


def behaviour_from_scenario(path: str, replica_id: int) -> tuple[str, dict[str, object]]:
    """The [[byzantine]] entry of the scenario file at `path` for replica `replica_id`."""
    from ..sim.scenario import load_scenario

    scenario = load_scenario(path)
    for b in scenario.byzantine:
        if b.target == "replica" and b.index == replica_id:
            return b.behaviour, dict(b.params)
    raise UsageError(f"{path} has no [[byzantine]] entry for replica {replica_id}.")


def resolve_behaviour(value: str | None, config_path: str, replica_id: int) -> str | None:
    """What `node.run_replica(behaviour=...)` should get for `--behaviour value`.

    A scenario file (a path to an existing file, or a name ending in .toml) contributes
    its [[byzantine]] entry for this replica. Parameters are checked here, by building
    the behaviour once around a throwaway core, so a bad one is a usage error (one
    sentence) before the replica listens. `run_replica` takes a behaviour name only, so
    a behaviour with parameters is registered under the full spec with them bound."""
    import os
    import random

    if value is None:
        return None
    if value.endswith(".toml") or os.path.isfile(value):
        name, params = behaviour_from_scenario(value, replica_id)
    else:
        name, params = parse_behaviour_spec(value)
    from ..adversary.behaviours import REGISTRY

    cls = REGISTRY.get(name)
    if cls is None:
        raise UsageError(f"unknown behaviour {name} (known: {', '.join(sorted(REGISTRY))}).")
    if not params:
        return name
    config = load_config(config_path)
    if 0 <= replica_id < config.n:
        from ..protocol.crypto import KeyPair
        from ..protocol.replica import Replica
        from ..service.kv import KeyValueStore

        key = KeyPair.generate()
        try:
            cls(Replica(config, replica_id, key, KeyValueStore()), key, dict(params), random.Random())
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
    bound_params = dict(params)

    class Bound(cls):  # type: ignore[valid-type, misc]
        def __init__(self, replica, key, extra, rng) -> None:
            super().__init__(replica, key, {**bound_params, **(extra or {})}, rng)

    Bound.__name__ = Bound.__qualname__ = cls.__name__
    token = f"{name}:{','.join(f'{k}={v!r}' for k, v in sorted(params.items()))}"
    REGISTRY[token] = Bound
    return token


# -- pbft replica -----------------------------------------------------------------------


def cmd_replica(args) -> int:
    """Run one replica until SIGTERM or SIGINT, then exit 0. Its records live in --data
    (default `<cluster dir>/data/replica-<id>`); exit 1 if it had to stop because its
    storage failed (full disk), which it logged in one line. Whatever --log-level says,
    it logs one line once it listens and one when it stops, saying why (pbft.runtime.node,
    `lifecycle`): a replica started with the defaults does not look hung."""
    from .node import lifecycle, run_replica

    setup_logging(args)
    lifecycle.setLevel(min(logging.getLogger().level, logging.INFO))
    why: list[str] = []

    async def stop_on_signal(scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                why.append(f"{signal.Signals(signum).name} received")
                scope.cancel()
                return

    async def main() -> str | None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal, nursery.cancel_scope)
            failure = await run_replica(
                args.config,
                args.id,
                behaviour=resolve_behaviour(getattr(args, "behaviour", None), args.config, args.id),
                data=getattr(args, "data", None),
                metrics=getattr(args, "metrics", None),
                accept_rollback=getattr(args, "accept_rollback", False),
                stop_reason=lambda: why[0] if why else None,
            )
            nursery.cancel_scope.cancel()
            return failure

    return 1 if run_trio(main) else 0


# -- pbft up ----------------------------------------------------------------------------


def _is_local(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


class _Stop(Exception):
    pass


UP_POLL = 0.2
"""Seconds between two looks at the replicas under `pbft up`."""


def cmd_up(args) -> int:
    """Run every replica of the cluster file whose address is on this host, until Ctrl-C
    or SIGTERM (exit 0). Each keeps its records in `<root>/replica-<id>`, root being
    --data if given, else `<cluster dir>/data`, and logs to `<log dir>/replica-<id>.log`
    (--log-dir, else `<cluster dir>/logs`; the same files every run, appended to).

    A port something else holds is an operator mistake (exit 2, naming the port and, if
    /proc tells, its holder), found before any replica starts; a replica counts as
    started once it logs that it listens. A replica that exits later is restarted with
    growing delays (launcher.Supervisor), each exit said on stdout with its status or
    signal; after repeated short runs `pbft up` stops the others and exits 1. Signal
    handlers are installed explicitly, so a shell that started it with SIGINT ignored
    (a background job without job control) still stops it with SIGINT; a second signal
    while stopping kills the replicas at once."""
    from .launcher import GiveUp, LaunchError, LocalCluster, Supervisor

    setup_logging(args)
    config = load_config(args.config)
    ids = [r.id for r in config.replicas if _is_local(r.host)]
    if not ids:
        raise UsageError(f"no replica in {args.config} has an address on this host.")
    cluster = LocalCluster(
        args.config,
        config,
        ids=ids,
        data_root=getattr(args, "data", None),
        log_dir=getattr(args, "log_dir", None),
        log_level=getattr(args, "log_level", "info") or "info",
        extra_args=["--log-format", getattr(args, "log_format", "text") or "text"],
    )

    def say(text: str) -> None:
        print(text, flush=True)

    phase = ["starting"]  # then "running", then "stopping"

    def on_signal(signum, frame):
        if phase[0] == "stopping":
            cluster.kill_all()  # a second Ctrl-C: do not wait for them
            return
        first, phase[0] = phase[0], "stopping"
        if first == "starting":
            raise _Stop  # out of start(), which stops what it started

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            cluster.start()
        except LaunchError as exc:
            raise UsageError(str(exc)) from None
        except _Stop:
            return 0
        if phase[0] == "starting":
            phase[0] = "running"
        for i in ids:
            r = config.replicas[i]
            say(
                f"replica {i} listening on {r.host}:{r.port} (pid {cluster.procs[i].pid}, "
                f"log: {cluster.log_path(i)}, data: {cluster.data_dir(i)})"
            )
        say("press Ctrl-C to stop")
        supervisor = Supervisor(cluster, say)
        while phase[0] == "running":
            try:
                supervisor.poll()
            except GiveUp as exc:
                phase[0] = "stopping"
                print(f"pbft: {exc}", file=sys.stderr, flush=True)
                return 1
            time.sleep(UP_POLL)
        return 0
    finally:
        phase[0] = "stopping"
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- pbft client ------------------------------------------------------------------------


def _arg_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def cmd_client(args) -> int:
    from .client import ClientError, RequestTooLarge, TimestampError, open_client

    setup_logging(args)
    op = args.op
    if op == "put" and args.value is None:
        raise UsageError("put needs a KEY and a VALUE.")
    if op != "put" and args.value is not None:
        raise UsageError(f"{op} takes a KEY only.")
    timeout = args.timeout  # a positive number of seconds (checked by the parser)
    key = _arg_bytes(args.key)

    async def main() -> int:
        async with open_client(args.config, args.id, timeout=timeout) as client:
            if op == "put":
                await client.put(key, _arg_bytes(args.value))
                print("ok")
                return 0
            if op == "get":
                value = await client.get(key)
                if value is None:
                    print("(not found)")
                    return 1
                sys.stdout.buffer.write(value + b"\n")
                sys.stdout.flush()
                return 0
            existed = await client.delete(key)
            print("deleted" if existed else "(not found)")
            return 0 if existed else 1

    try:
        return run_trio(main)
    except RequestTooLarge as exc:
        raise UsageError(f"{exc}; nothing was sent.") from None
    except (TimeoutError, TimestampError) as exc:
        text = str(exc)
        print(f"pbft: {text}{'' if text.endswith(('.', '?')) else '.'}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"pbft: the service refused the request: {exc}.", file=sys.stderr)
        return 1


# -- pbft status ------------------------------------------------------------------------


def cmd_status(args) -> int:
    """Ask every replica for its signed STATUS and judge the cluster (pbft.runtime.health):
    one row per replica and a verdict line, or with --json one object. Exit 0 healthy,
    3 degraded, 4 unavailable (health.EXIT)."""
    from . import health
    from .client import open_client

    setup_logging(args)
    config = load_config(args.config)
    client_id = getattr(args, "id", None)
    if client_id is None:
        if not config.clients:
            raise UsageError(f"{args.config} lists no [[client]] to sign the status query with.")
        client_id = config.clients[0].id

    async def main():
        async with open_client(args.config, client_id) as client:
            return await client.status(timeout=getattr(args, "timeout", None) or 2.0)

    judgement = health.judge(config, run_trio(main))
    if getattr(args, "json", False):
        print(json.dumps(health.render_json(config, judgement)))
    else:
        print(health.render_text(config, judgement))
    return judgement.exit_status


# -- pbft evidence ----------------------------------------------------------------------


def _replica_ids(ids: list[int]) -> str:
    """`replica 2`, `replicas 1, 3` or `none`: ids that cannot be read as a count."""
    if not ids:
        return "none"
    return f"replica{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"


def cmd_evidence(args) -> int:
    """Export the evidence stored in this host's data directories (JSON with --json or
    --out FILE, else one line per record), or with --verify FILE check an export against
    the cluster file alone: exit 0 if every record holds, 1 if any does not."""
    from . import evidence

    setup_logging(args)
    config = load_config(args.config)
    if getattr(args, "verify", None):
        doc = evidence.load_export(args.verify)
        if doc.get("cluster") != config.cluster_id:
            raise UsageError(
                f"{args.verify} is evidence from cluster {doc.get('cluster')!r}, not {config.cluster_id!r}."
            )
        verdicts = [evidence.verify_evidence(config, r) for r in doc["records"]]
        if getattr(args, "json", False):
            print(json.dumps({"cluster": config.cluster_id, "results": [
                {"ok": v.ok, "culprit": v.culprit, "reason": v.reason} for v in verdicts
            ]}))
        else:
            for i, v in enumerate(verdicts):
                print(f"record {i}: {'valid' if v.ok else 'INVALID'}: {v.reason}")
            faulty = sorted({v.culprit for v in verdicts if v.ok})
            print(f"{len(verdicts)} records, {sum(v.ok for v in verdicts)} valid; "
                  f"proven faulty: {_replica_ids(faulty)}")
        return 0 if all(v.ok for v in verdicts) else 1
    try:
        dirs = evidence.data_dirs(config, getattr(args, "data", None), getattr(args, "replica_data", None) or [])
        doc = evidence.export(config, dirs)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    text = json.dumps(doc, indent=2)
    out = getattr(args, "out", None)
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if getattr(args, "json", False):
        print(text)
    elif not out:
        for r in doc["records"]:
            v = evidence.verify_evidence(config, r)
            reporters = ",".join(map(str, r["reported_by"]))
            print(f"replica {r['culprit']} {r['kind']} (reported by {reporters}): {v.reason}")
        print(f"{len(doc['records'])} evidence records from {len(dirs)} data directories")
    return 0
