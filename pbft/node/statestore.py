"""The replicated state on disk: `pbft.protocol.store.MemoryStore`'s semantics in SQLite.

Theory of operation. The entries live in one table keyed by key, each with its partition
(`partition.bucket_of`), so a service's state is bounded by the disk, not by memory, and
a replica that restarts finds it where it left it. The partition tree's leaf digests as
of the latest checkpoint are a table too, written at each checkpoint for the leaves that
changed (the cost follows the writes, not the state); the nodes above the leaves
(FANOUT**(DEPTH-1) of them) are recomputed in memory when the store opens.

Kept checkpoints stay readable by copy on write, as in the memory store: the first write
to a bucket after checkpoint c saves the bucket's entries under c (`saved`, and a row in
`saved_marks` so that an empty bucket is remembered as saved too); when a checkpoint
changes a leaf's digest, the digest it had is saved under the previous kept checkpoint
(`leaves_saved`). A kept checkpoint's tree is rebuilt from those at open and kept in
memory (the leaf digests are shared references, so a tree costs BUCKETS pointers).

Transactions belong to the caller: `SqliteStore` only executes statements on the
connection it is given. A replica process uses `DurableStore`, a database of its own
(STATE_FILE) that commits at every checkpoint; after a crash the core rolls it back to
the stable checkpoint the records name and replays the batches they say were executed
after it (see `DurableStore`).
"""

from __future__ import annotations

import sqlite3
import time
from bisect import bisect_left
from collections.abc import Iterable

from ..protocol import codec
from ..protocol.partition import BUCKETS, DEPTH, FANOUT, PartitionTree, bucket_of
from ..protocol.store import Entries

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS state_entries (key BLOB PRIMARY KEY, bucket INTEGER NOT NULL, "
    "value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS state_entries_bucket ON state_entries (bucket)",
    "CREATE TABLE IF NOT EXISTS state_saved (checkpoint INTEGER, bucket INTEGER, key BLOB, "
    "value BLOB, PRIMARY KEY (checkpoint, bucket, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS state_saved_marks (checkpoint INTEGER, bucket INTEGER, "
    "PRIMARY KEY (checkpoint, bucket)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS state_leaves (bucket INTEGER PRIMARY KEY, digest BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS state_leaves_saved (checkpoint INTEGER, bucket INTEGER, "
    "digest BLOB NOT NULL, PRIMARY KEY (checkpoint, bucket)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS state_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
)


class SqliteStore:
    """A `pbft.protocol.store.Store` on an open SQLite connection (the caller commits)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.written = 0
        """Bytes this store wrote: keys and values put, bucket copies on write, leaf
        digests (what `pbft bench` reports per checkpoint)."""
        for statement in SCHEMA:
            db.execute(statement)
        row = db.execute("SELECT value FROM state_meta WHERE name = 'kept'").fetchone()
        self.kept: list[int] = list(codec.decode(row[0])) if row else []
        self.tree = PartitionTree()
        leaves = self.tree.levels[0]
        for bucket, digest in db.execute("SELECT bucket, digest FROM state_leaves"):
            leaves[bucket] = digest
        self.tree.rebuild()
        self.trees: dict[int, PartitionTree] = {}
        newer = self.tree
        for seq in reversed(self.kept):  # newest first: each older one = newer + saved
            tree = newer.copy()
            tree.dirty = set()
            if seq != self.kept[-1]:
                for bucket, digest in db.execute(
                    "SELECT bucket, digest FROM state_leaves_saved WHERE checkpoint = ?", (seq,)
                ):
                    tree.levels[0][bucket] = digest
                tree.rebuild()
            self.trees[seq] = newer = tree
        # Writes since the latest checkpoint are the buckets saved under it; with no
        # checkpoint kept, every bucket holding something.
        if self.kept:
            query = "SELECT bucket FROM state_saved_marks WHERE checkpoint = ?"
            self.tree.dirty = {b for (b,) in db.execute(query, (self.kept[-1],))}
        else:
            self.tree.dirty = {b for (b,) in db.execute("SELECT DISTINCT bucket FROM state_entries")}
            self.tree.dirty |= {b for (b,) in db.execute("SELECT bucket FROM state_leaves")}

    # -- the service's view ---------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT value FROM state_entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _before_write(self, bucket: int) -> None:
        self.tree.touch(bucket)
        if not self.kept:
            return
        last = self.kept[-1]
        cur = self.db.execute(
            "INSERT OR IGNORE INTO state_saved_marks (checkpoint, bucket) VALUES (?, ?)", (last, bucket)
        )
        if cur.rowcount:
            self.db.execute(
                "INSERT INTO state_saved (checkpoint, bucket, key, value) "
                "SELECT ?, bucket, key, value FROM state_entries WHERE bucket = ?",
                (last, bucket),
            )
            (size,) = self.db.execute(
                "SELECT COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) FROM state_entries WHERE bucket = ?",
                (bucket,),
            ).fetchone()
            self.written += size

    def put(self, key: bytes, value: bytes) -> None:
        bucket = bucket_of(key)
        self._before_write(bucket)
        self.db.execute(
            "INSERT OR REPLACE INTO state_entries (key, bucket, value) VALUES (?, ?, ?)", (key, bucket, value)
        )
        self.written += len(key) + len(value)

    def delete(self, key: bytes) -> bool:
        if self.get(key) is None:
            return False
        self._before_write(bucket_of(key))
        self.db.execute("DELETE FROM state_entries WHERE key = ?", (key,))
        return True

    def scan(self, start: bytes, end: bytes | None, limit: int) -> Entries:
        if end is None:
            rows = self.db.execute(
                "SELECT key, value FROM state_entries WHERE key >= ? ORDER BY key LIMIT ?", (start, limit)
            )
        else:
            rows = self.db.execute(
                "SELECT key, value FROM state_entries WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                (start, end, limit),
            )
        return [(bytes(k), bytes(v)) for k, v in rows]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM state_entries").fetchone()[0]

    # -- checkpoints ------------------------------------------------------------------------

    def _entries(self, bucket: int) -> Entries:
        rows = self.db.execute("SELECT key, value FROM state_entries WHERE bucket = ?", (bucket,))
        return [(bytes(k), bytes(v)) for k, v in rows]

    def digest(self) -> bytes:
        return self.tree.refresh(self._entries)

    def checkpoint(self, seq: int) -> bytes:
        if self.kept and seq <= self.kept[-1]:
            raise ValueError(f"checkpoint {seq} is not after {self.kept[-1]}")
        dirty = sorted(self.tree.dirty)
        before = {b: self.tree.levels[0][b] for b in dirty}
        root = self.digest()
        changed = [(b, self.tree.levels[0][b]) for b in dirty if self.tree.levels[0][b] != before[b]]
        if self.kept:
            self.db.executemany(
                "INSERT OR IGNORE INTO state_leaves_saved (checkpoint, bucket, digest) VALUES (?, ?, ?)",
                [(self.kept[-1], b, before[b]) for b, _ in changed],
            )
        self.db.executemany("INSERT OR REPLACE INTO state_leaves (bucket, digest) VALUES (?, ?)", changed)
        self.written += 2 * 32 * len(changed)  # the new digest, and the old one saved
        self.kept.append(seq)
        self.trees[seq] = self.tree.copy()
        self._save_kept()
        return root

    def _save_kept(self) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO state_meta (name, value) VALUES ('kept', ?)", (codec.encode(self.kept),)
        )

    def release(self, below: int) -> None:
        gone = [s for s in self.kept if s < below]
        if not gone:
            return
        for table in ("state_saved", "state_saved_marks", "state_leaves_saved"):
            self.db.execute(f"DELETE FROM {table} WHERE checkpoint < ?", (below,))
        for s in gone:
            del self.trees[s]
        self.kept = [s for s in self.kept if s >= below]
        self._save_kept()

    def digest_at(self, seq: int) -> bytes | None:
        tree = self.trees.get(seq)
        return None if tree is None else tree.root

    def children_at(self, seq: int, level: int, index: int) -> tuple[bytes, ...] | None:
        tree = self.trees.get(seq)
        if tree is None or not 1 <= level <= DEPTH or not 0 <= index < FANOUT ** (DEPTH - level):
            return None
        return tree.children(level, index)

    def bucket_at(self, seq: int, bucket: int) -> Entries | None:
        if seq not in self.trees or not 0 <= bucket < BUCKETS:
            return None
        for c in self.kept[bisect_left(self.kept, seq):]:
            marked = self.db.execute(
                "SELECT 1 FROM state_saved_marks WHERE checkpoint = ? AND bucket = ?", (c, bucket)
            ).fetchone()
            if marked:
                rows = self.db.execute(
                    "SELECT key, value FROM state_saved WHERE checkpoint = ? AND bucket = ? ORDER BY key",
                    (c, bucket),
                )
                return [(bytes(k), bytes(v)) for k, v in rows]
        return sorted(self._entries(bucket))

    def rollback(self, seq: int) -> None:
        """As `MemoryStore.rollback`: the state as at kept checkpoint `seq`, later
        checkpoints forgotten; costs the buckets written since `seq`."""
        if seq not in self.trees:
            raise ValueError(f"checkpoint {seq} is not kept")
        db = self.db
        restored: set[int] = set()
        later = [c for c in self.kept if c >= seq]
        for c in later:
            marks = [b for (b,) in db.execute("SELECT bucket FROM state_saved_marks WHERE checkpoint = ?", (c,))]
            for bucket in marks:
                if bucket in restored:
                    continue
                restored.add(bucket)
                db.execute("DELETE FROM state_entries WHERE bucket = ?", (bucket,))
                db.execute(
                    "INSERT INTO state_entries (key, bucket, value) SELECT key, bucket, value "
                    "FROM state_saved WHERE checkpoint = ? AND bucket = ?",
                    (c, bucket),
                )
        target, latest = self.trees[seq], self.trees[self.kept[-1]]
        db.executemany(
            "INSERT OR REPLACE INTO state_leaves (bucket, digest) VALUES (?, ?)",
            [(b, d) for b, (d, e) in enumerate(zip(target.levels[0], latest.levels[0], strict=True)) if d != e],
        )
        for table in ("state_saved", "state_saved_marks", "state_leaves_saved"):
            db.execute(f"DELETE FROM {table} WHERE checkpoint >= ?", (seq,))
        for c in later[1:]:
            del self.trees[c]
        self.kept = [c for c in self.kept if c <= seq]
        self._save_kept()
        self.tree = target.copy()

    def tree_now(self) -> PartitionTree:
        self.digest()
        return self.tree.copy()

    def clear(self) -> None:
        for table in ("state_entries", "state_saved", "state_saved_marks", "state_leaves",
                      "state_leaves_saved", "state_meta"):
            self.db.execute(f"DELETE FROM {table}")
        self.kept = []
        self.trees = {}
        self.tree = PartitionTree()

    def install_bucket(self, bucket: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        for key, _ in self._entries(bucket):
            self.delete(key)
        for key, value in entries:
            self.put(key, value)



STATE_FILE = "state.sqlite3"
"""The replicated state's database, next to the records' in a replica's data directory."""


class DurableStore(SqliteStore):
    """A SqliteStore with a database of its own that commits at every checkpoint.

    Why commit there, and only there: the core's records (pbft/node/storage.py) say which
    checkpoint is stable and which batches were executed after it; after a crash the core
    rolls the store back to that checkpoint and replays those batches (Replica.recover).
    A store committed at checkpoints always holds the stable checkpoint (a checkpoint is
    committed here when it is taken, long before 2f+1 replicas make it stable and its
    record is written), with the copies on write that give it back. A commit per batch
    would cost an fsync each for nothing. Should the store still not hold what the
    records need (a power loss with fsync off, a file restored from elsewhere), the
    core sees the digest differ and fetches the state from the others instead.

    The connection belongs to the thread that runs the core (the event loop): nothing
    else writes this file."""

    def __init__(self, path: str) -> None:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL: a power loss may lose the last commit, never corrupt the file; the
        # core recovers from that as above.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("BEGIN")
        super().__init__(db)
        self.commits = 0
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0
        """CPU seconds spent taking checkpoints (digests, bookkeeping, the commit)."""

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.commits += 1
        self.db.execute("BEGIN")

    def checkpoint(self, seq: int) -> bytes:
        started = time.process_time()
        root = super().checkpoint(seq)
        self.commit()
        self.checkpoints += 1
        self.checkpoint_seconds += time.process_time() - started
        return root

    def rollback(self, seq: int) -> None:
        super().rollback(seq)
        self.commit()

    def clear(self) -> None:
        super().clear()
        self.commit()

    def close(self) -> None:
        """Close without committing what followed the last checkpoint (the core replays
        it after a restart, as after a crash)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self.db.close()
