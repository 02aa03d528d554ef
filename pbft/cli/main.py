"""The `pbft` command (README: "Running a cluster" and "Operating").

This module only parses arguments and dispatches; the handlers are in pbft.cli.cluster
(keygen, config, demo, bench), pbft.cli.replica (replica, up, client, status, evidence)
pbft.cli.scenario (scenario, fuzz) and pbft.cli.trace (trace), imported lazily so `pbft scenario list` does not
import Trio or TLS. Nothing but `pbft/__main__.py` and the console entry point imports
this package (tests/test_layers.py).
Exit status: 0 success, 1 a check failed, 2 usage or configuration error. Operator
mistakes are reported as one sentence on stderr, never a traceback.

Manners every command shares, applied once in `build_parser` and `main` so a command
added later gets them too:
* `--version` prints the installed package's version.
* Every `--help` shows each option's default (`_show_defaults`).
* The global options (`--log-level`, `--log-format`) may come before or after the
  command: each subcommand accepts them too (`_accept_global_options`).
* Output cut short by its reader (`pbft scenario list | head -1`) ends quietly, exit
  status 141 (128 + SIGPIPE, as a process killed by it would report), no traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from ..errors import ConfigError, UsageError


def _handler(command: str):
    """The function that runs `command` ("scenario run" for a subcommand): it takes the
    parsed args and returns an exit code. Imported here, lazily (so `pbft scenario list`
    does not import Trio or TLS) but plainly: a module that fails to import is a bug and
    raises, never "not available"."""
    if command in ("keygen", "config", "demo", "bench"):
        from . import cluster

        return {"keygen": cluster.cmd_keygen, "config": cluster.cmd_config,
                "demo": cluster.cmd_demo, "bench": cluster.cmd_bench}[command]
    if command in ("scenario run", "scenario list", "fuzz", "twins"):
        from . import scenario

        return {"scenario run": scenario.cmd_scenario_run, "scenario list": scenario.cmd_scenario_list,
                "fuzz": scenario.cmd_fuzz, "twins": scenario.cmd_twins}[command]
    if command == "admin":
        from . import admin

        return admin.cmd_admin
    if command.startswith("trace "):
        from . import trace

        return getattr(trace, "cmd_trace_" + command.split()[1].replace("-", "_"))
    from . import replica

    return {"replica": replica.cmd_replica, "up": replica.cmd_up, "client": replica.cmd_client,
            "status": replica.cmd_status, "evidence": replica.cmd_evidence}[command]


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
EXIT_BROKEN_PIPE = 128 + 13
"""What a shell reports for a process killed by SIGPIPE; we exit with it instead."""


def version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib import metadata

    try:
        return metadata.version("pbft")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def check_output_file(path: str, flag: str) -> None:
    """UsageError (one sentence) unless `path` can be written as a file: not a directory,
    a pipe or a device (opening a pipe waits for a reader), its directory there and
    writable. A file this check creates is removed again."""
    from ..files import Unreadable, check_regular

    try:
        check_regular(path)
    except Unreadable as why:
        raise UsageError(f"{flag}: will not write {path}: it {why}.") from None
    existed = os.path.lexists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
        if not existed:
            os.unlink(path)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write {path}: {exc.strerror or exc}.") from None


def _add_global_options(p: argparse.ArgumentParser, default) -> None:
    """--log-level and --log-format; `default` is SUPPRESS on subcommands so one given
    there overrides the top-level value and one not given leaves it alone."""
    def shown(value: str) -> object:
        return value if default is None else default

    p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default=shown("warning"),
                   help="how much to log on stderr (default: warning)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=shown("text"),
                   help="log lines as text or one JSON object each (default: text)")


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `p`, each once, depth first."""
    out: list[argparse.ArgumentParser] = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out.append(child)
                out += _subparsers(child)
    return out


def _accept_global_options(p: argparse.ArgumentParser) -> None:
    """Let every subcommand take the global options after its name as well."""
    for child in _subparsers(p):
        known = {s for a in child._actions for s in a.option_strings}
        if "--log-level" not in known:
            _add_global_options(child, argparse.SUPPRESS)


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Append `(default: X)` to every option's help that has a default worth showing and
    does not already say it (argparse's ArgumentDefaultsHelpFormatter skips options
    without a help text, most of ours)."""
    for parser in [p, *_subparsers(p)]:
        for action in parser._actions:
            default = action.default
            if (
                not action.option_strings
                or action.help == argparse.SUPPRESS
                or default is None
                or default is False
                or default == argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction | argparse._VersionAction)
                or "default" in (action.help or "")
            ):
                continue
            if default == []:
                continue
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            text = str(shown).replace("%", "%%")
            action.help = f"{action.help} (default: {text})" if action.help else f"default: {text}"


def _service_options(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--service", default=None, metavar="REF", help=text)
    parser.add_argument("--service-param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of --service's class (repeat for more)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pbft", description="Practical Byzantine Fault Tolerance")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _add_global_options(p, None)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    k = sub.add_parser(
        "keygen",
        help="make keys, certificates and DIR/cluster.toml, or add a client to a cluster",
    )
    k.add_argument("--dir", default=None)
    k.add_argument("--add-client", default=None, metavar="NAME",
                   help="add a client key and entry to the cluster file given by --config")
    k.add_argument("--config", default=None, help="the cluster file, with --add-client")
    k.add_argument("--f", type=int, default=1)
    k.add_argument("--clients", default="alice,bob")
    k.add_argument("--host", default="127.0.0.1")
    k.add_argument("--base-port", type=int, default=7000)
    k.add_argument("--cluster-id", default=None, help="default: the directory's name")
    k.add_argument("--force", action="store_true", help="overwrite an existing directory")
    k.add_argument("--passphrase-env", default=None, metavar="VAR",
                   help="encrypt the private keys with the passphrase in environment variable VAR")
    k.add_argument("--passphrase-file", default=None, metavar="FILE",
                   help="encrypt the private keys with the first line of FILE")
    _service_options(k, "write a [service] table naming this class (module.path:Class or FILE.py:Class, "
                        "a FILE relative to --dir, else to the working directory) into the cluster file: "
                        "the replicated service instead of the key-value store (docs/services.md)")

    r = sub.add_parser("replica", help="run one replica")
    r.add_argument("--config", required=True)
    r.add_argument("--id", type=int, required=True)
    r.add_argument("--data", default=None)
    r.add_argument(
        "--behaviour", default=None, metavar="REF[:k=v,...] | SCENARIO.toml",
        help="run Byzantine on purpose: a catalogue name, FILE.py:Class or module:Class "
             "with parameters, or the scenario file whose [[byzantine]] entry names this replica",
    )
    r.add_argument(
        "--broken", default=None, metavar="NAME",
        help="run a deliberately broken core (pbft.adversary.broken) to check that your "
             "scenarios catch a wrong protocol; never in production",
    )
    r.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics")
    r.add_argument("--accept-rollback", action="store_true",
                   help="open a data directory whose database is behind its HISTORY file "
                        "(an older copy restored on purpose)")
    r.add_argument("--trace", default=None, metavar="FILE.jsonl",
                   help="write every message sent and accepted and every protocol event as JSON "
                        "lines (docs/formats.md, wall-clock Unix ms; a restarted replica appends); "
                        "merge several with `pbft trace merge`")
    # Testing only: what `pbft scenario run --real` starts replicas with (pbft.node.linkfaults).
    r.add_argument("--link-faults", default=None, metavar="PLAN",
                   help="for testing: apply the link faults of this JSON plan (written by "
                        "`pbft scenario run --real`) to everything this replica sends")
    r.add_argument("--fault-epoch", type=float, default=None, metavar="T",
                   help="for testing: wall-clock time (Unix seconds) the plan's fault windows "
                        "count from (default: the plan's epoch)")
    r.add_argument("--twin", action="store_true",
                   help="for testing: run as the second process of a twinned replica, on the "
                        "plan's extra address")

    u = sub.add_parser("up", help="run every replica of the cluster file on this host")
    u.add_argument("--config", required=True)
    u.add_argument("--data", default=None, metavar="ROOT",
                   help="data directories go under ROOT (default: next to the cluster file)")
    u.add_argument("--log-dir", default=None, metavar="DIR",
                   help="replica logs go in DIR/replica-<id>.log, appended to "
                        "(default: <cluster dir>/logs)")

    c = sub.add_parser("client", help="send one signed request and print the result")
    c.add_argument("--config", required=True)
    c.add_argument("--id", required=True)
    c.add_argument("--timeout", type=positive_seconds, default=30.0,
                   help="seconds to wait for the answer")
    c.add_argument("op", choices=["put", "get", "delete"])
    c.add_argument("key")
    c.add_argument("value", nargs="?")

    s = sub.add_parser(
        "status", help="each replica's view, progress and lag, and a verdict on the cluster",
        description="Ask every replica for its signed status and judge the cluster: healthy "
        "(every replica answers, one view, none lagging), degraded (2f+1 agree on a view, "
        "but some replica is unreachable, in another view or lagging), unavailable (no 2f+1 "
        "in one view).",
        epilog="Exit status: 0 healthy, 3 degraded, 4 unavailable, 2 usage or configuration error.",
    )
    s.add_argument("--config", required=True)
    s.add_argument("--id", default=None, metavar="NAME",
                   help="the client to sign the query as (default: the first in the file)")
    s.add_argument("--timeout", type=positive_seconds, default=2.0, help="seconds to wait for answers")
    s.add_argument("--json", action="store_true")

    e = sub.add_parser(
        "evidence", help="export the stored evidence of faulty replicas, or verify an export"
    )
    e.add_argument("--config", required=True)
    e.add_argument("--data", default=None, metavar="ROOT",
                   help="read ROOT/replica-<id> (default: <cluster dir>/data)")
    e.add_argument("--replica-data", action="append", default=[], metavar="DIR",
                   help="read this replica data directory (repeatable)")
    e.add_argument("--json", action="store_true", help="print the export (JSON)")
    e.add_argument("--out", default=None, metavar="FILE", help="write the export to FILE")
    e.add_argument("--verify", default=None, metavar="EXPORT",
                   help="check an export against the cluster file's keys")

    d = sub.add_parser("demo", help="the embedded default: a throwaway cluster and a workload")
    d.add_argument("--requests", type=int, default=300)
    d.add_argument("--clients", type=int, default=4)
    d.add_argument("--html", default=None, metavar="FILE.html",
                   help="where the viewer page of the run goes (default: a new directory under "
                        "the system's temporary directory; its trace is written beside it)")
    d.add_argument("--no-trace", action="store_true",
                   help="no trace and no viewer page (tracing costs about a tenth of the CPU)")

    b = sub.add_parser("bench", help="throughput and latency of a real local cluster")
    b.add_argument("--f", type=int, default=1)
    b.add_argument("--clients", type=int, default=16)
    b.add_argument("--duration", type=float, default=10.0)
    b.add_argument("--json", default=None, metavar="FILE")
    b.add_argument(
        "--behaviour", default=None, metavar="REF[:k=v,...]",
        help="a second run with replica 0 running this behaviour (catalogue name, FILE.py:Class, module:Class)",
    )
    b.add_argument("--workers", type=int, default=None, help="client processes (default: by cores)")
    b.add_argument(
        "--sweep", default=None, metavar="C,C,...",
        help="also run fault-free with each of these client counts: throughput against latency",
    )
    b.add_argument(
        "--plot", default=None, metavar="FILE.svg",
        help="also draw throughput and latency over time and the latency CDF into one SVG",
    )
    b.add_argument("--reads", type=float, default=0.0, help="fraction of read-only gets")
    b.add_argument("--state-keys", type=int, default=0, metavar="N",
                   help="first fill the state with N keys through the protocol (atomic multi-key "
                        "writes), then measure; the report gives the preload time, replica RSS and "
                        "the bytes a stable checkpoint wrote")
    b.add_argument("--value-size", type=int, default=100, metavar="B", help="bytes per preloaded value")
    b.add_argument("--verify-threads", type=int, default=None, metavar="N",
                   help="every replica's verify_threads (default: the cluster file's default)")

    sc = sub.add_parser("scenario", help="run attack scenarios")
    scs = sc.add_subparsers(dest="scenario_command", metavar="ACTION")
    scs.required = True
    run = scs.add_parser("run", help="run scenario files")
    run.add_argument("files", nargs="+", metavar="FILE")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--real", action="store_true", help="real processes instead of the simulator")
    run.add_argument("--json", action="store_true")
    run.add_argument("--broken", default=None, metavar="NAME",
                     help="the correct replicas run this deliberately broken core "
                          "(pbft.adversary.broken), to see the scenario's checks catch it")
    run.add_argument("--trace", default=None, metavar="OUT.jsonl",
                     help="write each run's trace as JSON lines into OUT (docs/formats.md; with --real, "
                          "every process's trace merged into one); with several files the runs follow "
                          "one another in OUT, each with its header (pbft trace ... --run K picks one)")
    _service_options(run, "run this service (module.path:Class or FILE.py:Class) in every scenario "
                          "given, instead of the one its [service] names (docs/services.md)")
    lst = scs.add_parser("list", help="the built-in behaviours, or the parameters of those named")
    lst.add_argument("refs", nargs="*", metavar="REF", help="a behaviour name, FILE.py:Class or module:Class")

    from . import admin as admin_cli

    admin_cli.add_parser(sub)

    cf = sub.add_parser("config", help="check a cluster file")
    cfs = cf.add_subparsers(dest="config_command", metavar="ACTION")
    cfs.required = True
    chk = cfs.add_parser(
        "check",
        help="report every problem of a cluster file, its certificates and keys at once "
             "(exit 2 on errors; warnings about insecure settings exit 0 unless --strict)",
    )
    chk.add_argument("file", metavar="FILE")
    chk.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    chk.add_argument("--json", action="store_true")

    fz = sub.add_parser(
        "fuzz", help="random Byzantine behaviours and network faults",
        description="Run fuzz seeds --start .. --start+--seeds-1 (or one shard of them) on --jobs "
        "processes; or `pbft fuzz merge` shard results (docs/fuzzing.md).",
    )
    fz.add_argument("--seeds", type=int, default=None, help="how many seeds (required to run)")
    fz.add_argument("--start", type=int, default=0)
    fz.add_argument("--f", type=int, default=1)
    fz.add_argument("--json", action="store_true", help="print the result as JSON (docs/formats.md)")
    fz.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                    help="worker processes (default: the cores this process may use)")
    fz.add_argument("--shard", default=None, metavar="I/K",
                    help="run only the I-th (from 0) of K disjoint parts of the seed range")
    fz.add_argument("--out-dir", default=None, metavar="DIR",
                    help="write each violation's shrunk scenario file to DIR/fuzz-SEED.toml as soon "
                         "as it is found")
    fz.add_argument("-o", "--output", default=None, metavar="FILE.json",
                    help="also write the JSON result to FILE (for `pbft fuzz merge`)")
    fz.add_argument("--mode", choices=("random", "mutation"), default="random",
                    help="random: whole behaviours from the catalogue; mutation: small-scope "
                         "message rules and round partitions (ByzzFuzz, docs/rules.md)")
    fz.add_argument("--broken", default=None, metavar="NAME",
                    help="the correct replicas run this deliberately broken core (pbft.adversary.broken)")
    fz.add_argument("--behaviours", default=None, metavar="REF,REF",
                    help="random mode: draw replica behaviours only from these (catalogue names "
                         "or FILE.py:Class)")
    fz.add_argument("--trace-dir", default=None, metavar="DIR",
                    help="write the trace of every failing seed's shrunk scenario to "
                         "DIR/fuzz-SEED.jsonl (docs/formats.md)")
    fzs = fz.add_subparsers(dest="fuzz_command", metavar="merge")
    fm = fzs.add_parser(
        "merge", help="combine the JSON results of shards (or of any campaigns with equal options)",
        description="Combine `pbft fuzz -o` / `--json` results of one campaign's shards into one "
        "result; refuses different options and overlapping seed ranges. Exit status 1 if any "
        "violation or crash, as for fuzz.",
    )
    fm.add_argument("files", nargs="+", metavar="FILE.json")
    fm.add_argument("-o", "--output", default=None, metavar="OUT.json",
                    help="write the merged JSON here and a summary on stdout (default: the JSON on "
                         "stdout, the summary on stderr)")
    tw = sub.add_parser(
        "twins", help="every Twins schedule of R rounds: a twinned replica, a partition per view",
        description="Enumerate the Twins schedules of --rounds views at f = 1 (a twinned replica, "
        "per view a partition of the replicas and the twin, with the reductions of docs/fuzzing.md) "
        "and run each in the simulator on --jobs processes; each violation is printed with its "
        "scenario file, replayable with `pbft scenario run`.",
    )
    tw.add_argument("--rounds", "-R", type=int, required=True, metavar="R",
                    help="views whose partitions are enumerated (3: 4,644 cases)")
    tw.add_argument("--seed", type=int, default=0,
                    help="the runs' seed (keys, latencies, the workload's operations)")
    tw.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                    help="worker processes (default: the cores this process may use)")
    tw.add_argument("--shard", default=None, metavar="I/K",
                    help="run only the I-th (from 0) of K disjoint parts of the cases")
    tw.add_argument("--out-dir", default=None, metavar="DIR",
                    help="write each violation's scenario file to DIR/twins-R<R>-<CASE>.toml as found")
    tw.add_argument("--trace-dir", default=None, metavar="DIR",
                    help="write each failing case's trace and viewer page to DIR")
    tw.add_argument("-o", "--output", default=None, metavar="FILE.json",
                    help="also write the JSON result to FILE (`pbft fuzz merge` joins shards)")
    tw.add_argument("--json", action="store_true", help="print the result as JSON")
    tw.add_argument("--broken", default=None, metavar="NAME",
                    help="the correct replicas run this deliberately broken core (pbft.adversary.broken)")
    tr = sub.add_parser("trace", help="look at a run's trace: a viewer page, exports, merging")
    trs = tr.add_subparsers(dest="trace_command", metavar="ACTION")
    trs.required = True
    # (each `pbft trace ACTION` is added below, its handler pbft.cli.trace.cmd_trace_ACTION)
    tm = trs.add_parser(
        "merge", help="merge real processes' traces (pbft replica --trace) into one, clocks corrected",
        description="Merge the traces of several real processes into one trace, sorted by time "
        "corrected for clock offsets estimated from the messages between them (docs/formats.md, "
        "\"Merging real traces\").",
    )
    tm.add_argument("files", nargs="+", metavar="FILE.jsonl")
    tm.add_argument("-o", "--out", required=True, metavar="OUT.jsonl")
    sv = trs.add_parser("shiviz", help="export the trace as a ShiViz log (vector clocks; docs/formats.md)")
    sv.add_argument("file", metavar="FILE", help="a trace (pbft scenario run --trace)")
    sv.add_argument("--run", default=None, metavar="K|NAME",
                    help="a file with several runs: the K-th (1 for the first) or the first whose "
                         "scenario name holds NAME (default: the first with a violation, else the first)")
    sv.add_argument("-o", "--out", default=None, metavar="OUT.log", help="write here (default: stdout)")
    mm = trs.add_parser("mermaid", help="a Mermaid sequenceDiagram of a window of the trace")
    mm.add_argument("file", metavar="FILE", help="a trace (pbft scenario run --trace)")
    mm.add_argument("--run", default=None, metavar="K|NAME",
                    help="a file with several runs: the K-th (1 for the first) or the first whose "
                         "scenario name holds NAME (default: the first with a violation, else the first)")
    mm.add_argument("--from", dest="start", type=float, default=None, metavar="MS",
                    help="first ms shown, virtual or since a merged trace's origin (default: the start)")
    mm.add_argument("--to", dest="end", type=float, default=None, metavar="MS",
                    help="last ms shown (default: the end)")
    mm.add_argument("--max", type=int, default=200, metavar="N",
                    help="messages drawn at most; a final note says how many were left out")
    mm.add_argument("-o", "--out", default=None, metavar="OUT.mmd", help="write here (default: stdout)")
    hi = trs.add_parser("history", help="the client operations as a Porcupine (JSON) or Knossos (EDN) history")
    hi.add_argument("file", metavar="FILE", help="a trace (pbft scenario run --trace)")
    hi.add_argument("--run", default=None, metavar="K|NAME",
                    help="a file with several runs: the K-th (1 for the first) or the first whose "
                         "scenario name holds NAME (default: the first with a violation, else the first)")
    hi.add_argument("--format", choices=("porcupine", "knossos"), required=True)
    hi.add_argument("-o", "--out", default=None, metavar="OUT", help="write here (default: stdout)")
    th = trs.add_parser("html", help="a self-contained HTML page showing the trace as a space-time "
                        "diagram (docs/viewer.md)")
    th.add_argument("file", metavar="FILE.jsonl", help="a trace (pbft scenario run --trace)")
    th.add_argument("--run", default=None, metavar="K|NAME",
                    help="a file with several runs: the K-th (1 for the first) or the first whose "
                         "scenario name holds NAME (default: the first with a violation, else the first)")
    th.add_argument("-o", "--out", dest="output", default=None, metavar="OUT.html",
                    help="where to write the page (default: FILE with .html)")
    th.add_argument("--at", default=None, metavar="T|violation",
                    help="open the page at this time in ms, or at the violation (the default when "
                         "there is one; else the start)")

    _accept_global_options(p)
    _show_defaults(p)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, so a reader that has gone away is noticed below
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except BaseExceptionGroup as group:
        if group.subgroup(BrokenPipeError) is not None and group.split(BrokenPipeError)[1] is None:
            return _quiet_broken_pipe()
        raise


def _quiet_broken_pipe() -> int:
    """Our reader closed the pipe (`| head`): stop without a traceback. Python would
    flush stdout again at exit and complain, so point it at /dev/null first."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    key = args.command
    if key == "scenario":
        key = f"scenario {args.scenario_command}"
    elif key == "trace":
        key = f"trace {args.trace_command}"
    handler = _handler(key)
    try:
        return int(handler(args) or 0)
    except (UsageError, ConfigError) as exc:
        print(f"pbft: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
