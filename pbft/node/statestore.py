"""The replicated state on disk: `pbft.protocol.store.MemoryStore`'s semantics in SQLite.

Theory of operation. The entries live in one table keyed by key, each with its partition
(`partition.bucket_of`), so a service's state is bounded by the disk, not by memory, and
a replica that restarts finds it where it left it. The partition tree's leaf digests as
of the latest checkpoint are a table too, written at each checkpoint for the leaves that
changed (the cost follows the writes, not the state); the nodes above the leaves
(FANOUT**(DEPTH-1) of them) are recomputed in memory when the store opens.

Kept checkpoints stay readable by copy on write of single entries (an undo log): the
first write to a key after checkpoint c saves the value the key had under c (`undo`;
NULL when it had none). A bucket's contents at kept checkpoint c are its current entries
with, for each key, the value saved under the earliest kept checkpoint >= c that saved
it. Saving the entry and not the whole bucket keeps a write's cost flat however many
entries share its bucket. When a checkpoint changes a leaf's digest, the digest it had
is saved under the previous kept checkpoint (`leaves_saved`). A kept checkpoint's tree
is rebuilt from those at open and kept in memory (the leaf digests are shared
references, so a tree costs BUCKETS pointers).

Writes wait in memory (`_pending`, one entry per key: the newest value, or a delete) and
go to SQLite together (`flush`): before anything reads the tables (a scan, a digest, a
checkpoint, a rollback, a transfer's bucket), when WRITE_BUFFER keys wait, and before the
caller commits. A replica writes two keys per request it executes (the service's, and
the client's reply record, which every request of that client overwrites); as SQL
statements one at a time, with the undo log's, that was a tenth of a backup's CPU under
load. Together, a key written many times between two checkpoints costs one write, and
the rest go through one `executemany` per kind.

Transactions belong to the caller: `SqliteStore` only executes statements on the
connection it is given, and the caller calls `flush` before it commits. A replica
process uses `DurableStore`, a database of its own (STATE_FILE) that commits at every
checkpoint; after a crash the core rolls it back to the stable checkpoint the records
name and replays the batches they say were executed after it (see `DurableStore`). An
SQLite error in a flush surfaces in the step that flushed, which may come after the
write that caused it; the node stops on it either way.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from ..errors import ConfigError
from ..protocol import codec
from ..protocol.partition import (
    BUCKETS,
    DEPTH,
    EMPTY,
    FANOUT,
    SUM_BYTES,
    PartitionTree,
    bucket_of,
    leaf_sum,
    sum_digest,
    update_sum,
)
from ..protocol.store import Entries
from .storage import probe_write

SCHEMA = (
    # Clustered by bucket: a checkpoint rehashes a dirty leaf with one range of the primary
    # key (no index lookups), so rehashing every leaf is one pass over the table in order.
    "CREATE TABLE IF NOT EXISTS state_entries (bucket INTEGER NOT NULL, key BLOB NOT NULL, "
    "value BLOB NOT NULL, PRIMARY KEY (bucket, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS state_entries_key ON state_entries (key)",
    "CREATE TABLE IF NOT EXISTS state_undo (checkpoint INTEGER, key BLOB, bucket INTEGER NOT NULL, "
    "value BLOB, PRIMARY KEY (checkpoint, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS state_undo_bucket ON state_undo (bucket, checkpoint)",
    # A leaf's digest and its sum of entry hashes (partition.leaf_sum) as of the latest
    # checkpoint; `_saved`: as of an older kept one, saved when a later checkpoint
    # changed them.
    "CREATE TABLE IF NOT EXISTS state_leaves (bucket INTEGER PRIMARY KEY, digest BLOB NOT NULL, "
    "sum BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS state_leaves_saved (checkpoint INTEGER, bucket INTEGER, "
    "digest BLOB NOT NULL, sum BLOB NOT NULL, PRIMARY KEY (checkpoint, bucket)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS state_leaves_next (bucket INTEGER PRIMARY KEY, digest BLOB NOT NULL, "
    "sum BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS state_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
)

OWN_TABLES = frozenset(
    ("state_entries", "state_undo", "state_leaves", "state_leaves_saved", "state_leaves_next", "state_meta")
)
"""The tables SCHEMA creates: a database holding tables but none of these is not a store."""

CHUNK = 500
"""Leaves digested per round (SQL parameters per query, sums held in memory at once)."""

WRITE_BUFFER = 4096
"""Keys whose writes wait in memory at most before they go to SQLite."""
WRITE_BUFFER_BYTES = 8 << 20
"""Bytes of keys and values that wait in memory at most: with WRITE_BUFFER, what bounds
the memory a burst of writes holds between two checkpoints (large values, a preload)."""


class SqliteStore:
    """A `pbft.protocol.store.Store` on an open SQLite connection (the caller commits)."""

    def __init__(self, db: sqlite3.Connection, verify: bool = False) -> None:
        self.db = db
        self.written = 0
        """Bytes this store wrote: keys and values put, saved old values' keys, leaf
        digests (what `pbft bench` reports per checkpoint)."""
        self.damaged: list[int] = []
        """With `verify`: the buckets whose entries did not hash to their stored digest."""
        self._full: set[int] = set()  # buckets whose writes the undo log does not hold
        # Writes not yet in the tables: key -> (bucket, newest value or None for a delete).
        self._pending: dict[bytes, tuple[int, bytes | None]] = {}
        self._pending_bytes = 0  # their keys and values (an overwritten one still counts)
        for statement in SCHEMA:
            db.execute(statement)
        db.execute("DELETE FROM state_leaves_next")  # sums of a digest no checkpoint followed
        row = db.execute("SELECT value FROM state_meta WHERE name = 'kept'").fetchone()
        self.kept: list[int] = list(codec.decode(row[0])) if row else []
        self.tree = PartitionTree()
        leaves = self.tree.levels[0]
        for bucket, digest in db.execute("SELECT bucket, digest FROM state_leaves"):
            leaves[bucket] = digest
        if verify:
            self.damaged = self._verify_leaves(leaves)
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
        # Writes since the latest checkpoint are the buckets of the keys saved under it;
        # with no checkpoint kept, every bucket holding something.
        if self.kept:
            query = "SELECT DISTINCT bucket FROM state_undo WHERE checkpoint = ?"
            self.tree.dirty = {b for (b,) in db.execute(query, (self.kept[-1],))}
        else:
            self.tree.dirty = {b for (b,) in db.execute("SELECT DISTINCT bucket FROM state_entries")}
            self.tree.dirty |= {b for (b,) in db.execute("SELECT bucket FROM state_leaves")}
            self._full = set(self.tree.dirty)

    def _verify_leaves(self, leaves: list[bytes]) -> list[int]:
        """Rehash every bucket from its entries (one pass in bucket order, O(state)) and
        put what the entries hash to where a stored digest differs: a flipped byte in an
        entry then shows as a checkpoint digest that is not the signed one, and the
        replica fetches those leaves instead of running on them. Only for a store with no
        writes since its latest checkpoint (a DurableStore just opened)."""
        damaged: list[int] = []
        fixed: list[tuple[int, bytes, bytes]] = []
        seen: set[int] = set()
        group: list[tuple[bytes, bytes]] = []
        current = -1

        def close() -> None:
            total = leaf_sum(group)
            d = sum_digest(total)
            if leaves[current] != d:
                leaves[current] = d
                damaged.append(current)
                fixed.append((current, d, total.to_bytes(SUM_BYTES, "little")))

        for bucket, key, value in self.db.execute(
            "SELECT bucket, key, value FROM state_entries ORDER BY bucket"
        ):
            if bucket != current:
                if current >= 0:
                    close()
                current, group = bucket, []
                seen.add(bucket)
            group.append((bytes(key), bytes(value)))
        if current >= 0:
            close()
        empty = EMPTY[0]
        for bucket, digest in enumerate(leaves):
            if bucket not in seen and digest != empty:
                leaves[bucket] = empty
                damaged.append(bucket)
                fixed.append((bucket, empty, bytes(SUM_BYTES)))
        # The sums are the base of the next checkpoint's incremental digests: they must
        # be the entries' too.
        self.db.executemany("INSERT OR REPLACE INTO state_leaves (bucket, digest, sum) VALUES (?, ?, ?)", fixed)
        return damaged

    # -- the service's view ---------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        waiting = self._pending.get(key)
        if waiting is not None:
            return waiting[1]
        row = self.db.execute(
            "SELECT value FROM state_entries WHERE bucket = ? AND key = ?", (bucket_of(key), key)
        ).fetchone()
        return None if row is None else row[0]

    def put(self, key: bytes, value: bytes) -> None:
        self._write(key, value)

    def delete(self, key: bytes) -> bool:
        if self.get(key) is None:
            return False
        self._write(key, None)
        return True

    def _write(self, key: bytes, value: bytes | None) -> None:
        bucket = bucket_of(key)
        self.tree.touch(bucket)
        self._pending[key] = (bucket, value)
        self._pending_bytes += len(key) + (0 if value is None else len(value))
        if len(self._pending) >= WRITE_BUFFER or self._pending_bytes >= WRITE_BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Put the writes waiting in memory into the tables (the caller commits them).
        The undo log first: the first write to a key after the latest checkpoint saves
        the value the key had under it (a key written before, since that checkpoint,
        has its row already: OR IGNORE)."""
        pending = self._pending
        if not pending:
            return
        db = self.db
        if not self.kept:
            self._full.update(bucket for bucket, _ in pending.values())  # no undo log: rehash whole
        else:
            latest = self.kept[-1]
            cur = db.executemany(
                "INSERT OR IGNORE INTO state_undo (checkpoint, key, bucket, value) "
                "SELECT ?, ?, ?, (SELECT value FROM state_entries WHERE bucket = ? AND key = ?)",
                [(latest, key, bucket, bucket, key) for key, (bucket, _) in pending.items()],
            )
            # The keys saved, at their mean length (executemany counts rows, not which);
            # the saved value is counted with the write below.
            saved = max(0, cur.rowcount)
            self.written += saved * (32 + sum(map(len, pending)) // len(pending))
        puts = [(key, bucket, value) for key, (bucket, value) in pending.items() if value is not None]
        if puts:
            db.executemany("INSERT OR REPLACE INTO state_entries (key, bucket, value) VALUES (?, ?, ?)", puts)
            self.written += sum(len(key) + len(value) for key, _, value in puts)
        if len(puts) < len(pending):
            db.executemany(
                "DELETE FROM state_entries WHERE bucket = ? AND key = ?",
                [(bucket, key) for key, (bucket, value) in pending.items() if value is None],
            )
        # Only now: should a statement fail (a full disk), the writes are still here, and
        # flushing them again is harmless (the undo rows are OR IGNORE, the rest idempotent).
        self._pending = {}
        self._pending_bytes = 0

    def scan(self, start: bytes, end: bytes | None, limit: int) -> Entries:
        self.flush()
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
        self.flush()
        return self.db.execute("SELECT COUNT(*) FROM state_entries").fetchone()[0]

    # -- checkpoints ------------------------------------------------------------------------

    def _entries(self, bucket: int) -> Entries:
        self.flush()
        rows = self.db.execute("SELECT key, value FROM state_entries WHERE bucket = ?", (bucket,))
        return [(bytes(k), bytes(v)) for k, v in rows]

    def _in(self, query: str, fixed: tuple, buckets: list[int]) -> Iterable[tuple]:
        """Rows of `query` (ending in `bucket IN ({})`) for `buckets`, in parts."""
        for i in range(0, len(buckets), CHUNK):
            part = buckets[i : i + CHUNK]
            yield from self.db.execute(query.format(",".join("?" * len(part))), (*fixed, *part))

    def digest(self) -> bytes:
        """The current root. A dirty leaf's sum is incremental (TOCS 5.3.1): its sum at
        the latest checkpoint, minus the old and plus the new entry hash of each key
        written since (the undo log has the old values): two hashes per write, whatever
        else the leaf holds. A leaf whose writes no checkpoint's undo log holds (`_full`)
        is summed from all its entries. The new sums wait in `state_leaves_next` for the
        checkpoint (not in memory: every leaf can be dirty, 32 MiB of sums), computed
        CHUNK leaves at a time."""
        self.flush()
        dirty = sorted(self.tree.dirty)
        digests: dict[int, bytes] = {}
        for i in range(0, len(dirty), CHUNK):
            part = dirty[i : i + CHUNK]
            full = [b for b in part if b in self._full or not self.kept]
            totals = {b: 0 for b in part if b not in self._full and self.kept}
            if totals:
                for bucket, total in self._in(
                    "SELECT bucket, sum FROM state_leaves WHERE bucket IN ({})", (), list(totals)
                ):
                    totals[bucket] = int.from_bytes(total, "little")
                for bucket, key, old, new in self._in(
                    "SELECT u.bucket, u.key, u.value, e.value FROM state_undo u LEFT JOIN state_entries e "
                    "ON e.bucket = u.bucket AND e.key = u.key WHERE u.checkpoint = ? AND u.bucket IN ({})",
                    (self.kept[-1],), list(totals),
                ):
                    totals[bucket] = update_sum(totals[bucket], bytes(key), None if old is None else bytes(old),
                                                None if new is None else bytes(new))
            for bucket in full:
                totals[bucket] = leaf_sum(self._entries(bucket))
            rows = []
            for bucket, total in totals.items():
                d = digests[bucket] = sum_digest(total)
                rows.append((bucket, d, total.to_bytes(SUM_BYTES, "little")))
            self.db.executemany(
                "INSERT OR REPLACE INTO state_leaves_next (bucket, digest, sum) VALUES (?, ?, ?)", rows
            )
        return self.tree.refresh_with(digests)

    def checkpoint(self, seq: int) -> bytes:
        if self.kept and seq <= self.kept[-1]:
            raise ValueError(f"checkpoint {seq} is not after {self.kept[-1]}")
        root = self.digest()
        db = self.db
        changed = "n.digest != COALESCE(l.digest, ?)"
        if self.kept:  # what the changed leaves were at the previous checkpoint
            cur = db.execute(
                "INSERT OR IGNORE INTO state_leaves_saved (checkpoint, bucket, digest, sum) "
                "SELECT ?, n.bucket, COALESCE(l.digest, ?), COALESCE(l.sum, zeroblob(?)) "
                f"FROM state_leaves_next n LEFT JOIN state_leaves l ON l.bucket = n.bucket WHERE {changed}",
                (self.kept[-1], EMPTY[0], SUM_BYTES, EMPTY[0]),
            )
            self.written += (32 + SUM_BYTES) * max(0, cur.rowcount)
        cur = db.execute(
            "INSERT OR REPLACE INTO state_leaves (bucket, digest, sum) SELECT n.bucket, n.digest, n.sum "
            f"FROM state_leaves_next n LEFT JOIN state_leaves l ON l.bucket = n.bucket WHERE {changed}",
            (EMPTY[0],),
        )
        self.written += (32 + SUM_BYTES) * max(0, cur.rowcount)
        db.execute("DELETE FROM state_leaves_next")
        self._full.clear()
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
        for table in ("state_undo", "state_leaves_saved"):
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

    def _undone(self, rows: Iterable[tuple]) -> dict[bytes, bytes | None]:
        """key -> the value it had at the checkpoint asked for (None: absent), from undo
        rows (checkpoint, key, value) in ascending checkpoint order: the earliest wins."""
        out: dict[bytes, bytes | None] = {}
        for _, key, value in rows:
            out.setdefault(bytes(key), None if value is None else bytes(value))
        return out

    def bucket_at(self, seq: int, bucket: int) -> Entries | None:
        if seq not in self.trees or not 0 <= bucket < BUCKETS:
            return None
        self.flush()
        entries = dict(self._entries(bucket))
        rows = self.db.execute(
            "SELECT checkpoint, key, value FROM state_undo WHERE bucket = ? AND checkpoint >= ? "
            "ORDER BY checkpoint",
            (bucket, seq),
        )
        for key, value in self._undone(rows).items():
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = value
        return sorted(entries.items())

    def rollback(self, seq: int) -> None:
        """As `MemoryStore.rollback`: the state as at kept checkpoint `seq`, later
        checkpoints forgotten; costs the keys written since `seq`."""
        if seq not in self.trees:
            raise ValueError(f"checkpoint {seq} is not kept")
        self.flush()  # the undo log must hold every write since `seq`
        db = self.db
        rows = db.execute(
            "SELECT checkpoint, key, value FROM state_undo WHERE checkpoint >= ? ORDER BY checkpoint", (seq,)
        ).fetchall()
        for key, value in self._undone(rows).items():
            if value is None:
                db.execute("DELETE FROM state_entries WHERE bucket = ? AND key = ?", (bucket_of(key), key))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO state_entries (key, bucket, value) VALUES (?, ?, ?)",
                    (key, bucket_of(key), value),
                )
        later = [c for c in self.kept if c >= seq]
        # Each leaf's digest and sum at `seq`: saved under the earliest kept checkpoint
        # from `seq` on that saved them, else as stored (unchanged since).
        restored: dict[int, tuple[bytes, bytes]] = {}
        for bucket, digest, total in db.execute(
            "SELECT bucket, digest, sum FROM state_leaves_saved WHERE checkpoint >= ? ORDER BY checkpoint", (seq,)
        ):
            restored.setdefault(bucket, (bytes(digest), bytes(total)))
        db.executemany(
            "INSERT OR REPLACE INTO state_leaves (bucket, digest, sum) VALUES (?, ?, ?)",
            [(b, d, t) for b, (d, t) in restored.items()],
        )
        target = self.trees[seq]
        for table in ("state_undo", "state_leaves_saved"):
            db.execute(f"DELETE FROM {table} WHERE checkpoint >= ?", (seq,))
        for c in later[1:]:
            del self.trees[c]
        self.kept = [c for c in self.kept if c <= seq]
        self._save_kept()
        self.tree = target.copy()
        self.db.execute("DELETE FROM state_leaves_next")
        self._full.clear()

    def tree_now(self) -> PartitionTree:
        self.digest()
        return self.tree.copy()

    def clear(self) -> None:
        self._pending = {}
        self._pending_bytes = 0
        for table in ("state_entries", "state_undo", "state_leaves", "state_leaves_saved", "state_meta"):
            self.db.execute(f"DELETE FROM {table}")
        self.kept = []
        self.trees = {}
        self.tree = PartitionTree()
        self.db.execute("DELETE FROM state_leaves_next")
        self._full.clear()

    def install_bucket(self, bucket: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        for key, _ in self._entries(bucket):
            self.delete(key)
        for key, value in entries:
            self.put(key, value)



INSTALLS_PER_COMMIT = 256
"""Leaves a state transfer installs between two commits of a DurableStore."""

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
        """Open (or create) the store in the file `path`. sqlite3.DatabaseError if it
        cannot be read or written; ConfigError if it is another program's database."""
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            tables = {
                name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not name.startswith("sqlite_")
            }
            if tables and not tables & OWN_TABLES:
                # Not ours, so not ours to add tables to (a wrong file copied in).
                raise ConfigError(
                    f"{path} is an SQLite database, but not a pbft state store (none of its "
                    "tables are pbft's); move that file away: the replica then fetches the "
                    "state from the others."
                )
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL: a power loss may lose the last commit, never corrupt the file; the
            # core recovers from that as above.
            db.execute("PRAGMA synchronous = NORMAL")
            # A file SQLite could open only read-only is refused here, not at the first
            # checkpoint.
            probe_write(db)
            db.execute("BEGIN")
            super().__init__(db, verify=True)
        except BaseException:
            db.close()
            raise
        self.commits = 0
        self._installed = 0
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0
        """CPU seconds spent taking checkpoints: digests and bookkeeping."""
        self.commit_seconds = 0.0
        """CPU seconds spent committing at checkpoints: making the interval's writes
        durable, which costs the B-tree pages they touched (more, in a larger state: a
        write to a table of a million keys dirties a page of its own)."""

    def commit(self) -> None:
        self.flush()
        self.db.execute("COMMIT")
        self.commits += 1
        self.db.execute("BEGIN")

    def checkpoint(self, seq: int) -> bytes:
        self.flush()  # the interval's writes are the execution's cost, not the checkpoint's
        started = time.process_time()
        root = super().checkpoint(seq)
        digested = time.process_time()
        self.commit()
        self.checkpoints += 1
        self.checkpoint_seconds += digested - started
        self.commit_seconds += time.process_time() - digested
        return root

    def rollback(self, seq: int) -> None:
        super().rollback(seq)
        self.commit()

    def clear(self) -> None:
        super().clear()
        self.commit()

    def install_bucket(self, bucket: int, entries) -> None:
        """A leaf a state transfer verified. Committed every INSTALLS_PER_COMMIT leaves:
        a transfer can take minutes and be restarted towards a newer checkpoint many
        times before it ends (no checkpoint, hence no commit, meanwhile), and a crash
        must not lose what it installed. The store is a mix of old and new leaves until
        the walk ends; a restart never runs on it (the window jump makes it walk again)."""
        super().install_bucket(bucket, entries)
        self._installed += 1
        if self._installed % INSTALLS_PER_COMMIT == 0:
            self.commit()

    def close(self) -> None:
        """Close without committing what followed the last checkpoint (the core replays
        it after a restart, as after a crash)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self.db.close()
