"""Protocol messages: one frozen slotted dataclass each, one closed union.

Theory of operation. On the wire every message travels inside a signed envelope:

    envelope = [body: bstr, signer: uint | tstr, signature: bstr (, batch: [* bstr])]
    body     = canonical CBOR of [type: uint, field, field, ...]

The signature covers `b"pbft/v1" || cluster id || body` (see crypto.py), and the signer is
the envelope's, never a field inside the message (docs/attacks.md `vote-stuffing`). Keeping
the body as an opaque byte string inside the envelope means a receiver verifies and hashes
exactly the bytes it received, and never re-encodes anything.

Replicas are signers by integer id, clients by name. A REPLY, and a HELD (a replica's
answer to a request older than the one it executed last for that client), are the messages
that are not signed: they are authenticated by the TLS channel they arrive on (README,
"Deploying on several hosts": mutual TLS), so their envelope carries an empty signature and the receiver takes the signer
from the channel.

A PRE-PREPARE is the one message with a fourth envelope item: its batch, the signed
request envelopes it orders, rides beside the signed body [type, v, n, d] and is bound to
it by the digest d, as in OSDI'99 4.2 (`<<PRE-PREPARE, v, n, d>, m>`: the primary signs
the digest, the requests are piggybacked). So a pre-prepare can be carried without its
batch (`detached`): prepared certificates in a VIEW-CHANGE and the re-issued
pre-prepares of a NEW-VIEW are, which keeps both small whatever the requests weigh
(4.4; their size once grew with the batches until they passed the frame limit and a view
change could never end). A replica that lacks a batch fetches it (FETCH-BATCH, BATCH).

`from_body` checks the schema completely (types, integer ranges, digest lengths, size
limits) and raises `SchemaError` for anything a peer could get wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from operator import attrgetter

from . import codec

DIGEST_LEN = 32
MAX_U64 = (1 << 64) - 1
MAX_OPERATION = 64 * 1024
"""Largest operation a client may submit, in bytes (`client-abuse`)."""
MAX_RESULT = 1024 * 1024
MAX_BATCH = 4096
"""Absolute cap on requests in one pre-prepare; the cluster's batch_max is smaller."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Most bytes of request envelopes one batch may hold: a PRE-PREPARE (and a BATCH) stays
well inside the frame limit (codec.MAX_FRAME) whatever batch_max and the operations'
sizes are. The primary cuts batches there (batching.py); a backup refuses a larger one."""
MAX_CERTS = 4096
CLIENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")  # \Z: "$" would allow a trailing newline

Signer = int | str


class SchemaError(codec.CodecError):
    """Well-formed CBOR that is not a valid message."""


class MsgType(IntEnum):
    REQUEST = 1
    PRE_PREPARE = 2
    PREPARE = 3
    COMMIT = 4
    REPLY = 5
    CHECKPOINT = 6
    VIEW_CHANGE = 7
    NEW_VIEW = 8
    FETCH_STATE = 9
    STATE_CHUNK = 10
    STATUS = 11
    QUERY_STATUS = 12
    HELD = 13
    STABLE_PROOF = 14
    FETCH_BATCH = 15
    BATCH = 16
    EPOCHS = 17


@dataclass(frozen=True, slots=True)
class Request:
    """<REQUEST, o, t, c> signed by client c (OSDI'99 section 4.1)."""

    operation: bytes
    timestamp: int
    client: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class PrePrepare:
    """<PRE-PREPARE, v, n, d> with the batch it orders (section 4.2).

    `batch` holds the signed request envelopes exactly as the clients sent them; the
    digest d is `crypto.batch_digest(batch)`. An empty batch is the null request that a
    NEW-VIEW puts in a gap (section 4.4). The signature covers (v, n, d) only; the batch
    travels beside it in the envelope, and is None when the pre-prepare came without it
    (a certificate, a NEW-VIEW's re-issued pre-prepares: `detached`).
    """

    view: int
    seq: int
    digest: bytes
    batch: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class Prepare:
    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """<REPLY, v, t, c, i, r>; unsigned, authenticated by the channel (docs/formats.md "The wire")."""

    view: int
    timestamp: int
    client: str
    replica: int
    result: bytes


@dataclass(frozen=True, slots=True)
class Held:
    """<HELD, v, t, c, i, h>: replica i refuses client c's request t because the last
    request of c it executed has the larger timestamp h (section 4.1: an older request is
    never executed). Unsigned like a REPLY; a client trusts h only when f+1 replicas
    report the same (pbft/protocol/client.py)."""

    view: int
    timestamp: int
    client: str
    replica: int
    held: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """<CHECKPOINT, n, d>: the state digest after executing seq n (section 4.3)."""

    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class ViewChange:
    """<VIEW-CHANGE, v+1, n, C, P> (section 4.4).

    `checkpoint_proof` is the 2f+1 signed CHECKPOINT envelopes for stable seq n (empty
    when n = 0); `prepared` holds one certificate per prepared slot above n: the signed
    PRE-PREPARE envelope followed by 2f signed matching PREPARE envelopes.
    """

    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[bytes, ...]
    prepared: tuple[tuple[bytes, ...], ...]


@dataclass(frozen=True, slots=True)
class NewView:
    """<NEW-VIEW, v+1, V, O> (section 4.4): the view-changes and re-issued pre-prepares."""

    view: int
    view_changes: tuple[bytes, ...]
    pre_prepares: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class FetchState:
    """Ask a replica for node (`level`, `index`) of the partition tree of its state at
    checkpoint `seq` (TOCS 2002 5.3.2): the children's digests of an internal node, or
    page `part` of a leaf's entries (level 0)."""

    seq: int
    digest: bytes
    level: int
    index: int
    part: int


@dataclass(frozen=True, slots=True)
class StateChunk:
    """The answer to a FETCH-STATE: for an internal node its FANOUT children's digests,
    concatenated; for a leaf page `part` of `parts`, its entries in key order as canonical
    CBOR [[key, value], ...] (statetransfer.encode_page)."""

    seq: int
    digest: bytes
    level: int
    index: int
    part: int
    parts: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Status:
    """A replica's progress, for retransmission and `pbft status`. `behaviour` names the
    Byzantine behaviour the replica runs (an attack test), said in its answers to clients
    so that `pbft status` shows a flag left in a unit file; it is encoded only when not
    empty, so every other STATUS keeps its four fields and its bytes."""

    view: int
    last_executed: int
    stable_seq: int
    log_size: int
    behaviour: str = ""


@dataclass(frozen=True, slots=True)
class StableProof:
    """The 2f+1 signed CHECKPOINTs that make checkpoint `seq` stable, as one unit: what a
    replica sends a peer whose STATUS shows it behind (section 4.3; TOCS 2002 5.3). Sent
    one CHECKPOINT at a time, a laggard judged each alone, and a Byzantine peer's other
    claims could push a genuine one out (issue 13, item 5)."""

    seq: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class QueryStatus:
    """A client asks a replica for its `Status` (signed by the client, `pbft status`)."""

    nonce: int


@dataclass(frozen=True, slots=True)
class FetchBatch:
    """Ask the other replicas for the batch with digest `digest` that slot `seq` orders: a
    NEW-VIEW re-issued the slot by digest (OSDI'99 4.4) and this replica never had the
    requests (it missed the original PRE-PREPARE)."""

    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Epochs:
    """The configuration epochs a replica knows after the sender's (pbft.protocol.epochs),
    for a peer whose STATUS was signed under an older one: each entry the canonical CBOR
    [epoch, after, command], `command` the operator's signed request. The commands
    authenticate themselves (the operator's signature); the rest is only a hint."""

    entries: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """The answer to a FETCH-BATCH: the request envelopes whose batch digest is `digest`.
    The digest, which 2f+1 replicas signed, is what makes the answer trustworthy, whoever
    sends it."""

    seq: int
    digest: bytes
    requests: tuple[bytes, ...]


Message = (
    Request
    | PrePrepare
    | Prepare
    | Commit
    | Reply
    | Checkpoint
    | ViewChange
    | NewView
    | FetchState
    | StateChunk
    | Status
    | QueryStatus
    | Held
    | StableProof
    | FetchBatch
    | Batch
    | Epochs
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message body with who signed it. `body` is the canonical bytes that were signed;
    `attachment` is a PRE-PREPARE's batch, outside the signature and bound to it by the
    digest the body holds (None: no fourth item)."""

    body: bytes
    signer: Signer
    signature: bytes
    attachment: tuple[bytes, ...] | None = None

    def to_bytes(self) -> bytes:
        if self.attachment is None:
            return codec.encode([self.body, self.signer, self.signature])
        return codec.encode([self.body, self.signer, self.signature, list(self.attachment)])

    def detached(self) -> Envelope:
        """The same signed message without its attachment."""
        return Envelope(self.body, self.signer, self.signature)


# -- field kinds and schema ---------------------------------------------------------------


def _u64(v: object) -> int:
    if type(v) is not int or v < 0 or v > MAX_U64:
        raise SchemaError("expected an unsigned 64-bit integer")
    return v


def _digest(v: object) -> bytes:
    if type(v) is not bytes or len(v) != DIGEST_LEN:
        raise SchemaError("expected a 32-byte digest")
    return v


def _bytes(limit: int):
    def check(v: object) -> bytes:
        if type(v) is not bytes or len(v) > limit:
            raise SchemaError(f"expected a byte string of at most {limit} bytes")
        return v

    return check


def _client(v: object) -> str:
    if type(v) is not str or not CLIENT_NAME.match(v):
        raise SchemaError("expected a client name")
    return v


def _behaviour(v: object) -> str:
    if type(v) is not str or not 0 < len(v) <= 200 or not v.isprintable():
        raise SchemaError("expected a behaviour name")
    return v


def _bool(v: object) -> bool:
    if type(v) is not bool:
        raise SchemaError("expected a boolean")
    return v


def _list_of(item, limit: int):
    def check(v: object) -> tuple:
        if type(v) is not list or len(v) > limit:
            raise SchemaError(f"expected a list of at most {limit} items")
        return tuple(item(x) for x in v)

    return check


_ENV = _bytes(codec.MAX_FRAME)

_SCHEMA: dict[MsgType, tuple[type, tuple]] = {
    MsgType.REQUEST: (Request, (_bytes(MAX_OPERATION), _u64, _client, _bool)),
    MsgType.PRE_PREPARE: (PrePrepare, (_u64, _u64, _digest)),  # the batch: the envelope's
    MsgType.PREPARE: (Prepare, (_u64, _u64, _digest)),
    MsgType.COMMIT: (Commit, (_u64, _u64, _digest)),
    MsgType.REPLY: (Reply, (_u64, _u64, _client, _u64, _bytes(MAX_RESULT))),
    MsgType.CHECKPOINT: (Checkpoint, (_u64, _digest)),
    MsgType.VIEW_CHANGE: (
        ViewChange,
        (_u64, _u64, _list_of(_ENV, MAX_CERTS), _list_of(_list_of(_ENV, MAX_CERTS), MAX_CERTS)),
    ),
    MsgType.NEW_VIEW: (NewView, (_u64, _list_of(_ENV, MAX_CERTS), _list_of(_ENV, MAX_CERTS))),
    MsgType.FETCH_STATE: (FetchState, (_u64, _digest, _u64, _u64, _u64)),
    MsgType.STATE_CHUNK: (StateChunk, (_u64, _digest, _u64, _u64, _u64, _u64, _bytes(codec.MAX_FRAME))),
    MsgType.STATUS: (Status, (_u64, _u64, _u64, _u64, _behaviour)),
    MsgType.QUERY_STATUS: (QueryStatus, (_u64,)),
    MsgType.HELD: (Held, (_u64, _u64, _client, _u64, _u64)),
    MsgType.STABLE_PROOF: (StableProof, (_u64, _list_of(_ENV, MAX_CERTS))),
    MsgType.FETCH_BATCH: (FetchBatch, (_u64, _digest)),
    MsgType.BATCH: (Batch, (_u64, _digest, _list_of(_ENV, MAX_BATCH))),
    MsgType.EPOCHS: (Epochs, (_list_of(_ENV, MAX_CERTS),)),
}
_BATCH_ITEMS = _list_of(_ENV, MAX_BATCH)
_TYPE_OF: dict[type, MsgType] = {cls: t for t, (cls, _) in _SCHEMA.items()}
_BY_NUMBER: dict[int, tuple[type, tuple]] = {int(t): entry for t, entry in _SCHEMA.items()}


def _field_getter(cls: type):
    names = cls.__slots__  # type: ignore[attr-defined]
    if len(names) == 1:
        (name,) = names
        return lambda msg: (getattr(msg, name),)
    return attrgetter(*names)


# Per class: its type number as a plain int (the encoder's fast path) and a getter of
# its fields in order.
_ENCODING: dict[type, tuple[int, object]] = {
    cls: (int(t), _field_getter(cls)) for t, (cls, _) in _SCHEMA.items()
}
_ENCODING[PrePrepare] = (int(MsgType.PRE_PREPARE), attrgetter("view", "seq", "digest"))


def type_of(msg: Message) -> MsgType:
    return _TYPE_OF[type(msg)]


_OPTIONAL_LAST = frozenset({Status})
"""Messages whose last field is left out when empty (and may be missing when decoded)."""


def to_body(msg: Message) -> bytes:
    """The canonical bytes of `msg`: what is signed, hashed and sent."""
    number, fields = _ENCODING[type(msg)]
    values = fields(msg)  # type: ignore[operator]
    if type(msg) in _OPTIONAL_LAST and not values[-1]:
        values = values[:-1]
    return codec.encode([number, *values])


def from_body(body: bytes) -> Message:
    """Strictly decode and validate a message body; raise CodecError/SchemaError."""
    value = codec.decode(body)
    if type(value) is not list or not value or type(value[0]) is not int:
        raise SchemaError("a message is an array starting with its type")
    entry = _BY_NUMBER.get(value[0])
    if entry is None:
        raise SchemaError(f"unknown message type {value[0]}")
    cls, fields = entry
    if cls in _OPTIONAL_LAST and len(value) == len(fields):
        fields = fields[:-1]  # the optional last field left out: its default
    if len(value) != len(fields) + 1:
        raise SchemaError(f"{cls.__name__} has {len(fields)} fields, got {len(value) - 1}")
    return cls(*[check(v) for check, v in zip(fields, value[1:], strict=True)])


def envelope_from_bytes(data: bytes) -> Envelope:
    """Strictly decode a signed envelope (the signature is not checked here)."""
    value = codec.decode(data)
    if type(value) is not list or not 3 <= len(value) <= 4:
        raise SchemaError("an envelope is [body, signer, signature] or a pre-prepare's [body, signer, signature, batch]")
    body, signer, signature = value[:3]
    if type(body) is not bytes or type(signature) is not bytes or len(signature) > 64:
        raise SchemaError("malformed envelope")
    if type(signer) is int:
        _u64(signer)
    else:
        _client(signer)
    if len(value) == 4:
        return Envelope(body, signer, signature, _BATCH_ITEMS(value[3]))
    return Envelope(body, signer, signature)


def message_of(env: Envelope) -> Message:
    """The message an envelope carries, a PRE-PREPARE with the batch attached to it."""
    msg = from_body(env.body)
    if env.attachment is not None:
        if type(msg) is not PrePrepare:
            raise SchemaError("only a pre-prepare carries a batch beside its body")
        return PrePrepare(msg.view, msg.seq, msg.digest, env.attachment)
    return msg


def decode_envelope(data: bytes) -> tuple[Envelope, Message]:
    """Strictly decode a signed envelope and the message it carries (the signature is not
    checked here); CodecError if either is malformed."""
    memo = _memo
    if memo is not None:
        return memo.decode(data)
    env = envelope_from_bytes(data)
    return env, message_of(env)


class DecodeMemo:
    """Decoded envelopes by their exact bytes, for many cores in one process (the
    simulator: a broadcast reaches every replica as the same bytes, and the oracle reads
    it too). Decoding is a pure function of the bytes and what it returns is immutable
    all the way down (frozen dataclasses of ints, strings, bytes and tuples), so a core
    handed the memoised objects behaves exactly as one that decoded them itself; a
    refusal is kept as its exception's class and arguments and raised afresh. Bounded in
    entries and in the bytes of the frames it holds (oldest first out)."""

    __slots__ = ("_entries", "_bytes", "max_entries", "max_bytes")

    def __init__(self, max_entries: int = 16384, max_bytes: int = 64 << 20) -> None:
        self._entries: dict[bytes, tuple[Envelope, Message] | codec.CodecError] = {}
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def decode(self, data: bytes) -> tuple[Envelope, Message]:
        if type(data) is not bytes:  # a bytearray or a view: not a key (and mutable)
            env = envelope_from_bytes(data)
            return env, message_of(env)
        hit = self._entries.get(data)
        if hit is None:
            try:
                env = envelope_from_bytes(data)
                hit = (env, message_of(env))
            except codec.CodecError as exc:
                hit = exc
            self._keep(data, hit)
        if type(hit) is tuple:
            return hit
        raise type(hit)(*hit.args)  # type: ignore[union-attr]

    def _keep(self, data: bytes, value: tuple[Envelope, Message] | codec.CodecError) -> None:
        if len(data) > self.max_bytes:
            return
        entries = self._entries
        while entries and (len(entries) >= self.max_entries or self._bytes + len(data) > self.max_bytes):
            oldest = next(iter(entries))
            del entries[oldest]
            self._bytes -= len(oldest)
        entries[data] = value
        self._bytes += len(data)


_memo: DecodeMemo | None = None
"""The memo `decode_envelope` uses while one is installed (`memoised_decoding`); None, the
default, decodes every time (a replica process: it sees each frame once)."""


class memoised_decoding:  # noqa: N801 - used as a context manager, like a function
    """`with memoised_decoding(): ...` installs a fresh DecodeMemo for the block and puts
    back whatever was installed before (a run inside a run keeps its own)."""

    def __init__(self, memo: DecodeMemo | None = None) -> None:
        self.memo = memo if memo is not None else DecodeMemo()
        self._before: DecodeMemo | None = None

    def __enter__(self) -> DecodeMemo:
        global _memo
        self._before, _memo = _memo, self.memo
        return self.memo

    def __exit__(self, *exc: object) -> None:
        global _memo
        _memo = self._before


def detached(data: bytes) -> bytes:
    """A pre-prepare envelope's bytes without its batch (the same signed message)."""
    return envelope_from_bytes(data).detached().to_bytes()


def attached(data: bytes, batch: tuple[bytes, ...]) -> bytes:
    """A pre-prepare envelope's bytes with `batch` beside its body (the caller has
    checked that the batch's digest is the one signed)."""
    env = envelope_from_bytes(data)
    return Envelope(env.body, env.signer, env.signature, batch).to_bytes()


def open_envelope(data: bytes) -> tuple[Envelope, Message] | None:
    """`decode_envelope`, or None if the bytes are not well formed."""
    try:
        return decode_envelope(data)
    except codec.CodecError:
        return None


def render(msg: Message) -> str:
    """One short human-readable line per message, for logs and traces (docs/architecture.md "Conventions in the code")."""
    match msg:
        case Request(op, ts, client, ro):
            return f"REQUEST c={client} t={ts} op={len(op)}B{' ro' if ro else ''}"
        case PrePrepare(v, n, d, batch):
            size = "detached" if batch is None else len(batch)
            return f"PRE-PREPARE v={v} n={n} d={d.hex()[:8]} batch={size}"
        case Prepare(v, n, d):
            return f"PREPARE v={v} n={n} d={d.hex()[:8]}"
        case Commit(v, n, d):
            return f"COMMIT v={v} n={n} d={d.hex()[:8]}"
        case Reply(v, ts, client, r, result):
            return f"REPLY v={v} t={ts} c={client} r={r} result={len(result)}B"
        case Checkpoint(n, d):
            return f"CHECKPOINT n={n} d={d.hex()[:8]}"
        case ViewChange(v, n, proof, prepared):
            return f"VIEW-CHANGE v={v} n={n} proof={len(proof)} P={len(prepared)}"
        case NewView(v, vcs, pps):
            return f"NEW-VIEW v={v} V={len(vcs)} O={len(pps)}"
        case FetchState(n, d, level, i, part):
            return f"FETCH-STATE n={n} d={d.hex()[:8]} node={level}/{i} part={part}"
        case StateChunk(n, d, level, i, part, parts, data):
            return f"STATE-CHUNK n={n} d={d.hex()[:8]} node={level}/{i} {part + 1}/{parts} {len(data)}B"
        case Status(v, last, stable, size, _):
            return f"STATUS v={v} last={last} stable={stable} log={size}"
        case QueryStatus(nonce):
            return f"QUERY-STATUS nonce={nonce}"
        case Held(v, ts, client, r, held):
            return f"HELD v={v} t={ts} c={client} r={r} held={held}"
        case StableProof(n, proof):
            return f"STABLE-PROOF n={n} proof={len(proof)}"
        case FetchBatch(n, d):
            return f"FETCH-BATCH n={n} d={d.hex()[:8]}"
        case Batch(n, d, requests):
            return f"BATCH n={n} d={d.hex()[:8]} requests={len(requests)}"
        case Epochs(entries):
            return f"EPOCHS entries={len(entries)}"
    return repr(msg)


# -- an envelope's type without decoding it (for per-frame counters) ----------------------


def envelope_fields(data: bytes, count: int) -> list[int] | None:
    """The first `count` unsigned integers of the message in envelope `data` (its type,
    then its first fields), read from the CBOR heads without decoding the rest; None if
    the bytes do not have that shape. Nothing is checked: a count, not a verdict."""
    try:
        major, n, pos = codec.read_head(data, 0)
        if major != 4 or not 3 <= n <= 4:  # [body, signer, signature (, batch)]
            return None
        major, _, pos = codec.read_head(data, pos)  # the body: a byte string
        if major != 2:
            return None
        major, n, pos = codec.read_head(data, pos)  # the message: an array [type, ...]
        if major != 4 or n < count:
            return None
        out = []
        for _ in range(count):
            major, value, pos = codec.read_head(data, pos)
            if major != 0:
                return None
            out.append(value)
        return out
    except (IndexError, ValueError):
        return None


def envelope_type(data: bytes) -> int:
    """The message type number of a signed envelope's bytes (-1 if unreadable): the
    fast path of `envelope_fields(data, 1)` for the shapes every valid envelope has (the
    envelope's 3-array head, the body's byte-string head, the body's array head and a
    one-byte type), read from fixed offsets."""
    try:
        if data[0] != 0x83 and data[0] != 0x84:  # 3 items, or a pre-prepare's 4
            return -1
        b = data[1]
        if b >> 5 != 2:
            return -1
        info = b & 0x1F
        pos = 2 if info < 24 else 2 + (1 << (info - 24)) if info < 28 else -1
        if pos < 0 or not 0x81 <= data[pos] <= 0x97:  # an array of 1 to 23 items
            return -1
        t = data[pos + 1]
        return t if t < 24 else -1
    except IndexError:
        return -1


def envelope_slot(data: bytes) -> tuple[int, int] | None:
    """(view, seq) of a PRE-PREPARE envelope's bytes, None for anything else."""
    fields = envelope_fields(data, 3)
    if fields is None or fields[0] != MsgType.PRE_PREPARE:
        return None
    return fields[1], fields[2]
