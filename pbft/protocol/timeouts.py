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
  against the requests it waits for (their deadlines are per request: RequestTimers).
* `lone` (4.5.2): joining a replica left alone in view + 1, checked every tick.
* `retransmit`: no progress for `retransmit_ms`: resend our own messages and STATUS.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from .bounds import Bound, check
from .messages import Request


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


ORDERING_FRACTION = 2
"""A request a backup knows of must appear in a pre-prepare within this fraction of the
view-change timeout (it must execute within the whole timeout)."""


class Expired(Enum):
    VIEW_CHANGE = "view-change"  # a request was not executed, or not ordered, in time
    NUDGE = "nudge"  # half-way through the ordering timer: ask again first


class RequestTimers:
    """A backup's timers on the requests it knows of and has not executed (4.4).

    `waiting`: client -> (timestamp, envelope, tick it started waiting), the newest
    request per client (a client has one outstanding, 4.1). `ordered`: the newest
    timestamp per client seen in a pre-prepare of this view; a waiting request the
    primary has not ordered yet runs on the shorter ordering timer. Two timers per request
    (the paper's, and Aardvark's answer to a slow primary): executed within the
    view-change timeout, and *ordered* within 1/ORDERING_FRACTION of it. A primary that
    delays every pre-prepare to just under the first timer is caught by the second, so a
    slow primary costs one view change, not the cluster's throughput (docs/attacks.md
    `slow-primary`). Half-way through the ordering timer we first ask again, so a
    pre-prepare that was merely lost is recovered instead of costing a view.
    """

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.waiting: dict[str, tuple[int, bytes, int]] = {}
        self.ordered: dict[str, int] = {}
        self.restarted: set[tuple[str, int]] = set()  # (client, t) restarted this view
        self.nudged = -1  # tick of the last reminder about unordered requests

    def wait(self, client: str, ts: int, data: bytes, now: int) -> bool:
        """Wait for `client`'s request `ts` from now on (unless already); False when we
        wait for a newer one of that client (this one is superseded)."""
        known = self.waiting.get(client)
        if known is None or known[0] < ts:
            self.waiting[client] = (ts, data, now)
        elif known[0] > ts:
            return False
        return True

    def adopt(self, held: list[tuple[str, Request, bytes]], now: int) -> None:
        """Requests the old primary held are now waited for like any other (4.4)."""
        for client, req, data in held:
            self.waiting.setdefault(client, (req.timestamp, data, now))

    def saw_ordered(self, client: str, ts: int) -> None:
        if self.ordered.get(client, -1) < ts:
            self.ordered[client] = ts

    def executed(self, client: str, ts: int) -> None:
        known = self.waiting.get(client)
        if known is not None and known[0] <= ts:
            del self.waiting[client]

    def drop_executed(self, executed_ts: Callable[[str], int]) -> None:
        for client in [c for c, (ts, _, _) in self.waiting.items() if executed_ts(c) >= ts]:
            del self.waiting[client]

    def restart(self, now: int) -> None:
        """A fresh timer after catching up (a state transfer, a restart, learning that we
        are behind), at most once per request and view: a primary that made a backup
        transfer again and again (delaying the pre-prepares of checkpoint slots to it)
        pushed its deadlines back for ever and could censor a client (review of issue 13)."""
        self.restarted &= {(c, w[0]) for c, w in self.waiting.items()}  # bounded
        for client, (ts, data, _) in list(self.waiting.items()):
            if (client, ts) not in self.restarted:
                self.restarted.add((client, ts))
                self.waiting[client] = (ts, data, now)

    def new_view(self, now: int) -> list[bytes]:
        """A view is installed: every request waited for gets a fresh timer (and is handed
        to the new primary, or ordered by it); the envelopes, in waiting order."""
        self.restarted.clear()
        for client, (ts, data, _) in list(self.waiting.items()):
            self.waiting[client] = (ts, data, now)
        return [data for _, data, _ in self.waiting.values()]

    def check(self, now: int, behind: bool, executed_ts: Callable[[str], int], timeout: int) -> Expired | None:
        """The timers of a located backup, with `timeout` its backed-off view-change
        timeout: what has expired, once those executed meanwhile are dropped. A backup
        `behind` (f+1 peers executed past it) gets one more timeout to catch up in, not
        a timer held back for ever (a primary that kept it a little behind must not keep
        it from suspecting the primary)."""
        if behind:
            self.restart(now)
        self.drop_executed(executed_ts)
        return self.expired(now, timeout)

    def expired(self, now: int, timeout: int) -> Expired | None:
        if not self.waiting:
            return None
        oldest = min(since for _, _, since in self.waiting.values())
        unordered = [
            since for c, (ts, _, since) in self.waiting.items() if self.ordered.get(c, -1) < ts
        ]
        ordering = max(2, timeout // ORDERING_FRACTION)
        if now - oldest >= timeout:
            return Expired.VIEW_CHANGE
        if unordered:
            age = now - min(unordered)
            if age >= ordering:
                return Expired.VIEW_CHANGE
            # Once per oldest unordered request: not again for one that was waiting
            # before we last reminded the primary. One that began waiting in that tick
            # mostly came after the reminder (the tick is stepped first) and was not in
            # it. One taken or re-timed in the tick's own step (deferred, restart,
            # new_view) was, and gets one more reminder: at most two per request, and
            # reminders stay at least ordering // 2 ticks apart.
            if age >= ordering // 2 and self.nudged <= min(unordered):
                self.nudged = now
                return Expired.NUDGE
        return None

    def unordered(self) -> list[bytes]:
        """Envelopes of the requests waited for that the primary has not ordered yet."""
        return [
            data for c, (ts, data, _) in sorted(self.waiting.items()) if self.ordered.get(c, -1) < ts
        ]

    def bounds(self) -> list[Bound]:
        clients = self.clients
        return [
            ("waiting", len(self.waiting), clients),
            ("ordered", len(self.ordered), clients),
            ("_timers_restarted", len(self.restarted), clients),
        ]

    def invariants(self) -> None:
        check(self.bounds())
