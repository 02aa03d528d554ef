"""Checkpointed state as verifiable chunks (TOCS 2002 section 5.3, simplified).

A checkpoint's state is one byte string (the service snapshot plus the reply cache). It
is cut into fixed-size chunks, and the checkpoint digest that 2f+1 replicas sign is the
root of a Merkle tree over the chunk hashes, bound to the chunk count. A replica fetching
state can therefore check every chunk the moment it arrives, against the digest it
already trusts, with a proof of log2(chunks) hashes: one lying or slow source cannot
poison the transfer, only delay it until the fetcher asks someone else.

`Transfer` is the fetcher's bookkeeping: which chunks it has, which it asked whom for
(at most IN_FLIGHT at once, round-robin over the 2f+1 signers of the proof but us), and
which sources proved to be liars (never asked again, until every source has lied: then
everyone is asked again, as f liars cannot exhaust the correct ones). `ChunkBudget` is
the server's: a chunk is a costly answer to a small question, so it is rationed per
asker (issue 13, item 7). The replica's handlers (`on_fetch_state`, `on_state_chunk`)
sign and send; what to ask, what to serve and when to stop lives here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .bounds import Bound, check
from .events import Ignored, Reason
from .messages import StateChunk

CHUNK_SIZE = 64 * 1024
MAX_CHUNKS = 1 << 20
IN_FLIGHT = 8
"""Chunk requests outstanding at once during a transfer."""


def _h(tag: bytes, data: bytes) -> bytes:
    return hashlib.sha256(tag + data).digest()


def split(state: bytes) -> list[bytes]:
    return [state[i : i + CHUNK_SIZE] for i in range(0, len(state), CHUNK_SIZE)] or [b""]


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        nxt = [
            _h(b"node", prev[i] + prev[i + 1]) if i + 1 < len(prev) else prev[i]
            for i in range(0, len(prev), 2)
        ]
        levels.append(nxt)
    return levels


def state_root(chunks: list[bytes]) -> bytes:
    """The checkpoint digest of a state cut into `chunks`."""
    top = _levels([_h(b"leaf", c) for c in chunks])[-1][0]
    return _h(b"root", len(chunks).to_bytes(8, "big") + top)


def chunk_proof(chunks: list[bytes], index: int) -> tuple[bytes, ...]:
    """Sibling hashes from leaf `index` up to the top (an odd node out has none)."""
    proof = []
    for level in _levels([_h(b"leaf", c) for c in chunks])[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return tuple(proof)


def verify_chunk(root: bytes, total: int, index: int, chunk: bytes, proof: tuple[bytes, ...]) -> bool:
    if not 0 <= index < total <= MAX_CHUNKS or len(chunk) > CHUNK_SIZE:
        return False
    node = _h(b"leaf", chunk)
    width, pos, used = total, index, 0
    while width > 1:
        sibling = pos ^ 1
        if sibling < width:
            if used >= len(proof):
                return False
            s = proof[used]
            used += 1
            node = _h(b"node", node + s) if pos % 2 == 0 else _h(b"node", s + node)
        pos //= 2
        width = (width + 1) // 2
    return used == len(proof) and _h(b"root", total.to_bytes(8, "big") + node) == root


@dataclass(slots=True)
class Transfer:
    """A fetch in progress of the state at checkpoint `seq` with digest `digest`."""

    seq: int
    digest: bytes
    proof: tuple[bytes, ...]
    sources: list[int]
    total: int | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)
    asked: dict[int, int] = field(default_factory=dict)  # chunk index -> source
    liars: set[int] = field(default_factory=set)
    turn: int = 0
    started_tick: int = 0

    def next_source(self) -> int | None:
        honest = [s for s in self.sources if s not in self.liars]
        if not honest:
            return None
        self.turn += 1
        return honest[self.turn % len(honest)]

    def missing(self) -> list[int]:
        if self.total is None:
            return [0]
        return [i for i in range(self.total) if i not in self.chunks]

    def next_requests(self) -> tuple[list[tuple[int, int]], bool]:
        """The (chunk index, source) requests to send now, keeping IN_FLIGHT out; and
        whether every source has lied (the liars are then forgiven for the next round)."""
        out: list[tuple[int, int]] = []
        for index in self.missing():
            if len(self.asked) >= IN_FLIGHT:
                break
            if index in self.asked:
                continue
            source = self.next_source()
            if source is None:
                self.liars.clear()  # try again from everyone: f liars cannot exhaust us
                return out, True
            self.asked[index] = source
            out.append((index, source))
        return out, False

    def lied(self, source: int) -> None:
        """`source` sent a chunk that does not verify: never ask it again."""
        self.liars.add(source)
        for index in [i for i, s in self.asked.items() if s == source]:
            del self.asked[index]

    def wants(self, seq: int, digest: bytes, index: int) -> bool:
        """A chunk of this state (seq, digest) that we do not have yet."""
        return seq == self.seq and digest == self.digest and index not in self.chunks

    def received(self, index: int, total: int, data: bytes) -> None:
        """A chunk that verifies against the digest 2f+1 signed."""
        self.total = total
        self.chunks[index] = data
        self.asked.pop(index, None)

    def bounds(self) -> list[Bound]:
        """At most IN_FLIGHT chunk requests out; no chunk beyond the announced total."""
        beyond = len(self.chunks) if self.total is None else max(0, len(self.chunks) - self.total)
        return [
            ("transfer (asked)", len(self.asked), IN_FLIGHT, "chunk requests"),
            ("transfer", beyond, 0, "chunks beyond its total"),
        ]

    def invariants(self) -> None:
        check(self.bounds())

    def complete(self) -> bool:
        return self.total is not None and len(self.chunks) == self.total

    def assemble(self) -> bytes:
        assert self.total is not None
        return b"".join(self.chunks[i] for i in range(self.total))


IDLE_TRANSFER: list[Bound] = [
    ("transfer (asked)", 0, IN_FLIGHT, "chunk requests"),
    ("transfer", 0, 0, "chunks beyond its total"),
]
"""`Transfer.bounds()` of no transfer: a replica lists the same structures whether or not
one is in progress (the simulator keeps peaks by position)."""


CHUNKS_PER_PERIOD = 8 * IN_FLIGHT
"""State chunks served to one replica per retransmission period (a transfer keeps
IN_FLIGHT requests out, so it is slowed only when chunks come back faster than that)."""

CHUNKS_REMEMBERED = 4096
"""(asker, seq, index) of state chunks sent in the last retransmission period."""


class ChunkBudget:
    """What a replica serving state has sent whom: a chunk is a costly answer to a small
    question, so each (asker, seq, index) is answered once per `period` ticks and each
    asker gets at most CHUNKS_PER_PERIOD chunks per period (issue 13, item 7)."""

    def __init__(self, period: int, replicas: int) -> None:
        self.period = period
        self.replicas = replicas
        self.sent: dict[tuple[int, int, int], int] = {}  # (asker, seq, index) -> tick
        self.budget: dict[int, tuple[int, int]] = {}  # asker -> (period start, chunks)

    def ignore(
        self, peer: object, key: tuple[int, int, int], digest: bytes,
        own: dict[int, tuple[bytes, bytes]], now: int,
    ) -> Ignored | None:
        """Why the chunk `key` = (asker, seq, index) of the state `digest`, asked over
        `peer`'s channel, is not served now, or None. Chunks go to the signer: a
        FETCH-STATE relayed or replayed by anyone else would make us send state to a
        replica that did not ask; and they are rationed per asker (issue 13, item 7).
        Only a checkpoint we hold (in `own`, seq -> (digest, state)) is served."""
        if peer is not None and peer != key[0]:
            return Reason.WRONG_ROLE, f"fetch-state of {key[0]} relayed by {peer!r}"
        last = self.sent.get(key)
        if last is not None and now - last < self.period:
            return Reason.DUPLICATE, None  # asked again too soon: the same chunk
        if self._used(key[0], now)[1] >= CHUNKS_PER_PERIOD:
            # Every chunk of a large state once per period is a stream a faulty replica
            # could keep asking for; a transfer with IN_FLIGHT requests out needs far less.
            return Reason.OVERLOAD, f"state chunks for replica {key[0]} this period"
        held = own.get(key[1])
        if held is None or held[0] != digest:
            return Reason.STALE, None
        return None

    def _used(self, asker: int, now: int) -> tuple[int, int]:
        """(start, chunks) of `asker`'s current period."""
        start, count = self.budget.get(asker, (now, 0))
        if now - start >= self.period:
            return now, 0
        return start, count

    def serve(self, key: tuple[int, int, int], chunks: list[bytes], digest: bytes, now: int) -> StateChunk:
        """The chunk `key` names, with its Merkle proof, counted against its asker."""
        _, seq, index = key
        self._record(key, now)
        return StateChunk(seq, digest, index, len(chunks), chunks[index], chunk_proof(chunks, index))

    def _record(self, key: tuple[int, int, int], now: int) -> None:
        """One more chunk sent to key's asker, in its current period."""
        start, count = self._used(key[0], now)
        if len(self.sent) >= CHUNKS_REMEMBERED:
            horizon = now - self.period
            self.sent = {k: t for k, t in self.sent.items() if t > horizon}
            if len(self.sent) >= CHUNKS_REMEMBERED:
                self.sent.clear()  # forgetting only allows one more answer each
        self.sent[key] = now
        self.budget[key[0]] = (start, count + 1)

    def bounds(self) -> list[Bound]:
        return [
            ("_chunks_sent", len(self.sent), CHUNKS_REMEMBERED),
            ("_chunk_budget", len(self.budget), self.replicas),
        ]

    def invariants(self) -> None:
        check(self.bounds())
