"""Local clusters as processes: one `pbft replica` subprocess per replica.

Used by `pbft up`, `pbft demo`, the end-to-end tests and `pbft bench`. Each replica runs
as `python -P -m pbft replica --config FILE --id I --data ROOT/replica-I` (ROOT defaults to
`<cluster dir>/data`; `-P`: the working directory is not on its import path, so a user's
`random.py` or `json.py` there cannot replace a module the replica needs; a behaviour
FILE.py is loaded by its path), with its stderr appended to `LOG_DIR/replica-I.log` (LOG_DIR
defaults to `<cluster dir>/logs`, the same every run; never a pipe, which would block the
replica once full) so a replica that dies during start-up can be reported with the tail
of what it said in this run. `start()` first checks that every replica's port is free
(a LaunchError names the port and, when /proc tells, the process holding it), then
returns once every replica has logged its start-up line since it was spawned
(`node.STARTED`, logged once it really listens: a foreign listener on its port accepts
TCP connections too, so a connection proves nothing), bounded by `timeout`.

Each replica is the leader of a session and process group of its own, and every signal
goes to that whole group: whatever a replica's behaviour forked or started (a child that
keeps its port or ignores SIGTERM) ends with it. So a replica no longer gets the
terminal's Ctrl-C or hang-up itself: its owner stops it (`pbft up` and `pbft scenario run
--real` handle SIGINT, SIGTERM and SIGHUP and call `stop()`). `stop()` sends SIGTERM to
each group, waits, SIGKILLs the groups of whatever is left, then SIGKILLs what is still in
the groups of those that exited (`stragglers` names them); an interrupt (a second Ctrl-C)
while it waits SIGKILLs every group at once before it is raised, so no process is left
behind. Every group spawned and not yet ended is also known to this module:
`kill_everything()` (safe in a signal handler, and run at exit) SIGKILLs them all. It is
synchronous on purpose: plain
`subprocess.Popen` works the same from a script, a test or inside `trio.run` (the waits
are short and bounded). `kill(i)` is a crash (SIGKILL, nothing flushed); `restart(i)` or
`spawn(i)` afterwards starts it again on the same data directory, so it recovers.

For `pbft scenario run --real` (testing only): `replica_args` are added to every replica's
command line (`--link-faults PLAN`), and `twins` maps a replica to the extra address of
its second process, which runs with `--twin` under the key `twin_key(i)` ("3-twin": its
own data directory and log, `replica-3-twin`), started, stopped and killed like the others.
With `trace_dir`, each process writes its trace to `TRACE_DIR/replica-KEY.jsonl` (`--trace`;
a restarted process appends to its file).

`Supervisor` keeps the replicas of a cluster running for `pbft up`: a replica that exits
is restarted after a delay that doubles with each exit that follows a short run
(RESTART_FIRST, at most RESTART_MAX; a run of RESTART_STABLE seconds starts over), each
exit said in one line with its status or signal. Three kinds of exit are final, said once,
and leave the other replicas running: status 0 (the replica stopped on purpose: it
retired because a configuration change left it out, or someone stopped it), status 2 (an
operator mistake, such as a key that does not match the cluster file: `pbft replica`'s
exit codes, and why the systemd unit has RestartPreventExitStatus=2), and RESTART_LIMIT
short runs in a row (something that will not fix itself is wrong). Such a replica is
`down` (a failure) or `stopped` (status 0) from then on.

`up_sources` says where `pbft up` starts each replica from when the cluster file has
`[[epoch]]` entries (written by `pbft admin`): a replica whose key a change replaced runs
from the directory `pbft admin` wrote for it (`epoch-K/replica-I/`, its own cluster file
and key), never from the superseded key files beside the cluster file.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

from ..errors import ConfigError
from ..node.clusterfile import (
    CLUSTER_FILE,
    cert_path,
    certificate_key,
    load_cluster,
    node_files,
    read_certificate,
)
from ..node.node import STARTED
from ..protocol.config import ClusterConfig

START_TIMEOUT = 20.0
"""Seconds to wait for every replica to accept connections."""
STOP_GRACE = 5.0
"""Seconds a replica gets to exit after SIGTERM before SIGKILL."""
STDERR_TAIL = 800
"""Characters of a dead replica's stderr quoted in the error."""
READY_POLL = 0.05
"""Seconds between two looks at a starting replica's log."""
RESTART_FIRST = 1.0
"""Seconds `Supervisor` waits before restarting a replica that exited after a long run."""
RESTART_MAX = 30.0
"""The longest wait before a restart (the wait doubles after each short run)."""
RESTART_STABLE = 60.0
"""A run at least this long was not a failure to start: the next exit waits RESTART_FIRST."""
RESTART_LIMIT = 5
"""Short runs in a row after which `Supervisor` gives up on a replica (the others keep
running)."""
OPERATOR_MISTAKE = 2
"""The exit status of `pbft replica` for an operator mistake (bad cluster file, key, data
directory or port): restarting it cannot help (pbft.cli.replica)."""


Key = int | str
"""A process of a LocalCluster: a replica id, or twin_key(id) for a twin's second process."""


def twin_key(i: int) -> str:
    return f"{i}-twin"


def replica_of(key: Key) -> int:
    return key if isinstance(key, int) else int(key.split("-", 1)[0])


class LaunchError(RuntimeError):
    """A replica process did not come up; the message names it and quotes its stderr."""


_GROUPS: dict[int, subprocess.Popen] = {}
"""Every replica's process group this process spawned and has not seen end (by pid, which
is the group's id): `kill_everything` SIGKILLs them."""


def _signal_group(proc: subprocess.Popen, sig: int) -> bool:
    """Send `sig` to `proc`'s process group (its own: it was spawned as a session
    leader); True if any process got it."""
    try:
        os.killpg(proc.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _end_group(proc: subprocess.Popen) -> bool:
    """SIGKILL `proc`'s group, reap `proc`: True if its group still held a process other
    than a `proc` that had already exited (a straggler its behaviour left)."""
    leader_gone = proc.poll() is not None
    hit = _signal_group(proc, signal.SIGKILL)
    proc.wait()
    _GROUPS.pop(proc.pid, None)
    return hit and leader_gone


def kill_everything() -> None:
    """SIGKILL every replica group this process spawned and has not seen end, without
    waiting (safe in a signal handler; registered to run at exit)."""
    for proc in list(_GROUPS.values()):
        _signal_group(proc, signal.SIGKILL)


atexit.register(kill_everything)


def end_everything() -> None:
    """SIGKILL every replica group this process spawned and has not seen end, and reap
    each replica (what a cut-short stop left)."""
    for proc in list(_GROUPS.values()):
        _end_group(proc)


class LocalCluster:
    def __init__(
        self,
        cluster_path: str,
        config: ClusterConfig,
        *,
        ids: Iterable[int] | None = None,
        behaviours: dict[int, str] | None = None,
        log_dir: str | None = None,
        log_level: str = "info",
        extra_args: list[str] | None = None,
        data_root: str | None = None,
        replica_args: list[str] | None = None,
        per_replica_args: dict[int, list[str]] | None = None,
        twins: dict[int, tuple[str, int]] | None = None,
        trace_dir: str | None = None,
        config_paths: dict[int, str] | None = None,
        data_dirs: dict[int, str] | None = None,
    ) -> None:
        self.cluster_path = cluster_path
        self.config_paths = dict(config_paths or {})
        """Replicas started from another cluster file than `cluster_path` (`up_sources`)."""
        self.data_dirs = dict(data_dirs or {})
        """Replicas whose data directory is not `data_root/replica-I` (`up_sources`)."""
        self.config = config
        self.ids = list(config.replica_ids() if ids is None else ids)
        self.behaviours = behaviours or {}
        self.log_dir = log_dir or default_log_dir(config)
        self.log_level = log_level
        self.extra_args = extra_args or []
        self.replica_args = replica_args or []
        self.per_replica_args = per_replica_args or {}
        """Options for some replicas only (`--broken NAME` for the correct ones)."""
        self.twins = dict(twins or {})
        self.trace_dir = trace_dir
        self.keys: list[Key] = [*self.ids, *(twin_key(i) for i in self.twins)]
        """Every process: replica ids, and twin_key(i) for each twin's second process."""
        self.data_root = data_root or os.path.join(config.base_dir, "data")
        self.procs: dict[Key, subprocess.Popen] = {}
        self.started_at: dict[Key, float] = {}
        """time.monotonic() of each replica's last spawn."""
        self._log_start: dict[Key, int] = {}
        """Size of each replica's log when it was last spawned: what it said since."""
        self._log_seen: dict[Key, int] = {}
        """How far `ready` has read each log (a line may still be partly written)."""
        self.stragglers: set[Key] = set()
        """Replicas whose process group still held a process when they were stopped (what
        their behaviour forked or started), which was SIGKILLed."""

    def log_path(self, i: Key) -> str:
        return os.path.join(self.log_dir, f"replica-{i}.log")

    def trace_path(self, i: Key) -> str | None:
        return os.path.join(self.trace_dir, f"replica-{i}.jsonl") if self.trace_dir else None

    def data_dir(self, i: Key) -> str:
        if i in self.data_dirs:
            return self.data_dirs[i]  # type: ignore[index]
        return os.path.join(self.data_root, f"replica-{i}")

    def config_path(self, i: Key) -> str:
        """The cluster file replica `i` is started with."""
        return self.config_paths.get(replica_of(i), self.cluster_path)

    def command(self, key: Key) -> list[str]:
        i = replica_of(key)
        # -P: not the working directory on the import path (a user's random.py there).
        cmd = [sys.executable, "-P", "-m", "pbft", "--log-level", self.log_level, *self.extra_args]
        cmd += ["replica", "--config", self.config_path(key), "--id", str(i)]
        cmd += ["--data", self.data_dir(key)]
        if i in self.behaviours:
            cmd += ["--behaviour", self.behaviours[i]]
        cmd += self.replica_args
        cmd += self.per_replica_args.get(i, [])
        if self.trace_dir is not None:
            cmd += ["--trace", self.trace_path(key)]
        if key != i:
            cmd.append("--twin")
        return cmd

    def spawn(self, i: Key) -> subprocess.Popen:
        """Start replica `i` (without waiting for it)."""
        old = self.procs.get(i)
        if old is not None and old.pid in _GROUPS and old.poll() is not None and _end_group(old):
            self.stragglers.add(i)  # what the last run left in its group
        os.makedirs(self.log_dir, exist_ok=True)
        with open(self.log_path(i), "ab") as err:
            self._log_start[i] = self._log_seen[i] = err.seek(0, os.SEEK_END)
            proc = subprocess.Popen(
                self.command(i), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True,  # its own group: see the module's docstring
            )
        _GROUPS[proc.pid] = proc
        self.procs[i] = proc
        self.started_at[i] = time.monotonic()
        return proc

    def check_ports(self) -> None:
        """LaunchError naming the first replica port that something else listens on."""
        addresses = [(i, r.host, r.port) for i in self.ids for r in [self.config.replicas[i]]]
        addresses += [(twin_key(i), host, port) for i, (host, port) in self.twins.items()]
        for i, host, port in addresses:
            if port_in_use(host, port):
                holder = port_holder(port)
                by = f" by {holder}" if holder else ""
                raise LaunchError(
                    f"port {host}:{port} of replica {i} is already in use{by}; stop it "
                    f"or give replica {i} another address in {self.cluster_path}."
                )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Check the ports are free, start every replica and wait until each has logged
        that it listens."""
        self.check_ports()
        try:
            for i in self.keys:
                self.spawn(i)
            self.wait_ready(self.keys, timeout)
        except BaseException:
            self.stop()
            raise

    def restart(self, i: Key, timeout: float = START_TIMEOUT) -> None:
        self.stop_replica(i)
        self.spawn(i)
        self.wait_ready([i], timeout)

    def ready(self, i: Key) -> bool:
        """Replica `i` has logged its start-up line since it was last spawned, or (its log
        may say nothing: a behaviour's module can switch logging off) the very process
        spawned listens on its port, which /proc tells (a foreign listener does not count)."""
        marker = STARTED.format(id=replica_of(i), address="").encode()
        try:
            with open(self.log_path(i), "rb") as fh:
                fh.seek(self._log_seen[i])
                text = fh.read()
        except OSError:
            text = b""
        end = text.rfind(b"\n") + 1  # complete lines only: the last may be half written
        if marker in text[:end]:
            return True
        self._log_seen[i] += end
        proc = self.procs.get(i)
        if proc is None or proc.poll() is not None:
            return False
        port = self.twins[replica_of(i)][1] if i != replica_of(i) else self.config.replicas[replica_of(i)].port
        return _listens(proc.pid, port)

    def wait_ready(self, ids: Iterable[Key], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for i in ids:
            r = self.config.replicas[replica_of(i)]
            while not self.ready(i):
                proc = self.procs[i]
                if proc.poll() is not None:
                    raise LaunchError(
                        f"replica {i} exited with {describe_exit(proc.returncode)} during "
                        f"start-up: {self.stderr_tail(i) or '(no output)'}"
                    )
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"replica {i} did not start listening on {r.host}:{r.port} within "
                        f"{timeout:g} seconds: {self.stderr_tail(i) or '(no output)'}"
                    )
                time.sleep(READY_POLL)

    def stderr_tail(self, i: Key) -> str:
        """The end of what replica `i` logged since it was last spawned."""
        try:
            with open(self.log_path(i), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(self._log_start.get(i, 0), fh.tell() - STDERR_TAIL))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def alive(self) -> list[Key]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def kill(self, i: Key) -> None:
        """Crash replica `i` (SIGKILL to its process group), as a fault."""
        proc = self.procs.get(i)
        if proc is not None and proc.pid in _GROUPS:
            if _end_group(proc):
                self.stragglers.add(i)

    def stop_replica(self, i: Key, grace: float = STOP_GRACE) -> None:
        proc = self.procs.get(i)
        if proc is None:
            return
        self._note(_terminate([proc], grace))

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every replica's group, wait up to `grace`, SIGKILL the rest (and
        whatever a replica left in its group)."""
        self._note(_terminate(list(self.procs.values()), grace))

    def _note(self, left: list[subprocess.Popen]) -> None:
        self.stragglers.update(k for k, p in self.procs.items() if p in left)

    def kill_all(self) -> None:
        """SIGKILL every replica's group still running, without waiting (safe in a signal
        handler: `stop` then reaps them at once)."""
        for p in self.procs.values():
            if p.pid in _GROUPS:
                _signal_group(p, signal.SIGKILL)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor:
    """Keeps every replica of `cluster` running (for `pbft up`); `poll()` does one round.

    A replica's life: running; exited (said with its status or signal), then waiting out
    its delay; spawned again, then starting until it logs its start-up line (said too) or
    exits. A run shorter than `stable` seconds counts as a failure: the delay doubles
    after each (from `first`, at most `most`), and after `limit` of them in a row the
    replica is given up on. An exit with status 0 (it stopped on purpose: retired, or
    stopped by someone) or 2 (an operator mistake) is not restarted either. Each of these
    is said once; the replica is then in `stopped` (status 0) or `down` (the others), with
    the reason, and the other replicas keep running. A start that takes longer than
    `start_timeout` is ended with SIGKILL and counts as a short run. `say` gets one line
    per event; `clock` is time.monotonic (tests pass another)."""

    def __init__(
        self,
        cluster: LocalCluster,
        say: Callable[[str], None],
        *,
        first: float = RESTART_FIRST,
        most: float = RESTART_MAX,
        stable: float = RESTART_STABLE,
        limit: int = RESTART_LIMIT,
        start_timeout: float = START_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.say = say
        self.first, self.most, self.stable, self.limit = first, most, stable, limit
        self.start_timeout = start_timeout
        self.clock = clock
        self.failures: dict[int, int] = {i: 0 for i in cluster.ids}
        """Short runs in a row, per replica (`limit` of them: given up on)."""
        self._exits: dict[int, int] = {i: 0 for i in cluster.ids}
        """Exits in a row, each but the first after a short run: the delay's exponent."""
        self.due: dict[int, float] = {}
        """Replicas waiting to be restarted: when."""
        self.starting: dict[int, float] = {}
        """Replicas spawned again and not yet listening: since when."""
        self.stopped: dict[int, str] = {}
        """Replicas that exited with status 0 (on purpose), not restarted: how they ended."""
        self.down: dict[int, str] = {}
        """Replicas that cannot run (status 2, or too many short runs), not restarted: why."""
        self.restarts = 0
        self._ran_since: dict[int, float] = {i: clock() for i in cluster.ids}

    @property
    def running(self) -> list[int]:
        """The replicas still supervised: neither stopped nor down."""
        return [i for i in self.cluster.ids if i not in self.stopped and i not in self.down]

    def poll(self) -> None:
        now = self.clock()
        for i in self.running:
            proc = self.cluster.procs[i]
            if i in self.due:
                if now >= self.due[i]:
                    del self.due[i]
                    self.cluster.spawn(i)
                    self._ran_since[i] = self.starting[i] = now
                continue
            if proc.poll() is None:
                if i in self.starting:
                    if self.cluster.ready(i):
                        del self.starting[i]
                        self.restarts += 1
                        self.say(f"replica {i} restarted (pid {self.cluster.procs[i].pid})")
                    elif now - self.starting[i] > self.start_timeout:
                        _end_group(proc)  # counted as a short run on the next poll
                continue
            self._exited(i, proc.returncode, now)

    def _exited(self, i: int, returncode: int, now: float) -> None:
        self.starting.pop(i, None)
        short = now - self._ran_since[i] < self.stable
        self.failures[i] = self.failures[i] + 1 if short else 0
        self._exits[i] = self._exits[i] + 1 if short else 1
        how = describe_exit(returncode)
        last = _last_line(self.cluster.stderr_tail(i)) if returncode >= 0 else ""
        if last:
            how += f" ({last})"
        if returncode == 0:
            self.stopped[i] = how
            self.say(f"replica {i} exited with {how}: it stopped on purpose, so it is not restarted")
            return
        if returncode == OPERATOR_MISTAKE:
            self.down[i] = f"it exited with {how}, an operator mistake"
            self.say(f"replica {i} exited with {how}: an operator mistake, so it is not restarted; "
                     "the other replicas keep running")
            return
        if self.failures[i] >= self.limit:
            self.down[i] = (f"it exited {self.failures[i]} times in a row within {self.stable:g} s "
                            f"of starting, the last time with {how}")
            self.say(f"replica {i} exited {self.failures[i]} times in a row within {self.stable:g} s "
                     f"of starting, the last time with {how}: giving up on it; the other "
                     "replicas keep running")
            return
        delay = min(self.most, self.first * 2 ** (self._exits[i] - 1))
        self.due[i] = now + delay
        self.say(f"replica {i} exited with {how}: restarting in {delay:g} s")


def up_sources(
    cluster_path: str, config: ClusterConfig, ids: Iterable[int], data_root: str | None = None
) -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
    """Where `pbft up` starts each of `ids` from: (cluster files, data directories, and
    why some cannot be started), for the replicas that differ from the plain layout.

    `config` is the cluster file's latest epoch. A replica whose key is still the one of
    the file's `[[replica]]` tables runs as always: the cluster file, the key beside it,
    `ROOT/replica-I`. One that a change (`pbft admin replace`) gave a new key in epoch K
    runs from the directory `pbft admin` wrote for it, `<cluster dir>/epoch-K/replica-I/`
    (its cluster file and key), with that directory's `data/` (as `pbft admin` printed;
    `ROOT/epoch-K/replica-I` with --data ROOT), if that directory holds the new key's
    certificate; else from the cluster file if the files beside it were replaced by the
    new ones; else it is not started (the files beside the cluster file are the old
    replica's, and another data directory is needed anyway: the old one is bound to the
    old key). Nothing is decided from a file name alone: a certificate counts only if it
    holds the key the latest epoch lists."""
    paths: dict[int, str] = {}
    data: dict[int, str] = {}
    skipped: dict[int, str] = {}
    for i in ids:
        key = config.replicas[i].public_key
        since = _key_epoch(config, i)
        if since == 0:
            continue
        d = os.path.join(config.base_dir, f"epoch-{since}", f"replica-{i}")
        if data_root is not None:
            data[i] = os.path.join(data_root, f"epoch-{since}", f"replica-{i}")
        elif os.path.isdir(d):
            data[i] = os.path.join(d, "data")
        else:
            data[i] = os.path.join(config.base_dir, "data", f"epoch-{since}", f"replica-{i}")
        own = os.path.join(d, CLUSTER_FILE)
        if _holds(node_files(d, i)[1], key) and _lists(own, i, key):
            paths[i] = own
        elif _holds(cert_path(config, i), key):
            pass  # the files beside the cluster file are the new key's
        else:
            del data[i]
            skipped[i] = (
                f"epoch {since} gave it a new key, which neither {d} nor the files beside "
                f"{cluster_path} hold (those are the replaced key's); start it from where "
                "`pbft admin` wrote its files"
            )
    return paths, data, skipped


def _key_epoch(config: ClusterConfig, i: int) -> int:
    """The first epoch since which replica `i` has had the key it has in `config`."""
    key = config.replicas[i].public_key
    since = config.epoch
    for earlier in reversed(config.earlier):
        if i >= len(earlier.replicas) or earlier.replicas[i].public_key != key:
            break
        since = earlier.epoch
    return since


def _holds(cert_file: str, key: bytes) -> bool:
    """The certificate at `cert_file` exists and holds `key`."""
    try:
        return certificate_key(read_certificate(cert_file, "the certificate")) == key
    except (ConfigError, OSError, ValueError):
        return False


def _lists(path: str, i: int, key: bytes) -> bool:
    """The cluster file at `path` loads and lists `key` for replica `i`."""
    try:
        config = load_cluster(path)
    except (ConfigError, OSError, ValueError):
        return False
    return i < len(config.replicas) and config.replicas[i].public_key == key


_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ [\w.]+: ")
"""The start of a line in the replicas' text log format (pbft.node.process)."""


def _last_line(text: str) -> str:
    """The last line of a replica's log, as a sentence: without the text format's time,
    level and logger, or the message of a JSON line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    if last.startswith("{"):
        try:
            msg = json.loads(last).get("msg")
        except (ValueError, AttributeError):
            msg = None
        return msg if isinstance(msg, str) and msg else last
    return _LOG_PREFIX.sub("", last)


def _terminate(procs: list[subprocess.Popen], grace: float) -> list[subprocess.Popen]:
    """SIGTERM each process's group, wait up to `grace` for the processes, then SIGKILL
    their groups (whatever exited left behind, whatever did not exit): each one's group is
    empty on return. Returns those whose group held a process after they had exited. An
    exception while waiting (a second Ctrl-C) SIGKILLs every group first: it cannot leave
    a process behind."""
    live = [p for p in procs if p.pid in _GROUPS]
    left: list[subprocess.Popen] = []
    try:
        for p in live:
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in live:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        exited = {p.pid: p.poll() is not None for p in live}
        hit = {p.pid: _signal_group(p, signal.SIGKILL) for p in live}  # all first: no wait
        for p in live:
            p.wait()
            _GROUPS.pop(p.pid, None)
            if hit[p.pid] and exited[p.pid]:
                left.append(p)
    return left


def default_log_dir(config: ClusterConfig) -> str:
    """Where replicas log unless told otherwise: `<cluster dir>/logs`, the same every run."""
    return os.path.join(config.base_dir, "logs")


def describe_exit(returncode: int) -> str:
    """`status 1`, or `signal 9 (SIGKILL)` for a process a signal ended."""
    if returncode >= 0:
        return f"status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
    return f"signal {-returncode} ({name})"


def port_in_use(host: str, port: int) -> bool:
    """Something listens on host:port (a bind like the replica's own fails with
    EADDRINUSE). Other failures (an address not on this host) are the replica's to say."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as trio's listeners do
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _listening_inodes(port: int) -> set[str]:
    """The `socket:[inode]` names of the sockets listening on TCP `port` (Linux /proc;
    empty where it cannot be read)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{cols[9]}]")
        except (OSError, ValueError, IndexError):
            continue
    return inodes


def port_holder(port: int) -> str | None:
    """`pid 123 (python3 -m http.server 7000)` for the process listening on TCP `port`,
    from /proc (Linux; only processes this user may look into), else None."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for pid in filter(str.isdigit, _listdir("/proc")):
        for fd in _listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") not in inodes:
                    continue
            except OSError:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = " ".join(fh.read().replace(b"\0", b" ").decode("utf-8", "replace").split())
            except OSError:
                cmd = ""
            if len(cmd) > 80:
                cmd = cmd[:77] + "..."
            return f"pid {pid} ({cmd})" if cmd else f"pid {pid}"
    return None


def _listens(pid: int, port: int) -> bool:
    """Process `pid` itself holds a socket listening on TCP `port` (Linux /proc; False
    where it cannot be told)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    for fd in _listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports that were free a moment ago (bound to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
