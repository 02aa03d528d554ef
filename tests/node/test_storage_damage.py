"""pbft.node.storage: a damaged or rolled-back data directory is refused, an honest
crash is not (README "Durability"; the format is in the storage module's docstring).

Each kind of damage is made the way it happens (a byte flipped in the database file, the
file truncated, the WAL deleted or damaged after a crash, an older copy restored) and
must be refused with one sentence naming the directory. A crash image is what a process
killed at that moment leaves: the database, its WAL and HISTORY as they are on disk while
the store is open (copied, since closing the store would checkpoint the WAL away).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from conftest import make_config

from pbft.node.storage import (
    DB_FILE,
    FORMAT_VERSION,
    HISTORY_FILE,
    Storage,
    read_sidecar,
)
from pbft.protocol.config import ConfigError
from pbft.protocol.events import Persist, Record

pytestmark = pytest.mark.timeout(60)

WAL = DB_FILE + "-wal"


@pytest.fixture
def cfg():
    return make_config()


def vote(seq: int, value: bytes, view: int = 0) -> Persist:
    return Persist(Record.VOTE, seq, view, "prepare", value)


def crash_image(src, dst) -> None:
    """What a process killed now leaves in `src`: its files as they are on disk."""
    os.makedirs(dst)
    for name in (DB_FILE, WAL, HISTORY_FILE):
        if os.path.exists(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def records_sqlite_sees(directory, scratch) -> int:
    """How many records SQLite itself finds in `directory` (opened on a copy)."""
    crash_image(directory, scratch)
    db = sqlite3.connect(os.path.join(scratch, DB_FILE))
    try:
        return db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    finally:
        db.close()


def flip_byte_in(file, marker: bytes) -> None:
    data = bytearray(open(file, "rb").read())
    at = data.find(marker)
    assert at >= 0, "the marker is not in the file"
    data[at + len(marker) // 2] ^= 0x01
    with open(file, "wb") as fh:
        fh.write(data)


# -- per-record checksums -----------------------------------------------------------------


@pytest.mark.parametrize("kind", [Record.CHECKPOINT, Record.VOTE, Record.PREPARED, Record.VIEW])
def test_a_byte_flipped_inside_a_stored_record_is_refused(tmp_path, cfg, kind):
    marker = b"<<" + os.urandom(24).hex().encode() + b">>"
    seq = 0 if kind in (Record.CHECKPOINT, Record.VIEW) else 7
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(1, b"other"), Persist(kind, seq, 0, "", b"state " * 500 + marker + b" end")])
    flip_byte_in(tmp_path / "d" / DB_FILE, marker)  # closed: the WAL is in the database file
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:  # SQLite's own check passes...
        with pytest.raises(ConfigError, match=rf"d is damaged: its {kind.value} record .* does not match its checksum"):
            s.load()  # ...the record's checksum does not


def test_a_damaged_record_stops_the_replica_with_one_sentence(tmp_path, cfg):
    from conftest import make_replica

    from pbft.errors import UsageError
    from pbft.node.node import ReplicaNode

    marker = b"<<" + os.urandom(24).hex().encode() + b">>"
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([Persist(Record.CHECKPOINT, 0, 0, "", marker)])
    flip_byte_in(tmp_path / "d" / DB_FILE, marker)
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        node = ReplicaNode(cfg, make_replica(cfg, 1), server_context=None, client_context=None,
                           identify=None, storage=s)
        with pytest.raises(UsageError, match="is damaged: its checkpoint record"):
            node.recover()


# -- history: rollback and vanishing ------------------------------------------------------


def test_a_database_truncated_to_0_bytes_is_refused(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    os.truncate(tmp_path / "d" / DB_FILE, 0)
    with pytest.raises(ConfigError, match=r"d has lost its database: HISTORY says 1 commits .* is empty"):
        Storage.open(str(tmp_path / "d"), cfg, 1)
    assert os.path.getsize(tmp_path / "d" / DB_FILE) == 0  # refused: nothing written


def test_a_deleted_database_is_refused_and_not_recreated(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    os.remove(tmp_path / "d" / DB_FILE)
    with pytest.raises(ConfigError, match=r"has lost its database: .* there is no pbft.sqlite3"):
        Storage.open(str(tmp_path / "d"), cfg, 1)
    assert not os.path.exists(tmp_path / "d" / DB_FILE)


@pytest.mark.parametrize("fsync", ["always", "batch"])
def test_a_wal_deleted_after_a_crash_is_refused(tmp_path, cfg, fsync):
    live = tmp_path / "live"
    with Storage.open(str(live), cfg, 1, fsync, history_interval=None) as s:
        for i in range(1, 21):
            s.apply([vote(i, b"x" * 100)])
        s.write_history()
        crash_image(live, tmp_path / "crash")
    os.remove(tmp_path / "crash" / WAL)
    assert records_sqlite_sees(tmp_path / "crash", tmp_path / "scratch") < 20  # really lost
    with pytest.raises(ConfigError, match=r"crash went back in time: its database holds 0 commits .*"
                       r"HISTORY says 20 commits \(up to view 0, seq 20\) were durable"):
        Storage.open(str(tmp_path / "crash"), cfg, 1, fsync)


def test_a_wal_damaged_after_a_crash_is_refused(tmp_path, cfg):
    live = tmp_path / "live"
    with Storage.open(str(live), cfg, 1, history_interval=None) as s:
        for i in range(1, 21):
            s.apply([vote(i, os.urandom(200))])
        s.write_history()
        crash_image(live, tmp_path / "crash")
    wal = tmp_path / "crash" / WAL
    data = bytearray(wal.read_bytes())
    frames = (len(data) - 32) // (24 + 4096)
    at = 32 + (frames // 2) * (24 + 4096) + 24 + 100  # inside a page of a middle frame
    data[at] ^= 0xFF
    wal.write_bytes(bytes(data))
    seen = records_sqlite_sees(tmp_path / "crash", tmp_path / "scratch")
    assert seen < 20  # SQLite stops at the damaged frame: the later commits are gone
    with pytest.raises(ConfigError, match=r"went back in time: .* HISTORY says 20 commits"):
        Storage.open(str(tmp_path / "crash"), cfg, 1)


def test_an_older_copy_restored_over_the_newer_is_refused_unless_accepted(tmp_path, cfg):
    d = tmp_path / "d"
    with Storage.open(str(d), cfg, 1) as s:
        s.apply([vote(1, b"one")])
    shutil.copyfile(d / DB_FILE, tmp_path / "old.sqlite3")  # a backup of the stopped replica
    with Storage.open(str(d), cfg, 1) as s:
        s.apply([vote(2, b"two")])
        s.apply([vote(3, b"three", view=1)])
    shutil.copyfile(tmp_path / "old.sqlite3", d / DB_FILE)
    with pytest.raises(ConfigError, match=r"went back in time: its database holds 1 commits .* "
                       r"HISTORY says 3 commits \(up to view 1, seq 3\) were durable.*--accept-rollback"):
        Storage.open(str(d), cfg, 1)
    with Storage.open(str(d), cfg, 1, accept_rollback=True) as s:  # restored on purpose
        assert [r.value for r in s.load()] == [b"one"]
    assert read_sidecar(str(d)).commits == 1
    Storage.open(str(d), cfg, 1).close()  # from now on the restored copy is the history


def test_a_database_without_its_history_file_is_refused(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    os.remove(tmp_path / "d" / HISTORY_FILE)
    with pytest.raises(ConfigError, match="holds a database of 1 commits .* but no HISTORY file"):
        Storage.open(str(tmp_path / "d"), cfg, 1)


def test_a_database_from_another_directory_is_refused(tmp_path, cfg):
    for name in ("a", "b"):
        with Storage.open(str(tmp_path / name), cfg, 1) as s:
            for i in range(1, 4 if name == "a" else 2):
                s.apply([vote(i, b"x")])
    shutil.copyfile(tmp_path / "a" / DB_FILE, tmp_path / "b" / DB_FILE)  # more commits, not its own
    with pytest.raises(ConfigError, match="holds another database than the one its HISTORY file describes"):
        Storage.open(str(tmp_path / "b"), cfg, 1)


def test_a_damaged_history_file_is_refused(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    f = tmp_path / "d" / HISTORY_FILE
    f.write_text(f.read_text().replace('"commits": 1', '"commits": 0'))  # its check no longer fits
    with pytest.raises(ConfigError, match="has a damaged HISTORY file"):
        Storage.open(str(tmp_path / "d"), cfg, 1)
    Storage.open(str(tmp_path / "d"), cfg, 1, accept_rollback=True).close()  # as it says
    assert read_sidecar(str(tmp_path / "d")).commits == 1


def test_a_fresh_directory_and_an_empty_database_without_history_start_clean(tmp_path, cfg):
    Storage.open(str(tmp_path / "fresh"), cfg, 1).close()
    assert read_sidecar(str(tmp_path / "fresh")).commits == 0
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / DB_FILE).write_bytes(b"")
    with Storage.open(str(tmp_path / "empty"), cfg, 1) as s:
        assert s.load() == []


# -- honest crashes are never refused -----------------------------------------------------


def test_a_crash_between_the_commit_and_the_history_update_is_not_refused(tmp_path, cfg):
    live = tmp_path / "live"
    with Storage.open(str(live), cfg, 1, history_interval=None) as s:
        s.apply([vote(1, b"a")])
        s.write_history()
        s.apply([vote(2, b"b")])  # committed; HISTORY not updated yet: the crash comes now
        s.apply([vote(3, b"c", view=2)])
        crash_image(live, tmp_path / "crash")
    assert read_sidecar(str(tmp_path / "crash")).commits == 1
    with Storage.open(str(tmp_path / "crash"), cfg, 1) as s:
        assert [r.value for r in s.load()] == [b"a", b"b", b"c"]
        assert s.history.commits == 3
    assert read_sidecar(str(tmp_path / "crash")).commits == 3  # caught up on open


def test_a_crash_right_after_the_database_was_created_is_not_refused(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1):
        pass
    os.remove(tmp_path / "d" / HISTORY_FILE)  # killed before the first HISTORY was written
    Storage.open(str(tmp_path / "d"), cfg, 1).close()


CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_config
    from pbft.protocol.events import Persist, Record
    from pbft.node.storage import Storage
    s = Storage.open({path!r}, make_config(), 1, {fsync!r}, history_interval=0.001)
    n = s.history.commits
    print("open", flush=True)
    while True:
        n += 1
        s.apply([Persist(Record.VOTE, n, 0, "prepare", os.urandom(64))])
""")


@pytest.mark.parametrize("fsync", ["always", "batch"])
def test_kill_9_at_random_moments_is_never_refused(tmp_path, cfg, fsync):
    """A writer killed while it commits and updates HISTORY as fast as it can: every
    restart opens, and the history only grows."""
    import random
    import time

    path = str(tmp_path / "d")
    tests = os.path.dirname(os.path.dirname(__file__))
    rng = random.Random(13)
    last = 0
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(tests=tests, path=path, fsync=fsync)],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert child.stdout.readline() == "open\n"
            time.sleep(rng.uniform(0.02, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        with Storage.open(path, cfg, 1, fsync) as s:
            assert s.history.commits >= last
            assert len(s.load()) == s.history.commits  # one record per commit, none damaged
            last = s.history.commits
    assert last > 8


def test_the_history_file_follows_the_commits_while_running(tmp_path, cfg):
    import time

    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        for i in range(1, 6):
            s.apply([vote(i, b"x")])
        deadline = time.monotonic() + 5
        while read_sidecar(str(tmp_path / "d")).commits != 5:
            assert time.monotonic() < deadline, "HISTORY was not updated"
            time.sleep(0.01)


# -- SQLite open, format migration ----------------------------------------------------------


def test_a_database_truncated_mid_file_is_refused_with_one_sentence(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(i, os.urandom(300)) for i in range(1, 200)])
    path = tmp_path / "d" / DB_FILE
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(ConfigError, match=r"holds a corrupt (or unreadable )?database"):
        Storage.open(str(tmp_path / "d"), cfg, 1)


def make_format_1(directory, cfg, records) -> None:
    """A data directory as format 1 wrote it: no checksums, no history, no HISTORY."""
    from pbft.node.storage import keys_hash

    os.makedirs(directory)
    db = sqlite3.connect(os.path.join(directory, DB_FILE))
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE records (record TEXT NOT NULL, view INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " tag TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (record, view, seq, tag));"
        "CREATE INDEX records_seq ON records (seq);"
    )
    meta = {"format_version": "1", "cluster_id": cfg.cluster_id, "replica_id": "1",
            "public_key": cfg.replicas[1].public_key.hex(), "replica_keys": keys_hash(cfg)}
    db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                   [(r.record.value, r.view, r.seq, r.tag, r.value) for r in records])
    db.commit()
    db.close()


def test_a_format_1_directory_is_migrated(tmp_path, cfg):
    records = [vote(1, b"a"), vote(2, b"b", view=3), Persist(Record.CHECKPOINT, 0, 0, "", b"cp")]
    make_format_1(tmp_path / "d", cfg, records)
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        assert s.load() == records
        assert s.meta()["format_version"] == str(FORMAT_VERSION)
        assert (s.history.commits, s.history.view, s.history.seq) == (1, 3, 2)
        s.apply([vote(4, b"d")])
    assert read_sidecar(str(tmp_path / "d")).commits == 2
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        assert len(s.load()) == 4


def test_a_format_1_database_restored_over_a_newer_directory_is_refused(tmp_path, cfg):
    make_format_1(tmp_path / "old", cfg, [vote(1, b"a")])
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(1, b"a")])
    shutil.copyfile(tmp_path / "old" / DB_FILE, tmp_path / "d" / DB_FILE)
    with pytest.raises(ConfigError, match="holds a database of format 1 .* an older copy was restored"):
        Storage.open(str(tmp_path / "d"), cfg, 1)


# -- through the command line ---------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_pbft_replica_refuses_a_damaged_directory_with_one_sentence(tmp_path, capsys, damage):
    from pbft.cli.main import main
    from pbft.cluster.keygen import generate_cluster
    from pbft.cluster.launcher import free_ports
    from pbft.node.clusterfile import load_cluster

    path = generate_cluster(str(tmp_path / "k"), f=1, clients=["alice"], ports=free_ports(4),
                            cluster_id="damage")
    config = load_cluster(path)
    d = tmp_path / "d"
    marker = b"<<" + os.urandom(24).hex().encode() + b">>"
    with Storage.open(str(d), config, 1) as s:
        s.apply([vote(1, marker)])
    if damage == "truncated":
        os.truncate(d / DB_FILE, 0)
    else:
        flip_byte_in(d / DB_FILE, marker)
    assert main(["replica", "--config", path, "--id", "1", "--data", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"pbft: the data directory {d} ")


def _set_format(directory, version: int) -> None:
    db = sqlite3.connect(os.path.join(directory, DB_FILE))
    db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(version),))
    db.commit()
    db.close()


def test_a_format_3_directory_with_old_pre_prepares_is_refused_and_one_without_is_taken(tmp_path, cfg):
    """Format 4 signs a PRE-PREPARE apart from its batch: a format-3 pre-prepare (its
    batch inside the signed body) no longer verifies, so a directory holding one is
    refused with one sentence; one holding none is only marked with the current format."""
    from pbft.protocol import codec

    old_body = codec.encode([2, 0, 1, bytes(32), [b"request"]])
    old_env = codec.encode([old_body, 0, bytes(64)])
    d = str(tmp_path / "old")
    with Storage.open(d, cfg, 1) as s:
        s.apply([Persist(Record.VOTE, 0, 1, "pre-prepare", old_env), vote(2, b"b")])
    _set_format(d, 3)
    with pytest.raises(ConfigError, match="pre-prepares in the format of an older pbft"):
        Storage.open(d, cfg, 1)
    fine = str(tmp_path / "fine")
    with Storage.open(fine, cfg, 1) as s:
        s.apply([vote(2, b"b")])
    _set_format(fine, 3)
    with Storage.open(fine, cfg, 1) as s:
        assert s.meta()["format_version"] == str(FORMAT_VERSION) == "5"


def test_a_format_4_directory_is_marked_5_and_its_view_record_under_key_0_still_reads(tmp_path, cfg):
    """Format 5 keys the `view` record by its epoch's first view; a format 4 one (key 0,
    whatever its epoch) is read as it is, and only the version changes."""
    from pbft.protocol.epochs import first_view
    from pbft.protocol.records import ViewState, from_persist

    held = ViewState(first_view(2) + 1, False, b"")
    old = Persist(Record.VIEW, 0, 0, "", held.to_persist().value)
    d = str(tmp_path / "v4")
    with Storage.open(d, cfg, 1) as s:
        s.apply([old])
    _set_format(d, 4)
    with Storage.open(d, cfg, 1) as s:
        assert s.meta()["format_version"] == "5"
        assert [from_persist(p) for p in s.load()] == [held]


# -- odd files and permissions: one sentence, and never "move it away" for intact data ------


@pytest.mark.timeout(20)
def test_a_history_file_that_is_a_pipe_is_refused_without_blocking(tmp_path, cfg):
    d = tmp_path / "d"
    with Storage.open(str(d), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    os.remove(d / HISTORY_FILE)
    os.mkfifo(d / HISTORY_FILE)
    with pytest.raises(ConfigError, match=r"HISTORY: it is not a regular file \(a pipe or a device\)\.$"):
        Storage.open(str(d), cfg, 1)


@pytest.mark.parametrize("odd", ["directory", "pipe"])
def test_a_lock_file_that_is_not_a_file_is_refused_with_one_sentence(tmp_path, cfg, odd):
    d = tmp_path / "d"
    with Storage.open(str(d), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    os.remove(d / "LOCK")
    if odd == "directory":
        os.mkdir(d / "LOCK")
    else:
        os.mkfifo(d / "LOCK")
    with pytest.raises(ConfigError, match=f"^cannot lock the data directory {d}: its LOCK file is "):
        Storage.open(str(d), cfg, 1)


def damage_a_btree_page(file) -> None:
    """Overwrite the cell pointers of a page in the middle of the file (a leaf of the
    records table): SQLite's integrity check then reports several problems, over
    several lines."""
    db = sqlite3.connect(file)
    (count,) = db.execute("PRAGMA page_count").fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(file, "r+b") as fh:
        fh.seek((count // 2 - 1) * size + 8)
        fh.write(b"\x7f" * 49)


def test_a_database_damaged_in_the_middle_is_refused_in_one_line(tmp_path, cfg):
    d = tmp_path / "d"
    with Storage.open(str(d), cfg, 1) as s:
        for i in range(1, 300):
            s.apply([vote(i, bytes(200))])
    damage_a_btree_page(d / DB_FILE)
    with pytest.raises(ConfigError, match=r"holds a corrupt (or unreadable )?database") as caught:
        Storage.open(str(d), cfg, 1)
    message = str(caught.value)
    assert "in database main" in message  # its integrity report, quoted
    assert "\n" not in message and len(message) < 400, message
    assert message.endswith("restore a backup or move it away to start this replica empty.")


def test_a_lost_evidence_table_is_recreated_with_a_warning(tmp_path, cfg, caplog):
    d = tmp_path / "d"
    with Storage.open(str(d), cfg, 1) as s:
        s.add_evidence(2, "equivocation", b"a", b"b", 1.0)
    db = sqlite3.connect(d / DB_FILE)
    db.execute("DROP TABLE evidence")
    db.commit()
    db.close()
    with caplog.at_level("WARNING", logger="pbft.storage"), Storage.open(str(d), cfg, 1) as s:
        assert s.evidence() == []
    assert any("had lost its evidence table" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pbft.storage"), Storage.open(str(d), cfg, 1):
        pass
    assert not caplog.records  # only once: the empty table is there now


def test_a_foreign_sqlite_file_as_the_state_store_is_refused_and_left_alone(tmp_path, cfg):
    from pbft.node.statestore import STATE_FILE

    d = tmp_path / "d"
    with Storage.open(str(d), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    db = sqlite3.connect(d / STATE_FILE)
    db.execute("CREATE TABLE foo (x)")
    db.commit()
    db.close()
    with Storage.open(str(d), cfg, 1) as s:
        with pytest.raises(ConfigError, match=r"state.sqlite3 is an SQLite database, but not a pbft state store"):
            s.state_store()
    db = sqlite3.connect(d / STATE_FILE)
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"foo"}


def test_the_state_store_knows_its_own_tables(tmp_path):
    from pbft.node.statestore import OWN_TABLES, DurableStore

    store = DurableStore(str(tmp_path / "s.sqlite3"))
    try:
        tables = {n for (n,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        store.close()
    assert tables == OWN_TABLES
    DurableStore(str(tmp_path / "s.sqlite3")).close()  # its own database opens again


def _as_another_user() -> tuple[list[str], int | None]:
    """The command prefix that runs a child without root's right to read and write any
    file, and that child's uid: none if this is not root; setpriv to nobody if it is
    (skip without it)."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    setpriv = shutil.which("setpriv")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        nobody = None
    if setpriv is None or nobody is None:
        pytest.skip("running as root without setpriv or a user nobody")
    return [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"], nobody.pw_uid


OPEN_AS_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from conftest import make_config
    from pbft.errors import ConfigError
    from pbft.node.storage import Storage
    try:
        with Storage.open(sys.argv[1], make_config(), 1, history_interval=None) as s:
            s.state_store()
            print("OPENED", len(s.load()))
    except ConfigError as exc:
        print("REFUSED", exc)
""")


@pytest.mark.parametrize(
    "case, damage, expected",
    [
        ("read-only directory", lambda d: os.chmod(d, 0o500),
         "the data directory {d} cannot be written: permission denied (check its owner and mode)."),
        ("unreadable database", lambda d: os.chmod(d / DB_FILE, 0),
         "{d}/pbft.sqlite3 cannot be read and written: permission denied (check its owner and mode)."),
        ("read-only database", lambda d: os.chmod(d / DB_FILE, 0o400),
         "{d}/pbft.sqlite3 cannot be read and written: permission denied (check its owner and mode)."),
        ("read-only state store", lambda d: os.chmod(d / "state.sqlite3", 0o400),
         "{d}/state.sqlite3 cannot be read and written: permission denied (check its owner and mode)."),
        ("forbidden lock file", lambda d: os.chmod(d / "LOCK", 0),
         "cannot open {d}/LOCK to lock the data directory: permission denied (check the owner and "
         "mode of the file and of its directory)."),
        ("unreadable history", lambda d: os.chmod(d / HISTORY_FILE, 0),
         "cannot read {d}/HISTORY: permission denied (check the owner and mode of the file and of its "
         "directory)."),
    ],
)
def test_a_permission_problem_is_named_and_never_advises_moving_the_data_away(cfg, case, damage, expected):
    """A directory or file this process may not read or write is intact: the sentence
    names the permission, and says nothing of corruption or of moving the directory away
    (which would throw away the votes it holds). A read-only database is refused at
    start, not at the replica's first write."""
    import tempfile
    from pathlib import Path

    prefix, uid = _as_another_user()
    base = tempfile.mkdtemp(prefix="pbft-perm-")
    try:
        os.chmod(base, 0o755)
        d = os.path.join(base, "d")
        with Storage.open(d, cfg, 1) as s:
            s.apply([vote(1, b"signed"), vote(2, b"signed too")])
            s.state_store().put(b"k", b"v")
        if uid is not None:  # the other user owns the directory, as its replica's would be
            for root, dirs, files in os.walk(base):
                for name in [*dirs, *files, "."]:
                    os.chown(os.path.join(root, name), uid, -1)
        before = open(os.path.join(d, DB_FILE), "rb").read()
        damage(Path(d))
        tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run(
            [*prefix, sys.executable, "-c", OPEN_AS_CHILD, d, tests],
            capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout == f"REFUSED {expected.format(d=d)}\n"
        assert "move" not in done.stdout and "corrupt" not in done.stdout
        assert open(os.path.join(d, DB_FILE), "rb").read() == before  # nothing written
    finally:
        for root, dirs, _ in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("odd", ["lock directory", "history pipe"])
def test_pbft_replica_refuses_an_odd_lock_or_history_file_with_one_sentence(tmp_path, capsys, odd):
    from pbft.cli.main import main
    from pbft.cluster.keygen import generate_cluster
    from pbft.cluster.launcher import free_ports
    from pbft.node.clusterfile import load_cluster

    path = generate_cluster(str(tmp_path / "k"), f=1, clients=["alice"], ports=free_ports(4),
                            cluster_id="odd")
    config = load_cluster(path)
    d = tmp_path / "d"
    with Storage.open(str(d), config, 1) as s:
        s.apply([vote(1, b"signed")])
    if odd == "lock directory":
        os.remove(d / "LOCK")
        os.mkdir(d / "LOCK")
    else:
        os.remove(d / HISTORY_FILE)
        os.mkfifo(d / HISTORY_FILE)
    assert main(["replica", "--config", path, "--id", "1", "--data", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("pbft: cannot ")


def test_sqlite_refusing_to_write_is_told_apart_from_damage(tmp_path, cfg):
    """What SQLite says when it could open a database only read-only (a file system
    mounted read-only, an immutable file: what root meets) is a permission problem."""
    from pbft.node.storage import is_read_only, one_line, probe_write

    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(1, b"signed")])
    db = sqlite3.connect(f"file:{tmp_path / 'd' / DB_FILE}?mode=ro", uri=True, isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError) as caught:
            probe_write(db)
        assert not db.in_transaction
    finally:
        db.close()
    assert is_read_only(caught.value)
    db = sqlite3.connect(tmp_path / "d" / DB_FILE, isolation_level=None)
    probe_write(db)  # a writable one: nothing changes
    assert db.execute("PRAGMA user_version").fetchone() == (0,) and not db.in_transaction
    db.close()
    assert not is_read_only(sqlite3.DatabaseError("file is not a database"))
    assert one_line("a\nb  c\n") == "a b c"
    assert one_line("x" * 500, 20) == "x" * 17 + "..."


def test_out_of_file_descriptors_the_history_writer_waits_and_tries_again(tmp_path, cfg, monkeypatch):
    # Found by a red-team pass: an idle-connection flood on the metrics port used up the
    # process's descriptors; HISTORY's next update failed with EMFILE and the replica
    # stopped. HISTORY may lag the database, so the writer tries again instead.
    import errno
    import time

    path = str(tmp_path / "d")
    with Storage.open(path, cfg, 1, history_interval=0.01) as s:
        real, failures = s.write_history, [0]

        def flaky() -> None:
            if failures[0] < 3:
                failures[0] += 1
                raise OSError(errno.EMFILE, "Too many open files")
            real()

        monkeypatch.setattr(s, "write_history", flaky)
        s.apply([vote(1, b"signed")])
        deadline = time.monotonic() + 10
        while (read_sidecar(path) is None or read_sidecar(path).commits < s.history.commits) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert failures[0] == 3 and read_sidecar(path).commits == s.history.commits
        s.apply([vote(2, b"signed")])  # no error was kept for the next write to raise
    # Any other failure (a full disk) still stops the replica at its next write.


def test_a_history_write_that_fails_otherwise_stops_the_next_write(tmp_path, cfg, monkeypatch):
    import errno
    import time

    from pbft.node.storage import StorageError

    path = str(tmp_path / "d")
    with Storage.open(path, cfg, 1, history_interval=0.01) as s:
        def full() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(s, "write_history", full)
        s.apply([vote(1, b"signed")])
        deadline = time.monotonic() + 10
        while s._history_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(StorageError):
            s.apply([vote(2, b"signed")])
        monkeypatch.undo()
