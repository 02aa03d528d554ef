"""How busy a replica is, told to its core as `Load` (the batching policy).

Theory of operation. The primary batches for throughput or proposes at once for
latency (pbft.protocol.batching); which one pays depends on whether CPU is what bounds
the group, and only the runtime can see that. Two signals, sampled every WINDOW_S:

* the replica's own CPU: the process's CPU time over the window's wall time (the event
  loop, the commit thread and any verify threads; about one core at most, since the
  loop is one thread). One clock read per window, nothing per loop iteration (a Trio
  instrument timing each I/O wait cost 1-2 us per wait, 2-4% of the CPU per request with
  4 clients);
* the host's CPU pressure, where Linux reports it (/proc/pressure/cpu: the share of the
  window some runnable task waited for a core). A host whose cores other busy processes
  share (four replicas and their clients on two cores, a crowded VM) is bound by CPU
  while each replica's own share stays low: each waits for peers that are not
  scheduled. Without the file (other systems, kernels without PSI) the replica's own
  share decides alone.

`LoadMeter` turns the samples into the core's two states with hysteresis: busy from one
sample with a share of BUSY_ABOVE or more or a pressure of PRESSURE_ABOVE or more, idle
from IDLE_SAMPLES samples in a row with both at or below IDLE_BELOW and PRESSURE_BELOW;
in between the state stays as it is. Proposing at once costs about twice the CPU per
request, so a replica that goes eager may double or triple its share: the thresholds
are far apart for that reason. Quick to batch, slow to stop: one quiet quarter second in
a saturated group (a primary waiting for backups that are not scheduled) must not make it
propose at once. A core starts busy (the batching policy); the meter starts there too and
says only what changes.

Measured on this 2-core machine, the primary, a sample every quarter second
(docs/architecture.md has the table):
* f=1, 32 clients on loopback, saturated and batching: CPU 0.23-0.40, pressure 0.53-0.73;
* four network namespaces with 20 ms one-way links, 32 clients: CPU 0.06-0.09 batching;
  pressure 0.03-0.13 with 4 clients, 0.10-0.21 with 32 batching and 0.30-0.48
  proposing at once (six processes on two cores wake together at each message).
"""

from __future__ import annotations

WINDOW_S = 0.25
"""Wall seconds per sample: a few tick-loop wake-ups (30-50 ms each), short enough that
a group that turns idle proposes at once within a fraction of a second, long enough that
one burst of work is not taken for load."""
BUSY_ABOVE = 0.5
"""A sample with at least this share of a core makes the primary batch for throughput."""
IDLE_BELOW = 0.2
"""IDLE_SAMPLES samples in a row with at most this share make it propose at once."""
IDLE_SAMPLES = 4
"""A second of idleness, at WINDOW_S per sample."""
PRESSURE_ABOVE = 0.5
"""A window in which some task waited for a core this share of the time makes the
primary batch, however idle the replica itself."""
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


class LoadMeter:
    """Samples of the replica's CPU share and the host's pressure, and the busy state they imply (pure: the caller
    gives the clocks and the totals, so tests drive it without a process)."""

    def __init__(self, now_s: float, cpu_s: float, stall_s: float | None = None,
                 window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.busy = True
        self.share = 0.0
        """The last sample: the replica's CPU time over the window's wall time."""
        self.pressure: float | None = None
        """The last sample's CPU pressure: the share of it some task waited for a core."""
        self._start = now_s
        self._cpu_start = cpu_s
        self._stall_start = stall_s
        self._idle_run = 0  # idle samples in a row

    def due(self, now_s: float) -> bool:
        """Whether a window is complete (the caller then reads the totals and samples)."""
        return now_s - self._start >= self.window_s

    def sample(self, now_s: float, cpu_s: float, stall_s: float | None = None) -> bool | None:
        """Take the clock, the process's CPU time and the host's CPU stall total (None:
        not known); the new busy state when a full window changed it, else None."""
        if not self.due(now_s):
            return None
        elapsed = now_s - self._start
        self.share = min(max(cpu_s - self._cpu_start, 0.0) / elapsed, 1.0)
        self.pressure = None
        if stall_s is not None and self._stall_start is not None:
            self.pressure = min(max(stall_s - self._stall_start, 0.0) / elapsed, 1.0)
        self._start, self._cpu_start, self._stall_start = now_s, cpu_s, stall_s
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
