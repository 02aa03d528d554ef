"""Mutual-TLS TCP links between replicas and clients, over Trio.

Theory of operation. Every frame on the wire is `codec.frame(body)`: a 4-byte big-endian
length and a body (a signed envelope). Who sent a frame is what the TLS certificate at
the other end of the connection says (`identify`, normally `tls.peer_id`); the transport
never looks inside a body, so all protocol decisions stay in the core.

* A replica listens on its configured address and *reads* every inbound connection. For
  its own traffic to replica j it dials j and keeps that one outbound connection (so each
  pair of replicas has two connections, one per direction, and each side owns the one it
  writes to). A client dials every replica; a replica answers a client over the client's
  inbound connection(s).
* Every outbound destination has an `Outbox`: a bounded queue (PEER_QUEUE_FRAMES,
  PEER_QUEUE_BYTES). When it is full the frame is dropped and counted: the protocol core
  retransmits, so a slow or dead peer costs bounded memory and never blocks the others.
  Without `autoflush` (the node and the client), the owner calls `flush()` once per
  batch of sends and each destination's queue is written from the owner's task with one
  write, when the socket takes it at once; the link's writer task only finishes what a
  full socket did not take. With `autoflush`, every frame wakes the writer, which drains
  everything queued and sends it with one `send_all`. Either way a batch is coalesced.
* A dialer reconnects forever with exponential backoff and jitter, capped at
  BACKOFF_MAX. Frames queued while disconnected wait (up to the bound) for the next
  connection.
* Bad input only ever costs its own connection: a length prefix above MAX_FRAME, a TLS
  failure, an unknown certificate or a handshake that takes too long is counted in
  `counters` and that connection alone is closed. Nothing here raises into the node.

Connections: what a peer may hold (`Limits`; the defaults are the constants below).
A listener's resources are bounded by budgets of their own, never by the product of a
connection count and a frame size, and no peer can lock another out:

* Handshake stage. At most MAX_UNAUTHENTICATED (64) inbound connections may be in the
  TLS handshake at once, each for at most HANDSHAKE_TIMEOUT (5 s). When a new one
  arrives at the cap, the oldest that has not sent a byte is closed (else the oldest):
  refusing the new one instead would let anyone who keeps the stage full (reopening
  each connection as it is closed) keep every real peer out for good. This way a real
  peer's connection, accepted in turn, speaks at once and has its handshake to finish
  before 64 newer ones push it out, which silent ones never do. Counted:
  `handshake-evicted`, `handshake-timeout`, `tls-failure`.
* Per identity. Once authenticated, a client identity may hold MAX_CLIENT_LINKS (4)
  inbound connections and a replica MAX_REPLICA_LINKS (2); a new one closes that
  identity's oldest (`identity-link-limit`). Closing rather than refusing is what keeps
  a client that reconnects after a fault from being locked out by its own stale
  connections (TCP may never notice they are dead), and only the key's holder can open
  connections as that identity, so it can only push out its own. In all at most
  MAX_INBOUND (1024) authenticated inbound connections; at that count a new one closes
  the oldest connection of the client that holds the most (`inbound-limit`).
* Read deadline. A connection with no frame in flight may stay idle for ever (clients
  are long-lived). Once the first byte of a frame (even of its length prefix) arrives,
  the frame has READ_TIMEOUT (5 s) plus its declared size at MIN_READ_RATE (256 KiB/s) to
  arrive in full, or the connection is closed (`read-timeout`); time spent waiting for
  room in our own inbox does not count. A connection that ends in the middle of a frame
  is counted too (`truncated-frame`).
* Buffer budget. A frame that arrives whole in one read costs no budget. One that does
  not first reserves its declared size: from BUFFER_BUDGET (64 MiB) over all links, of
  which all clients together may use CLIENT_BUFFER_BUDGET (16 MiB), one client
  CLIENT_FRAME_BUDGET (1 MiB; a client only sends requests and queries, each under 64
  KiB of operation) and one replica two frames of MAX_FRAME. A length prefix above the
  identity's budget closes the connection at once (`over-identity-budget`, or
  `oversize-frame` above MAX_FRAME). When the shared budget is taken, a client's
  connection is closed (`budget-exhausted`: waiting, it would hold the rest of its last
  read outside the budget, and clients are many); a replica's stops reading (TCP
  backpressure) until a reservation is released, and is closed if its frame's deadline
  passes first (`budget-timeout`). The reservation is accounting
  only: a frame is held as the pieces that arrived (`FrameAssembler`), never as a buffer
  sized by its prefix, so memory is bounded by the bytes peers really sent and the
  budget bounds those. A closed connection releases its reservation and pieces, and
  once nothing is buffered the allocator's freed pages go back to the system
  (`malloc_trim`), so the resident size comes back after a storm.

Telling why nothing works. A dialer remembers why its last attempt to link to each
replica failed (`trouble`): the connection was refused, the TLS handshake failed, or the
replica closed the link within QUICK_CLOSE of the handshake, which is how a replica
treats a certificate signed by the cluster CA for a key its cluster file does not list
(a client added since it started). A client's timeout message names these causes. The
listening side warns about such a certificate once per (subject, address) and period
(UNKNOWN_CERT_WARN_EVERY), at debug level after that, in a table of bounded size. A
replica's certificate (`CN=replica-N`) is most often one of a configuration change not
yet applied (new replicas are started first): said at info level the first time, and
as a warning only if that replica is still refused a period later.

Every one of these closures is counted in `counters` by reason (exported by the node's
metrics as `pbft_transport_events_total{event}`); `tools/attack_connections.py` measures
them against a live listener.

Frames are delivered upward as `events.Received(peer, body)` into the node's bounded
channel (an `Inbox`), so a busy state machine slows its readers (TCP backpressure)
instead of buffering without bound. A client's inbox steps each frame at once instead.

Cost per message (what `tools/bench_transport.py` measures). The expensive things are
system calls and Trio task switches, not encryption, so every layer works in batches:
`TLSLink` drives TLS by hand over the socket's file descriptor (one `read` takes all the
socket holds and decrypts every record in it, and after a read that emptied the socket
the next waits for readiness instead of failing; one write sends a whole coalesced batch),
and a reader hands all the frames of one read to the node without yielding in between
(`send_nowait`; it waits only when the inbox is full). A reader that yielded per frame
woke the node once per frame, so the node stepped one frame at a time and every send
became its own write; batching there is what lets the outboxes coalesce.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import random
import select
import ssl
import struct
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from math import inf
from typing import Protocol

import trio

from ..protocol import codec
from ..protocol.config import ClusterConfig
from ..protocol.events import Received
from ..protocol.messages import Signer

log = logging.getLogger("pbft.transport")

PEER_QUEUE_FRAMES = 8192
"""Frames queued for one destination before further frames are dropped."""
PEER_QUEUE_BYTES = 64 * 1024 * 1024
"""Bytes queued for one destination before further frames are dropped."""
MAX_WRITE = 4 * 1024 * 1024
"""Largest coalesced write; a longer queue is sent in several writes."""
READ_SIZE = 256 * 1024
"""Plaintext bytes asked of the TLS layer per record read."""
RECV_SIZE = 256 * 1024
"""Bytes asked of the socket per read: everything a busy peer sent since the last one."""

# One buffer for every socket read and one for every TLS read *per thread* (links never
# await between filling one and copying out of it). Per thread, not per process: the
# socket read and the TLS read release the GIL, so a client running its own Trio loop in
# another thread (`trio.to_thread`, a program with a client per thread, the tests' CLI
# runs) overwrote the bytes a replica's loop had just read, and TLS handshakes failed
# with BAD_RECORD_TYPE or WRONG_VERSION_NUMBER. Reading into a fresh 256 KiB bytes object
# and shrinking it, as os.read and SSLObject.read(n) do, cost a large malloc per read and
# fragmented the heap: a replica's resident memory crept up by ~0.5 MiB a minute.
_BUFFERS = threading.local()


def _buffers() -> tuple[list[bytearray], memoryview, bytearray, memoryview]:
    """This thread's (readv list, its view, TLS plaintext buffer, its view)."""
    b = getattr(_BUFFERS, "b", None)
    if b is None:
        recv, plain = bytearray(RECV_SIZE), bytearray(READ_SIZE)
        b = _BUFFERS.b = ([recv], memoryview(recv), plain, memoryview(plain))
    return b
MAX_INBOUND = 1024
"""Authenticated inbound connections a replica serves at once (see `Limits`)."""
MAX_UNAUTHENTICATED = 64
"""Inbound connections still in the TLS handshake at once; a new one closes the oldest."""
HANDSHAKE_TIMEOUT = 5.0
"""Seconds a peer gets to complete the TLS handshake (slowloris guard)."""
MAX_CLIENT_LINKS = 4
"""Inbound connections one client identity may hold; a new one closes its oldest."""
MAX_REPLICA_LINKS = 2
"""Inbound connections one replica identity may hold; a new one closes its oldest."""
READ_TIMEOUT = 5.0
"""Seconds a frame gets from its first byte to its last, plus its size at MIN_READ_RATE."""
MIN_READ_RATE = 256 * 1024
"""Bytes per second a peer must at least sustain while a frame is half received (a 16
MiB frame gets 69 s: room for a slow WAN link, while the budget bounds what waits)."""
BUFFER_BUDGET = 64 * 1024 * 1024
"""Bytes all connections together may hold for frames not yet received in full."""
CLIENT_BUFFER_BUDGET = 16 * 1024 * 1024
"""The part of BUFFER_BUDGET all clients together may hold (the rest is the replicas')."""
CLIENT_FRAME_BUDGET = 1024 * 1024
"""Bytes one client identity may hold in unfinished frames (so its largest frame): a
client sends requests and queries, each under MAX_OPERATION (64 KiB) plus an envelope."""
CONNECT_TIMEOUT = 5.0
"""Seconds a dial gets to connect and handshake."""
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
"""Reconnection delay: doubles from BACKOFF_MIN up to BACKOFF_MAX, with jitter."""
QUICK_CLOSE = 1.0
"""Seconds: an outbound link the replica closes sooner than this after the handshake is
taken as a refusal of our certificate (`LinkTrouble`), not as a link that worked."""
UNKNOWN_CERT_WARN_EVERY = 600.0
"""Seconds before an unknown certificate from the same (subject, address) is warned
about again; in between, each closure is logged at debug level only."""
UNKNOWN_CERT_WARNED = 256
"""(subject, address) pairs remembered for that; when full (and none has expired), a new
pair is logged at debug level only, so a peer cycling addresses cannot flood the log."""

REFUSED = "refused"
"""LinkTrouble.kind: the TCP connection was refused (nothing listens there)."""
UNREACHABLE = "unreachable"
"""LinkTrouble.kind: the TCP connection failed otherwise (timed out, no route, ...)."""
TLS_FAILED = "tls-failed"
"""LinkTrouble.kind: the TLS handshake failed (detail: the TLS layer's reason)."""
CLOSED_AFTER_HANDSHAKE = "closed-after-handshake"
"""LinkTrouble.kind: the replica closed the link right after the handshake: it does not
know our certificate's key."""

Identify = Callable[["TLSLink"], Signer | None]


@dataclass(frozen=True, slots=True)
class LinkTrouble:
    """Why the last attempt to link to one replica failed (`Transport.trouble`)."""

    kind: str
    """REFUSED, UNREACHABLE, TLS_FAILED or CLOSED_AFTER_HANDSHAKE."""
    address: str
    """host:port dialled."""
    detail: str


class Inbox(Protocol):
    """Where frames go: a Trio memory channel (a replica's node), or anything with the
    same two methods (a client steps each frame at once)."""

    def send_nowait(self, value: Received) -> None: ...

    async def send(self, value: Received) -> None: ...

@dataclass(frozen=True)
class Limits:
    """What one transport lets its peers hold (module docstring, "Connections"). The
    defaults are the module constants; tests pass small ones."""

    max_inbound: int = MAX_INBOUND
    max_unauthenticated: int = MAX_UNAUTHENTICATED
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    max_client_links: int = MAX_CLIENT_LINKS
    max_replica_links: int = MAX_REPLICA_LINKS
    read_timeout: float = READ_TIMEOUT
    min_read_rate: float = MIN_READ_RATE
    buffer_budget: int = BUFFER_BUDGET
    client_buffer_budget: int = CLIENT_BUFFER_BUDGET
    client_frame_budget: int = CLIENT_FRAME_BUDGET
    replica_frame_budget: int | None = None
    """Bytes one replica identity may hold in unfinished frames; None: two frames of
    `max_frame` (one per connection it may hold while its old one times out)."""


class FrameRefused(codec.FrameError):
    """A length prefix this link may never buffer; `reason` is the counter to bump."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BufferBudget:
    """Bytes reserved for frames that are being received, over every link of a transport.

    A link reserves a frame's declared size when it starts to buffer the frame (only
    when the frame did not arrive whole in one read) and releases it when the frame is
    complete or the link closes. The reservation is accounting only: the bytes are held
    as they arrive. Reserving the whole frame at once means no link ever holds part of a
    reservation while waiting for the rest, so links waiting on each other cannot
    deadlock; a link that cannot reserve stops reading until some budget is released
    (or its frame's read deadline closes it)."""

    __slots__ = ("limits", "max_frame", "used", "clients_used", "held", "_freed")

    def __init__(self, limits: Limits, max_frame: int) -> None:
        self.limits = limits
        self.max_frame = max_frame
        self.used = 0
        self.clients_used = 0
        self.held: Counter[Signer] = Counter()
        """Bytes reserved per identity (entries removed at zero)."""
        self._freed = trio.Event()

    def cap(self, who: Signer) -> int:
        """The most `who` may ever hold: its identity budget within the shared ones."""
        lim = self.limits
        if isinstance(who, str):
            return min(lim.client_frame_budget, lim.client_buffer_budget, lim.buffer_budget)
        own = lim.replica_frame_budget
        return min(2 * self.max_frame if own is None else own, lim.buffer_budget)

    def check(self, who: Signer, size: int) -> None:
        """Raise FrameRefused for a frame `who` may never buffer, whatever is free."""
        if size > self.max_frame:
            raise FrameRefused(
                "oversize-frame", f"frame of {size} bytes exceeds the limit of {self.max_frame}"
            )
        if size > self.cap(who):
            raise FrameRefused(
                "over-identity-budget",
                f"frame of {size} bytes exceeds the {self.cap(who)} bytes {who!r} may buffer",
            )

    def try_reserve(self, who: Signer, size: int) -> bool:
        client = isinstance(who, str)
        lim = self.limits
        if (
            self.used + size > lim.buffer_budget
            or self.held[who] + size > self.cap(who)
            or (client and self.clients_used + size > lim.client_buffer_budget)
        ):
            return False
        self.used += size
        self.held[who] += size
        if client:
            self.clients_used += size
        return True

    def release(self, who: Signer, size: int) -> None:
        self.used -= size
        left = self.held[who] - size
        if left:
            self.held[who] = left
        else:
            del self.held[who]
        if isinstance(who, str):
            self.clients_used -= size
        self._freed.set()
        self._freed = trio.Event()

    async def freed(self) -> None:
        """Wait until some reservation is released."""
        await self._freed.wait()


_TAIL_FLUSH = 256 * 1024
"""A partial frame's small pieces are gathered in one bytearray up to this size."""


class FrameAssembler:
    """Splits one link's plaintext into frame bodies (`codec.frame`), holding a partial
    frame as the pieces that arrived, never as a buffer sized by its length prefix.

    A frame that arrives whole within one read is sliced out and costs no budget. One
    that does not reserves its declared size from `budget` first. When that fails, a
    client's link is refused (FrameRefused: it retransmits, and its frames are small
    enough to arrive whole almost always); a replica's link waits: `want` is the size
    and the unread rest of the read is kept (at most one read; replicas hold few links)
    until `feed(b"")` is called again after the budget frees. `close()` releases what
    the link holds."""

    __slots__ = ("who", "budget", "_head", "_size", "_parts", "_tail", "_got", "_rest",
                 "want", "reserved", "completed")

    def __init__(self, who: Signer, budget: BufferBudget) -> None:
        self.who = who
        self.budget = budget
        self._head = b""
        """Bytes of a length prefix that arrived split across reads."""
        self._size = -1
        """The declared size of the frame being received (-1: reading a length prefix)."""
        self._parts: list[bytes] = []
        self._tail = bytearray()
        self._got = 0
        self._rest = b""
        self.want = 0
        """The size this link waits to reserve (0: not waiting)."""
        self.reserved = 0
        self.completed = 0
        """Frames completed so far (tells the read loop when a new frame started)."""

    @property
    def in_frame(self) -> bool:
        """Part of a frame (even of its length prefix) has arrived but not all of it."""
        return bool(self._head) or self._size >= 0

    @property
    def declared(self) -> int:
        return max(self._size, 0)

    @property
    def held(self) -> int:
        """Bytes held for the partial frame (what the budget bounds)."""
        return self._got + len(self._head) + len(self._rest)

    def feed(self, data: bytes) -> list[bytes]:
        if self._rest:
            data = self._rest + data if data else self._rest
            self._rest = b""
        frames: list[bytes] = []
        n = len(data)
        pos = 0
        while pos < n:
            size = self._size
            if size < 0:
                head = self._head
                if not head and n - pos >= 4:
                    (size,) = _LEN.unpack_from(data, pos)
                    pos += 4
                else:
                    take = min(4 - len(head), n - pos)
                    head += data[pos : pos + take]
                    pos += take
                    if len(head) < 4:
                        self._head = head
                        break
                    (size,) = _LEN.unpack(head)
                    self._head = b""
                self.budget.check(self.who, size)
                self._size = size
            got = self._got
            avail = n - pos
            if not got and avail >= size:  # whole here: no buffering, no budget
                frames.append(data[pos : pos + size])
                pos += size
                self._size = -1
                self.completed += 1
                continue
            if not self.reserved:
                if not self.budget.try_reserve(self.who, size):
                    if isinstance(self.who, str):
                        raise FrameRefused(
                            "budget-exhausted",
                            f"no budget left for a frame of {size} bytes from {self.who!r}",
                        )
                    self.want = size
                    self._rest = data[pos:]
                    return frames
                self.want = 0
                self.reserved = size
            take = min(size - got, avail)
            self._hold(data[pos : pos + take])
            pos += take
            self._got = got = got + take
            if got == size:
                frames.append(self._join())
                self._got = 0
                self._size = -1
                self.budget.release(self.who, size)
                self.reserved = 0
                self.completed += 1
        return frames

    def _hold(self, piece: bytes) -> None:
        # Large pieces are kept as they are; small ones (a peer trickling tiny records)
        # are gathered in one bytearray, so a piece costs its bytes, not an object each.
        tail = self._tail
        if len(piece) >= _TAIL_FLUSH // 4 and not tail:
            self._parts.append(piece)
            return
        tail += piece
        if len(tail) >= _TAIL_FLUSH:
            self._parts.append(bytes(tail))
            self._tail = bytearray()

    def _join(self) -> bytes:
        parts = self._parts
        if self._tail:
            parts.append(bytes(self._tail))
            self._tail = bytearray()
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        return body

    def close(self) -> None:
        """Drop the partial frame and release its reservation."""
        if self.reserved:
            self.budget.release(self.who, self.reserved)
            self.reserved = 0
        self._parts = []
        self._tail = bytearray()
        self._rest = b""
        self._head = b""


class _Inbound:
    """Bookkeeping of one inbound connection: the scope that ends it (eviction), whether
    it has sent anything yet (handshake stage) and, once authenticated, who it is."""

    __slots__ = ("fd", "scope", "spoke", "who", "admitted")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.scope = trio.CancelScope()
        self.spoke = False
        self.who: Signer | None = None
        self.admitted = False


def _mark_spoken(conns: list[_Inbound]) -> None:
    """Mark the connections whose socket has bytes (or an end) waiting: their handshake
    has begun even if their task has not run yet (one poll for all, no reads)."""
    if not conns:
        return
    poll = select.poll()
    for c in conns:
        poll.register(c.fd, select.POLLIN)
    ready = {fd for fd, _ in poll.poll(0)}
    for c in conns:
        if c.fd in ready:
            c.spoke = True


TRIM_AFTER = 1024 * 1024
"""A link that closes holding at least this much of a partial frame hands freed memory
back to the system (`_trim`)."""


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; elsewhere there is nothing to do
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_malloc_trim()


_LEN = struct.Struct(">I")
"""A frame's length prefix (as `codec.frame` writes it)."""


# Errors a connection can end with; each ends that connection only.
_LINK_ERRORS = (
    OSError,
    ssl.SSLError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


class Outbox:
    """A bounded queue of frames for one destination.

    Two ways out. With a `dirty` list (the transport's, when it is not `autoflush`), a
    frame queued while the link is up only lists the outbox there; the owner then calls
    `Transport.flush()` once it has queued everything of one step, and `flush_now` writes
    the whole queue from the owner's task when the socket takes it without waiting. Only
    what the socket did not take is left to the link's writer task. That saves the writer
    a wake-up (a Trio task switch) per write, which is most writes: one reply per client
    per batch. Without a `dirty` list (or while the link is down) every `put` wakes the
    writer, which drains the whole queue with one write (coalescing)."""

    __slots__ = ("_frames", "_bytes", "_wake", "_kick", "_listed", "_dirty", "link",
                 "max_frames", "max_bytes")

    def __init__(
        self,
        max_frames: int = PEER_QUEUE_FRAMES,
        max_bytes: int = PEER_QUEUE_BYTES,
        dirty: list[Outbox] | None = None,
    ):
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._wake = trio.Event()
        self._kick = False
        """The link holds bytes `flush_now` could not write: the writer must flush them."""
        self._listed = False
        self._dirty = dirty
        self.link: TLSLink | None = None
        """The link whose writer drains this outbox, while one is up."""
        self.max_frames = max_frames
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, framed: bytes) -> bool:
        """Queue one framed message; False (and nothing queued) when the queue is full."""
        if len(self._frames) >= self.max_frames or self._bytes + len(framed) > self.max_bytes:
            return False
        self._frames.append(framed)
        self._bytes += len(framed)
        if self._dirty is None or self.link is None:
            self._wake.set()
        elif not self._listed:
            self._listed = True
            self._dirty.append(self)
        return True

    def flush_now(self) -> None:
        """Write the queue from the caller's task if the link can take it at once; what
        it cannot (a full socket, a write in progress, an error) goes to the writer."""
        self._listed = False
        link = self.link
        if not self._frames:
            return
        if link is None or not link.idle():
            self._wake.set()
            return
        data = self._drain()
        if not link.write_now(data) or self._frames:
            self._kick = True
            self._wake.set()

    async def take(self) -> bytes:
        """Wait for at least one frame (or bytes `flush_now` left in the link), then
        return everything queued (up to MAX_WRITE; b"" if only the link has bytes)."""
        while not self._frames and not self._kick:
            self._wake = trio.Event()
            await self._wake.wait()
        self._kick = False
        return self._drain()

    def _drain(self) -> bytes:
        out: list[bytes] = []
        size = 0
        while self._frames and (not out or size + len(self._frames[0]) <= MAX_WRITE):
            b = self._frames.popleft()
            out.append(b)
            size += len(b)
        self._bytes -= size
        return out[0] if len(out) == 1 else b"".join(out)


class TLSLink:
    """One mutual-TLS connection driven by hand: an `ssl.SSLObject` over memory BIOs on
    the file descriptor of a trio socket.

    Why not `trio.SSLStream`: it yields to the scheduler two or three times per
    `send_all` and once per TLS record read (locks, conflict detectors, a retry loop),
    which on this workload costs more than the encryption. Here a read takes everything
    the socket has (RECV_SIZE), decrypts every whole record in it and returns all the
    plaintext, a write encrypts the whole coalesced batch and sends it with as few
    `send` calls as the kernel allows, and each awaits only when the socket is not ready
    (plus one checkpoint per read, so a busy link never starves the others).

    One reader and one writer task may use a link at once: the writer alone sends
    application data; bytes the reader has to send (TLS post-handshake messages) go out
    through the same ordered `_pending` buffer under `_send_lock`.
    """

    __slots__ = ("tcp", "fd", "ssl", "_in", "_out", "_pending", "_send_lock", "error", "_drained")

    def __init__(
        self,
        tcp: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self.tcp = tcp
        self.fd = tcp.socket.fileno()
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._pending = b""
        self._send_lock = trio.Lock()
        self.error: BaseException | None = None
        """What a `write_now` failed with; the writer raises it (ending the link)."""
        self._drained = False
        """The last socket read returned less than asked: the socket was empty."""

    def getpeercert(self, binary_form: bool = False):
        return self.ssl.getpeercert(binary_form)

    async def do_handshake(self) -> None:
        while True:
            try:
                self.ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise trio.BrokenResourceError("connection closed during the TLS handshake") from None
        await self._flush()

    async def receive(self) -> bytes:
        """The plaintext of every whole record that has arrived (waiting for at least
        one byte of it); b"" at the end of the stream."""
        while True:
            out = []
            ended = False
            _, _, plain, plain_view = _buffers()
            try:
                while True:
                    n = self.ssl.read(READ_SIZE, plain)
                    if not n:  # the peer's close_notify (nothing from now on)
                        ended = True
                        break
                    out.append(plain_view[:n].tobytes())
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:  # the peer's close_notify, other spelling
                ended = True
            if self._out.pending:  # a post-handshake message to answer
                await self._flush()
            data = out[0] if len(out) == 1 else b"".join(out)
            if data or ended:
                return data
            if not await self._fill():
                return b""

    async def _fill(self) -> bool:
        """Move what the socket has into the TLS layer; False at end of stream."""
        waited = False
        if self._drained:
            # The last read emptied the socket: reading again now would almost always
            # fail (a system call and an exception per message); wait for data first.
            await trio.lowlevel.wait_readable(self.fd)
            waited = True
        recv, recv_view, _, _ = _buffers()
        while True:
            try:
                n = os.readv(self.fd, recv)
                break
            except BlockingIOError:
                waited = True
                await trio.lowlevel.wait_readable(self.fd)
        if not n:
            self._in.write_eof()
            return False
        self._drained = n < RECV_SIZE
        self._in.write(recv_view[:n])  # copied into the BIO before anyone else reads
        if not waited:
            await trio.lowlevel.checkpoint()  # data was there at once: let the others run
        return True

    async def send_all(self, data: bytes) -> None:
        """Encrypt `data` and send it; awaits only while the socket is full."""
        if self.error is not None:
            raise self.error
        if data:
            self.ssl.write(data)
        await self._flush()

    def idle(self) -> bool:
        """Nothing is being written (no task holds the send side, no bytes wait)."""
        return not self._pending and not self._send_lock.locked() and self.error is None

    def write_now(self, data: bytes) -> bool:
        """Encrypt `data` and write it without awaiting (only when `idle`). False if the
        socket did not take it all: the rest waits in `_pending` for `_flush`, or, after
        an error, the error waits in `error` for the writer."""
        try:
            self.ssl.write(data)
            out = self._out.read()
            view, done = memoryview(out), 0
            while done < len(out):
                done += os.write(self.fd, view[done:])
            return True
        except BlockingIOError:
            self._pending = bytes(view[done:])
            return False
        except (OSError, ssl.SSLError) as exc:
            self.error = exc
            return False

    async def _flush(self) -> None:
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            while True:
                data = self._pending + self._out.read() if self._pending else self._out.read()
                self._pending = b""
                view, done = memoryview(data), 0
                try:
                    while done < len(data):
                        done += os.write(self.fd, view[done:])
                    return
                except BlockingIOError:
                    # The socket is full: keep the rest (in order, ahead of anything the
                    # TLS layer adds meanwhile) and wait until it takes more.
                    self._pending = bytes(view[done:])
                    await trio.lowlevel.wait_writable(self.fd)
        finally:
            lock.release()

    async def aclose(self) -> None:
        """Send close_notify if the socket takes it at once, then close the socket."""
        try:
            self.ssl.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        try:
            if not self._send_lock.locked():
                data = self._pending + self._out.read()
                if data:
                    os.write(self.fd, data)
        except OSError:
            pass
        await trio.aclose_forcefully(self.tcp)


class Transport:
    """The links of one node. `me` is a replica id (listens) or a client name (does not).

    `inbox` receives `Received(peer, body)` for every frame read on any connection.
    """

    def __init__(
        self,
        config: ClusterConfig,
        me: Signer,
        *,
        server_context: ssl.SSLContext | None,
        client_context: ssl.SSLContext,
        identify: Identify,
        inbox: Inbox | None,
        rng: random.Random | None = None,
        max_frame: int = codec.MAX_FRAME,
        autoflush: bool = True,
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.me = me
        self.server_context = server_context
        self.client_context = client_context
        self.identify = identify
        self.inbox = inbox
        self.rng = rng or random.Random()
        self.max_frame = max_frame
        self.counters: Counter[str] = Counter()
        self._dirty: list[Outbox] | None = None if autoflush else []
        """Outboxes with frames for `flush()` (None: every queued frame wakes a writer)."""
        self.outboxes: dict[int, Outbox] = {
            r.id: Outbox(dirty=self._dirty) for r in config.replicas if r.id != me
        }
        self.connected: set[int] = set()
        """Replicas our outbound link to is up right now."""
        self.client_links: dict[str, list[Outbox]] = {}
        """Client name -> outboxes of its live inbound connections (newest last)."""
        self.limits = limits or Limits()
        self.budget = BufferBudget(self.limits, max_frame)
        """Bytes of unfinished frames, over every link (inbound and outbound)."""
        self._handshaking: dict[_Inbound, None] = {}
        """Inbound connections in the TLS handshake, oldest first."""
        self.inbound: dict[Signer, list[_Inbound]] = {}
        """Authenticated inbound connections per identity, oldest first."""
        self._inbound = 0
        """Authenticated inbound connections in all."""
        self._trimmed = -inf
        self.listen_port: int | None = None
        self._trouble: dict[int, LinkTrouble] = {}
        self._nursery: trio.Nursery | None = None
        self._dialers: dict[int, tuple[trio.CancelScope, str, int]] = {}
        """Replica -> (its dialer's cancel scope, host, port): `reconfigure` moves them."""
        """Replica -> why our last link to it failed; dropped once a link outlives QUICK_CLOSE."""
        self._up_since: dict[int, float] = {}
        """Replica -> when our current outbound link to it completed its handshake."""
        self._unknown_warned: dict[tuple[str, str], float] = {}
        """(certificate subject, peer host) -> when last warned about (bounded)."""
        self.twins: dict[int, tuple[str, int, Outbox]] = {}
        """Replica -> the extra address of its twin and the outbox for it (testing only:
        pbft.node.linkfaults, `add_twin`)."""
        self.listen_at: tuple[str, int] | None = None
        """Listen here instead of this replica's configured address (a twin's second
        process, testing only)."""

    def add_twin(self, peer: int, host: str, port: int) -> None:
        """Testing only (`pbft scenario run --real` with a `twin`): replica `peer` runs as
        two processes with one identity, the second listening on host:port. Dial it too
        and send it everything sent to `peer`, as the simulator delivers every message to
        both instances. Call before `run`."""
        if peer != self.me and peer in self.outboxes:
            self.twins[peer] = (host, port, Outbox(dirty=self._dirty))

    # -- sending (synchronous: queue and return) ----------------------------------------

    def send(self, to: int, body: bytes) -> bool:
        box = self.outboxes.get(to)
        if box is None:
            self.counters["send-unknown-replica"] += 1
            return False
        framed = codec.frame(body)
        if self.twins:
            twin = self.twins.get(to)
            if twin is not None and not twin[2].put(framed):
                self.counters["dropped-queue-full"] += 1
        if not box.put(framed):
            self.counters["dropped-queue-full"] += 1
            return False
        return True

    def broadcast(self, body: bytes) -> None:
        framed = codec.frame(body)
        for box in self.outboxes.values():
            if not box.put(framed):
                self.counters["dropped-queue-full"] += 1
        for _, _, box in self.twins.values():
            if not box.put(framed):
                self.counters["dropped-queue-full"] += 1

    def send_client(self, client: str, body: bytes) -> bool:
        """Queue a frame on every live connection of `client`; dropped if none."""
        boxes = self.client_links.get(client)
        if not boxes:
            self.counters["dropped-client-not-connected"] += 1
            return False
        framed = codec.frame(body)
        ok = False
        for box in boxes:
            if box.put(framed):
                ok = True
            else:
                self.counters["dropped-queue-full"] += 1
        return ok

    def flush(self) -> None:
        """Write what was queued since the last flush (only without `autoflush`; call it
        once per batch of sends, so each destination gets one write)."""
        dirty = self._dirty
        if dirty:
            boxes = dirty[:]
            dirty.clear()
            for box in boxes:
                box.flush_now()

    def trouble(self, peer: int) -> LinkTrouble | None:
        """Why our link to replica `peer` is not working, if we know: None while a link
        to it has been up for QUICK_CLOSE, or if nothing has failed."""
        since = self._up_since.get(peer)
        if since is not None and trio.current_time() - since >= QUICK_CLOSE:
            return None
        return self._trouble.get(peer)

    def _note_failure(self, peer: int, address: str, stage: str, exc: BaseException | None,
                      linked_at: float | None) -> None:
        """Remember why a dial to `peer` failed or its link ended (see `trouble`)."""
        if stage == "connect-failed":
            kind = REFUSED if _refused(exc) else UNREACHABLE
            trouble = LinkTrouble(kind, address, _why(exc) if exc is not None else "")
        elif stage == "tls-failure":
            trouble = LinkTrouble(TLS_FAILED, address, _why(exc) if exc is not None else "")
        elif linked_at is not None and trio.current_time() - linked_at < QUICK_CLOSE:
            detail = _why(exc) if exc is not None else "end of stream"
            trouble = LinkTrouble(CLOSED_AFTER_HANDSHAKE, address, detail)
        else:
            self._trouble.pop(peer, None)  # a link that worked for a while
            return
        self._trouble[peer] = trouble

    def _warn_unknown_certificate(self, stream: TLSLink, tcp: trio.SocketStream) -> None:
        """Say once per (subject, address) and UNKNOWN_CERT_WARN_EVERY, at warning level,
        that a certificate the cluster file does not list was refused; debug otherwise."""
        subject = _subject(stream)
        try:
            host, port = tcp.socket.getpeername()[:2]
        except OSError:
            host, port = "?", 0
        now = trio.current_time()
        warned = self._unknown_warned
        key = (subject, str(host))
        last = warned.get(key)
        if last is None and len(warned) >= UNKNOWN_CERT_WARNED:
            for k in [k for k, t in warned.items() if now - t >= UNKNOWN_CERT_WARN_EVERY]:
                del warned[k]
        fresh = last is None and len(warned) < UNKNOWN_CERT_WARNED
        if fresh or (last is not None and now - last >= UNKNOWN_CERT_WARN_EVERY):
            warned[key] = now
            if _is_replica_subject(subject):
                # The documented way to grow the group starts the new replicas before the
                # change is applied: expected, so said at info level the first time; a
                # replica still refused a period later is worth a warning.
                say = log.info if fresh else log.warning
                say(
                    "closed an inbound connection from %s:%s: its certificate (subject %s) is "
                    "signed by the cluster CA but its key is not in this replica's configuration "
                    "(a replica of a configuration change not yet applied is admitted once the "
                    "change takes effect; if no change is pending, its cluster file and this "
                    "replica's disagree); further connections from it are logged at debug level",
                    host, port, subject,
                )
            else:
                log.warning(
                    "closed an inbound connection from %s:%s: its certificate (subject %s) is "
                    "signed by the cluster CA but its key is not in this replica's cluster file "
                    "(a client added since the replica started is admitted once it restarts, "
                    "or, added by `pbft admin`, once the change takes effect); further "
                    "connections from it are logged at debug level",
                    host, port, subject,
                )
        else:
            log.debug("inbound connection from %s:%s with the unknown certificate %s closed",
                      host, port, subject)

    # -- running ------------------------------------------------------------------------

    async def bind(self) -> list[trio.SocketListener]:
        """Open this replica's listening socket. Call it outside any nursery so a bind
        failure (e.g. EADDRINUSE) arrives as a plain OSError."""
        me = self.config.replicas[self.me]
        host, port = self.listen_at or (me.host, me.port)
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.listen_port = listeners[0].socket.getsockname()[1]
        return listeners

    async def run(
        self,
        listeners: list[trio.SocketListener] | None = None,
        *,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve `listeners` (replicas; None for clients) and dial every other replica.
        `started()` once the listeners accept connections."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if listeners:
                await nursery.start(trio.serve_listeners, self._serve_inbound, listeners)
            for r in self.config.replicas:
                if r.id != self.me:
                    self._start_dialer(r.id, r.host, r.port)
            for peer, (host, port, box) in self.twins.items():
                nursery.start_soon(self._dial_forever, peer, host, port, box)
            task_status.started()

    def _start_dialer(self, peer: int, host: str, port: int) -> None:
        scope = trio.CancelScope()
        self._dialers[peer] = (scope, host, port)

        async def dial() -> None:
            with scope:
                await self._dial_forever(peer, host, port)

        assert self._nursery is not None
        self._nursery.start_soon(dial)

    def reconfigure(self, config: ClusterConfig) -> None:
        """A new configuration epoch (pbft.protocol.epochs): links to replicas that joined
        or moved, none to those that left, without a restart."""
        self.config = config
        wanted = {r.id: (r.host, r.port) for r in config.replicas if r.id != self.me}
        for peer, (scope, host, port) in list(self._dialers.items()):
            if wanted.get(peer) != (host, port):
                scope.cancel()
                del self._dialers[peer]
                self.connected.discard(peer)
                if peer not in wanted:
                    self.outboxes.pop(peer, None)
        for peer in [p for p in self.outboxes if p not in wanted]:
            # Not dialled yet (a restart adopting a later epoch before it runs): no dialer
            # to cancel, but its outbox would fill with broadcasts nobody takes.
            self.connected.discard(peer)
            del self.outboxes[peer]
        for peer, (host, port) in wanted.items():
            if peer not in self._dialers:
                if peer not in self.outboxes:
                    self.outboxes[peer] = Outbox(dirty=self._dirty)
                if self._nursery is not None:
                    self._start_dialer(peer, host, port)

    async def _dial_forever(self, peer: int, host: str, port: int, box: Outbox | None = None) -> None:
        backoff = BACKOFF_MIN
        twin = box is not None
        if box is None:
            box = self.outboxes[peer]
        address = f"{host}:{port}"
        while True:
            stream: TLSLink | None = None
            stage = "connect-failed"
            linked_at: float | None = None
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    tcp = await trio.open_tcp_stream(host, port)
                    stream = TLSLink(tcp, self.client_context, server_side=False, server_hostname=host)
                    stage = "tls-failure"
                    await stream.do_handshake()
                stage = "link-error"
                linked_at = trio.current_time()
                who = self.identify(stream)
                if who != peer:
                    self.counters["wrong-peer-certificate"] += 1
                    log.warning("replica %s at %s:%d presented the identity %r", peer, host, port, who)
                else:
                    backoff = BACKOFF_MIN
                    if not twin:
                        self.connected.add(peer)
                        self._up_since[peer] = linked_at
                    log.debug("connected to replica %s%s", peer, " (its twin)" if twin else "")
                    ended = await self._run_link(stream, who, box)
                    if not twin:
                        self._note_failure(peer, address, stage, ended, linked_at)
            except _LINK_ERRORS as exc:
                self.counters[stage] += 1
                if not twin:
                    self._note_failure(peer, address, stage, exc, linked_at)
                log.debug("link to replica %s: %s", peer, _why(exc))
            except Exception:
                # Our bug, not the peer's: log it loudly, but keep the other links up.
                self.counters["internal-error"] += 1
                log.exception("link to replica %s failed unexpectedly", peer)
            finally:
                if not twin:
                    self.connected.discard(peer)
                    self._up_since.pop(peer, None)
                if stream is not None:
                    await _close(stream)
            delay = backoff * (0.5 + self.rng.random() / 2)
            backoff = min(backoff * 2, BACKOFF_MAX)
            await trio.sleep(delay)

    async def _serve_inbound(self, tcp: trio.SocketStream) -> None:
        lim = self.limits
        conn = _Inbound(tcp.socket.fileno())
        if len(self._handshaking) >= lim.max_unauthenticated:
            self._evict_handshaking()
        self._handshaking[conn] = None
        assert self.server_context is not None
        stream = TLSLink(tcp, self.server_context, server_side=True)
        try:
            with conn.scope:
                conn.scope.deadline = trio.current_time() + lim.handshake_timeout
                try:
                    await trio.lowlevel.wait_readable(stream.fd)
                    conn.spoke = True
                    await stream.do_handshake()
                except _LINK_ERRORS as exc:
                    self.counters["tls-failure"] += 1
                    log.debug("inbound TLS handshake failed: %s", _why(exc))
                    return
            self._handshaking.pop(conn, None)
            if conn.scope.cancelled_caught:  # evicted (counted there) or too slow
                if conn.scope.deadline <= trio.current_time():
                    self.counters["handshake-timeout"] += 1
                return
            who = self.identify(stream)
            if who is None or who == self.me:
                self.counters["unknown-peer"] += 1
                if who is None:
                    self._warn_unknown_certificate(stream, tcp)
                else:
                    log.debug("inbound connection presenting this replica's own certificate closed")
                return
            conn.who = who
            conn.scope = trio.CancelScope()
            self._admit(conn)
            with conn.scope:
                await self._serve_link(stream, who)
        except _LINK_ERRORS as exc:
            self.counters["link-error"] += 1
            log.debug("inbound link from a peer ended: %s", _why(exc))
        except Exception:
            # Our bug, not the peer's: log it loudly, but one connection never takes
            # the listener (and every other connection) down with it.
            self.counters["internal-error"] += 1
            log.exception("inbound connection failed unexpectedly")
        finally:
            self._handshaking.pop(conn, None)
            self._drop(conn)
            await _close(stream)

    async def _serve_link(self, stream: TLSLink, who: Signer) -> None:
        if isinstance(who, str):
            box = Outbox(dirty=self._dirty)
            links = self.client_links.setdefault(who, [])
            links.append(box)
            try:
                await self._run_link(stream, who, box)
            finally:
                links.remove(box)
                if not links:
                    del self.client_links[who]
        else:
            await self._run_link(stream, who, None)

    def _evict_handshaking(self) -> None:
        """Make room for a new connection in the handshake stage by closing the oldest
        that has sent nothing yet, else the oldest. Closing old ones rather than refusing
        new ones means a storm of connections that never finish (or never start) a
        handshake cannot keep a real peer out: its connection is accepted in turn and
        has its handshake to finish before max_unauthenticated newer ones arrive, and
        silent ones go first."""
        _mark_spoken([c for c in self._handshaking if not c.spoke])
        victim = next((c for c in self._handshaking if not c.spoke), None)
        if victim is None:
            victim = next(iter(self._handshaking))
        del self._handshaking[victim]
        victim.scope.cancel()
        self.counters["handshake-evicted"] += 1

    def _admit(self, conn: _Inbound) -> None:
        """Count an authenticated connection against its identity's limit and the total,
        closing old connections to make room (never refusing the new one). The oldest
        connection of the same identity goes first: only the key's holder can open
        connections as that identity, so it can only push out its own, and a client
        that reconnects after a network fault is not locked out by its own stale links
        (which TCP may never notice are dead). When the total is reached, the oldest
        connection of the client holding the most goes."""
        lim = self.limits
        who = conn.who
        assert who is not None
        cap = lim.max_client_links if isinstance(who, str) else lim.max_replica_links
        links = self.inbound.setdefault(who, [])
        while len(links) >= max(cap, 1):
            self._evict(links[0], "identity-link-limit")
        if self._inbound >= lim.max_inbound:
            clients = [v for k, v in self.inbound.items() if isinstance(k, str) and v]
            if clients:
                self._evict(max(clients, key=len)[0], "inbound-limit")
        links = self.inbound.setdefault(who, [])
        links.append(conn)
        conn.admitted = True
        self._inbound += 1

    def _evict(self, conn: _Inbound, reason: str) -> None:
        self.counters[reason] += 1
        log.info("closing an inbound connection from %r: %s", conn.who, reason)
        self._drop(conn)
        conn.scope.cancel()

    def _drop(self, conn: _Inbound) -> None:
        if not conn.admitted:
            return
        conn.admitted = False
        self._inbound -= 1
        links = self.inbound[conn.who]
        links.remove(conn)
        if not links:
            del self.inbound[conn.who]

    async def _run_link(self, stream: TLSLink, who: Signer, box: Outbox | None) -> BaseException | None:
        """Read frames (and write `box`, if any) until either direction fails. Each loop
        catches its own link errors, so nothing escapes this nursery as a group. Returns
        the error the read side ended with (None: the peer closed the stream)."""
        ended: BaseException | None = None
        async with trio.open_nursery() as nursery:
            if box is not None:
                nursery.start_soon(self._write_loop, stream, box, nursery.cancel_scope)
            try:
                await self._read_loop(stream, who)
            except _LINK_ERRORS as exc:
                self.counters["read-failed"] += 1
                log.debug("link with %r ended: %s", who, _why(exc))
                ended = exc
            nursery.cancel_scope.cancel()
        return ended

    async def _write_loop(self, stream: TLSLink, box: Outbox, scope: trio.CancelScope):
        box.link = stream
        try:
            while True:
                data = await box.take()
                await stream.send_all(data)
        except _LINK_ERRORS as exc:
            self.counters["write-failed"] += 1
            log.debug("write failed: %s", _why(exc))
            scope.cancel()
        finally:
            box.link = None

    async def _read_loop(self, stream: TLSLink, who: Signer) -> None:
        """Deliver frames until the peer closes. A frame started but not finished gets
        `read_timeout` plus its size at `min_read_rate` (time spent waiting for room in
        the inbox does not count); an idle link (no frame in flight) may stay forever."""
        lim = self.limits
        frames = FrameAssembler(who, self.budget)
        chunk = b""
        started = inf  # when the frame in flight began (inf: none in flight)
        seen = 0
        try:
            while True:
                try:
                    bodies = frames.feed(chunk)
                except FrameRefused as exc:
                    self.counters[exc.reason] += 1
                    log.info("closing the connection from %r: %s", who, exc)
                    return
                if bodies:
                    inbox = self.inbox
                    blocked = 0.0
                    for body in bodies:
                        # One wake-up per read, not per frame: queue without yielding
                        # while the inbox has room; wait (backpressure) when it is full.
                        try:
                            inbox.send_nowait(Received(who, body))
                        except trio.WouldBlock:
                            t = trio.current_time()
                            await inbox.send(Received(who, body))
                            blocked += trio.current_time() - t
                    started += blocked
                if not frames.in_frame:
                    started = inf
                elif started == inf or frames.completed != seen:
                    started = trio.current_time()
                    seen = frames.completed
                if started == inf:
                    # No frame in flight (so none waits for budget either): nothing to
                    # time out. Most reads, as a read usually ends on a frame's end; the
                    # cancel scope they skip was a tenth of a client process's CPU.
                    chunk = await stream.receive()
                else:
                    deadline = started + lim.read_timeout + frames.declared / lim.min_read_rate
                    with trio.CancelScope(deadline=deadline) as scope:
                        if frames.want:
                            await self.budget.freed()
                            chunk = b""
                            continue
                        chunk = await stream.receive()
                    if scope.cancelled_caught:
                        reason = "budget-timeout" if frames.want else "read-timeout"
                        self.counters[reason] += 1
                        log.info("closing the connection from %r: %s (a frame of %d bytes)",
                                 who, reason, frames.declared)
                        return
                if not chunk:
                    if frames.in_frame:
                        self.counters["truncated-frame"] += 1
                    return
        finally:
            held = frames.held
            frames.close()
            if held >= TRIM_AFTER:
                self._trim()

    def _trim(self) -> None:
        """Give the pages of freed partial frames back to the system. A partial frame is
        held as many pieces of up to a read each; once freed, the C allocator keeps such
        pieces in its heap for reuse, so a storm of unfinished frames would leave the
        process that much larger for good. Once the storm is over (nothing is buffered
        any more), or at most once a second meanwhile, `malloc_trim` returns them."""
        now = trio.current_time()
        if _malloc_trim is None or (self.budget.used and now - self._trimmed < 1.0):
            return
        self._trimmed = now
        _malloc_trim(0)


async def _close(stream: TLSLink) -> None:
    with trio.CancelScope(shield=True):
        await stream.aclose()


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}"


def _refused(exc: BaseException | None) -> bool:
    """Whether a failed connect was refused (trio wraps each attempt's error in a group)."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    cause = exc.__cause__ if exc is not None else None
    if isinstance(cause, BaseExceptionGroup):
        return cause.subgroup(ConnectionRefusedError) is not None
    return isinstance(cause, ConnectionRefusedError)


def _is_replica_subject(subject: str) -> bool:
    """The subject names a replica: `CN=replica-4,...`, as `pbft keygen` and `pbft admin`
    issue them (only the cluster CA's holder can issue one; it is for logs only)."""
    cn = next((part[3:] for part in subject.split(",") if part.startswith("CN=")), "")
    return cn.startswith("replica-")


def _subject(stream: TLSLink) -> str:
    """The subject of the peer's certificate (`CN=...,O=...`), for logs."""
    from cryptography import x509

    der = stream.getpeercert(binary_form=True)
    if not der:
        return "(none)"
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return "(unreadable)"


def is_address_in_use(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE or "address already in use" in str(exc).lower()
