"""How busy a replica's event loop is, told to its core as `Load` (batching policy).

Theory of operation. The primary batches for throughput or proposes at once for
latency (pbft.protocol.batching); which one pays depends on whether the replica's CPU is
what bounds the group, and only the runtime can see that. It is measured as the share of
wall time the Trio loop was not waiting for I/O: a Trio instrument adds up the time spent
in each I/O wait that had a timeout, i.e. a wait for input with nothing runnable
(`LoopIdle`); every `WINDOW_S` the share of the rest is one sample. Wall time, not
process CPU time: on a shared host a replica descheduled in the middle of its work is
held up by the CPU as much as one that computes, and the wall-clock share sees both.

The loop's own share misses one case: a host whose cores are shared with other busy
processes (four replicas and their clients on two cores, or a crowded VM). There the
group is bound by CPU while each loop spends much of its time waiting for a peer that is
not scheduled. So where Linux reports CPU pressure (/proc/pressure/cpu, the time some
runnable task waited for a core), a window in which tasks waited for a core PRESSURE_ABOVE
of the time or more counts as busy, and an idle sample also needs the pressure at
PRESSURE_BELOW or less. Without the file (other systems, kernels without PSI) the loop's
share decides alone.

Measured on this 2-core machine (a sample per second, four replicas each):
* f=1, 32 clients on loopback, saturated: 0.42-0.74 (CPU time 0.18-0.40 of a core);
* four network namespaces with 20 ms one-way links, 32 clients: 0.07-0.16 batching,
  0.23-0.45 proposing at once.

`LoadMeter` turns the samples into the core's two states with hysteresis: busy from one
sample of BUSY_ABOVE or more, idle from IDLE_SAMPLES samples in a row of IDLE_BELOW or
less. Proposing at once costs about twice the CPU per request (pbft.protocol.batching),
so an idle replica that goes eager may double or triple its share (0.10-0.15 to
0.25-0.45 for a wide-area group with 32 clients here): IDLE_BELOW is well under half of
BUSY_ABOVE for that reason, and between them the state stays as it is. A saturated
group batching on this machine keeps its primary at 0.51-0.72 (and CPU pressure at
0.53-0.73), so it never looks idle. Quick to batch,
slow to stop: on a host whose cores other processes share, a saturated group's primary
can spend a quarter second waiting for backups that are not scheduled (samples of 0.03
to 0.20 between 0.4 and 0.8 were seen here, with load 8 on 2 cores), and one such sample
must not make it propose at once. A core starts busy (the batching policy); the meter
starts there too and says only what changes.
"""

from __future__ import annotations

import time

import trio

WINDOW_S = 0.25
"""Wall seconds per sample: a few tick-loop wake-ups (30-50 ms each), short enough that
a group that turns idle proposes at once within a fraction of a second, long enough that
one burst of work is not taken for load."""
BUSY_ABOVE = 0.5
"""A sample at least this busy makes the primary batch for throughput."""
IDLE_BELOW = 0.2
"""IDLE_SAMPLES samples in a row at most this busy make it propose at once."""
IDLE_SAMPLES = 4
"""A second of idleness, at WINDOW_S per sample."""
PRESSURE_ABOVE = 0.5
"""A window in which some task waited for a core this share of the time makes the
primary batch, however idle its own loop."""
PRESSURE_BELOW = 0.3
"""An idle sample needs at most this much CPU pressure: the processes of a wide-area
group on this machine's two cores (four replicas, a client process, the link emulator)
wake together at each message and some wait for a core 3-13% of the time with 4
clients, 10-21% with 32, while each loop is at work 10-15% of the time; a saturated group
on shared cores, 70-90%."""
PRESSURE_FILE = "/proc/pressure/cpu"


def cpu_stall_s(path: str = PRESSURE_FILE) -> float | None:
    """Seconds some runnable task has waited for a core since boot (Linux PSI), or None
    where the system does not say."""
    try:
        with open(path, encoding="ascii") as fh:
            line = fh.readline()  # "some avg10=.. avg60=.. avg300=.. total=<us>"
        return int(line.rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


class LoopIdle(trio.abc.Instrument):
    """Seconds the Trio loop spent waiting for I/O with nothing to run (`idle_s`)."""

    def __init__(self) -> None:
        self.idle_s = 0.0
        self._since: float | None = None

    def before_io_wait(self, timeout: float) -> None:
        # A wait with a zero timeout is a poll between runnable tasks: not idle.
        self._since = time.perf_counter() if timeout > 0 else None

    def after_io_wait(self, timeout: float) -> None:
        if self._since is not None:
            self.idle_s += time.perf_counter() - self._since
            self._since = None


class LoadMeter:
    """Samples of the loop's busy share, and the busy state they imply (pure: the caller
    gives the clock and the idle total, so tests drive it without a loop)."""

    def __init__(self, now_s: float, idle_s: float, stall_s: float | None = None,
                 window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.busy = True
        self.share = 0.0
        """The last sample: the share of the window the loop was at work."""
        self.pressure: float | None = None
        """The last sample's CPU pressure: the share of it some task waited for a core."""
        self._start = now_s
        self._idle_start = idle_s
        self._stall_start = stall_s
        self._idle_run = 0  # idle samples in a row

    def due(self, now_s: float) -> bool:
        """Whether a window is complete (the caller then reads the totals and samples)."""
        return now_s - self._start >= self.window_s

    def sample(self, now_s: float, idle_s: float, stall_s: float | None = None) -> bool | None:
        """Take the clock, the loop's idle total and the CPU stall total (None: not
        known); the new busy state when a full window changed it, else None."""
        if not self.due(now_s):
            return None
        elapsed = now_s - self._start
        idle = min(max(idle_s - self._idle_start, 0.0), elapsed)
        self.share = 1.0 - idle / elapsed
        self.pressure = None
        if stall_s is not None and self._stall_start is not None:
            self.pressure = min(max(stall_s - self._stall_start, 0.0) / elapsed, 1.0)
        self._start, self._idle_start, self._stall_start = now_s, idle_s, stall_s
        pressure = 0.0 if self.pressure is None else self.pressure
        quiet = self.share <= IDLE_BELOW and pressure <= PRESSURE_BELOW
        self._idle_run = self._idle_run + 1 if quiet else 0
        if self.busy and self._idle_run >= IDLE_SAMPLES:
            self.busy = False
            return False
        if not self.busy and (self.share >= BUSY_ABOVE or pressure >= PRESSURE_ABOVE):
            self.busy = True
            return True
        return None
