"""How busy a replica's event loop is, told to its core as `Load` (batching policy).

Theory of operation. The primary batches for throughput or proposes at once for
latency (pbft.protocol.batching); which one pays depends on whether the replica's CPU is
what bounds the group, and only the runtime can see that. It is measured as the share of
wall time the Trio loop was not waiting for I/O: a Trio instrument adds up the time spent
in each I/O wait that had a timeout, i.e. a wait for input with nothing runnable
(`LoopIdle`); every `WINDOW_S` the share of the rest is one sample. Wall time, not
process CPU time: on a shared host a replica descheduled in the middle of its work is
held up by the CPU as much as one that computes, and the wall-clock share sees both.

Measured on this 2-core machine (a sample per second, four replicas each):
* f=1, 32 clients on loopback, saturated: 0.42-0.74 (CPU time 0.18-0.40 of a core);
* four network namespaces with 20 ms one-way links, 32 clients: 0.07-0.16.

`LoadMeter` turns the samples into the core's two states with hysteresis: busy from one
sample of BUSY_ABOVE or more, idle from IDLE_SAMPLES samples in a row of IDLE_BELOW or
less. Proposing at once costs about twice the CPU per request (pbft.protocol.batching),
so an idle replica that goes eager may double its share: IDLE_BELOW is half of
BUSY_ABOVE for that reason, and between them the state stays as it is. Quick to batch,
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
BUSY_ABOVE = 0.4
"""A sample at least this busy makes the primary batch for throughput."""
IDLE_BELOW = 0.2
"""IDLE_SAMPLES samples in a row at most this busy make it propose at once."""
IDLE_SAMPLES = 4
"""A second of idleness, at WINDOW_S per sample."""


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

    def __init__(self, now_s: float, idle_s: float, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.busy = True
        self.share = 0.0
        """The last sample: the share of the window the loop was at work."""
        self._start = now_s
        self._idle_start = idle_s
        self._idle_run = 0  # samples in a row at or below IDLE_BELOW

    def sample(self, now_s: float, idle_s: float) -> bool | None:
        """Take the clock and the idle total; the new busy state when a full window
        changed it, else None."""
        elapsed = now_s - self._start
        if elapsed < self.window_s:
            return None
        idle = min(max(idle_s - self._idle_start, 0.0), elapsed)
        self.share = 1.0 - idle / elapsed
        self._start, self._idle_start = now_s, idle_s
        self._idle_run = self._idle_run + 1 if self.share <= IDLE_BELOW else 0
        if self.busy and self._idle_run >= IDLE_SAMPLES:
            self.busy = False
            return False
        if not self.busy and self.share >= BUSY_ABOVE:
            self.busy = True
            return True
        return None
