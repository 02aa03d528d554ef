"""The primary's queue and the wait for returning clients: policy, not the paper.

Theory of operation. OSDI'99 4.2 lets the primary order requests in batches; which
requests go into which batch, and when, is ours to choose, and this module holds that
choice and its state.

* The queue (`pending`): one request per client, the newest (a client has one request
  outstanding, section 4.1), so it is bounded by the number of clients.
* Adaptive batching (`ready`): with nothing in flight, propose at once (low latency when
  idle); with batches in flight (up to `pipeline`), only once enough requests wait to fill
  a worthwhile batch. Every batch costs about 8 signatures and 24 verifications
  cluster-wide whatever its size, so under load fewer, fuller batches are what brings the
  cost per request down to the client signature.
* Busy or not (`busy`, from the runtime's `Load` input): all of the above is for a
  replica whose event loop is mostly at work, where a batch saved is CPU saved and CPU
  is what bounds throughput. A replica that is mostly idle (a group on a wide-area
  network, where a write's latency is five one-way delays and the CPU sits idle)
  proposes whatever waits at once, and waits for nobody: with the waits above, a request
  that arrives while a batch is in flight waits for that batch, about three one-way
  delays. `pipeline` does not bound it either (only the log window does, and each batch
  holds at least one of the clients' outstanding requests): with 32 clients and 20 ms
  links, 8 batches in flight were used up by the first arrivals of a round and the rest
  waited for the round (simulated p50/p90 126/141 ms against 119/122 ms unbounded). Proposing eagerly costs about twice the CPU per
  request (measured: 2.7 signatures per request instead of 0.3), so the runtime reports
  busy well before the loop is saturated, and idle only well below that (hysteresis in
  pbft.node.loadmeter), lest the policy's own cost flip it back and forth.
* Returning clients (`expect_returns`): under a closed loop the clients otherwise settle
  into two groups whose batches alternate (one executes while the other waits), so
  batches hold half of them; waiting for all but 1/RETURNING_LEFT of the group that just
  executed merges the groups and halves the per-batch work per request. The wait lasts
  HOLD_MS at most (the `hold` timeout) and is not made for a batch of one (an idle
  cluster, or a lone client: no latency is added there). A wait that ran out (clients
  with think time, or a faulty one that holds back) pauses waiting for the next
  HOLD_PAUSE batches: such a client costs at most HOLD_MS per HOLD_PAUSE batches.
"""

from __future__ import annotations

from collections import OrderedDict

from .bounds import Bound, check
from .config import ClusterConfig
from .messages import MAX_BATCH_BYTES, Request
from .timeouts import Timeout

RETURNING_LEFT = 8
"""With nothing in flight, the primary proposes once at most 1/RETURNING_LEFT of the
clients of the batch it executed last have yet to send their next request (or HOLD_MS
have passed): one faulty client that never comes back delays nobody."""

HOLD_MS = 40
"""Longest wait for returning clients, from the batch's execution (4 ticks of 10 ms; at
least one tick, at most an eighth of the view-change timeout). Not a single tick: a
runtime delivers a busy replica's ticks a few at a time (runtime.node.BUSY_TICKS), and a
wait cut short by such a burst would be taken for clients that do not come back."""

HOLD_PAUSE = 64
"""Batches the primary proposes without waiting for returning clients after a wait that
ran out."""


class Batching:
    def __init__(self, config: ClusterConfig, vc_timeout_ticks: int) -> None:
        self.config = config
        self.pending: OrderedDict[str, tuple[Request, bytes]] = OrderedDict()
        # Clients of the batch executed last that have not sent their next request yet,
        # and that batch's size.
        self.returning: set[str] = set()
        self.returning_of = 0
        self.pause = 0  # batches to propose without waiting
        self.busy = True
        hold_ticks = max(1, min(-(-HOLD_MS // config.tick_ms), vc_timeout_ticks // 8))
        self.hold = Timeout("hold", hold_ticks)

    def queued_ts(self, client: str) -> int:
        queued = self.pending.get(client)
        return -1 if queued is None else queued[0].timestamp

    def enqueue(self, req: Request, data: bytes) -> None:
        """Queue the newest request of its client (the caller checked it is not in flight)."""
        self.pending[req.client] = (req, data)
        self.pending.move_to_end(req.client)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        if not busy:
            self.hold.stop()
            self.returning.clear()

    def ready(self, in_flight: int) -> bool:
        if not self.pending:
            return False
        if not self.busy:
            return True  # bounded by the log window (the caller), and by the clients
        if in_flight == 0:
            return (
                len(self.returning) * RETURNING_LEFT <= self.returning_of
                or len(self.pending) >= self.config.batch_max
            )
        worthwhile = max(1, self.config.batch_max // 8)
        return in_flight < self.config.pipeline and len(self.pending) >= worthwhile

    def take(self) -> list[tuple[Request, bytes]]:
        """The next batch, oldest first, at most batch_max requests and MAX_BATCH_BYTES
        of them (one request always fits: an operation is far smaller)."""
        batch: list[tuple[Request, bytes]] = []
        size = 0
        while self.pending and len(batch) < self.config.batch_max:
            _, data = next(iter(self.pending.values()))
            if batch and size + len(data) > MAX_BATCH_BYTES:
                break
            size += len(data)
            batch.append(self.pending.popitem(last=False)[1])
        return batch

    def returned(self, client: str) -> None:
        self.returning.discard(client)

    def expect_returns(self, clients: set[str], now: int) -> None:
        """The primary has just executed a batch of `clients`' requests: they send their
        next ones as their replies arrive (section 4.1)."""
        if self.pause:
            self.pause -= 1
        if len(clients) < 2 or self.pause or not self.busy:
            self.returning, self.returning_of = set(), 0
            return
        self.returning = clients - self.pending.keys()
        self.returning_of = len(clients)
        self.hold.start(now)

    def on_hold_timeout(self, idle: bool) -> None:
        """The wait ran out. If clients did not come straight back while requests wait
        and nothing is in flight (`idle`), propose and stop waiting for a while."""
        self.hold.stop()
        if not self.returning:
            return
        if self.pending and idle:
            self.pause = HOLD_PAUSE
        self.returning.clear()

    def drain(self) -> list[tuple[str, Request, bytes]]:
        """Everything queued, in order, and nothing waited for any more (a view change:
        the requests are waited for like any other, 4.4)."""
        out = [(client, req, data) for client, (req, data) in self.pending.items()]
        self.pending.clear()
        self.returning.clear()
        return out

    def bounds(self) -> list[Bound]:
        clients = self.config.requester_count
        return [("pending", len(self.pending), clients), ("returning", len(self.returning), clients)]

    def invariants(self) -> None:
        check(self.bounds())
