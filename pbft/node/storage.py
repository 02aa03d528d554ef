"""Durable storage of a replica: SQLite in its data directory (README: "Durability").

Theory of operation. The core decides *what* must survive a crash and says so with
`Persist(record, seq, view, tag, value)` and `Truncate(seq)` actions; this module only
makes them durable. One table, `records`, keyed by (record, view, seq, tag) exactly as
`Persist.key`: a later record with the same key replaces the earlier one (INSERT OR
REPLACE). `Truncate(seq)` deletes the VOTE, PREPARED and EXECUTED records at or below
`seq`, which a stable checkpoint (persisted before it, in the same transaction) covers;
with `below_view` (a new epoch), only those of earlier views, and the VIEW records of
earlier epochs with them.
`load()` returns the records in the order they were last written, for `Replica.recover`.

A second table, `evidence`, keeps the conflicting pairs of signed envelopes the core
reports (`events.Evidence`), deduplicated by (culprit, kind, digest of the pair) and
bounded per (culprit, kind) by EVIDENCE_PER_CULPRIT; `pbft evidence` reads it
(pbft.cluster.evidence). It is created if missing, so older directories gain it.

`apply(actions)` writes every Persist and Truncate of one batch of steps in ONE
transaction, and the node performs none of that batch's sends before `apply` returns:
that is the ordering contract of pbft.protocol.events, and what keeps a restarted replica
from signing a vote that contradicts one it already sent.

A `meta` table binds the directory to one replica of one cluster: format version, cluster
id, replica id, the replica's own public key, and a hash of every replica's public key.
`Storage.open` refuses, with one sentence (ConfigError), a directory written for another
cluster, another replica, other keys, a newer format, or a database that is corrupt, and
never reuses or overwrites such a directory. A lock file keeps a second process off a
directory that is in use. A directory or database file this process may not read or
write (`check_writable`, and a rolled-back write at open: `probe_write`) is refused as
a permission problem, never as damage: its remedy is chmod or chown, not moving intact
votes away. SQLite's own words quoted in a refusal are put on one line (`one_line`).

Stored state is not trusted blindly (format 2). SQLite's `PRAGMA quick_check` at open
finds a damaged b-tree (measured on the test VM, warm cache: 7 ms for a store with a 5 MB
checkpoint state, 32 ms with 200 MB; a store stays small otherwise, as stable checkpoints
truncate it), but not a byte flipped inside a value, nor a history that went backwards
while staying a valid database. So:

* Every record carries `sum`, BLAKE2b-128 (`record_sum`, personalised "pbft-record-v2")
  of its record kind, view, seq, tag and value. `load` recomputes it for every record and
  refuses (ConfigError, one sentence naming the directory and the record) any that does
  not match: a damaged store is never replayed. (Checking a recovered checkpoint's state
  against the digest its proof signed is the core's part, in `Replica.recover`.)
* The database counts its own history: `meta` holds `incarnation` (random, chosen when
  the database is created) and `history` = "commits view seq": how many `apply`
  transactions were ever committed and the highest view and seq any of them wrote,
  updated inside each of those transactions.
* The sidecar HISTORY_FILE (`HISTORY`, next to the database; one line of JSON with the
  same fields and a BLAKE2b check of them) holds a lower bound of that history. It is
  replaced atomically (write `HISTORY.tmp`, fsync, rename, fsync the directory) with a
  value read *after* the commits it counts were durable (with fsync "batch" or "off" the
  database and its WAL are fsynced first), on open, on close, and in between by a thread
  of its own at most every HISTORY_INTERVAL while commits go on. A crash between a commit
  and the sidecar's update leaves the database ahead of the sidecar, which is accepted:
  for an honest crash the database is never behind it.
* `open` refuses, naming both counts: a database behind HISTORY (a deleted or damaged
  WAL, an older copy restored over the newer), a database with another incarnation (one
  copied in from elsewhere), a missing or empty database while HISTORY counts commits
  (truncated to 0 bytes, deleted), a database with commits but no HISTORY, a damaged
  HISTORY, and a format 1 database under a HISTORY. A fresh directory (neither) is a
  clean start; so is a database that never committed (a crash while it was created).
* The operator's escape hatch: `pbft replica --accept-rollback` (`accept_rollback=True`)
  opens a database behind or without its HISTORY and makes HISTORY agree with it, for a
  backup restored on purpose; record checksums are still checked. Restoring a whole
  directory copied from a stopped replica (database and HISTORY together) needs no flag.
* Migration: a format 1 directory (no checksums, no history) is upgraded in one
  transaction on its first open: every record gets its checksum as it is (format 1 had
  nothing to check it against, so it is trusted as before) and the history starts.

HISTORY catches a rollback only of commits it had already counted: those older than
about HISTORY_INTERVAL (plus one sidecar write) when the damage happened. A replica that
was stopped cleanly, or idle, has a HISTORY equal to its database.

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
import json
import logging
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..files import Unreadable, check_regular
from ..protocol import codec
from ..protocol.config import ClusterConfig
from ..protocol.events import Persist, Record, Truncate

if TYPE_CHECKING:
    from .statestore import DurableStore

FORMAT_VERSION = 5
"""The schema written by this build; a directory with a higher version is refused, one
with version 1 (no checksums, no history) is migrated once on open."""
DB_FILE = "pbft.sqlite3"
LOCK_FILE = "LOCK"
HISTORY_FILE = "HISTORY"
"""The sidecar next to the database: a lower bound of its durable history."""
HISTORY_INTERVAL = 0.1
"""Seconds at least between two updates of HISTORY while commits go on (each update is
two fsyncs, ~1.5 ms of waiting and ~0.16 ms of CPU on the test VM, on its own thread)."""
SUM_SIZE = 16
"""Bytes of BLAKE2b in a record's checksum."""
FSYNC_POLICIES = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}
"""`[storage] fsync` value -> SQLite `PRAGMA synchronous` (see the module docstring)."""
DEFAULT_FSYNC = "always"
TRUNCATED = (Record.VOTE.value, Record.PREPARED.value, Record.EXECUTED.value)
"""Record kinds a `Truncate` deletes at or below its seq; CHECKPOINT and WINDOW records
are one per tag, VIEW records one per epoch and tag."""
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
    " tag TEXT NOT NULL, value BLOB NOT NULL, sum BLOB NOT NULL,"
    " PRIMARY KEY (record, view, seq, tag))",
    "CREATE INDEX records_seq ON records (seq)",
)


_UPSERT = (
    "INSERT OR REPLACE INTO records (record, view, seq, tag, value, sum) VALUES (?, ?, ?, ?, ?, ?)"
)
_SET_HISTORY = "UPDATE meta SET value = ? WHERE key = 'history'"


log = logging.getLogger("pbft.storage")

MESSAGE_DETAIL = 160
"""Characters at most of SQLite's own words (an integrity check's report) quoted in a
refusal, which stays one line."""

REMEDY = (
    "restore the newer copy, start with --accept-rollback if you restored this one on "
    "purpose, or move the directory away to start this replica empty"
)
"""The end of every refusal of a directory whose history went backwards or vanished."""


@dataclass(frozen=True, slots=True)
class History:
    """How far a database's history has gone: `commits` is the number of `apply`
    transactions ever committed to it, `view` and `seq` the highest of any record they
    wrote; `incarnation` names the database (random, chosen when it was created), so a
    database from elsewhere is not taken for this one. The database keeps its own in the
    `meta` table (updated in every transaction); HISTORY_FILE keeps a lower bound of it."""

    incarnation: str
    commits: int
    view: int
    seq: int

    def meta_value(self) -> str:
        return f"{self.commits} {self.view} {self.seq}"

    def describe(self) -> str:
        return f"{self.commits} commits (up to view {self.view}, seq {self.seq})"

    def sidecar_bytes(self) -> bytes:
        fields = {"incarnation": self.incarnation, "commits": self.commits, "view": self.view, "seq": self.seq}
        fields["check"] = _sidecar_check(fields)
        return (json.dumps(fields, sort_keys=True) + "\n").encode()


def _sidecar_check(fields: dict) -> str:
    body = json.dumps({k: fields[k] for k in ("incarnation", "commits", "view", "seq")}, sort_keys=True)
    return hashlib.blake2b(body.encode(), digest_size=SUM_SIZE, person=b"pbft-history-v1").hexdigest()


_SUM_START = hashlib.blake2b(digest_size=SUM_SIZE, person=b"pbft-record-v2")
_SUM_HEADER = struct.Struct(">HQQH").pack


def record_sum(record: str, view: int, seq: int, tag: str, value: bytes) -> bytes:
    """The checksum stored with a record: BLAKE2b-128, personalised "pbft-record-v2", of
    len(record) (2 bytes), view, seq (8 bytes each), len(tag) (2 bytes), record and tag
    (UTF-8), then the value; integers big-endian."""
    r, t = record.encode(), tag.encode()
    h = _SUM_START.copy()
    h.update(_SUM_HEADER(len(r), view, seq, len(t)) + r + t)
    h.update(value)
    return h.digest()


class StorageError(RuntimeError):
    """Writing to the data directory failed while running (full disk, I/O error): one
    sentence. The replica must stop: it cannot promise durability any more."""


def default_data_dir(config: ClusterConfig, replica_id: int) -> str:
    """`<cluster file's directory>/data/replica-<id>`."""
    return os.path.join(config.base_dir, "data", f"replica-{replica_id}")


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


def one_line(text: str, limit: int = MESSAGE_DETAIL) -> str:
    """`text` on one line (whitespace runs, newlines among them, become one space), cut
    to `limit` characters: for quoting SQLite's words inside a one-sentence refusal."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def is_read_only(exc: BaseException) -> bool:
    """Whether SQLite refused to write because it could open the database only
    read-only (its file, WAL or directory not writable): not damage."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_READONLY


def _read_only(file: str, exc: BaseException) -> str:
    return (
        f"{file} cannot be written ({one_line(str(exc))}): check the owner and mode of the "
        "file and of its directory, and that its file system is writable."
    )


def _denied(path: str) -> str:
    """Why `path`, which this process may not write, cannot be: a read-only file system
    or a permission."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        pass
    return "permission denied (check its owner and mode)"


def _os_reason(exc: OSError) -> str:
    """An OSError in a few words; a permission problem named as one."""
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (check the owner and mode of the file and of its directory)"
    return str(exc.strerror or exc)


def _can(path: str, mode: int) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def probe_write(db: sqlite3.Connection) -> None:
    """Write to `db` and roll the write back: a database SQLite could open only
    read-only (SQLITE_READONLY: a read-only file system, an immutable file) is then
    refused when it opens, not at the replica's first write. (BEGIN IMMEDIATE alone
    succeeds on a read-only database in WAL mode.)"""
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        db.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def check_writable(path: str, database: str | None = None) -> None:
    """ConfigError (one sentence) if this process cannot create files in the data
    directory `path` or, with `database`, read and write that database's files in it
    (the file, its WAL and shared-memory file, those that exist). A permission problem
    is told apart from damage: its remedy is a chmod or chown, never to move an intact
    database (and the votes it holds) away. SQLite itself would open such a database
    read-only, or not at all, and say "unable to open database file" or fail at the
    replica's first write."""
    if not _can(path, os.W_OK | os.X_OK):
        raise ConfigError(f"the data directory {path} cannot be written: {_denied(path)}.")
    if database is None:
        return
    for name in (database, database + "-wal", database + "-shm"):
        file = os.path.join(path, name)
        if os.path.exists(file) and not os.path.isdir(file) and not _can(file, os.R_OK | os.W_OK):
            raise ConfigError(f"{file} cannot be read and written: {_denied(file)}.")


class Storage:
    """One replica's records in `<data dir>/pbft.sqlite3`. Use `Storage.open`."""

    def __init__(
        self, path: str, db: sqlite3.Connection, lock_fd: int, fsync: str, history: History
    ) -> None:
        self.path = path
        self.fsync = fsync
        self._db = db
        self._lock_fd = lock_fd
        self.transactions = 0
        """Transactions committed by `apply` (one per call that had something to write)."""
        self.records_written = 0
        self.history = history
        """The database's history as of the last commit (see `History`)."""
        self._history_written: History | None = None
        """What HISTORY_FILE says (as last written by this process)."""
        self._history_error: BaseException | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._writer: threading.Thread | None = None
        self._state: DurableStore | None = None

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str,
        config: ClusterConfig,
        replica_id: int,
        fsync: str = DEFAULT_FSYNC,
        *,
        accept_rollback: bool = False,
        history_interval: float | None = HISTORY_INTERVAL,
    ) -> Storage:
        """Create or open the data directory `path` for `replica_id` of `config`.

        Raises ConfigError (one sentence) for a directory that belongs to another cluster
        or replica, a newer format, a corrupt database, one whose history is behind its
        HISTORY_FILE or vanished (unless `accept_rollback`: the operator restored an older
        copy on purpose), or one in use by another process. HISTORY_FILE is brought up to
        date, then, every `history_interval` seconds at most while commits go on, by a
        thread of its own (None: only on open and close, for tests).
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
        check_writable(path)
        lock_fd = _lock(path, replica_id)
        db = None
        try:
            try:
                sidecar = read_sidecar(path)
            except ConfigError:
                if not accept_rollback:
                    raise
                sidecar = None  # the operator vouches for the database as it is
            db, history = _connect(path, config, replica_id, fsync, sidecar, accept_rollback)
            store = cls(path, db, lock_fd, fsync, history)
            _fsync_database(path)  # what an earlier run left may not be on disk yet
            store.write_history()
        except OSError as exc:
            if db is not None:
                db.close()
            os.close(lock_fd)
            raise ConfigError(f"cannot write {HISTORY_FILE} in the data directory {path}: {exc.strerror or exc}.") from None
        except BaseException:
            if db is not None:
                db.close()
            os.close(lock_fd)
            raise
        if history_interval is not None:
            store._writer = threading.Thread(
                target=store._history_loop, args=(history_interval,), name="pbft-history", daemon=True
            )
            store._writer.start()
        return store

    def close(self) -> None:
        """Close the database and bring HISTORY_FILE up to date (best effort: an older
        one is still a valid lower bound)."""
        if self._lock_fd < 0:
            return
        try:
            if self._state is not None:
                self._state.close()
                self._state = None
            if self._writer is not None:
                self._closing.set()
                self._wake.set()
                self._writer.join()
                self._writer = None
            self._db.close()
            try:
                self.write_history()
            except OSError:
                pass
        finally:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def state_store(self) -> DurableStore:
        """The replicated state's store in this directory (STATE_FILE; created empty if
        missing), closed with the storage. ConfigError (one sentence) if unreadable."""
        if self._state is None:
            from .statestore import STATE_FILE, DurableStore

            file = os.path.join(self.path, STATE_FILE)
            check_writable(self.path, STATE_FILE)
            try:
                self._state = DurableStore(file)
            except sqlite3.DatabaseError as exc:
                if is_disk_full(exc):
                    raise ConfigError(f"the disk holding the data directory {self.path} is full.") from None
                if is_read_only(exc):
                    raise ConfigError(_read_only(file, exc)) from None
                raise ConfigError(
                    f"the data directory {self.path} holds a corrupt or unreadable {STATE_FILE} "
                    f"({one_line(str(exc))}); move that file away: the replica then fetches the "
                    "state from the others."
                ) from None
        return self._state

    # -- the history sidecar ----------------------------------------------------------

    def write_history(self) -> None:
        """Make HISTORY_FILE say `self.history` if it does not already. With fsync "batch"
        or "off" the database files are fsynced first, so the sidecar never claims more
        than survives a power loss; with "always" every commit was fsynced already.
        Raises OSError."""
        history = self.history  # read once: apply() may move it on meanwhile (a lower bound)
        if history == self._history_written:
            return
        if self.fsync != "always":
            _fsync_database(self.path)
        write_sidecar(self.path, history)
        self._history_written = history

    def _history_loop(self, interval: float) -> None:
        """The writer thread: after a commit, update HISTORY_FILE, then wait `interval`
        before the next update (commits meanwhile go into that one)."""
        deferred = False
        while True:
            self._wake.wait()
            if self._closing.is_set():
                return
            self._wake.clear()
            try:
                self.write_history()
                deferred = False
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    # Out of file descriptors, not of disk: HISTORY is a lower bound that
                    # may lag the database (module docstring), so try again later.
                    if not deferred:
                        log.warning("cannot update %s for now (%s): trying again", HISTORY_FILE,
                                    exc.strerror or exc)
                    deferred = True
                    self._wake.set()
                else:  # the next apply() says so and the node stops
                    self._history_error = exc
                    return
            if self._closing.wait(interval):
                return

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading and writing ----------------------------------------------------------

    def load(self) -> list[Persist]:
        """Every stored record, in the order it was last written."""
        """Every stored record, in the order it was last written. Raises ConfigError
        (one sentence) for a record whose checksum does not match (a damaged store)."""
        rows = self._db.execute(
            "SELECT record, view, seq, tag, value, sum FROM records ORDER BY rowid"
        ).fetchall()
        out = []
        for record, view, seq, tag, value, stored_sum in rows:
            value = bytes(value)
            if not isinstance(record, str) or not isinstance(tag, str) or stored_sum != record_sum(
                record, view, seq, tag, value
            ):
                raise ConfigError(
                    f"the data directory {self.path} is damaged: its {record} record "
                    f"(view {view}, seq {seq}, tag {tag!r}) does not match its checksum; "
                    "restore a backup or move it away to start this replica empty."
                )
            try:
                kind = Record(record)
            except ValueError:
                raise ConfigError(
                    f"the data directory {self.path} holds an unknown record kind {record!r}."
                ) from None
            out.append(Persist(kind, seq, view, tag, value))
        return out

    def apply(self, actions: Iterable[object]) -> int:
        """Make every Persist and Truncate among `actions` durable, in order, in one
        transaction; other actions are skipped. Returns how many were written. Raises
        StorageError (nothing of this call is then stored) if the write fails."""
        writes = [a for a in actions if isinstance(a, Persist | Truncate)]
        if not writes:
            return 0
        if self._history_error is not None:
            raise StorageError(
                f"cannot update {HISTORY_FILE} in the data directory {self.path}: {self._history_error}"
            )
        h = self.history
        view, seq = h.view, h.seq
        with self._transaction("write to") as db:
            rows: list[tuple] = []  # consecutive Persists go in one executemany
            for a in writes:
                if isinstance(a, Persist):
                    r = a.record.value
                    rows.append((r, a.view, a.seq, a.tag, a.value, record_sum(r, a.view, a.seq, a.tag, a.value)))
                    if a.view > view:
                        view = a.view
                    if a.seq > seq:
                        seq = a.seq
                    continue
                if rows:
                    db.executemany(_UPSERT, rows)
                    rows = []
                if a.below_view is None:
                    db.execute(
                        "DELETE FROM records WHERE seq <= ? AND record IN (?, ?, ?)",
                        (a.seq, *TRUNCATED),
                    )
                else:  # a new epoch: the records of the epochs before it (events.Truncate)
                    db.execute(
                        "DELETE FROM records WHERE view < ? AND"
                        " (record = ? OR (seq <= ? AND record IN (?, ?, ?)))",
                        (a.below_view, Record.VIEW.value, a.seq, *TRUNCATED),
                    )
            if rows:
                db.executemany(_UPSERT, rows)
            new = History(h.incarnation, h.commits + 1, view, seq)
            db.execute(_SET_HISTORY, (new.meta_value(),))
        self.history = new
        if self._writer is not None and not self._wake.is_set():  # is_set takes no lock
            self._wake.set()
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


def open_read_only(path: str) -> tuple[sqlite3.Connection, str]:
    """(connection, database file) of the data directory `path`, opened read-only and
    without the lock (evidence export, the real runs' store comparison). ConfigError, one
    sentence, if there is no database or it cannot be opened."""
    file = os.path.join(path, DB_FILE)
    if not os.path.isfile(file):
        raise ConfigError(f"{path} is not a replica data directory (no {DB_FILE}).")
    try:
        db = sqlite3.connect(f"file:{os.path.abspath(file)}?mode=ro", uri=True)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {file}: {exc}.") from None
    return db, file


def read_records(path: str) -> list[Persist]:
    """Every record of the data directory `path`, in the order it was last written, read
    without writing anything (the database opened read-only, no lock taken: for a
    directory whose replica has stopped). ConfigError (one sentence) if there is no
    database, it cannot be read, or a record does not match its checksum."""
    db, file = open_read_only(path)
    try:
        rows = db.execute("SELECT record, view, seq, tag, value, sum FROM records ORDER BY rowid").fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the records in {file}: {exc}.") from None
    finally:
        db.close()
    out = []
    for record, view, seq, tag, value, stored_sum in rows:
        value = bytes(value)
        if not isinstance(record, str) or not isinstance(tag, str) or stored_sum != record_sum(record, view, seq, tag, value):
            raise ConfigError(f"the data directory {path} is damaged: its {record} record (view {view}, seq {seq}) does not match its checksum.")
        try:
            out.append(Persist(Record(record), seq, view, tag, value))
        except ValueError:
            raise ConfigError(f"the data directory {path} holds an unknown record kind {record!r}.") from None
    return out


def _lock(path: str, replica_id: int) -> int:
    """The open LOCK_FILE, locked; ConfigError (one sentence) if it is not a regular
    file, cannot be opened, or another process holds it."""
    file = os.path.join(path, LOCK_FILE)
    try:
        check_regular(file)
    except Unreadable as why:
        raise ConfigError(f"cannot lock the data directory {path}: its {LOCK_FILE} file {why}.") from None
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open {file} to lock the data directory: {_os_reason(exc)}.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(
            f"the data directory of replica {replica_id} ({path}) is already in use by another "
            "process."
        ) from None
    return fd


def read_sidecar(path: str) -> History | None:
    """What HISTORY_FILE in `path` says, or None if there is none; ConfigError if it is
    damaged. A leftover temporary file (a crash while writing it) is ignored."""
    file = os.path.join(path, HISTORY_FILE)
    try:
        check_regular(file)  # opening a pipe would wait for a writer for ever
    except Unreadable as why:
        raise ConfigError(f"cannot read {file}: it {why}.") from None
    try:
        with open(file, "rb") as fh:
            data = fh.read(4096)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {_os_reason(exc)}.") from None
    try:
        fields = json.loads(data)
        history = History(fields["incarnation"], fields["commits"], fields["view"], fields["seq"])
        ok = (
            fields["check"] == _sidecar_check(fields)
            and isinstance(history.incarnation, str)
            and all(type(x) is int and x >= 0 for x in (history.commits, history.view, history.seq))
        )
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise ConfigError(
            f"the data directory {path} has a damaged {HISTORY_FILE} file, so whether its "
            "database went back in time cannot be told; restore it from the same copy as "
            "the database, start with --accept-rollback to trust the database as it is, or "
            "move the directory away to start this replica empty."
        )
    return history


def write_sidecar(path: str, history: History) -> None:
    """Replace HISTORY_FILE atomically and durably: write a temporary file, fsync it,
    rename it over the old one, fsync the directory. Raises OSError."""
    tmp = os.path.join(path, HISTORY_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = history.sidecar_bytes()
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(path, HISTORY_FILE))
    _fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)


def _fsync_database(path: str) -> None:
    """fsync the database and its WAL (fsync "batch" and "off" leave that to chance)."""
    for name in (DB_FILE, DB_FILE + "-wal"):
        try:
            _fsync_path(os.path.join(path, name), os.O_RDONLY)
        except FileNotFoundError:
            pass


def _fsync_path(file: str, flags: int) -> None:
    fd = os.open(file, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_rollback(path: str, what: str) -> ConfigError:
    return ConfigError(f"the data directory {path} {what}; {REMEDY}.")


def _connect(
    path: str,
    config: ClusterConfig,
    replica_id: int,
    fsync: str,
    sidecar: History | None,
    accept_rollback: bool,
) -> tuple[sqlite3.Connection, History]:
    file = os.path.join(path, DB_FILE)
    lost = sidecar is not None and sidecar.commits > 0 and not accept_rollback
    if lost and not os.path.exists(file):  # refused before sqlite3 creates an empty file
        raise _refuse_rollback(
            path, f"has lost its database: {HISTORY_FILE} says {sidecar.describe()} were durable, "
            f"but there is no {DB_FILE}"
        )
    expected = {
        "format_version": str(FORMAT_VERSION),
        "cluster_id": config.cluster_id,
        "replica_id": str(replica_id),
        "public_key": config.replicas[replica_id].public_key.hex(),
        "replica_keys": keys_hash(config),
    }
    # The directory was made under the configuration of its day; a cluster file that has
    # since recorded changes ([[epoch]] entries) lists other keys for the latest epoch, and
    # a replica that stayed through them is the same replica of the same cluster.
    known_keys = {keys_hash(c) for c in (*config.earlier, config)}
    check_writable(path, DB_FILE)
    db = None
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per apply().
        # check_same_thread=False: the node may commit from a worker thread, never two at once.
        db = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        probe_write(db)
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            report = " ".join(str(row[0]) for row in check)
            raise ConfigError(
                f"the data directory {path} holds a corrupt database ({one_line(report)}); "
                "restore a backup or move it away to start this replica empty."
            )
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = None
        if not tables:
            if lost:
                raise _refuse_rollback(
                    path, f"has lost its database: {HISTORY_FILE} says {sidecar.describe()} were "
                    f"durable, but {DB_FILE} is empty"
                )
            history = History(os.urandom(16).hex(), 0, 0, 0)
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", expected.items())
            _insert_history(db, history)
            db.execute("COMMIT")
        elif not {"meta", "records"} <= tables:
            raise ConfigError(f"{file} is an SQLite database, but not a pbft data directory.")
        else:
            meta = dict(db.execute("SELECT key, value FROM meta"))
            version = _check_meta(path, meta, expected, known_keys)
            if version == 1:
                if sidecar is not None and not accept_rollback:
                    raise _refuse_rollback(
                        path, f"holds a database of format 1 (written before {HISTORY_FILE} "
                        f"existed), yet {HISTORY_FILE} says {sidecar.describe()} were durable: an "
                        "older copy was restored over it"
                    )
                history = _migrate_from_1(db)
            else:
                history = _stored_history(path, meta)
                if not accept_rollback:
                    _check_history(path, history, sidecar)
            if version < 3:
                _migrate_to_3(db)
            if version < 4:
                _migrate_to_4(path, db)
            if version < 5:
                _migrate_to_5(db)
        if tables and "evidence" not in tables and version == FORMAT_VERSION:
            # Every build that wrote this format created the table at open.
            log.warning(
                "the data directory %s had lost its evidence table (the evidence it held "
                "is gone); an empty one is created", path,
            )
        db.execute(EVIDENCE_SCHEMA)  # older directories gain the table
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise ConfigError(f"the data directory {path} cannot use SQLite WAL mode ({mode}).")
        db.execute(f"PRAGMA synchronous = {FSYNC_POLICIES[fsync]}")
        return db, history
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        if is_disk_full(exc):
            raise ConfigError(f"the disk holding the data directory {path} is full.") from None
        if is_read_only(exc):
            raise ConfigError(_read_only(file, exc)) from None
        raise ConfigError(
            f"the data directory {path} holds a corrupt or unreadable database "
            f"({one_line(str(exc))}); restore a backup or move it away to start this replica empty."
        ) from None
    except BaseException:
        if db is not None:
            db.close()
        raise


def _insert_history(db: sqlite3.Connection, history: History) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        (("incarnation", history.incarnation), ("history", history.meta_value())),
    )


def _stored_history(path: str, meta: dict[str, str]) -> History:
    parts = meta.get("history", "").split(" ")
    incarnation = meta.get("incarnation", "")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or not incarnation:
        raise ConfigError(
            f"the data directory {path} is damaged: its database's history entry is missing "
            "or unreadable; restore a backup or move it away to start this replica empty."
        )
    commits, view, seq = map(int, parts)
    return History(incarnation, commits, view, seq)


def _check_history(path: str, db: History, sidecar: History | None) -> None:
    """Refuse a database that is behind HISTORY_FILE, is not the one it describes, or
    lost its HISTORY_FILE. The sidecar is written after the commits it counts, so after
    an honest crash the database is at or ahead of it, never behind."""
    if sidecar is None:
        if db.commits > 0:  # 0: a crash between creating the database and the sidecar
            raise _refuse_rollback(
                path, f"holds a database of {db.describe()} but no {HISTORY_FILE} file, so "
                "whether it went back in time cannot be told"
            )
        return
    if db.incarnation != sidecar.incarnation:
        raise _refuse_rollback(
            path, f"holds another database than the one its {HISTORY_FILE} file describes "
            "(copied in from elsewhere?)"
        )
    if db.commits < sidecar.commits:
        raise _refuse_rollback(
            path, f"went back in time: its database holds {db.describe()}, but "
            f"{HISTORY_FILE} says {sidecar.describe()} were durable (a lost or damaged WAL "
            "file, or an older copy restored)"
        )


def _migrate_from_1(db: sqlite3.Connection) -> History:
    """Format 1 -> 2, in one transaction: checksum every record as it is (format 1 had
    none, so it is trusted as it was before), and start the history."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE records ADD COLUMN sum BLOB NOT NULL DEFAULT x''")
        rows = db.execute("SELECT rowid, record, view, seq, tag, value FROM records").fetchall()
        db.executemany(
            "UPDATE records SET sum = ? WHERE rowid = ?",
            [(record_sum(r, v, q, t, bytes(val)), rowid) for rowid, r, v, q, t, val in rows],
        )
        views = [v for _, _, v, _, _, _ in rows]
        seqs = [q for _, _, _, q, _, _ in rows]
        history = History(os.urandom(16).hex(), 1 if rows else 0, max(views, default=0), max(seqs, default=0))
        _insert_history(db, history)
        db.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return history


def _migrate_to_3(db: sqlite3.Connection) -> None:
    """Format 2 -> 3, in one transaction. Format 3 keeps the replicated state in its own
    database (STATE_FILE, pbft/node/statestore.py) instead of a whole copy in the stable
    checkpoint's record, so that record loses its state: it becomes a window jump to that
    checkpoint (the same seq, digest and proof), and the replica fetches the state from
    the others when it starts (state transfer), keeping every vote it signed. A record
    that cannot be read is left as it is: loading it refuses the directory as before."""
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            "SELECT view, seq, tag, value FROM records WHERE record = ?", (Record.CHECKPOINT.value,)
        ).fetchall()
        for view, seq, tag, value in rows:
            try:
                fields = codec.decode(bytes(value))
            except codec.CodecError:
                continue
            if not isinstance(fields, list) or len(fields) != 4:
                continue
            jump = codec.encode(fields[:3])
            r = Record.WINDOW.value
            db.execute(
                "DELETE FROM records WHERE record = ? AND view = ? AND seq = ? AND tag = ?",
                (Record.CHECKPOINT.value, view, seq, tag),
            )
            old = db.execute("SELECT value FROM records WHERE record = ?", (r,)).fetchone()
            if old is not None:
                try:
                    if codec.decode(bytes(old[0]))[0] >= fields[0]:
                        continue  # a later jump already
                except (codec.CodecError, TypeError, IndexError):
                    pass
            db.execute(_UPSERT, (r, view, seq, tag, jump, record_sum(r, view, seq, tag, jump)))
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _old_pre_prepare(value: object, depth: int = 0) -> bool:
    """Whether `value` (a decoded record, or part of one) holds a PRE-PREPARE as format 3
    and before signed it: its batch inside the signed body [2, v, n, d, batch]."""
    if depth > 6:
        return False
    if isinstance(value, bytes):
        try:
            inner = codec.decode(value)
        except codec.CodecError:
            return False
        if isinstance(inner, list) and len(inner) == 5 and inner[0] == 2 and isinstance(inner[4], list):
            return True
        return _old_pre_prepare(inner, depth + 1) if isinstance(inner, list) else False
    if isinstance(value, list):
        return any(_old_pre_prepare(v, depth + 1) for v in value)
    return False


def _migrate_to_4(path: str, db: sqlite3.Connection) -> None:
    """Format 3 -> 4. Format 4 signs a PRE-PREPARE's (view, seq, digest) with its batch
    beside it (docs/formats.md, "The wire"), so a pre-prepare stored by format 3 (our
    votes, certificates, a VIEW-CHANGE) no longer verifies, and re-signing what others
    signed is impossible. A directory with none (every vote below a stable checkpoint:
    what a replica stopped between batches leaves) is only marked; one with some is
    refused, in one sentence: dropping them could let this replica sign against them."""
    for (value,) in db.execute(
        "SELECT value FROM records WHERE record IN (?, ?, ?, ?)",
        (Record.VOTE.value, Record.PREPARED.value, Record.EXECUTED.value, Record.VIEW.value),
    ):
        try:
            decoded = codec.decode(bytes(value))
        except codec.CodecError:
            continue
        if _old_pre_prepare(decoded) or _old_pre_prepare(bytes(value)):
            raise ConfigError(
                f"the data directory {path} holds pre-prepares in the format of an older pbft "
                "(before a PRE-PREPARE was signed apart from its batch); move it away and start "
                "this replica with an empty one: it fetches the state from the others "
                "(restart no more than f replicas this way at once)."
            )
    db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))


def _migrate_to_5(db: sqlite3.Connection) -> None:
    """Format 4 -> 5. Format 5 keeps one `view` record per configuration epoch, keyed by
    the epoch's first view, and an epoch switch deletes only the records of the epochs
    before it (docs/formats.md). A format 4 `view` record (key 0) is read as before, so
    nothing is rewritten; the version is raised so that an older build, which would take
    the newest epoch's records for void, refuses the directory."""
    db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))


def _check_meta(path: str, found: dict[str, str], expected: dict[str, str], known_keys: set[str] | None = None) -> int:
    """The directory's format version, after checking it is this replica's: of this
    cluster, this replica id and this replica's key, made when the group's keys were those
    of one of the epochs the cluster file records (`known_keys`; the latest alone if not
    given)."""
    version = found.get("format_version", "")
    if not version.isdigit():
        raise ConfigError(f"the data directory {path} has no valid format version.")
    if int(version) > FORMAT_VERSION:
        raise ConfigError(
            f"the data directory {path} has format version {version}, newer than this "
            f"build reads ({FORMAT_VERSION}); run a newer pbft."
        )
    if int(version) < 1:
        raise ConfigError(
            f"the data directory {path} has old format version {version}, which this build "
            f"cannot read (it reads 1 to {FORMAT_VERSION})."
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
    if found.get("public_key") != expected["public_key"] or found.get("replica_keys") not in (
        known_keys or {expected["replica_keys"]}
    ):
        raise ConfigError(
            f"the data directory {path} was written for other keys of cluster "
            f"{expected['cluster_id']!r} (were the keys regenerated?)."
        )
    return int(version)
