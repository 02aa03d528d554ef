"""Named timeouts, counted in ticks (OSDI'99 4.4, 4.5.2; TOCS 2002 5.2).

Theory of operation. The core has no clock: the runtime (or the simulator) delivers a
`Tick` every `tick_ms`, and every timer is a `Timeout` that counts them: started at a
tick, it has fired once `ticks` more have passed, until it is stopped or started again.
The replica keeps its timeouts in one table (`Replica.timeouts`) and fires them in that
order at each tick, so two that expire in the same tick always fire in the same order.

* `hold` (batching.py): how long the primary waits for the clients of the batch it just
  executed to send their next request.
* `new_view` (4.5.2): started when 2f+1 replicas are in the view we wait for; if no
  NEW-VIEW is installed before it fires we move on to the next view, waiting twice as
  long (the timeout doubles per view change without progress, up to 2**6 times).
* `requests` (4.4): a backup's view-change timer and ordering timer, checked every tick
  against the requests it waits for (their deadlines are per request).
* `lone` (4.5.2): joining a replica left alone in view + 1, checked every tick.
* `retransmit`: no progress for `retransmit_ms`: resend our own messages and STATUS.
"""

from __future__ import annotations


class Timeout:
    """A timer that fires `ticks` ticks after it was started (never while stopped)."""

    __slots__ = ("name", "ticks", "started")

    def __init__(self, name: str, ticks: int) -> None:
        assert ticks >= 0
        self.name = name
        self.ticks = ticks
        self.started: int | None = None

    def start(self, now: int, ticks: int | None = None) -> None:
        if ticks is not None:
            self.ticks = ticks
        self.started = now

    def stop(self) -> None:
        self.started = None

    @property
    def running(self) -> bool:
        return self.started is not None

    @property
    def deadline(self) -> int | None:
        """The tick at which it fires, or None while stopped."""
        return None if self.started is None else self.started + self.ticks

    def fired(self, now: int) -> bool:
        return self.started is not None and now - self.started >= self.ticks

    def __repr__(self) -> str:
        return f"Timeout({self.name!r}, {self.ticks}, started={self.started})"
