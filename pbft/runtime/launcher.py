"""Local clusters as processes: one `pbft replica` subprocess per replica.

Used by `pbft up`, `pbft demo`, the end-to-end tests and `pbft bench`. Each replica runs
as `python -m pbft replica --config FILE --id I --data ROOT/replica-I` (ROOT defaults to
`<cluster dir>/data`), with its stderr written to a log file
(never a pipe, which would block the replica once full) so a replica that dies during
start-up can be reported with the tail of what it said. `start()` returns once every
replica accepts TCP connections on its port (bounded by `timeout`); `stop()` sends
SIGTERM, waits, then SIGKILLs whatever is left. It is synchronous on purpose: plain
`subprocess.Popen` works the same from a script, a test or inside `trio.run` (the waits
are short and bounded). `kill(i)` is a crash (SIGKILL, nothing flushed); `restart(i)` or
`spawn(i)` afterwards starts it again on the same data directory, so it recovers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable

from ..protocol.config import ClusterConfig

START_TIMEOUT = 20.0
"""Seconds to wait for every replica to accept connections."""
STOP_GRACE = 5.0
"""Seconds a replica gets to exit after SIGTERM before SIGKILL."""
STDERR_TAIL = 800
"""Characters of a dead replica's stderr quoted in the error."""


class LaunchError(RuntimeError):
    """A replica process did not come up; the message names it and quotes its stderr."""


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
    ) -> None:
        self.cluster_path = cluster_path
        self.config = config
        self.ids = list(config.replica_ids() if ids is None else ids)
        self.behaviours = behaviours or {}
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="pbft-logs-")
        self.log_level = log_level
        self.extra_args = extra_args or []
        self.data_root = data_root or os.path.join(config.base_dir, "data")
        self.procs: dict[int, subprocess.Popen] = {}

    def log_path(self, i: int) -> str:
        return os.path.join(self.log_dir, f"replica-{i}.log")

    def data_dir(self, i: int) -> str:
        return os.path.join(self.data_root, f"replica-{i}")

    def command(self, i: int) -> list[str]:
        cmd = [sys.executable, "-m", "pbft", "--log-level", self.log_level, *self.extra_args]
        cmd += ["replica", "--config", self.cluster_path, "--id", str(i)]
        cmd += ["--data", self.data_dir(i)]
        if i in self.behaviours:
            cmd += ["--behaviour", self.behaviours[i]]
        return cmd

    def spawn(self, i: int) -> subprocess.Popen:
        """Start replica `i` (without waiting for it)."""
        with open(self.log_path(i), "ab") as err:
            proc = subprocess.Popen(
                self.command(i), stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        self.procs[i] = proc
        return proc

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every replica and wait until each accepts TCP connections."""
        try:
            for i in self.ids:
                self.spawn(i)
            self.wait_ready(self.ids, timeout)
        except BaseException:
            self.stop()
            raise

    def restart(self, i: int, timeout: float = START_TIMEOUT) -> None:
        self.stop_replica(i)
        self.spawn(i)
        self.wait_ready([i], timeout)

    def wait_ready(self, ids: Iterable[int], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for i in ids:
            r = self.config.replicas[i]
            while not _accepts(r.host, r.port):
                proc = self.procs[i]
                if proc.poll() is not None:
                    raise LaunchError(
                        f"replica {i} exited with status {proc.returncode} during start-up: "
                        f"{self.stderr_tail(i) or '(no output)'}"
                    )
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"replica {i} did not accept connections on {r.host}:{r.port} within "
                        f"{timeout:g} seconds: {self.stderr_tail(i) or '(no output)'}"
                    )
                time.sleep(0.05)

    def stderr_tail(self, i: int) -> str:
        try:
            with open(self.log_path(i), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - STDERR_TAIL))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def kill(self, i: int) -> None:
        """Crash replica `i` (SIGKILL), as a fault."""
        proc = self.procs.get(i)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop_replica(self, i: int, grace: float = STOP_GRACE) -> None:
        proc = self.procs.get(i)
        if proc is None:
            return
        _terminate([proc], grace)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every replica, wait up to `grace`, SIGKILL the rest."""
        _terminate(list(self.procs.values()), grace)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(procs: list[subprocess.Popen], grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


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
