"""Partial state transfer over the partition tree (TOCS 2002 section 5.3.2).

Theory of operation. A checkpoint's digest, which 2f+1 replicas sign, is the root of the
partition tree over the whole replicated state (`partition.py`): the service's entries
and the reply cache, in one store. A replica that must fetch the state at a stable
checkpoint walks that tree from the top: it asks for the root's children, checks them
against the signed digest, compares each with its own tree, and asks only for the
children that differ, down to the leaves, whose entries it installs. What a replica that
missed a thousand writes moves is therefore those leaves and the nodes above them, not
the state (a million keys: about 3% of the state's bytes, most of it the 256 nodes of
level 1).

Every answer is checked against a digest the fetcher already trusts, the moment it
arrives: an internal node's children against the node's digest (from its parent, up to
the signed root), a leaf's entries against the leaf's digest. A leaf can be larger than
one message (Byzantine clients can grind keys into one bucket), so its entries come in
pages, in key order, all from one source; the leaf is checked when its last page
arrives, and a source whose leaf or node does not verify is never asked again (until
every source has lied: f liars cannot exhaust the correct ones). A source that does not
answer within a retransmission period loses what it was asked; the next is asked.

Leaves are installed as they verify, so the store is a mix of old and new leaves until
the walk ends. That is safe because nothing reads or executes it meanwhile: the replica's
window starts at the checkpoint being fetched, so no slot below it can execute, and reads
wait while the state is older than the stable checkpoint (`held.WaitingReads`). A restart
in the middle walks again from the top, comparing with whatever the store holds.

`Transfer` is the fetcher's bookkeeping; `ChunkBudget` the server's (a chunk is a costly
answer to a small question, so it is rationed per asker, issue 13 item 7). The replica's
handlers (`on_fetch_state`, `on_state_chunk`) sign, send and install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from . import codec
from .bounds import Bound, check
from .events import Ignored, Reason
from .partition import DEPTH, FANOUT, check_children, check_leaf
from .store import Entries

PAGE_BYTES = 64 * 1024
"""Keys and values per page of a leaf (a single larger entry has a page to itself)."""
MAX_PARTS = 1 << 14
"""Pages per leaf at most, whatever a source claims."""
MAX_ENTRY_BYTES = codec.MAX_FRAME
"""A page of one entry is at most a frame: the largest entry a state can hold today is a
reply-cache record (a result of at most MAX_RESULT), but stores written before results
were bounded may keep larger ones, up to what a frame could carry, and a source serving
them must not be taken for a liar."""
MAX_LEAF_BYTES = MAX_PARTS * PAGE_BYTES
"""Keys and values buffered for one leaf until its last page verifies (1 GiB): the
largest leaf a transfer can move (keys spread over BUCKETS leaves by a public hash, so a
client choosing its keys can fill one leaf; the limit is not set lower for that). Before,
nothing bounded a page's size: a lying source could send 16,384 pages of 16 MiB per leaf
(review). A lying source can still make a fetcher hold up to IN_FLIGHT of these."""
IN_FLIGHT = 8
"""Requests outstanding at once during a transfer."""
DIGEST = 32

Node = tuple[int, int]
"""(level, index) in the partition tree: level DEPTH is the root (index 0), level 0 the
leaves (index = bucket)."""


def valid_node(level: int, index: int) -> bool:
    return 0 <= level <= DEPTH and 0 <= index < FANOUT ** (DEPTH - level)


def pages(entries: Entries) -> list[Entries]:
    """A leaf's entries (key order) cut into pages of at most PAGE_BYTES of keys and
    values; an entry larger than that alone. An empty leaf is one empty page."""
    out: list[Entries] = [[]]
    size = 0
    for k, v in entries:
        n = len(k) + len(v)
        if out[-1] and size + n > PAGE_BYTES:
            out.append([])
            size = 0
        out[-1].append((k, v))
        size += n
    return out


def encode_page(entries: Entries) -> bytes:
    return codec.encode([[k, v] for k, v in entries])


def decode_page(data: bytes) -> Entries | None:
    """A page's entries, or None if the bytes are not a list of [key, value] pairs."""
    try:
        items = codec.decode(data)
    except codec.CodecError:
        return None
    if not isinstance(items, list):
        return None
    out: Entries = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and all(type(x) is bytes for x in item)):
            return None
        out.append((item[0], item[1]))
    return out


KNOWN_NODES = 2 * (FANOUT + 1)
"""Verified internal nodes a replica keeps across transfers (`Transfer.known`): two trees'
worth of the root and its level-1 nodes, 8 KiB each (about 4 MiB)."""


@dataclass(slots=True)
class LeafPages:
    """The pages of one leaf received so far, all from `source`."""

    source: int
    parts: int = 0  # 0: not known until the first page
    entries: Entries = field(default_factory=list)
    got: int = 0  # pages received: the next one asked for is page `got`
    size: int = 0  # bytes of keys and values received (at most MAX_LEAF_BYTES)
    fresh: bool = True  # a page arrived since the last retransmission period


class Verdict(Enum):
    """What an answer did to a transfer."""

    LIED = "lied"
    KEPT = "kept"  # a verified internal node, or a page of a leaf not complete yet
    LEAF = "leaf"  # a verified leaf: install it


@dataclass(slots=True)
class Transfer:
    """A fetch in progress of the state at checkpoint `seq` with digest `digest`.

    `mine` is our own tree's digests when the walk started (`PartitionTree.levels`); the
    walk fetches a node only when its digest differs from ours."""

    seq: int
    digest: bytes
    proof: tuple[bytes, ...]
    sources: list[int]
    mine: list[list[bytes]] = field(default_factory=list)
    expected: dict[Node, bytes] = field(default_factory=dict)  # to fetch -> its digest
    asked: dict[Node, int] = field(default_factory=dict)  # in flight -> source
    leaves: dict[int, LeafPages] = field(default_factory=dict)  # bucket -> pages so far
    liars: set[int] = field(default_factory=set)
    unanswered: dict[Node, int] = field(default_factory=dict)
    """Nodes the last retransmission period left unanswered -> whom they were asked of:
    asked again of someone else. Its turn could bring a retry back to the same source
    within one period, whose `ChunkBudget` then took it for a duplicate of the answer it
    had sent (lost on the way) and stayed silent (fuzz seed 28009414)."""
    turn: int = 0
    known: dict[tuple[int, bytes], tuple[bytes, ...]] = field(default_factory=dict)
    """Internal nodes verified so far, (level, digest) -> children, kept across transfers
    by the replica: a node's children are fixed by its digest, so a walk that restarts
    toward a newer checkpoint (one becomes stable every K requests) fetches again only
    the nodes whose digests changed. Without it a replica catching up under a fast
    stream of writes re-fetched every differing level-1 node at each restart, and never
    finished (issue 19's real-process test). At most KNOWN_NODES, the oldest dropped."""

    def __post_init__(self) -> None:
        if not self.expected:
            root = self.known.get((DEPTH, self.digest))
            if root is None:
                self.expected[(DEPTH, 0)] = self.digest
            else:
                self._expand(DEPTH, 0, root)

    def next_source(self, avoid: int | None = None) -> int | None:
        """The next source in turn that has not lied, other than `avoid` if there is
        another."""
        honest = [s for s in self.sources if s not in self.liars]
        if not honest:
            return None
        self.turn += 1
        if honest[self.turn % len(honest)] == avoid and len(honest) > 1:
            self.turn += 1
        return honest[self.turn % len(honest)]

    def next_requests(self) -> tuple[list[tuple[int, int, int, int]], bool]:
        """The (level, index, part, source) requests to send now, keeping IN_FLIGHT out;
        and whether every source has lied (the liars are then forgiven)."""
        out: list[tuple[int, int, int, int]] = []
        for node in self.expected:
            if len(self.asked) >= IN_FLIGHT:
                break
            if node in self.asked:
                continue
            level, index = node
            pages_so_far = self.leaves.get(index) if level == 0 else None
            if pages_so_far is not None:
                source: int | None = pages_so_far.source  # a leaf's pages from one source
            else:
                source = self.next_source(avoid=self.unanswered.pop(node, None))
                if source is None:
                    self.liars.clear()  # try again from everyone: f liars cannot exhaust us
                    return out, True
            assert source is not None
            self.asked[node] = source
            part = pages_so_far.got if pages_so_far is not None else 0
            out.append((level, index, part, source))
        return out, False

    def wants(self, seq: int, digest: bytes, level: int, index: int, part: int, source: int) -> bool:
        """An answer for a node of this transfer not verified yet: an internal node from
        anyone (it is checked alone, and a slow source's late answer is as good), a leaf's
        first page from anyone, its next pages from the source of its first."""
        node = (level, index)
        if seq != self.seq or digest != self.digest or node not in self.expected:
            return False
        got = self.leaves.get(index) if level == 0 else None
        if got is None:
            return part == 0
        return source == got.source and part == got.got

    def lied(self, source: int) -> None:
        """`source` sent an answer that does not verify: never ask it again."""
        self.liars.add(source)
        for node in [n for n, s in self.asked.items() if s == source]:
            del self.asked[node]
        for bucket in [b for b, p in self.leaves.items() if p.source == source]:
            del self.leaves[bucket]

    def stalled(self) -> None:
        """A retransmission period went by: what was asked and not answered is asked
        again, elsewhere. A leaf whose pages keep arriving keeps its source and its pages
        (a large leaf takes several periods, the server rationing its answers per
        period); one that got no page in the whole period starts over from another."""
        self.unanswered = {}
        for node in list(self.asked):
            got = self.leaves.get(node[1]) if node[0] == 0 else None
            if got is not None and got.fresh:
                got.fresh = False
                continue
            self.unanswered[node] = self.asked.pop(node)
            if got is not None:
                del self.leaves[node[1]]
        for bucket in [b for b, p in self.leaves.items() if (0, b) not in self.asked]:
            self.leaves[bucket].fresh = False  # between pages: its next one goes out now

    def received(self, level: int, index: int, part: int, parts: int, data: bytes, source: int,
                 verify: bool = True) -> tuple[Verdict, Entries | None]:
        """An answer `wants` accepted: (Verdict, the leaf's entries for Verdict.LEAF).
        `verify` False skips the digest checks (a broken variant's seam, nothing else)."""
        node = (level, index)
        expected = self.expected[node]
        if level >= 1:
            if len(data) != FANOUT * DIGEST:
                return self._lied(source)
            children = tuple(data[i : i + DIGEST] for i in range(0, len(data), DIGEST))
            if verify and not check_children(expected, level, children):
                return self._lied(source)
            del self.expected[node]
            self.asked.pop(node, None)
            if verify:
                self.known[(level, expected)] = children
                while len(self.known) > KNOWN_NODES:
                    del self.known[next(iter(self.known))]
            self._expand(level, index, children)
            return Verdict.KEPT, None
        entries = decode_page(data)
        got = self.leaves.get(index)
        if got is None:
            got = self.leaves[index] = LeafPages(source)
        if entries is None or not 1 <= parts <= MAX_PARTS or (got.parts and parts != got.parts):
            return self._lied(source)
        size = sum(len(k) + len(v) for k, v in entries)
        # `pages` makes pages of at most PAGE_BYTES, or of one entry larger than that.
        if size > (PAGE_BYTES if len(entries) > 1 else MAX_ENTRY_BYTES) or got.size + size > MAX_LEAF_BYTES:
            return self._lied(source)
        got.size += size
        if got.entries and entries and entries[0][0] <= got.entries[-1][0]:
            return self._lied(source)  # pages come in key order
        got.parts = parts
        got.got += 1
        got.fresh = True
        got.entries.extend(entries)
        self.asked.pop(node, None)  # the next page is asked for at the next round
        if got.got < got.parts:
            return Verdict.KEPT, None
        del self.leaves[index]
        if verify and not check_leaf(expected, index, got.entries):
            return self._lied(source)
        del self.expected[node]
        return Verdict.LEAF, got.entries

    def _expand(self, level: int, index: int, children: tuple[bytes, ...]) -> None:
        """Walk below a verified node: its children that differ from ours are fetched,
        unless an internal one is known already (then walked at once)."""
        mine = self.mine[level - 1] if self.mine else None
        for i, child in enumerate(children):
            at = index * FANOUT + i
            if mine is not None and mine[at] == child:
                continue
            below = self.known.get((level - 1, child)) if level > 1 else None
            if below is not None:
                self._expand(level - 1, at, below)
            else:
                self.expected[(level - 1, at)] = child

    def _lied(self, source: int) -> tuple[Verdict, None]:
        self.lied(source)
        return Verdict.LIED, None

    def bounds(self) -> list[Bound]:
        """At most IN_FLIGHT requests out, and as many leaves in pages; each at most
        MAX_PARTS pages."""
        parts = max((p.parts for p in self.leaves.values()), default=0)
        return [
            ("transfer (asked)", len(self.asked), IN_FLIGHT, "requests"),
            ("transfer (leaves)", len(self.leaves), IN_FLIGHT, "leaves in pages"),
            ("transfer (pages)", parts, MAX_PARTS, "pages of one leaf"),
            ("transfer (unanswered)", len(self.unanswered), IN_FLIGHT, "requests to ask elsewhere"),
        ]

    def invariants(self) -> None:
        check(self.bounds())

    def complete(self) -> bool:
        return not self.expected


IDLE_TRANSFER: list[Bound] = [
    ("transfer (asked)", 0, IN_FLIGHT, "requests"),
    ("transfer (leaves)", 0, IN_FLIGHT, "leaves in pages"),
    ("transfer (pages)", 0, MAX_PARTS, "pages of one leaf"),
    ("transfer (unanswered)", 0, IN_FLIGHT, "requests to ask elsewhere"),
]
"""`Transfer.bounds()` of no transfer: a replica lists the same structures whether or not
one is in progress (the simulator keeps peaks by position)."""


CHUNKS_PER_PERIOD = 8 * IN_FLIGHT
"""Answers served to one replica per retransmission period (a transfer keeps IN_FLIGHT
requests out, so it is slowed only when answers come back faster than that)."""

CHUNKS_REMEMBERED = 4096
"""(asker, seq, level, index, part) of answers sent in the last retransmission period."""

ChunkKey = tuple[int, int, int, int, int]
"""(asker, seq, level, index, part)."""


class ChunkBudget:
    """What a replica serving state has sent whom: an answer is a costly reply to a small
    question, so each (asker, seq, node, part) is answered once per `period` ticks and
    each asker gets at most CHUNKS_PER_PERIOD answers per period (issue 13, item 7)."""

    def __init__(self, period: int, replicas: int) -> None:
        self.period = period
        self.replicas = replicas
        self.sent: dict[ChunkKey, int] = {}  # key -> tick
        self.budget: dict[int, tuple[int, int]] = {}  # asker -> (period start, answers)

    def ignore(self, peer: object, key: ChunkKey, digest: bytes, own: dict[int, bytes], now: int) -> Ignored | None:
        """Why the answer `key`, for the state `digest`, asked over `peer`'s channel, is
        not served now, or None. Answers go to the signer: a FETCH-STATE relayed or
        replayed by anyone else would make us send state to a replica that did not ask;
        and they are rationed per asker. Only a checkpoint we hold (`own`: seq -> digest)
        is served."""
        if peer is not None and peer != key[0]:
            return Reason.WRONG_ROLE, f"fetch-state of {key[0]} relayed by {peer!r}"
        _, _, level, index, part = key
        if not valid_node(level, index) or not 0 <= part < MAX_PARTS or (level and part):
            return Reason.OUT_OF_WINDOW, f"no node ({level}, {index}) part {part} in the tree"
        last = self.sent.get(key)
        if last is not None and now - last < self.period:
            return Reason.DUPLICATE, None  # asked again too soon: the same answer
        if self._used(key[0], now)[1] >= CHUNKS_PER_PERIOD:
            # Every node of a large state once per period is a stream a faulty replica
            # could keep asking for; a transfer with IN_FLIGHT requests out needs far less.
            return Reason.OVERLOAD, f"state chunks for replica {key[0]} this period"
        if own.get(key[1]) != digest:
            return Reason.STALE, None
        return None

    def _used(self, asker: int, now: int) -> tuple[int, int]:
        """(start, answers) of `asker`'s current period."""
        start, count = self.budget.get(asker, (now, 0))
        if now - start >= self.period:
            return now, 0
        return start, count

    def record(self, key: ChunkKey, now: int) -> None:
        """One more answer sent to key's asker, in its current period."""
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
