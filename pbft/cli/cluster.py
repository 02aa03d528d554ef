"""`pbft keygen`, `config check`, `demo` and `bench`: the whole-cluster tools' commands.

Each `cmd_*` takes the parsed arguments (pbft.cli.main defines every attribute it reads)
and returns the exit status; the work is done in pbft.cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from argparse import Namespace

from ..cluster import bench, configcheck, keygen
from ..errors import UsageError
from ..node.clusterfile import PASSPHRASE_ENV, passphrase_bytes, read_passphrase_file
from ..protocol.config import MAX_VERIFY_THREADS


def _append_service(path: str, service) -> None:
    """The `[service]` table of `service` (a ServiceSpec) at the end of the cluster file."""
    def toml(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)  # ints, floats and strings are TOML as JSON writes them

    from ..adversary.loader import make_service, service_identity

    # What every replica checks at start; asked through the loader, whose call of the
    # user's classmethod turns whatever it raises into one sentence.
    identity = service_identity(type(make_service(service)), service.ref)
    lines = ["", "[service]", f"class = {json.dumps(service.ref)}", f"identity = {json.dumps(identity)}",
             *(f"{k} = {toml(v)}" for k, v in service.params)]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def cmd_keygen(args: Namespace) -> int:
    """`pbft keygen --dir DIR [--f 1] [--clients a,b] [--host H] [--base-port P]`, or
    `pbft keygen --add-client NAME --config FILE`; `--passphrase-env VAR` or
    `--passphrase-file FILE` encrypts the private keys written."""
    passphrase = keygen_passphrase(args)
    if args.add_client:
        if not args.config:
            raise UsageError("--add-client needs --config naming the cluster file.")
        keygen.add_client(args.config, args.add_client, passphrase)
        print(
            f"added client {args.add_client!r} to {args.config}; "
            "restart the replicas so that they accept it"
        )
        return 0
    if not args.dir:
        raise UsageError("keygen needs --dir DIR (or --add-client NAME --config FILE).")
    from ..adversary.loader import service_from_options

    if args.service is not None:
        # FILE.py as the cluster file will name it (relative to --dir, or to the working
        # directory if it is there); a missing one names the paths looked at.
        args.service = keygen.locate_service(args.service, args.dir)
    service = service_from_options(args.service, args.service_param, os.path.abspath(args.dir))
    clients = [c.strip() for c in (args.clients or "").split(",") if c.strip()]
    path = keygen.generate_cluster(
        args.dir,
        f=args.f,
        clients=clients,
        host=args.host,
        base_port=args.base_port,
        cluster_id=args.cluster_id,
        force=args.force,
        passphrase=passphrase,
    )
    if service is not None:
        _append_service(path, service)
    n = 3 * args.f + 1
    who = f"clients {', '.join(clients)}" if clients else "no clients"
    print(f"wrote {path} ({n} replicas, {who}{', service ' + service.ref if service else ''})")
    if passphrase:
        print(
            f"the private keys are encrypted: give replicas and clients the passphrase in "
            f"{PASSPHRASE_ENV} (or a file holding it in {PASSPHRASE_ENV}_FILE)"
        )
    return 0


def keygen_passphrase(args: Namespace) -> bytes | None:
    """The passphrase `--passphrase-env VAR` or `--passphrase-file FILE` gives, or None."""
    env = args.passphrase_env
    file = args.passphrase_file
    if env and file:
        raise UsageError("give --passphrase-env or --passphrase-file, not both.")
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise UsageError(f"--passphrase-env {env}: the environment variable {env} is not set or empty.")
        return passphrase_bytes(value, env)
    if file:
        return read_passphrase_file(file, "the passphrase file")
    return None


def cmd_config(args) -> int:
    """`pbft config check FILE [--strict] [--json]`: exit 0 clean (warnings allowed), 1
    warnings with --strict, 2 errors."""
    report = configcheck.check_cluster_file(args.file)
    if args.json:
        print(json.dumps({
            "file": report.path,
            "errors": report.errors,
            "warnings": report.warnings,
            "notes": report.notes,
        }))
    else:
        for level, items in (("error", report.errors), ("warning", report.warnings),
                             ("note", report.notes)):
            for text in items:
                print(f"{report.path}: {level}: {text}")
        print(f"{report.path}: {_summary(report)}")
        sys.stdout.flush()
    if report.errors:
        return 2
    if report.warnings and args.strict:
        return 1
    return 0


def _summary(report: configcheck.Report) -> str:
    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    if report.errors or report.warnings:
        return f"{count(len(report.errors), 'error')}, {count(len(report.warnings), 'warning')}"
    config = report.config
    assert config is not None
    return (
        f"ok (cluster {config.cluster_id!r}, f = {config.f}, {count(config.n, 'replica')}, "
        f"{count(len(config.clients), 'client')})"
    )


def cmd_demo(args) -> int:
    from ..cluster import demo as _demo
    from ..cluster.launcher import LaunchError, LocalCluster, free_ports
    from ..node.clusterfile import load_cluster
    from ..node.process import run_trio, setup_logging

    setup_logging(args)
    requests = args.requests
    nclients = args.clients
    if requests < 1:
        raise UsageError("--requests must be at least 1.")
    if not 1 <= nclients <= _demo.MAX_CLIENTS:
        raise UsageError(f"--clients must be between 1 and {_demo.MAX_CLIENTS}.")

    workdir = tempfile.mkdtemp(prefix="pbft-demo-")
    trace_dir = None if args.no_trace else os.path.join(workdir, "traces")
    if trace_dir is not None:
        os.makedirs(trace_dir)
    cluster = None
    demo = None
    try:
        names = [f"client{i}" for i in range(nclients)]
        path = keygen.generate_cluster(
            workdir,
            f=1,
            clients=[*names, _demo.OBSERVER],
            ports=free_ports(4),
            cluster_id="demo",
            force=True,
            checkpoint_interval=_demo.CHECKPOINT_INTERVAL,
            view_change_timeout_ms=_demo.VIEW_CHANGE_TIMEOUT_MS,
        )
        config = load_cluster(path)
        cluster = LocalCluster(
            path,
            config,
            log_dir=workdir,
            log_level="info",
            extra_args=["--log-format", "json"],  # the crash phase reads timestamps
            trace_dir=trace_dir,
        )
        plan = _demo.planned(requests)
        print(
            f"pbft demo: {config.n} replicas (f={config.f}) on loopback, {nclients} clients, "
            f"{sum(plan.values())} requests ({plan['workload']} workload, {plan['crash']} "
            f"while the primary is killed, {plan['byzantine']} with a Byzantine replica)",
            file=sys.stderr,
        )
        try:
            cluster.start()
        except LaunchError as exc:
            print(f"pbft: {exc}", file=sys.stderr)
            return 1
        demo = _demo.Demo(path, config, cluster, names, requests)
        if trace_dir is not None:
            demo.tracer = _demo.open_demo_trace(trace_dir, config, names)
        run_trio(_demo.run_phases, demo, _demo.PHASES)
    finally:
        if cluster is not None:
            cluster.stop()
        page = None
        if demo is not None and trace_dir is not None:
            page = _demo.write_viewer(demo, trace_dir, args.html)
        shutil.rmtree(workdir, ignore_errors=True)

    if page is not None:
        demo.lines.append(page)
    for line in demo.lines:
        print(line)
    if demo.failures:
        for failure in demo.failures[:20]:
            print(f"FAILED: {failure}")
        return 1
    print("check        every get returned the last value put: ok")
    return 0


def _check_args(f: int, clients: int, duration: float, behaviour: str | None) -> None:
    if not 1 <= f <= 10:
        raise UsageError("--f must be an integer from 1 to 10 (n = 3f+1 local processes).")
    if not 1 <= clients <= bench.MAX_CLIENTS:
        raise UsageError(f"--clients must be between 1 and {bench.MAX_CLIENTS}.")
    if not 0 < duration <= bench.MAX_DURATION:
        raise UsageError(f"--duration must be more than 0 and at most {bench.MAX_DURATION:g} seconds.")
    if behaviour is not None:
        from ..adversary import catalogue

        ref, _ = catalogue.parse_spec(behaviour)
        catalogue.lookup(ref)  # one sentence if unknown, or a user's file that does not load


def _absolute_behaviour(text: str | None) -> str | None:
    """`--behaviour REF[:k=v]` with a user file's path made absolute, so the replica
    processes find it whatever their working directory."""
    if text is None:
        return None
    from ..adversary import catalogue, loader

    ref, rest = catalogue.split_ref(text)
    ref = loader.absolute(ref) if catalogue.is_ref(ref) else ref
    return f"{ref}:{rest}" if rest else ref


def cmd_bench(args) -> int:
    """`pbft bench [--f 1] [--clients C] [--duration S] [--json FILE] [--behaviour NAME]`."""
    from ..node.process import setup_logging

    setup_logging(args)
    f = int(args.f)
    clients = int(args.clients)
    duration = float(args.duration)
    behaviour = _absolute_behaviour(args.behaviour)
    workers = args.workers
    read_fraction = float(args.reads)
    _check_args(f, clients, duration, behaviour)
    sweep = _sweep(args.sweep)
    if not 0.0 <= read_fraction <= 1.0:
        raise UsageError("the read fraction must be between 0 and 1.")
    if not 0 <= args.state_keys <= bench.MAX_STATE_KEYS:
        raise UsageError(f"--state-keys must be from 0 to {bench.MAX_STATE_KEYS}.")
    if not 1 <= args.value_size <= bench.MAX_STATE_VALUE:
        raise UsageError(f"--value-size must be from 1 to {bench.MAX_STATE_VALUE} bytes.")
    if args.verify_threads is not None and not 0 <= args.verify_threads <= MAX_VERIFY_THREADS:
        raise UsageError(f"--verify-threads must be from 0 to {MAX_VERIFY_THREADS}.")

    cores = os.cpu_count() or 1
    # SIGTERM unwinds like Ctrl-C, so the replicas and workers are stopped either way.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _bench(args, f, clients, duration, behaviour, workers, read_fraction, cores, sweep)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _sweep(text: str | None) -> list[int]:
    """`--sweep 4,16,64`: client counts, each from 1 to MAX_CLIENTS; UsageError otherwise."""
    if not text:
        return []
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--sweep takes client counts separated by commas, like 4,16,64, not {text!r}.") from None
    if not counts or not all(1 <= c <= bench.MAX_CLIENTS for c in counts):
        raise UsageError(f"--sweep: each client count must be from 1 to {bench.MAX_CLIENTS}.")
    return counts


def _bench(args, f, clients, duration, behaviour, workers, read_fraction, cores, sweep=()) -> int:
    cost = bench.measure_crypto()
    n = 3 * f + 1
    print(
        f"pbft bench: n={n} (f={f}), {clients} clients, {duration:g} s; "
        f"sign {cost.t_sign * 1e6:.1f} us, verify {cost.t_verify * 1e6:.1f} us, "
        f"ceiling {bench.ceiling_rps(cost, n, cores):.0f} req/s on {cores} cores",
        file=sys.stderr,
    )
    try:
        run = bench.run_once(f, clients, duration, workers=workers, read_fraction=read_fraction,
                       label="fault-free" if behaviour else "bench",
                       state_keys=args.state_keys, value_size=args.value_size,
                       verify_threads=args.verify_threads)
        attack = None
        if behaviour:
            attack = bench.run_once(f, clients, duration, behaviour=behaviour, workers=workers,
                              read_fraction=read_fraction, label=behaviour)
        swept = [
            bench.run_once(f, c, duration, workers=workers, read_fraction=read_fraction, label=f"{c} clients")
            for c in sweep
        ]
    except bench.BenchError as exc:
        print(f"pbft: bench failed: {exc}", file=sys.stderr)
        return 1
    doc = bench.report(run, cost, cores, attack, swept)
    for line in bench.summary(doc):
        print(line)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
                fh.write("\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.json}: {exc.strerror or exc}.") from None
    if args.plot:
        write_plot(args.plot, doc, run, attack, swept)
    return 0


def write_plot(path: str, doc: dict, run, attack, swept=()) -> None:
    """`--plot FILE.svg`: throughput and latency over time and the latency CDF of the
    run (and of the attack run over it), and with `--sweep` throughput against latency,
    pbft.cluster.plot."""
    from ..cluster import plot

    series = [plot.Series("fault-free" if attack else "bench", run.samples, run.duration_s)]
    if attack is not None:
        series.append(plot.Series(f"replica 0 runs {attack.behaviour}", attack.samples, attack.duration_s))
    title = (f"pbft bench: n={doc['n']}, {doc['clients']} clients, {doc['throughput_rps']:.0f} req/s, "
             f"p50 {doc['latency_ms']['p50']:.1f} ms, p99 {doc['latency_ms']['p99']:.1f} ms")
    try:
        with open(path, "w", encoding="utf-8") as fh:
            points = [(r.clients, r.throughput_rps, r.latency_ms["p50"], r.latency_ms["p99"])
                      for r in sorted([run, *swept], key=lambda r: r.clients)]
            fh.write(plot.svg(series, title, sweep=points if swept else None))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}.") from None
    print(f"plot         {path}")
