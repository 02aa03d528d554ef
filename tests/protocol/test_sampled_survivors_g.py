"""A seventh batch of gaps found by a sampled mutation run of the core (docs/mutation.md):
the durable key of a window jump (records.WindowJump.to_persist) and the sources of a
state transfer when no signer of the proof stays in the newest group
(Replica._start_transfer). The third survivor of the batch, become_normal__mutmut_3
(`min_s >= h`), is equivalent: the argument is in build/survivors-g-notes.md.

Each test names the surviving mutants it kills. f = 1, n = 4, K = 4, L = 8 (make_config)
unless said otherwise.
"""

from __future__ import annotations

from dataclasses import replace

from conftest import (
    actions_of,
    decoded,
    drive_to_execution,
    feed,
    make_config,
    make_replica,
    sign_checkpoint,
    sign_pre_prepare,
)
from test_epochs import OPERATOR_KEY, membership

from pbft.node.storage import Storage
from pbft.protocol import codec
from pbft.protocol.config import OPERATOR
from pbft.protocol.crypto import batch_digest, seal
from pbft.protocol.epochs import reconfigure_operation
from pbft.protocol.events import CheckpointStable, Note, Persist, Record, Send, Truncate
from pbft.protocol.messages import FetchState, Request
from pbft.protocol.partition import DEPTH
from pbft.protocol.records import WindowJump, from_persist
from pbft.sim.simulation import apply_durability

D4 = b"\x44" * 32
D8 = b"\x88" * 32


def _keep(store: dict, actions) -> list:
    """Apply a step's durability actions to `store` as the simulator does; the actions."""
    for a in actions:
        if isinstance(a, Persist | Truncate):
            apply_durability(store, a)
    return actions


def _jump(rep, seq: int, digest: bytes, store: dict | None = None) -> tuple[list, tuple[bytes, ...]]:
    """Replicas 0, 2 and 3 sign checkpoint `seq` with `digest`, a state `rep` does not
    hold: it moves its window there and fetches that state. (its actions, the proof)."""
    out: list = []
    for s in (0, 2, 3):
        got = feed(rep, s, sign_checkpoint(s, seq, digest))
        out += _keep(store, got) if store is not None else got
    [stable] = actions_of(out, CheckpointStable)
    assert stable.seq == seq and rep.transfer is not None and rep.transfer.seq == seq
    return out, stable.proof


def _windows(actions) -> list[Persist]:
    return [a for a in actions if isinstance(a, Persist) and a.record is Record.WINDOW]


# -- a window jump is stored under the one key of its record (records.WindowJump) ------------


def test_a_window_jump_is_written_under_the_window_records_one_key_and_reads_back():
    """A window jump is a singleton record (events.Persist): (WINDOW, view 0, n=0, tag "")
    with value [seq, digest, proof], storage format docs/formats.md. The key is part of
    the on-disk format: a store from an earlier build (or one the format-3 migration
    wrote, node/storage.py) holds its row there, and the next jump must replace it.
    Read back, the row is the same jump, and a restart on it resumes the transfer.
    Found by mutation testing: mutants pbft.protocol.records.xǁWindowJumpǁto_persist__mutmut_12
    (keyed at view 1) and _4 (tag None)."""
    store: dict = {}
    rep = make_replica(make_config(), 1)
    out, proof = _jump(rep, 4, D4, store)
    [row] = _windows(out)
    assert row == Persist(Record.WINDOW, 0, 0, "", codec.encode([4, D4, list(proof)]))
    assert row.key == ("window", 0, 0, "")
    assert from_persist(row) == WindowJump(4, D4, proof)
    assert [k for k in store if k[0] == "window"] == [("window", 0, 0, "")]

    again = make_replica(make_config(), 1, service=rep.service)
    again.recover(list(store.values()))
    assert again.log.low == 4 and again.transfer is not None
    assert (again.transfer.seq, again.transfer.digest, again.transfer.proof) == (4, D4, proof)


def test_a_later_window_jump_replaces_the_row_an_earlier_run_wrote():
    """The store holds one window jump, the latest: a replica restarted on a store that
    an earlier run left with a jump to 4 (the row at its documented key) resumes that
    transfer, then jumps on to 8; the jump to 8 overwrites the earlier row instead of
    sitting next to it (two rows, and which one a restart takes depends on the order
    the store returns them). Found by mutation testing: same mutants (_12, _4)."""
    first = make_replica(make_config(), 1)
    _, proof4 = _jump(first, 4, D4)
    earlier = Persist(Record.WINDOW, 0, 0, "", codec.encode([4, D4, list(proof4)]))
    store = {earlier.key: earlier}

    rep = make_replica(make_config(), 1)
    rep.recover(list(store.values()))
    assert rep.transfer is not None and rep.transfer.seq == 4
    _, proof8 = _jump(rep, 8, D8, store)
    rows = [r for r in store.values() if r.record is Record.WINDOW]
    assert rows == [Persist(Record.WINDOW, 0, 0, "", codec.encode([8, D8, list(proof8)]))]

    again = make_replica(make_config(), 1, service=rep.service)
    again.recover(list(store.values()))
    assert again.log.low == 8 and again.transfer is not None and again.transfer.seq == 8


def test_a_window_jump_survives_a_restart_through_the_real_data_directory(tmp_path):
    """What the runtime does with the jump: its rows go into the replica's SQLite data
    directory (node/storage.py, which checksums each key, tag included), come back on
    the next start, and the restarted replica resumes the transfer. Found by mutation
    testing: mutant pbft.protocol.records.xǁWindowJumpǁto_persist__mutmut_4 (a row with
    no tag: the write itself fails)."""
    cfg = make_config()
    rep = make_replica(cfg, 1)
    out, proof = _jump(rep, 4, D4)
    storage = Storage.open(str(tmp_path), cfg, 1, history_interval=None)
    try:
        storage.apply(out)
    finally:
        storage.close()
    storage = Storage.open(str(tmp_path), cfg, 1, history_interval=None)
    try:
        rows = storage.load()
    finally:
        storage.close()
    assert [r for r in rows if r.record is Record.WINDOW] == _windows(out)
    again = make_replica(cfg, 1, service=rep.service)
    again.recover(rows)
    assert again.log.low == 4 and again.transfer is not None
    assert (again.transfer.seq, again.transfer.proof) == (4, proof)


# -- a state transfer always has someone to ask (Replica._start_transfer) --------------------


def test_a_transfer_whose_signers_all_leave_the_group_still_asks_them():
    """A state transfer asks, of the proof's signers, those staying in the newest group
    and reachable from our epoch; when none is (the group shrinks and every signer is a
    replica the change removes), it asks the signers all the same: they are members of
    the epoch we are in and hold the state, and asking nobody would leave the replica
    behind for good. Here f = 4 (n = 13): replica 1 executes the operator's command
    shrinking the group to f = 1 (replicas 0-3) after checkpoint 4, then replicas 4-12,
    a quorum of epoch 0, sign checkpoint 4 with a state it does not hold. It fetches
    that state from them: a FETCH-STATE for the root, sent to one of them. Found by
    mutation testing: mutant pbft.protocol.replica.xǁReplicaǁ_start_transfer__mutmut_12
    (`reachable or staying and sources`: no source at all, nothing sent, and a note
    that every source lied)."""
    cfg = replace(make_config(f=4), operator_key=OPERATOR_KEY.public)
    shrink = membership(cfg, f=1, replicas=cfg.replicas[:4])
    op = Request(reconfigure_operation(1, shrink), 1, OPERATOR)
    batch = (seal(OPERATOR_KEY, cfg.signing_domain, OPERATOR, op).to_bytes(),)
    rep = make_replica(cfg, 1)
    feed(rep, 0, sign_pre_prepare(1, batch, n=cfg.n))
    drive_to_execution(rep, 1, batch_digest(batch))
    assert rep.last_executed == 1 and rep.epochs.boundary() == 4
    assert rep.epochs.configs[max(rep.epochs.configs)].n == 4  # the newest group: 0-3

    out: list = []
    for s in range(4, 13):  # 2f + 1 = 9 signers, none of them staying
        out += feed(rep, s, sign_checkpoint(s, 4, D4))
    assert rep.transfer is not None and rep.transfer.seq == 4
    assert rep.transfer.sources == list(range(4, 13))
    sends = actions_of(out, Send)
    assert len(sends) == 1 and sends[0].to in range(4, 13)
    env, msg = decoded(sends[0].data)
    assert (env.signer, msg) == (1, FetchState(4, D4, DEPTH, 0, 0))
    assert not [n for n in actions_of(out, Note) if "lied" in n.text]
