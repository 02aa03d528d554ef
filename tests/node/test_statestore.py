"""The durable state store (pbft/node/statestore.py) against the memory store, its
reference: after any sequence of writes, checkpoints, releases and reopenings, both give
the same entries, the same digests and the same kept checkpoints, bucket by bucket.
Reopening is the point: a restarted replica must find its state, its kept checkpoints and
the writes since the last checkpoint exactly where it left them."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.node import statestore
from pbft.node.statestore import SqliteStore
from pbft.protocol import partition as p
from pbft.protocol.store import MemoryStore

keys = st.binary(max_size=4)
step = st.one_of(
    st.tuples(st.just("put"), keys, st.binary(max_size=6)),
    st.tuples(st.just("delete"), keys, st.just(b"")),
    st.tuples(
        st.sampled_from(["checkpoint", "release", "reopen", "rollback", "digest", "scan", "flush"]),
        st.just(b""), st.just(b""),
    ),
)


def open_store(path) -> tuple[sqlite3.Connection, SqliteStore]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    return db, SqliteStore(db)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=60))
def test_the_durable_store_behaves_as_the_memory_store_across_reopening(tmp_path_factory, script):
    # A write buffer of 3 keys: the buffer fills and flushes itself inside a script too.
    saved, statestore.WRITE_BUFFER = statestore.WRITE_BUFFER, 3
    try:
        check_script(tmp_path_factory, script)
    finally:
        statestore.WRITE_BUFFER = saved


def check_script(tmp_path_factory, script) -> None:
    path = tmp_path_factory.mktemp("state") / "state.db"
    db, disk = open_store(path)
    mem = MemoryStore()
    seq = 0
    touched: set[bytes] = set()
    for op, k, v in script:
        if op == "put":
            disk.put(k, v)
            mem.put(k, v)
            touched.add(k)
        elif op == "delete":
            assert disk.delete(k) == mem.delete(k)
        elif op == "checkpoint":
            seq += 5
            assert disk.checkpoint(seq) == mem.checkpoint(seq)
        elif op == "release" and mem.kept:
            disk.release(mem.kept[0] + 1)
            mem.release(mem.kept[0] + 1)
        elif op == "rollback" and mem.kept:
            target = mem.kept[len(mem.kept) // 2]
            disk.rollback(target)
            mem.rollback(target)
            assert mem.digest() == mem.digest_at(target)
        elif op == "digest":  # the current digest between checkpoints (a transfer's walk)
            assert disk.digest() == mem.digest()
        elif op == "scan":
            assert disk.scan(b"", None, 1000) == mem.scan(b"", None, 1000)
            assert len(disk) == len(mem)
        elif op == "flush":
            disk.flush()
        elif op == "reopen":
            disk.flush()  # the caller's part before it commits (DurableStore.commit)
            db.execute("COMMIT")
            db.close()
            db, disk = open_store(path)
        assert disk.get(k) == mem.get(k)
    assert disk.kept == mem.kept
    assert disk.scan(b"", None, 1000) == mem.scan(b"", None, 1000)
    assert disk.digest() == mem.digest()
    buckets = {p.bucket_of(k) for k in touched} | {0}
    for c in mem.kept:
        assert disk.digest_at(c) == mem.digest_at(c)
        assert disk.children_at(c, p.DEPTH, 0) == mem.children_at(c, p.DEPTH, 0)
        for b in buckets:
            assert disk.bucket_at(c, b) == mem.bucket_at(c, b)
    db.close()


def test_a_crash_before_commit_loses_the_writes_and_the_checkpoint_together(tmp_path):
    path = tmp_path / "state.db"
    db, disk = open_store(path)
    disk.put(b"a", b"1")
    disk.checkpoint(10)
    db.execute("COMMIT")
    db.execute("BEGIN")
    disk.put(b"a", b"2")
    disk.checkpoint(20)
    db.close()  # no COMMIT: as if the process died
    db, disk = open_store(path)
    assert disk.get(b"a") == b"1" and disk.kept == [10]
    mem = MemoryStore()
    mem.put(b"a", b"1")
    assert disk.digest_at(10) == mem.checkpoint(10)
    db.close()


def test_checkpoint_cost_follows_the_writes(tmp_path):
    # Not a timing: a checkpoint after a few writes rewrites only their leaves.
    db, disk = open_store(tmp_path / "state.db")
    for i in range(3000):
        disk.put(b"key%d" % i, b"v")
    disk.checkpoint(10)
    disk.put(b"key7", b"w")
    disk.put(b"new", b"x")
    disk.flush()
    before = db.total_changes
    disk.checkpoint(20)
    # two leaves digested (state_leaves_next, then deleted), rewritten, their old digests
    # saved under checkpoint 10, and the kept list: 2 + 2 + 2 + 2 + 1, whatever the state holds
    assert db.total_changes - before == 9
    db.close()


def test_an_entry_damaged_on_disk_shows_as_a_digest_that_is_not_the_signed_one(tmp_path):
    """The stored leaf digests are not trusted blindly: a DurableStore rehashes every
    bucket when it opens, so a byte flipped in an entry changes the checkpoint's digest
    (and recovery then fetches that leaf instead of running on it, Replica.recover)."""
    from pbft.node.statestore import DurableStore

    path = str(tmp_path / "state.sqlite3")
    store = DurableStore(path)
    for i in range(200):
        store.put(b"key%d" % i, b"value")
    signed = store.checkpoint(10)
    store.close()
    again = DurableStore(path)
    assert again.digest_at(10) == signed and not again.damaged
    again.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE state_entries SET value = ? WHERE key = ?", (b"valuf", b"key7"))
    db.commit()
    db.close()
    damaged = DurableStore(path)
    assert damaged.damaged == [p.bucket_of(b"key7")]
    assert damaged.digest_at(10) != signed
    damaged.close()


def test_a_long_transfer_commits_what_it_installed(tmp_path):
    """A transfer can run for minutes without a checkpoint (restarted towards newer ones);
    a DurableStore commits every INSTALLS_PER_COMMIT leaves it installs, so a crash
    keeps them and the walk after the restart fetches only what is still missing."""
    from pbft.node.statestore import INSTALLS_PER_COMMIT, DurableStore

    path = str(tmp_path / "state.sqlite3")
    store = DurableStore(path)
    store.checkpoint(0)
    store.release(1)  # a transfer keeps no checkpoint while it installs
    for b in range(INSTALLS_PER_COMMIT):
        key = next(k for k in (b"k%d-%d" % (b, n) for n in range(10**6)) if p.bucket_of(k) == b)
        store.install_bucket(b, [(key, b"v")])
    store.db.close()  # a crash: nothing after the last commit survives
    again = DurableStore(path)
    assert len(again) == INSTALLS_PER_COMMIT
    again.close()


def test_writes_wait_in_memory_and_a_key_written_often_costs_one_write(tmp_path):
    """Between two checkpoints a replica overwrites the same keys again and again (a
    client's reply record at every request): they reach SQLite once, when something reads
    the tables or the caller commits, and reads see them meanwhile."""
    from pbft.node.statestore import WRITE_BUFFER

    db, disk = open_store(tmp_path / "state.db")
    disk.put(b"a", b"0")
    disk.checkpoint(10)
    before = db.total_changes
    for i in range(100):
        disk.put(b"a", b"%d" % i)
        disk.put(b"b", b"%d" % i)
    assert disk.delete(b"b") and not disk.delete(b"b")
    assert disk.get(b"a") == b"99" and disk.get(b"b") is None
    assert db.total_changes == before  # nothing written yet
    disk.flush()
    # a: its undo row and its value; b: its undo row (absent under 10) and a delete of nothing
    assert db.total_changes - before == 3
    assert disk.scan(b"", None, 10) == [(b"a", b"99")]
    mem = MemoryStore()
    mem.put(b"a", b"0")
    mem.checkpoint(10)
    mem.put(b"a", b"99")
    assert disk.checkpoint(20) == mem.checkpoint(20)
    assert disk.bucket_at(10, p.bucket_of(b"a")) == mem.bucket_at(10, p.bucket_of(b"a"))
    # A burst bounded in memory: at WRITE_BUFFER keys waiting, they go to the tables.
    before = db.total_changes
    for i in range(WRITE_BUFFER):
        disk.put(b"k%d" % i, b"v")
    assert db.total_changes - before == 2 * WRITE_BUFFER
    db.close()


def test_large_values_are_flushed_at_the_byte_bound(tmp_path):
    """A few keys with large values do not pile up in memory: at WRITE_BUFFER_BYTES of
    keys and values waiting, they go to the tables."""
    from pbft.node.statestore import WRITE_BUFFER_BYTES

    db, disk = open_store(tmp_path / "state.db")
    big = b"x" * (WRITE_BUFFER_BYTES // 4)
    before = db.total_changes
    for i in range(3):
        disk.put(b"k%d" % i, big)
    assert db.total_changes == before
    disk.put(b"k3", big)  # the fourth reaches the bound
    assert db.total_changes - before == 4
    assert disk.scan(b"", None, 10) == [(b"k%d" % i, big) for i in range(4)]
    db.close()
