"""pbft.node.storage: the SQLite data directory of one replica (docs/formats.md).

Unit tests on a temporary directory: round trip, replace by key, truncate, one
transaction per apply, refusing directories that are not this replica's, a full disk.
Then the core and the storage together, in memory: a replica rebuilt from its stored
records never signs a vote that contradicts one it signed before the crash.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3

import pytest
import trio
from conftest import (
    Router,
    decoded,
    make_config,
    make_replica,
    replica_key,
    sign_request,
)

from pbft.cluster.keygen import generate_cluster
from pbft.node.clusterfile import load_replica
from pbft.node.storage import (
    DB_FILE,
    FORMAT_VERSION,
    Storage,
    StorageError,
)
from pbft.protocol.config import ConfigError
from pbft.protocol.events import Broadcast, Persist, Received, Record, Tick, Truncate
from pbft.protocol.messages import PrePrepare
from pbft.service.kv import KeyValueStore, decode_result, op_get, op_put


def vote(seq: int, value: bytes, view: int = 0, tag: str = "prepare") -> Persist:
    return Persist(Record.VOTE, seq, view, tag, value)


@pytest.fixture
def cfg():
    return make_config()


@pytest.fixture
def store(tmp_path, cfg):
    s = Storage.open(str(tmp_path / "data"), cfg, 1)
    try:
        yield s
    finally:
        s.close()


def test_round_trip_in_write_order(store, tmp_path, cfg):
    written = [
        Persist(Record.CHECKPOINT, 0, 0, "", b"cp"),
        vote(3, b"a"),
        Persist(Record.EXECUTED, 1, 0, "", b"pp1"),
        Persist(Record.VIEW, 0, 0, "", b"view"),
    ]
    assert store.apply(written) == 4
    assert store.load() == written
    store.close()
    with Storage.open(str(tmp_path / "data"), cfg, 1) as again:
        assert again.load() == written
        assert again.meta()["format_version"] == str(FORMAT_VERSION)


def test_a_later_record_with_the_same_key_replaces_the_earlier(store):
    store.apply([vote(1, b"old"), vote(1, b"other", tag="commit"), vote(1, b"v1", view=1)])
    store.apply([vote(1, b"new")])
    got = {r.key: r.value for r in store.load()}
    assert got == {
        ("vote", 0, 1, "prepare"): b"new",
        ("vote", 0, 1, "commit"): b"other",
        ("vote", 1, 1, "prepare"): b"v1",
    }


def test_truncate_drops_votes_prepared_executed_at_or_below_seq_only(store):
    store.apply(
        [
            vote(4, b"v4"),
            vote(5, b"v5"),
            Persist(Record.PREPARED, 4, 0, "", b"p4"),
            Persist(Record.EXECUTED, 4, 0, "", b"e4"),
            Persist(Record.EXECUTED, 6, 0, "", b"e6"),
            Persist(Record.CHECKPOINT, 0, 0, "", b"cp4"),
            Persist(Record.VIEW, 0, 0, "", b"view"),
        ]
    )
    store.apply([Truncate(4)])
    assert [(r.record, r.seq) for r in store.load()] == [
        (Record.VOTE, 5),
        (Record.EXECUTED, 6),
        (Record.CHECKPOINT, 0),
        (Record.VIEW, 0),
    ]


def test_an_epoch_switch_truncates_only_earlier_epochs_as_the_simulator_does(store):
    """`Truncate(seq, below_view)` (an epoch switch, events.Truncate): the records of views
    below it at or below seq, and their VIEW records; those of that epoch and later are
    kept. The simulator's store (apply_durability) must agree row for row."""
    from pbft.sim.simulation import apply_durability

    e1, e2 = 1 << 32, 2 << 32
    written = [
        vote(9, b"e0"), vote(9, b"e1", view=e1), vote(9, b"e2", view=e2),
        vote(9, b"cp", tag="checkpoint"),
        Persist(Record.PREPARED, 9, e1, "", b"p1"), Persist(Record.EXECUTED, 3, 0, "", b"x0"),
        Persist(Record.VIEW, 0, 0, "", b"view0"), Persist(Record.VIEW, 0, e2, "", b"view2"),
        Persist(Record.CHECKPOINT, 0, 0, "", b"cp"), Persist(Record.WINDOW, 0, 0, "", b"jump"),
    ]
    cut = Truncate((1 << 63) - 1, below_view=e1)
    store.apply([*written, cut])
    sim: dict = {}
    for a in [*written, cut]:
        apply_durability(sim, a)
    kept = sorted((r.record.value, r.view, r.seq, r.tag) for r in store.load())
    assert kept == sorted(sim) == sorted([
        ("vote", e1, 9, "prepare"), ("vote", e2, 9, "prepare"), ("prepared", e1, 9, ""),
        ("view", e2, 0, ""), ("checkpoint", 0, 0, ""), ("window", 0, 0, ""),
    ])


def test_actions_apply_in_order_within_one_transaction(store):
    # Truncate between two writes deletes only what came before it.
    store.apply([vote(2, b"before"), Truncate(3), vote(3, b"after")])
    assert [r.value for r in store.load()] == [b"after"]


def test_one_transaction_per_apply(store, monkeypatch):
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.apply([vote(1, b"a"), Broadcast(b"not stored"), vote(2, b"b"), Truncate(1)])
    assert [s for s in statements if s.split()[0] in ("BEGIN", "COMMIT")] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    assert store.transactions == 1
    statements.clear()
    assert store.apply([Broadcast(b"x")]) == 0  # nothing to store: no transaction at all
    assert statements == [] and store.transactions == 1


def test_a_failed_apply_stores_nothing_of_it(store):
    store.apply([vote(1, b"kept")])
    store._db.execute(  # the second row of the next apply fails, mid-way
        "CREATE TEMP TRIGGER fail_seq_2 BEFORE INSERT ON main.records WHEN NEW.seq = 2"
        " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    before = store.history
    with pytest.raises(StorageError, match="cannot write"):
        store.apply([vote(3, b"lost"), vote(2, b"x")])
    assert [r.value for r in store.load()] == [b"kept"]
    assert store.history == before  # the history did not move either


def test_refuses_another_clusters_directory(tmp_path, cfg):
    Storage.open(str(tmp_path / "d"), cfg, 1).close()
    other = dataclasses.replace(cfg, cluster_id="elsewhere")
    with pytest.raises(ConfigError, match="belongs to cluster 'test-cluster', not 'elsewhere'"):
        Storage.open(str(tmp_path / "d"), other, 1)


def test_refuses_another_replicas_directory(tmp_path, cfg):
    Storage.open(str(tmp_path / "d"), cfg, 1).close()
    with pytest.raises(ConfigError, match="belongs to replica 1, not replica 2"):
        Storage.open(str(tmp_path / "d"), cfg, 2)


def test_refuses_a_directory_written_with_other_keys(tmp_path, cfg):
    Storage.open(str(tmp_path / "d"), cfg, 1).close()
    replicas = list(cfg.replicas)
    replicas[3] = dataclasses.replace(replicas[3], public_key=replica_key(9).public)
    rekeyed = dataclasses.replace(cfg, replicas=tuple(replicas))
    with pytest.raises(ConfigError, match="other keys"):
        Storage.open(str(tmp_path / "d"), rekeyed, 1)


def test_refuses_a_newer_format(tmp_path, cfg):
    Storage.open(str(tmp_path / "d"), cfg, 1).close()
    db = sqlite3.connect(tmp_path / "d" / DB_FILE)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION + 1),))
    db.close()
    with pytest.raises(ConfigError, match="newer than this build reads"):
        Storage.open(str(tmp_path / "d"), cfg, 1)


def test_refuses_a_file_that_is_not_a_database(tmp_path, cfg):
    os.makedirs(tmp_path / "d")
    (tmp_path / "d" / DB_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="corrupt or unreadable"):
        Storage.open(str(tmp_path / "d"), cfg, 1)
    assert (tmp_path / "d" / DB_FILE).read_bytes() == b"this is not sqlite" * 100  # untouched


def test_refuses_a_corrupt_database(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([vote(i, os.urandom(300)) for i in range(1, 200)])
        s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "d" / DB_FILE
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for p in range(2, len(data) // page):  # keep the header page, scramble the b-tree pages
        data[p * page : p * page + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="corrupt"):
        Storage.open(str(tmp_path / "d"), cfg, 1)


def test_refuses_an_sqlite_database_of_something_else(tmp_path, cfg):
    os.makedirs(tmp_path / "d")
    db = sqlite3.connect(tmp_path / "d" / DB_FILE)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="not a pbft data directory"):
        Storage.open(str(tmp_path / "d"), cfg, 1)


def test_refuses_a_directory_in_use(tmp_path, cfg):
    with Storage.open(str(tmp_path / "d"), cfg, 1):
        with pytest.raises(ConfigError, match="already in use"):
            Storage.open(str(tmp_path / "d"), cfg, 1)
    Storage.open(str(tmp_path / "d"), cfg, 1).close()  # released on close


def test_refuses_a_file_as_directory(tmp_path, cfg):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        Storage.open(str(tmp_path / "f"), cfg, 1)


@pytest.mark.parametrize("policy, pragma", [("always", 2), ("batch", 1), ("off", 0)])
def test_fsync_policy_sets_synchronous(tmp_path, cfg, policy, pragma):
    with Storage.open(str(tmp_path / "d"), cfg, 1, fsync=policy) as s:
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == pragma
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_fsync_setting_from_the_cluster_file(tmp_path):
    # Read once with the rest of the file (clusterfile.load_replica), not on its own.
    path = generate_cluster(str(tmp_path / "k"), f=1, clients=["alice"], ports=[1, 2, 3, 4])
    assert load_replica(path, 1).fsync == "always"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('\n[storage]\nfsync = "batch"\n')
    assert load_replica(path, 1).fsync == "batch"
    with open(path, encoding="utf-8") as fh:
        text = fh.read().replace('fsync = "batch"', 'fsync = "sometimes"')
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    with pytest.raises(ConfigError, match="'fsync' must be \"always\", \"batch\" or \"off\""):
        load_replica(path, 1)


def fill_disk(store: Storage) -> None:
    """Simulate a full disk: the database may not grow beyond its current size."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def test_full_disk_raises_storage_error_and_keeps_what_was_stored(store):
    store.apply([vote(1, b"kept")])
    fill_disk(store)
    with pytest.raises(StorageError, match="is full"):
        store.apply([vote(i, os.urandom(2000)) for i in range(2, 40)])
    assert [r.value for r in store.load()] == [b"kept"]


async def test_full_disk_stops_the_node_before_it_sends(tmp_path, cfg, caplog):
    from pbft.node.node import ReplicaNode

    sent: list[object] = []

    class Recorder:
        def __init__(self, *a, **kw):
            pass

        def send(self, *args):
            sent.append(args)

        broadcast = send_client = send

        def flush(self):
            pass

    s = Storage.open(str(tmp_path / "d"), cfg, 0)
    try:
        node = ReplicaNode.__new__(ReplicaNode)  # no sockets: only the stepping task
        node.__init__(cfg, make_replica(cfg, 0), server_context=None, client_context=None,
                      identify=None, storage=s)
        node.transport = Recorder()
        fill_disk(s)
        caplog.set_level(logging.ERROR, logger="pbft.node")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                node._cancel = nursery.cancel_scope
                nursery.start_soon(node._step_loop)
                big = b"x" * 20_000  # needs new pages, which the "disk" cannot give
                for t in range(1, 6):
                    op = op_put(b"k", big)
                    await node._send.send(Received("alice", sign_request("alice", op, t)))
        assert node.failure is not None and "is full" in node.failure
        assert sent == []  # the pre-prepare was never sent: it could not be made durable
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "stopped" in errors[0].getMessage()
    finally:
        s.close()


# -- the core and the storage together ---------------------------------------------------


def pre_prepares(actions) -> list[PrePrepare]:
    out = []
    for a in actions:
        if isinstance(a, Broadcast):
            msg = decoded(a.data)[1]
            if isinstance(msg, PrePrepare):
                out.append(msg)
    return out


def test_a_primary_that_crashed_after_persisting_never_reuses_the_seq(tmp_path, cfg):
    # Replica 0 (primary of view 0) assigns seq 1 to alice's request and persists the
    # signed PRE-PREPARE, then crashes before the broadcast leaves. Rebuilt from disk, it
    # must not give seq 1 to a different batch.
    with Storage.open(str(tmp_path / "p"), cfg, 0) as s:
        primary = make_replica(cfg, 0)
        out = primary.step(Received("alice", sign_request("alice", op_put(b"a", b"1"), 1)))
        first = pre_prepares(out)
        assert [p.seq for p in first] == [1]
        s.apply(out)  # durable; the broadcast is lost with the crash
        records = s.load()
    with Storage.open(str(tmp_path / "p"), cfg, 0) as s:
        reborn = make_replica(cfg, 0)
        reborn.recover(s.load())
        assert s.load() == records
        out = reborn.step(Received("bob", sign_request("bob", op_put(b"b", b"2"), 1)))
        out += reborn.step(Received("alice", sign_request("alice", op_put(b"a", b"1"), 1)))
        for _ in range(200):  # retransmission timers fire: it may resend seq 1, never change it
            out += reborn.step(Tick())
        for pp in pre_prepares(out):
            if pp.seq == 1:
                assert pp.digest == first[0].digest, "signed a second batch for seq 1"
        assert reborn.next_seq == 2  # bob's batch, whenever proposed, gets a new number
        assert all(pp.seq in (1, 2) for pp in pre_prepares(out))


def test_a_whole_cluster_rebuilt_from_storage_keeps_executed_writes(tmp_path, cfg):
    # Every replica persists what the core asks, its state in its data directory; all
    # "crash"; rebuilt from their directories they hold every write that completed and
    # keep serving. The state store kept only what its last checkpoint committed: the
    # rest is replayed from the records.
    stores = [Storage.open(str(tmp_path / f"r{i}"), cfg, i) for i in cfg.replica_ids()]
    router = Router.build(cfg, [KeyValueStore(s.state_store()) for s in stores])
    try:
        original = router.perform

        def perform(src, actions):
            if isinstance(src, int):
                stores[src].apply(actions)
            original(src, actions)

        router.perform = perform
        for i in range(10):  # crosses checkpoints (K=4): exercises Truncate too
            router.submit("alice", op_put(b"k%d" % i, b"v%d" % i))
            router.run()
        assert len(router.completed) == 10
        digest = router.replicas[0].state_digest()
        executed = router.replicas[0].last_executed
        for s in stores:
            s.close()
        stores = [Storage.open(str(tmp_path / f"r{i}"), cfg, i) for i in cfg.replica_ids()]
        fresh = Router.build(cfg, [KeyValueStore(s.state_store()) for s in stores])
        for i in cfg.replica_ids():
            assert fresh.replicas[i].store.kept  # the state came back from the disk
            fresh.replicas[i].recover(stores[i].load())
            assert fresh.replicas[i].last_executed == executed
            assert fresh.replicas[i].state_digest() == digest
        fresh.clients = router.clients
        fresh.submit("alice", op_get(b"k7"), read_only=True)
        fresh.run()
        assert fresh.completed and decode_result(fresh.completed[-1][2]) == b"v7"
    finally:
        for s in stores:
            s.close()


def test_a_restarted_backup_treats_a_conflicting_pre_prepare_as_evidence(tmp_path, cfg):
    # Backup 1 prepared (0, 1, d) and crashed. A Byzantine primary then sends it a second
    # pre-prepare for (0, 1). Safety holds (SafetyRules refuses to sign), but step() must
    # not raise on remote input: a real replica process would die of it, so one faulty
    # primary could crash every backup that ever restarted.
    from conftest import sign_pre_prepare

    from pbft.protocol.events import Evidence, Rejected

    first = sign_request("alice", op_put(b"a", b"1"), 1)
    second = sign_request("bob", op_put(b"b", b"2"), 1)
    with Storage.open(str(tmp_path / "b"), cfg, 1) as s:
        backup = make_replica(cfg, 1)
        s.apply(backup.step(Received(0, sign_pre_prepare(1, (first,)))))
    with Storage.open(str(tmp_path / "b"), cfg, 1) as s:
        reborn = make_replica(cfg, 1)
        reborn.recover(s.load())
        out = reborn.step(Received(0, sign_pre_prepare(1, (second,))))
    assert not [a for a in out if isinstance(a, Broadcast)]
    assert [a for a in out if isinstance(a, Evidence | Rejected)]


def test_executed_records_replay_from_the_prepared_record_or_their_own_value(cfg):
    """An EXECUTED record names its slot; recovery takes the pre-prepare from the PREPARED
    record of the same (view, seq). Records written by older builds carry the pre-prepare
    themselves, and replay the same way."""
    from conftest import drive_to_execution, sign_pre_prepare

    from pbft.protocol.crypto import batch_digest
    from pbft.protocol.events import Persist, Record

    backup = make_replica(cfg, 1)
    batch = (sign_request("alice", op_put(b"k", b"v"), 1),)
    pp = sign_pre_prepare(1, batch)
    out = backup.step(Received(0, pp))
    out += drive_to_execution(backup, 1, batch_digest(batch))
    records = [a for a in out if isinstance(a, Persist)]
    [executed] = [r for r in records if r.record is Record.EXECUTED]
    assert executed.value == b""
    new = make_replica(cfg, 1)
    new.recover(records)
    assert new.last_executed == 1 and new.state_digest() == backup.state_digest()
    # The older format: EXECUTED holds the pre-prepare, and no PREPARED record is needed.
    old = [r for r in records if r.record is not Record.PREPARED and r.record is not Record.EXECUTED]
    old.append(Persist(Record.EXECUTED, 1, 0, "", pp))
    older = make_replica(cfg, 1)
    older.recover(old)
    assert older.last_executed == 1 and older.state_digest() == backup.state_digest()
    # A store that names a slot it holds no pre-prepare for is refused, not half-used.
    broken = [r for r in records if r.record is not Record.PREPARED]
    with pytest.raises(ValueError, match="no PREPARED record"):
        make_replica(cfg, 1).recover(broken)


def test_a_store_the_core_cannot_replay_stops_the_replica_with_one_sentence(tmp_path, cfg):
    from pbft.errors import UsageError
    from pbft.node.node import ReplicaNode
    from pbft.protocol.events import Persist, Record

    with Storage.open(str(tmp_path / "d"), cfg, 1) as s:
        s.apply([Persist(Record.EXECUTED, 1, 0, "", b"")])  # names a slot it holds nothing of
        node = ReplicaNode.__new__(ReplicaNode)
        node.__init__(cfg, make_replica(cfg, 1), server_context=None, client_context=None,
                      identify=None, storage=s)
        with pytest.raises(UsageError, match="cannot recover from .*no PREPARED record"):
            node.recover()


def test_apply_keeps_the_order_of_writes_and_truncations(tmp_path, cfg):
    """Persists are batched between truncations; the order of the two kinds is kept."""
    from pbft.protocol.events import Persist, Record, Truncate

    with Storage.open(str(tmp_path / "o"), cfg, 0) as s:
        before = Persist(Record.VOTE, 3, 0, "prepare", b"a")
        after = Persist(Record.VOTE, 2, 0, "prepare", b"b")
        also = Persist(Record.PREPARED, 5, 0, "", b"c")
        assert s.apply([before, Truncate(3), after, also]) == 4
        assert sorted((r.seq, r.value) for r in s.load()) == [(2, b"b"), (5, b"c")]


def _epoch_one(config):
    """`config` after a change that gave replica 3 a new key (as `pbft admin replace`
    records it: the latest epoch, with the cluster file's own tables as `earlier`)."""
    from pbft.protocol.config import ReplicaInfo
    from pbft.protocol.crypto import KeyPair
    from pbft.protocol.epochs import Membership, apply

    new3 = KeyPair.from_seed(b"replaced-replica-3").public
    replicas = tuple(
        ReplicaInfo(r.id, r.host, r.port, new3 if r.id == 3 else r.public_key) for r in config.replicas
    )
    later = apply(config, 1, Membership(config.f, replicas, config.clients))
    return dataclasses.replace(later, earlier=(config,))


def test_a_replica_that_stayed_through_a_change_reopens_its_directory(tmp_path, cfg):
    """A cluster file that has recorded a change lists the latest epoch's keys; the data
    directory of a replica that stayed was made under the keys of an earlier one. It is
    the same replica of the same cluster: refusing it made every survivor's restart after
    `pbft admin replace` fail (found by a walkthrough of `pbft up`)."""
    Storage.open(str(tmp_path / "data"), cfg, 1).close()
    Storage.open(str(tmp_path / "data"), _epoch_one(cfg), 1).close()


def test_a_directory_made_for_other_keys_of_the_same_cluster_is_refused(tmp_path, cfg):
    Storage.open(str(tmp_path / "data"), cfg, 1).close()
    from pbft.protocol.config import ReplicaInfo
    from pbft.protocol.crypto import KeyPair

    regenerated = dataclasses.replace(cfg, replicas=tuple(
        ReplicaInfo(r.id, r.host, r.port, KeyPair.from_seed(b"new-%d" % r.id).public if r.id != 1 else r.public_key)
        for r in cfg.replicas
    ))
    with pytest.raises(ConfigError, match=r"was written for other keys of cluster .* \(were the keys regenerated\?\)"):
        Storage.open(str(tmp_path / "data"), regenerated, 1)
    # Nor may a replica whose own key changed take over the old directory.
    Storage.open(str(tmp_path / "data3"), cfg, 3).close()
    with pytest.raises(ConfigError, match="other keys"):
        Storage.open(str(tmp_path / "data3"), _epoch_one(cfg), 3)
