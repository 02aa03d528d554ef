"""pbft.cluster.realcheck: the comparison of what correct replicas agreed, over decoded
durable records (no processes), and reading one store back read-only."""

from __future__ import annotations

from conftest import make_config

from pbft.cluster.realcheck import check_stores, compare, figures, summarise
from pbft.node.storage import Storage
from pbft.protocol.crypto import KeyPair, seal
from pbft.protocol.messages import Checkpoint, Commit, NewView, PrePrepare, ViewChange
from pbft.protocol.records import (
    AcceptedPrePrepare,
    ExecutedBatch,
    PreparedCertificate,
    SignedVote,
    StableCheckpoint,
    ViewState,
)

KEY = KeyPair.from_seed(b"realcheck")
A = bytes([0xAA]) * 32
B = bytes([0xBB]) * 32
S1 = bytes([0x11]) * 32
S2 = bytes([0x22]) * 32


def env(msg, signer=0) -> bytes:
    return seal(KEY, "test", signer, msg).to_bytes()


def pp(view: int, seq: int, digest: bytes) -> bytes:
    return env(PrePrepare(view, seq, digest, ()))


def executed(view: int, seq: int, digest: bytes) -> list:
    return [PreparedCertificate(view, seq, pp(view, seq, digest), ()), ExecutedBatch(view, seq)]


def stable(seq: int, digest: bytes) -> StableCheckpoint:
    return StableCheckpoint(seq, digest, ())


def test_replicas_that_agree_pass():
    r1 = summarise("replica 1", [*executed(0, 1, A), *executed(0, 2, B), stable(2, S1)])
    r2 = summarise("replica 2", [*executed(0, 1, A), *executed(0, 2, B), stable(2, S1)])
    assert r1.executed == {1: A, 2: B}
    assert r1.stable == 2
    assert compare([r1, r2]) == []
    # what the comparison looked at: two executed seqs, one checkpoint, over both stores
    assert figures([r1, r2])["agreement"] == 2 and figures([r1, r2])["checkpoint-digests"] == 1


def test_different_batches_at_one_seq_is_an_agreement_violation():
    r1 = summarise("replica 1", [*executed(0, 1, A), *executed(0, 2, A)])
    r2 = summarise("replica 2", [*executed(0, 1, A), *executed(1, 2, B)])
    r3 = summarise("replica 3", [*executed(0, 1, A)])
    found = compare([r1, r2, r3])
    assert [v.check for v in found] == ["agreement"]
    detail = found[0].detail
    assert "replica 1 and replica 2" in detail and "seq 2" in detail
    assert A.hex()[:12] in detail and B.hex()[:12] in detail


def test_executed_digest_falls_back_to_the_accepted_pre_prepare_or_the_commit():
    """A slot executed without a prepared certificate (commit-unprepared) still names its
    batch: the pre-prepare the backup accepted, else the COMMIT it signed."""
    r1 = summarise("replica 1", [AcceptedPrePrepare(0, 1, pp(0, 1, A)), ExecutedBatch(0, 1)])
    r2 = summarise("replica 2", [SignedVote("commit", 0, 1, env(Commit(0, 1, B), 2)), ExecutedBatch(0, 1)])
    assert (r1.executed, r2.executed) == ({1: A}, {1: B})
    found = compare([r1, r2])
    assert [v.check for v in found] == ["agreement"] * 3
    assert "replica 1 executed seq 1 (view 0) without a prepared certificate" in found[0].detail
    assert "replica 1 and replica 2 executed different batches at seq 1" in found[2].detail


def test_an_executed_slot_without_its_prepared_certificate():
    """The core writes PREPARED with or before EXECUTED: a slot executed without one was
    committed unprepared (a certificate of another view does not count)."""
    r1 = summarise("replica 1", [*executed(0, 1, A), PreparedCertificate(0, 2, pp(0, 2, A), ()), ExecutedBatch(1, 2)])
    assert r1.unprepared == [(1, 2)]
    found = compare([r1])
    assert [v.check for v in found] == ["agreement"] and "seq 2 (view 1)" in found[0].detail


def test_checkpoint_digest_mismatch():
    r1 = summarise("replica 1", [stable(8, S1)])
    r2 = summarise("replica 2", [stable(8, S2)])
    found = compare([r1, r2])
    assert [v.check for v in found] == ["checkpoint-digests"]
    assert "checkpoint 8" in found[0].detail


def test_a_stable_checkpoint_against_a_signed_checkpoint_vote():
    """One replica's stable checkpoint, another's CHECKPOINT vote for that seq (it has
    not seen it stable yet): the digests must match."""
    r1 = summarise("replica 1", [stable(16, S1)])
    r2 = summarise("replica 2", [stable(8, S1), SignedVote("checkpoint", 0, 16, env(Checkpoint(16, S2), 2))])
    assert r2.stable == 8 and r2.checkpoints == {8: S1, 16: S2}
    assert [v.check for v in compare([r1, r2])] == ["checkpoint-digests"]
    r3 = summarise("replica 3", [stable(8, S1), SignedVote("checkpoint", 0, 16, env(Checkpoint(16, S1), 3))])
    assert compare([r1, r3]) == []


def test_prepared_uniqueness():
    r1 = summarise("replica 1", [PreparedCertificate(0, 3, pp(0, 3, A), ())])
    r2 = summarise("replica 2", [PreparedCertificate(0, 3, pp(0, 3, B), ())])
    r3 = summarise("replica 3", [PreparedCertificate(1, 3, pp(1, 3, B), ())])  # another view: fine
    found = compare([r1, r2, r3])
    assert [v.check for v in found] == ["prepared-uniqueness"]
    assert "view 0, seq 3" in found[0].detail


def test_prepared_certificates_claimed_in_a_stored_new_view():
    """The PREPARED rows of view 0 are gone (truncated), but the NEW-VIEW that installed
    view 1 holds the VIEW-CHANGEs of replicas 1 and 2, which claim different digests
    prepared for (0, 1). A faulty signer's claim (replica 0 is not compared) is ignored."""
    def vc(signer: int, digest: bytes) -> bytes:
        return env(ViewChange(1, 0, (), ((pp(0, 1, digest), ),)), signer)

    def stored_new_view(*vcs: bytes) -> ViewState:
        return ViewState(1, True, env(NewView(1, vcs, ()), 1))

    r1 = summarise("replica 1", [stored_new_view(vc(1, A), vc(2, B), vc(0, A))], replica=1)
    r2 = summarise("replica 2", [stored_new_view(vc(1, A), vc(2, B), vc(0, A))], replica=2)
    assert r1.claimed == {0: {(0, 1): A}, 1: {(0, 1): A}, 2: {(0, 1): B}}
    found = compare([r1, r2])
    assert [v.check for v in found] == ["prepared-uniqueness"]
    assert "replica 1: " in found[0].detail and "replica 2: " in found[0].detail
    r3 = summarise("replica 3", [stored_new_view(vc(0, B), vc(2, A))], replica=3)
    r4 = summarise("replica 4", [ViewState(1, False, vc(4, A))], replica=4)
    assert r4.claimed == {4: {(0, 1): A}}
    assert compare([r3, r4]) == []  # replica 2 is not among the compared: its claim is not judged


def test_missing_data_is_not_a_violation():
    """Slots truncated at one replica only, different stable checkpoints, an empty
    store: nothing to compare, nothing reported."""
    r1 = summarise("replica 1", [*executed(0, 9, A), stable(8, S1)])
    r2 = summarise("replica 2", [stable(16, S2), *executed(0, 17, B)])
    r3 = summarise("replica 3", [])
    assert r2.executed == {17: B}
    assert compare([r1, r2, r3]) == []
    assert compare([]) == [] and compare([r1]) == []


def test_check_stores_reads_data_directories_read_only(tmp_path):
    cfg = make_config()
    paths = {}
    for i, digest in ((1, A), (2, B)):
        path = str(tmp_path / f"replica-{i}")
        with Storage.open(path, cfg, i, history_interval=None) as store:
            store.apply([r.to_persist() for r in executed(0, 1, digest)])
        paths[i] = path
    paths[3] = str(tmp_path / "never-created")
    files = [tmp_path / d / f for d in ("replica-1", "replica-2") for f in ("pbft.sqlite3", "HISTORY")]
    before = [f.read_bytes() for f in files]
    found, notes = check_stores(paths)
    assert [v.check for v in found] == ["agreement", "prepared-uniqueness"]
    assert len(notes) == 1 and "replica 3" in notes[0]
    # Read-only: SQLite may add its (empty) -wal and -shm files, but the database and the
    # history sidecar are as they were, and the replica opens its directory again.
    assert [f.read_bytes() for f in files] == before
    with Storage.open(paths[1], cfg, 1, history_interval=None) as store:
        assert len(store.load()) == 2
