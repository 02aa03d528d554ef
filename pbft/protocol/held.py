"""The reply cache: the timestamp a replica holds per client, and telling the client (OSDI'99 4.1).

Theory of operation. A replica keeps, per client, the timestamp and reply of the last
request it executed, and never executes an older request (exactly-once). Clients take
their first timestamp from the wall clock, so a client whose clock is behind what the
replicas hold (a clock that once ran ahead and was then corrected, or a restart on a
machine whose clock is behind) would otherwise send requests that no replica executes or
answers, until its clock catches up: maybe years.

So a replica that refuses a validly signed request as older than what it holds answers
the client with a HELD message naming the timestamp it holds. HELD is authenticated like
a REPLY: unsigned, by the channel it arrives on. One replica's word is not enough: the
client continues from `held + 1` only once f+1 replicas report the same `held` (one of
them is correct, so that timestamp is really held and was really issued by this client),
so up to f faulty replicas cannot push a client's timestamps to the end of their range.

A refused request may be a replay (a faulty replica can resend any request it relayed),
so a replica answers a client at most once per `HeldAnswers.period` ticks: half the
client's first retransmission timeout, so an honest client's retransmission is always
answered, and a replay costs one small message to the client it names, never more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import codec
from .bounds import Bound, check
from .config import ClusterConfig
from .messages import Held, Request, to_body
from .store import Namespace


def client_retransmit_ticks(config: ClusterConfig) -> int:
    """A client's first retransmission timeout: a quarter of the view-change timeout, so
    the backups learn of a request early enough for their ordering timer (half of it) to
    catch a primary that sits on it."""
    return max(1, config.view_change_timeout_ms // (4 * config.tick_ms))


def held_envelope(view: int, timestamp: int, client: str, replica: int, held: int) -> bytes:
    """The unsigned envelope of a HELD (the signer is the channel's, as for a REPLY)."""
    body = to_body(Held(view, timestamp, client, replica, held))
    return codec.encode([body, replica, b""])


class ClientAnswers:
    """When this replica last answered each client's request, by timestamp (one entry per
    client of the cluster: only requests whose signature verified get here). An answer
    that costs more than the question (a HELD, a cached reply of up to 1 MiB) goes out at
    most once per `period` for the same request: half a client's first retransmission
    timeout, so an honest retransmission is always answered. Keyed by the request, not
    the client alone: a faulty replica replaying one old request of the client must not
    use up the answer its new request needs."""

    __slots__ = ("period", "_told", "_clients")

    def __init__(self, config: ClusterConfig) -> None:
        self.period = max(1, client_retransmit_ticks(config) // 2)
        self._told: dict[str, tuple[int, int]] = {}
        self._clients = len(config.requesters)

    def due(self, client: str, timestamp: int, now: int) -> bool:
        """True (and noted) if `client`'s request `timestamp` may be answered now."""
        last = self._told.get(client)
        if last is not None and last[0] == timestamp and now - last[1] < self.period:
            return False
        self._told[client] = (timestamp, now)
        return True

    def __len__(self) -> int:
        return len(self._told)

    def bounds(self) -> list[Bound]:
        """One entry per client of the cluster (only verified requests get here)."""
        return [(type(self).__name__, len(self._told), self._clients)]

    def invariants(self) -> None:
        check(self.bounds())


class HeldAnswers(ClientAnswers):
    """Which clients this replica told its held timestamp, and when."""

    __slots__ = ()

    def answer(self, view: int, replica: int, req: Request, held: int, now: int) -> bytes | None:
        """The HELD for the refused request `req`, or None if it was answered less than a
        period ago."""
        assert req.timestamp < held
        if not self.due(req.client, req.timestamp, now):
            return None
        return held_envelope(view, req.timestamp, req.client, replica, held)


@dataclass(slots=True)
class ClientRecord:
    """The last executed request of a client and its result (section 4.1)."""

    timestamp: int
    result: bytes


class ReplyCache:
    """Per client, the last request executed and its reply (section 4.1): what makes
    execution exactly-once (an older request is never executed again, the latest gets its
    cached reply), and what a checkpoint carries besides the service state, so that
    exactly-once survives a state transfer. With the budgets on answering from it: a
    cached reply resent (`resent`) and a HELD sent (`held`), each once per period per
    request."""

    def __init__(self, config: ClusterConfig, store: Namespace | None = None) -> None:
        self.clients = len(config.requesters)
        self._names = frozenset(config.requesters)
        self.records: dict[str, ClientRecord] = {}
        self.store = store
        """Where the records live for checkpoints (the replica's store, under the reply
        prefix): digested and transferred with the service's state; `records` is their
        decoded copy."""
        self.resent = ClientAnswers(config)
        self.held = HeldAnswers(config)

    def executed_ts(self, client: str) -> int:
        """The timestamp of `client`'s last executed request, or -1."""
        rec = self.records.get(client)
        return rec.timestamp if rec is not None else -1

    def settled(self, client: str, timestamp: int) -> ClientRecord | None:
        """`client`'s record if its request `timestamp` is not newer than the last one
        executed (exactly-once: never executed again, the latest gets its reply again)."""
        rec = self.records.get(client)
        return rec if rec is not None and timestamp <= rec.timestamp else None

    def record(self, client: str, timestamp: int, result: bytes) -> None:
        self.records[client] = ClientRecord(timestamp, result)
        if self.store is not None:
            self.store.put(client.encode(), codec.encode([timestamp, result]))

    def load(self) -> list[str]:
        """Read the records back from the store (after a state transfer or a rollback);
        what it could not read, one line each (2f+1 replicas signed this state, so that
        cannot happen while at most f are faulty; skipped, not raised)."""
        self.records = {}
        problems: list[str] = []
        if self.store is None:
            return problems
        # By name, the clients of this configuration only: a state keeps the records of
        # clients an earlier epoch removed, and a scan of the first clients+1 keys let
        # them crowd out a current one (the operator's, say: its old command could then
        # be executed again; found by a review).
        for client in sorted(self._names):
            value = self.store.get(client.encode())
            if value is None:
                continue
            try:
                ts, result = codec.decode(value)  # type: ignore[misc]
            except (codec.CodecError, TypeError, ValueError):
                problems.append(f"reply record of {client!r} unreadable")
                continue
            if type(ts) is not int or type(result) is not bytes:
                problems.append(f"reply record of {client!r} not a client's")
                continue
            self.records[client] = ClientRecord(ts, result)
        return problems

    def bounds(self) -> list[Bound]:
        return [("clients", len(self.records), self.clients), *self.resent.bounds(), *self.held.bounds()]

    def invariants(self) -> None:
        check(self.bounds())


class WaitingReads:
    """Read-only requests (OSDI'99 5.1.3) waiting until everything this replica prepared
    is executed (Replica.on_read_only says why): the latest per client, answered
    together, in client order."""

    __slots__ = ("_clients", "waiting")

    def __init__(self, config: ClusterConfig) -> None:
        self._clients = len(config.requesters)
        self.waiting: dict[str, Request] = {}

    def hold(self, req: Request) -> None:
        self.waiting[req.client] = req

    def answerable(self, stale: bool, last_executed: int, prepared: Iterable[int]) -> Sequence[tuple[str, Request]]:
        """The reads to answer now, taken (in client order), or none. Not while our state
        is `stale`, older than a checkpoint 2f+1 replicas made stable (a window jump drops
        the certificates below it before the state is installed): a read answered then
        could miss a write a client already saw completed (issue 13, item 4); it waits for
        the transfer. Not while a slot we `prepared` (certificates outlive view changes:
        one prepared in an earlier view and not yet prepared again counts) is beyond
        `last_executed`."""
        if not self.waiting or stale or any(seq > last_executed for seq in prepared):
            return ()
        return self.take()

    def take(self) -> list[tuple[str, Request]]:
        """Every waiting read, in client order; none wait any more."""
        out = sorted(self.waiting.items())
        self.waiting.clear()
        return out

    def bounds(self) -> list[Bound]:
        return [("reads", len(self.waiting), self._clients)]

    def invariants(self) -> None:
        check(self.bounds())
