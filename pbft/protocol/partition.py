"""The partition tree: a checkpoint digest that costs what changed (TOCS 2002 section 5.3).

Theory of operation. The replicated state is a set of (key, value) entries. Each key
belongs to one of BUCKETS leaf partitions, chosen by a hash of the key, so entries spread
evenly whatever keys a client picks. The tree above the leaves has a fixed shape: FANOUT
children per node, DEPTH levels of internal nodes, one root. A leaf's digest hashes the
sum of its entries' hashes; an internal node's digest hashes its children's digests in order;
the checkpoint digest is the root's, bound to the tree's shape.

Why this shape:
* A write dirties one leaf. At a checkpoint only dirty leaves get a new digest, then
  their parents and the root: the cost follows the writes since the last checkpoint,
  not the state's size. A leaf's digest is incremental too, as in the paper (TOCS 5.3.1,
  AdHash): it hashes the sum, modulo 2^4096, of one 4096-bit hash per entry, so a store
  that knows a leaf's sum at the last checkpoint and the old and new value of each key
  written since updates it with two entry hashes per write, without reading the leaf's
  other entries (at a million keys a leaf holds about 15). Two different sets of
  entries with the same sum would be a k-sum solution modulo 2^4096; the best known
  attack (Wagner's generalised birthday) costs about 2^(2*sqrt(4096)) = 2^128.
* A replica that fell behind compares the tree top-down with the digest 2f+1 replicas
  signed and fetches only the leaves that differ (section 5.3.2); each node it receives is
  checked against its parent, which it already trusts, so one lying source is caught at
  the first wrong answer.
* The shape is fixed, not grown with the state: every correct replica computes the same
  tree for the same entries with no coordination, and a node's position is implied.

An empty leaf and an all-empty subtree have constant digests (`EMPTY`), so a fresh tree
is cheap to build however many buckets there are.

This module is pure (hashing and bookkeeping); the store that keeps the entries and the
state transfer that walks the tree are elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

FANOUT = 256
DEPTH = 2
"""Levels above the leaves, the root's included: BUCKETS = FANOUT ** DEPTH leaves, the
root at level DEPTH."""
BUCKETS = FANOUT**DEPTH
"""65,536 leaves: at a million keys about 15 entries each, so a replica that missed a
thousand writes fetches at most about 1.5% of the state."""

_LEN = 4  # bytes of a length prefix inside an entry's hash input
SUM_BYTES = 512
"""A leaf's sum: 4096 bits."""
_SUM_MASK = (1 << (8 * SUM_BYTES)) - 1


def bucket_of(key: bytes) -> int:
    """The leaf partition of `key` (the same on every replica, for any key)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % BUCKETS


def entry_hash(key: bytes, value: bytes) -> int:
    """One entry's 4096-bit hash (length-prefixed, so no two entries share an input)."""
    h = hashlib.shake_256(b"pbft-entry")
    h.update(len(key).to_bytes(_LEN, "big"))
    h.update(key)
    h.update(len(value).to_bytes(_LEN, "big"))
    h.update(value)
    return int.from_bytes(h.digest(SUM_BYTES), "little")


def leaf_sum(entries: Iterable[tuple[bytes, bytes]]) -> int:
    """The sum of a leaf's entry hashes modulo 2^4096 (order does not matter)."""
    total = 0
    for key, value in entries:
        total += entry_hash(key, value)
    return total & _SUM_MASK


def update_sum(total: int, key: bytes, old: bytes | None, new: bytes | None) -> int:
    """A leaf's sum after `key` went from `old` to `new` (None: absent)."""
    if old is not None:
        total -= entry_hash(key, old)
    if new is not None:
        total += entry_hash(key, new)
    return total & _SUM_MASK


def sum_digest(total: int) -> bytes:
    """The digest of a leaf whose entry hashes sum to `total`."""
    return hashlib.sha256(b"pbft-leaf" + total.to_bytes(SUM_BYTES, "little")).digest()


def leaf_digest(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The digest of one leaf's entries (distinct keys: `check_leaf` makes sure)."""
    return sum_digest(leaf_sum(entries))


def node_digest(level: int, children: Iterable[bytes]) -> bytes:
    """The digest of an internal node at `level` (1 = just above the leaves)."""
    h = hashlib.sha256(b"pbft-node" + level.to_bytes(1, "big"))
    for c in children:
        h.update(c)
    return h.digest()


def root_digest(children: Iterable[bytes]) -> bytes:
    """The checkpoint digest: the root (level DEPTH), bound to the tree's shape."""
    h = hashlib.sha256(b"pbft-root" + FANOUT.to_bytes(4, "big") + DEPTH.to_bytes(1, "big"))
    for c in children:
        h.update(c)
    return h.digest()


def _empty() -> list[bytes]:
    """EMPTY[level]: the digest of an all-empty subtree whose top is at `level` (below
    the root)."""
    out = [leaf_digest(())]
    for level in range(1, DEPTH):
        out.append(node_digest(level, [out[-1]] * FANOUT))
    return out


EMPTY: list[bytes] = _empty()


def parent_index(index: int) -> int:
    return index // FANOUT


def child_range(index: int) -> range:
    """The indices, one level down, of the children of node `index`."""
    return range(index * FANOUT, (index + 1) * FANOUT)


class PartitionTree:
    """The digests of one state's partition tree, kept up to date incrementally.

    `levels[0]` holds the BUCKETS leaf digests and `levels[k]` the FANOUT**(DEPTH-k)
    nodes of level k, up to `levels[DEPTH - 1]`, the root's FANOUT children. The owner of
    the entries calls `touch(bucket)` on every write and `refresh(read)` at a checkpoint,
    with `read(bucket)` giving a bucket's current entries.
    """

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [
            [EMPTY[level]] * FANOUT ** (DEPTH - level) for level in range(DEPTH)
        ]
        self.dirty: set[int] = set()
        self._root = root_digest(self.levels[DEPTH - 1])

    def copy(self) -> PartitionTree:
        """A frozen copy (lists of shared bytes: BUCKETS references, not the entries)."""
        t = PartitionTree.__new__(PartitionTree)
        t.levels = [list(lv) for lv in self.levels]
        t.dirty = set(self.dirty)
        t._root = self._root
        return t

    def touch(self, bucket: int) -> None:
        self.dirty.add(bucket)

    def refresh(self, read: Callable[[int], Iterable[tuple[bytes, bytes]]]) -> bytes:
        """Rehash the dirty leaves from their entries and the nodes above them; the new
        root. Costs one leaf hash per dirty bucket and one node hash per distinct
        ancestor."""
        return self.refresh_with({b: leaf_digest(read(b)) for b in self.dirty})

    def refresh_with(self, digests: dict[int, bytes]) -> bytes:
        """Set the dirty leaves' digests (`digests`: one per dirty bucket, computed by
        the store however it likes) and rehash the nodes above them; the new root."""
        if self.dirty:
            changed = self.dirty
            self.dirty = set()
            leaves = self.levels[0]
            for b in changed:
                leaves[b] = digests[b]
            for level in range(1, DEPTH):
                below, here = self.levels[level - 1], self.levels[level]
                changed = {parent_index(i) for i in changed}
                for i in changed:
                    here[i] = node_digest(level, below[i * FANOUT : (i + 1) * FANOUT])
            self._root = root_digest(self.levels[DEPTH - 1])
        return self._root

    def rebuild(self) -> bytes:
        """Recompute every node above the leaves and the root from the leaves as they are
        (FANOUT**(DEPTH-1) node hashes): for a tree whose leaves were loaded, not
        refreshed. Dirty leaves stay dirty."""
        for level in range(1, DEPTH):
            below, here = self.levels[level - 1], self.levels[level]
            for i in range(len(here)):
                here[i] = node_digest(level, below[i * FANOUT : (i + 1) * FANOUT])
        self._root = root_digest(self.levels[DEPTH - 1])
        return self._root

    @property
    def root(self) -> bytes:
        """The root as of the last `refresh` (writes since then are not in it)."""
        return self._root

    def children(self, level: int, index: int) -> tuple[bytes, ...]:
        """The digests of the children of node (`level`, `index`), level DEPTH being the
        root (index 0): what a server sends a fetcher walking the tree."""
        return tuple(self.levels[level - 1][i] for i in child_range(index))


def check_children(expected: bytes, level: int, children: tuple[bytes, ...]) -> bool:
    """Do `children` hash to `expected`, the digest of their parent at `level` (DEPTH for
    the root, whose digest is the checkpoint digest)?"""
    if len(children) != FANOUT or any(not isinstance(c, bytes) or len(c) != 32 for c in children):
        return False
    got = root_digest(children) if level == DEPTH else node_digest(level, children)
    return got == expected


def check_leaf(expected: bytes, bucket: int, entries: list[tuple[bytes, bytes]]) -> bool:
    """Are `entries` exactly leaf `bucket`'s contents with digest `expected`: distinct
    keys, each belonging to that bucket, hashing to it?"""
    keys = [k for k, _ in entries]
    if len(set(keys)) != len(keys) or any(bucket_of(k) != bucket for k in keys):
        return False
    return leaf_digest(entries) == expected
