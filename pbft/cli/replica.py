"""The replica process's commands: `pbft replica`, `up`, `client`, `status`, `evidence`
(README, "Running a cluster").

Each `cmd_*` takes the parsed arguments and returns the exit status: 0 success, 1 a check
failed (no answer in time, key not found, replicas that answered with different results),
2 an operator mistake (raised as UsageError, printed by pbft.cli as one sentence; for
`pbft replica` also a service whose re-execution contradicts what the replica signed
before a restart, `cmd_replica`). Nothing here decides anything about the protocol.

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
  (pbft.node.health), so that scripts can tell them from 1 and 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import sys
import time

import trio

from ..adversary import catalogue
from ..errors import ConfigError, UsageError
from ..node.process import load_config, run_trio, setup_logging


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


# -- pbft replica --behaviour REF[:key=value,...] | SCENARIO.toml ------------------------


def behaviour_from_scenario(path: str, replica_id: int) -> catalogue.BehaviourSpec:
    """The [[byzantine]] entry of the scenario file at `path` for replica `replica_id`
    (its parameters and message rules as typed; a relative FILE.py next to the file)."""
    from ..sim.scenario import load_scenario

    scenario = load_scenario(path)
    for b in scenario.byzantine:
        if b.target == "replica" and b.index == replica_id:
            return catalogue.BehaviourSpec(b.behaviour, dict(b.params), b.base_dir)
    raise UsageError(f"{path} has no [[byzantine]] entry for replica {replica_id}.")


def resolve_behaviour(value: str | None, config_path: str, replica_id: int) -> catalogue.BehaviourSpec | None:
    """What `node.run_replica(behaviour=...)` should get for `--behaviour value`: a
    `catalogue.BehaviourSpec`, or None. `value` is `REF[:key=value,...]` (REF a catalogue
    name, FILE.py:Class or module:Class) or a scenario file.

    A scenario file (a path to an existing file, or a name ending in .toml) contributes
    its [[byzantine]] entry for this replica. The behaviour is built once here around a
    throwaway core (`catalogue.check`), so a bad parameter, or a user's file that does not
    load, is a usage error (one sentence) before the replica opens its data directory or
    listens."""
    import os

    if value is None:
        return None
    if value.endswith(".toml") or (os.path.isfile(value) and not value.endswith(".py")):
        spec = behaviour_from_scenario(value, replica_id)
    else:
        spec = catalogue.BehaviourSpec.parse(value)
        spec = catalogue.BehaviourSpec(spec.ref, spec.params, os.getcwd())
    catalogue.check(spec.ref, spec.params, load_config(config_path), replica_id, spec.base_dir)
    return spec


# -- pbft replica -----------------------------------------------------------------------


def cmd_replica(args) -> int:
    """Run one replica until SIGTERM or SIGINT, then exit 0. Its records live in --data
    (default `<cluster dir>/data/replica-<id>`); exit 1 if it had to stop because its
    storage failed (full disk), which it logged in one line; exit 2 with one sentence
    (a UsageError) for an operator mistake, among them a service that re-executed the
    requests since the last stable checkpoint into another state than the one this
    replica signed before (at recovery or later: pbft.protocol.events.Diverged, REPLAY):
    its code changed without a new `version`, or it is not deterministic, so restarting
    it as it is cannot help (`pbft up` does not). Whatever --log-level says,
    it logs one line once it listens and one when it stops, saying why (pbft.node.node,
    `lifecycle`): a replica started with the defaults does not look hung."""
    from ..adversary import broken
    from ..node.node import lifecycle, run_replica
    from ..sim.watchdog import loading_user_modules, stalled_exit, wall_watchdog

    if args.broken is not None:
        broken.lookup(args.broken)  # one sentence before anything is opened

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
            with loading_user_modules():  # a module that blocks or calls os._exit: one sentence
                behaviour = resolve_behaviour(args.behaviour, args.config, args.id)
            failure = await run_replica(
                args.config,
                args.id,
                behaviour=behaviour,
                data=args.data,
                metrics=args.metrics,
                accept_rollback=args.accept_rollback,
                stop_reason=lambda: why[0] if why else None,
                broken=args.broken,
                trace=getattr(args, "trace", None),
                **_link_fault_options(args),
            )
            nursery.cancel_scope.cancel()
            return failure

    # A behaviour's hook runs on the event loop: one call that runs over the limit in
    # wall-clock time gets HookTimeout (the attacker's failure, logged as such; the
    # behaviour is called no more); one that even then does not return ends the process
    # with watchdog.HOOK_STALLED_EXIT (pbft.sim.watchdog, docs/attacks.md).
    with wall_watchdog(stalled_exit) if args.behaviour is not None else contextlib.nullcontext():
        return 1 if run_trio(main) else 0


def _link_fault_options(args) -> dict[str, object]:
    """--link-faults, --fault-epoch, --twin: for testing (pbft.node.linkfaults)."""
    return {k: getattr(args, k, None) for k in ("link_faults", "fault_epoch")} | {"twin": getattr(args, "twin", False)}


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

    The replicas are those of the file's latest epoch (`[[epoch]]` entries written by
    `pbft admin`); one whose key a change replaced runs from the directory `pbft admin`
    wrote for it, or is not started if its files are not there (launcher.up_sources).

    A port something else holds is an operator mistake (exit 2, naming the port and, if
    /proc tells, its holder), found before any replica starts; a replica counts as
    started once it logs that it listens. A replica that exits later is restarted with
    growing delays (launcher.Supervisor), each exit said on stdout with its status or
    signal; one that exits 0 (it retired, or was stopped on purpose) or 2 (an operator
    mistake), or after five short runs in a row, is not restarted, said once, and the
    others keep running. `pbft up` exits once no replica is left running, or at Ctrl-C:
    1 if a replica is down (each named on stderr with why), else 0. Signal handlers are
    installed explicitly (SIGINT, SIGTERM and SIGHUP: the replicas run in process groups
    of their own, so only this process hears the terminal), so a shell that started it
    with SIGINT ignored (a background job without job control) still stops it with
    SIGINT; a second signal while stopping kills the replicas at once."""
    from ..cluster.launcher import LaunchError, LocalCluster, Supervisor, up_sources

    setup_logging(args)
    config = load_config(args.config)
    ids = [r.id for r in config.replicas if _is_local(r.host)]
    if not ids:
        raise UsageError(f"no replica in {args.config} has an address on this host.")
    paths, data_dirs, skipped = up_sources(args.config, config, ids, args.data)
    ids = [i for i in ids if i not in skipped]
    if not ids:
        raise UsageError(" ".join(f"replica {i} cannot be started: {why}." for i, why in skipped.items()))
    cluster = LocalCluster(
        args.config,
        config,
        ids=ids,
        data_root=args.data,
        log_dir=args.log_dir,
        log_level=args.log_level,
        extra_args=["--log-format", args.log_format],
        config_paths=paths,
        data_dirs=data_dirs,
    )

    def say(text: str) -> None:
        print(text, flush=True)

    def down(supervisor: Supervisor | None) -> int:
        """Name every replica that is down, on stderr: exit 1 if any, else 0."""
        reasons = {**{i: f"not started: {why}" for i, why in skipped.items()},
                   **(supervisor.down if supervisor else {})}
        for i, why in sorted(reasons.items()):
            print(f"pbft: replica {i} is down: {why}.", file=sys.stderr, flush=True)
        return 1 if reasons else 0

    phase = ["starting"]  # then "running", then "stopping"

    def on_signal(signum, frame):
        if phase[0] == "stopping":
            cluster.kill_all()  # a second Ctrl-C: do not wait for them
            return
        first, phase[0] = phase[0], "stopping"
        if first == "starting":
            raise _Stop  # out of start(), which stops what it started

    # The replicas run in process groups of their own (launcher): the terminal's Ctrl-C and
    # hang-up reach this process only, which stops them.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
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
            source = f", config: {paths[i]}" if i in paths else ""
            say(
                f"replica {i} listening on {r.host}:{r.port} (pid {cluster.procs[i].pid}, "
                f"log: {cluster.log_path(i)}, data: {cluster.data_dir(i)}{source})"
            )
        for i, why in skipped.items():
            say(f"replica {i} not started: {why}")
        say("press Ctrl-C to stop")
        supervisor = Supervisor(cluster, say)
        while phase[0] == "running":
            supervisor.poll()
            if not supervisor.running:
                phase[0] = "stopping"
                say("no replica is left running")
                break
            time.sleep(UP_POLL)
        return down(supervisor)
    finally:
        phase[0] = "stopping"
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- pbft client ------------------------------------------------------------------------


def _arg_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def cmd_client(args) -> int:
    from ..node.client import ClientError, RequestTooLarge, TimestampError, open_client

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
    """Ask every replica for its signed STATUS and judge the cluster (pbft.node.health):
    one row per replica and a verdict line, or with --json one object. Exit 0 healthy,
    3 degraded, 4 unavailable (health.EXIT)."""
    from ..node import health
    from ..node.client import open_client

    setup_logging(args)
    config = load_config(args.config)
    client_id = args.id
    if client_id is None:
        if not config.clients:
            raise UsageError(f"{args.config} lists no [[client]] to sign the status query with.")
        client_id = config.clients[0].id

    async def main():
        async with open_client(args.config, client_id) as client:
            return await client.status(timeout=args.timeout)  # checked by the parser

    judgement = health.judge(config, run_trio(main))
    if args.json:
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
    from ..cluster import evidence
    from .main import check_output_file

    setup_logging(args)
    config = load_config(args.config)
    if args.verify:
        doc = evidence.load_export(args.verify)
        if doc.get("cluster") != config.cluster_id:
            raise UsageError(
                f"{args.verify} is evidence from cluster {doc.get('cluster')!r}, not {config.cluster_id!r}."
            )
        verdicts = [evidence.verify_evidence(config, r) for r in doc["records"]]
        if args.json:
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
    out = args.out
    if out:
        check_output_file(out, "--out")  # before reading anything: a bad path is one sentence
    try:
        dirs = evidence.data_dirs(config, args.data, args.replica_data)
        doc = evidence.export(config, dirs)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    text = json.dumps(doc, indent=2)
    if out:
        try:
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:  # changed since the check
            raise UsageError(f"--out: cannot write {out}: {exc.strerror or exc}.") from None
    if args.json:
        print(text)
    elif not out:
        for r in doc["records"]:
            v = evidence.verify_evidence(config, r)
            reporters = ",".join(map(str, r["reported_by"]))
            print(f"replica {r['culprit']} {r['kind']} (reported by {reporters}): {v.reason}")
        print(f"{len(doc['records'])} evidence records from {len(dirs)} data directories")
    return 0
