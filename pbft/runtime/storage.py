"""Durable storage of a replica: SQLite in its data directory (DESIGN.md section 8).

Theory of operation. The core decides *what* must survive a crash and says so with
`Persist(record, seq, view, tag, value)` and `Truncate(seq)` actions; this module only
makes them durable. One table, `records`, keyed by (record, view, seq, tag) exactly as
`Persist.key`: a later record with the same key replaces the earlier one (INSERT OR
REPLACE). `Truncate(seq)` deletes the VOTE, PREPARED and EXECUTED records at or below
`seq`, which a stable checkpoint (persisted before it, in the same transaction) covers.
`load()` returns the records in the order they were last written, for `Replica.recover`.

A second table, `evidence`, keeps the conflicting pairs of signed envelopes the core
reports (`events.Evidence`), deduplicated by (culprit, kind, digest of the pair) and
bounded per (culprit, kind) by EVIDENCE_PER_CULPRIT; `pbft evidence` reads it
(pbft.runtime.evidence). It is created if missing, so older directories gain it.

`apply(actions)` writes every Persist and Truncate of one batch of steps in ONE
transaction, and the node performs none of that batch's sends before `apply` returns:
that is the ordering contract of pbft.protocol.events, and what keeps a restarted replica
from signing a vote that contradicts one it already sent.

A `meta` table binds the directory to one replica of one cluster: format version, cluster
id, replica id, the replica's own public key, and a hash of every replica's public key.
`Storage.open` refuses, with one sentence (ConfigError), a directory written for another
cluster, another replica, other keys, a newer format, or a database that is corrupt, and
never reuses or overwrites such a directory. A lock file keeps a second process off a
directory that is in use.

The fsync policy (`[storage] fsync` in the cluster file; `FSYNC_POLICIES`) is the one
durability trade-off an operator chooses:

* "always" (default; SQLite synchronous=FULL): every commit is fsynced before the node
  sends what depends on it. Nothing the replica signed or acknowledged is lost, even on
  power loss or an OS crash.
* "batch" (synchronous=NORMAL): in WAL mode the log is fsynced only when SQLite
  checkpoints it into the database. A process crash (kill -9) loses nothing, because the
  commit is in the OS page cache; a power loss or OS crash may roll back the last
  commits (the database stays consistent), so that replica could forget a vote it sent:
  it may then equivocate, which the protocol tolerates only while at most f replicas are
  faulty.
* "off" (synchronous=OFF): no fsync at all. Survives a process crash, not an OS crash,
  after which the database may be corrupt (`open` then refuses it: restore a backup or
  start that replica from an empty directory and let state transfer refill it).

A full disk (SQLITE_FULL, ENOSPC) or any other write failure raises `StorageError` from
`apply`; the node then stops rather than run on without durability.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import sqlite3
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..protocol.config import ClusterConfig, ConfigError
from ..protocol.events import Persist, Record, Truncate

FORMAT_VERSION = 1
"""The schema written by this build; a directory with a higher version is refused."""
DB_FILE = "pbft.sqlite3"
LOCK_FILE = "LOCK"
FSYNC_POLICIES = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}
"""`[storage] fsync` value -> SQLite `PRAGMA synchronous` (see the module docstring)."""
DEFAULT_FSYNC = "always"
TRUNCATED = (Record.VOTE.value, Record.PREPARED.value, Record.EXECUTED.value)
"""Record kinds a `Truncate` may delete; CHECKPOINT and VIEW records are one per tag."""
BUSY_TIMEOUT_MS = 5000
EVIDENCE_PER_CULPRIT = 256
"""Evidence records kept per (culprit, kind); one pair already proves the fault, more
only fill the disk of a replica a Byzantine peer keeps signing conflicts for."""
EVIDENCE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS evidence (culprit INTEGER NOT NULL, kind TEXT NOT NULL,"
    " pair BLOB NOT NULL, first BLOB NOT NULL, second BLOB NOT NULL, recorded REAL NOT NULL,"
    " PRIMARY KEY (culprit, kind, pair))"
)

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE records (record TEXT NOT NULL, view INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " tag TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (record, view, seq, tag))",
    "CREATE INDEX records_seq ON records (seq)",
)


_UPSERT = "INSERT OR REPLACE INTO records (record, view, seq, tag, value) VALUES (?, ?, ?, ?, ?)"


class StorageError(RuntimeError):
    """Writing to the data directory failed while running (full disk, I/O error): one
    sentence. The replica must stop: it cannot promise durability any more."""


def default_data_dir(config: ClusterConfig, replica_id: int) -> str:
    """`<cluster file's directory>/data/replica-<id>`."""
    return os.path.join(config.base_dir, "data", f"replica-{replica_id}")


def fsync_setting(cluster_path: str) -> str:
    """The `[storage] fsync` policy of a cluster file (default "always"); ConfigError if
    it is not one of FSYNC_POLICIES. The cluster file itself was validated already."""
    try:
        with open(cluster_path, "rb") as fh:
            table = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the cluster file {cluster_path}: {exc}.") from None
    storage = table.get("storage", {})
    if not isinstance(storage, dict):
        raise ConfigError(f"{cluster_path}: [storage] must be a table.")
    value = storage.get("fsync", DEFAULT_FSYNC)
    if value not in FSYNC_POLICIES:
        raise ConfigError(
            f"{cluster_path}: [storage]: 'fsync' must be \"always\", \"batch\" or \"off\", not {value!r}."
        )
    return value


def keys_hash(config: ClusterConfig) -> str:
    """A hash of every replica's id and public key: which cluster, not just its name."""
    h = hashlib.sha256(b"pbft/replica-keys/v1")
    for r in config.replicas:
        h.update(r.id.to_bytes(2, "big") + r.public_key)
    return h.hexdigest()


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return False


class Storage:
    """One replica's records in `<data dir>/pbft.sqlite3`. Use `Storage.open`."""

    def __init__(self, path: str, db: sqlite3.Connection, lock_fd: int, fsync: str) -> None:
        self.path = path
        self.fsync = fsync
        self._db = db
        self._lock_fd = lock_fd
        self.transactions = 0
        """Transactions committed by `apply` (one per call that had something to write)."""
        self.records_written = 0

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str, config: ClusterConfig, replica_id: int, fsync: str = DEFAULT_FSYNC
    ) -> Storage:
        """Create or open the data directory `path` for `replica_id` of `config`.

        Raises ConfigError (one sentence) for a directory that belongs to another cluster
        or replica, a newer format, a corrupt database, or one in use by another process.
        """
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"the fsync policy must be always, batch or off, not {fsync!r}.")
        path = os.path.abspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"the data directory {path} is a file, not a directory.")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the data directory {path}: {exc.strerror or exc}.") from None
        lock_fd = _lock(path, replica_id)
        try:
            db = _connect(path, config, replica_id, fsync)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, db, lock_fd, fsync)

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        try:
            self._db.close()
        finally:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading and writing ----------------------------------------------------------

    def load(self) -> list[Persist]:
        """Every stored record, in the order it was last written."""
        rows = self._db.execute(
            "SELECT record, view, seq, tag, value FROM records ORDER BY rowid"
        ).fetchall()
        out = []
        for record, view, seq, tag, value in rows:
            try:
                kind = Record(record)
            except ValueError:
                raise ConfigError(
                    f"the data directory {self.path} holds an unknown record kind {record!r}."
                ) from None
            out.append(Persist(kind, seq, view, tag, bytes(value)))
        return out

    def apply(self, actions: Iterable[object]) -> int:
        """Make every Persist and Truncate among `actions` durable, in order, in one
        transaction; other actions are skipped. Returns how many were written. Raises
        StorageError (nothing of this call is then stored) if the write fails."""
        writes = [a for a in actions if isinstance(a, Persist | Truncate)]
        if not writes:
            return 0
        with self._transaction("write to") as db:
            rows: list[tuple] = []  # consecutive Persists go in one executemany
            for a in writes:
                if isinstance(a, Persist):
                    rows.append((a.record.value, a.view, a.seq, a.tag, a.value))
                    continue
                if rows:
                    db.executemany(_UPSERT, rows)
                    rows = []
                db.execute(
                    "DELETE FROM records WHERE seq <= ? AND record IN (?, ?, ?)",
                    (a.seq, *TRUNCATED),
                )
            if rows:
                db.executemany(_UPSERT, rows)
        self.transactions += 1
        self.records_written += len(writes)
        return len(writes)

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block completes, rolled back if it
        raises; SQLite and OS errors become a StorageError that says `cannot {what} the
        data directory ...` (or that its disk is full)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            if is_disk_full(exc):
                raise StorageError(f"the disk holding the data directory {self.path} is full") from exc
            raise StorageError(f"cannot {what} the data directory {self.path}: {exc}") from exc

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    # -- evidence ---------------------------------------------------------------------

    def add_evidence(self, culprit: int, kind: str, first: bytes, second: bytes, now: float) -> bool:
        """Store one conflicting pair in its own transaction; True if it is new (not a
        duplicate, and below EVIDENCE_PER_CULPRIT for this culprit and kind). Raises
        StorageError if the write fails."""
        pair = evidence_pair_digest(first, second)
        cur = None
        with self._transaction("store evidence in") as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM evidence WHERE culprit = ? AND kind = ?", (culprit, kind)
            ).fetchone()
            if count < EVIDENCE_PER_CULPRIT:
                cur = db.execute(
                    "INSERT OR IGNORE INTO evidence (culprit, kind, pair, first, second, recorded)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (culprit, kind, pair, first, second, now),
                )
        return cur is not None and cur.rowcount == 1

    def evidence(self) -> list[tuple[int, str, bytes, bytes, float]]:
        """Every stored (culprit, kind, first, second, recorded), oldest first."""
        return read_evidence(self._db)


def evidence_pair_digest(first: bytes, second: bytes) -> bytes:
    """The dedupe key of a pair: order-insensitive, so (a, b) and (b, a) are one record."""
    lo, hi = sorted((first, second))
    h = hashlib.sha256(b"pbft/evidence-pair/v1")
    for part in (lo, hi):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.digest()


def read_evidence(db: sqlite3.Connection) -> list[tuple[int, str, bytes, bytes, float]]:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "evidence" not in tables:
        return []
    rows = db.execute(
        "SELECT culprit, kind, first, second, recorded FROM evidence ORDER BY rowid"
    ).fetchall()
    return [(c, k, bytes(a), bytes(b), t) for c, k, a, b, t in rows]


def _lock(path: str, replica_id: int) -> int:
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(
            f"the data directory of replica {replica_id} ({path}) is already in use by another "
            "process."
        ) from None
    return fd


def _connect(path: str, config: ClusterConfig, replica_id: int, fsync: str) -> sqlite3.Connection:
    file = os.path.join(path, DB_FILE)
    expected = {
        "format_version": str(FORMAT_VERSION),
        "cluster_id": config.cluster_id,
        "replica_id": str(replica_id),
        "public_key": config.replicas[replica_id].public_key.hex(),
        "replica_keys": keys_hash(config),
    }
    db = None
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per apply().
        # check_same_thread=False: the node may commit from a worker thread, never two at once.
        db = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise ConfigError(
                f"the data directory {path} holds a corrupt database ({check[0][0]}); "
                "restore a backup or move it away to start this replica empty."
            )
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", expected.items())
            db.execute("COMMIT")
        elif not {"meta", "records"} <= tables:
            raise ConfigError(f"{file} is an SQLite database, but not a pbft data directory.")
        else:
            _check_meta(path, dict(db.execute("SELECT key, value FROM meta")), expected)
        db.execute(EVIDENCE_SCHEMA)  # older directories gain the table
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise ConfigError(f"the data directory {path} cannot use SQLite WAL mode ({mode}).")
        db.execute(f"PRAGMA synchronous = {FSYNC_POLICIES[fsync]}")
        return db
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        if is_disk_full(exc):
            raise ConfigError(f"the disk holding the data directory {path} is full.") from None
        raise ConfigError(
            f"the data directory {path} holds a corrupt or unreadable database ({exc}); "
            "restore a backup or move it away to start this replica empty."
        ) from None
    except BaseException:
        if db is not None:
            db.close()
        raise


def _check_meta(path: str, found: dict[str, str], expected: dict[str, str]) -> None:
    version = found.get("format_version", "")
    if not version.isdigit():
        raise ConfigError(f"the data directory {path} has no valid format version.")
    if int(version) > FORMAT_VERSION:
        raise ConfigError(
            f"the data directory {path} has format version {version}, newer than this "
            f"build reads ({FORMAT_VERSION}); run a newer pbft."
        )
    if int(version) < FORMAT_VERSION:
        raise ConfigError(
            f"the data directory {path} has old format version {version}, which this build "
            f"cannot read (it reads {FORMAT_VERSION})."
        )
    if found.get("cluster_id") != expected["cluster_id"]:
        raise ConfigError(
            f"the data directory {path} belongs to cluster {found.get('cluster_id')!r}, "
            f"not {expected['cluster_id']!r}."
        )
    if found.get("replica_id") != expected["replica_id"]:
        raise ConfigError(
            f"the data directory {path} belongs to replica {found.get('replica_id')}, "
            f"not replica {expected['replica_id']}."
        )
    if found.get("public_key") != expected["public_key"] or found.get(
        "replica_keys"
    ) != expected["replica_keys"]:
        raise ConfigError(
            f"the data directory {path} was written for other keys of cluster "
            f"{expected['cluster_id']!r} (were the keys regenerated?)."
        )
