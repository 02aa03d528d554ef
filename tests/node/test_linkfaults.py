"""The link-fault layer of a real process (pbft.node.linkfaults), without sockets: the
fate of each message is the simulator's (pbft.sim.network), delayed and duplicated
copies are scheduled without blocking the sender, nothing is applied before the epoch or
to peers the scenario does not name, and the plan survives its JSON file."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import trio
import trio.testing

from pbft.node.linkfaults import FaultPlan, LinkFaults, load_plan, sum_stats, write_plan
from pbft.protocol.crypto import KeyPair, seal
from pbft.protocol.messages import Commit, Prepare
from pbft.sim.network import Network
from pbft.sim.scenario import NetworkFault, parse_scenario


class FakeTransport:
    def __init__(self, peers=(0, 1, 2, 3), me=0):
        self.outboxes = {p: None for p in peers if p != me}
        self.sent: list[tuple[object, bytes]] = []
        self.flushes = 0

    def send(self, to, body):
        self.sent.append((to, body))
        return True

    def broadcast(self, body):
        for to in self.outboxes:
            self.sent.append((to, body))

    def send_client(self, client, body):
        self.sent.append((client, body))
        return True

    def flush(self):
        self.flushes += 1


KEY = KeyPair.generate()


def commit(seq: int, view: int = 0, signer: int = 2) -> bytes:
    return seal(KEY, "t", signer, Commit(view, seq, b"d" * 32)).to_bytes()


def prepare(seq: int) -> bytes:
    return seal(KEY, "t", 2, Prepare(0, seq, b"d" * 32)).to_bytes()


def faults(*entries: dict) -> tuple[NetworkFault, ...]:
    return parse_scenario({"workload": {"clients": 2}, "network": list(entries)}).network


def layer(fs, me=0, epoch: float | None = None, clients=2, transport=None) -> LinkFaults:
    plan = FaultPlan(faults=fs, seed=1, epoch=time.time() if epoch is None else epoch, clients=clients)
    return LinkFaults(transport or FakeTransport(me=me), me, plan)


def test_drops_are_the_simulators():
    # Deterministic faults (partition with a client, one-way, filtered certain drop): the
    # layer drops exactly what the simulator's network drops, for every link and message.
    fs = faults(
        {"partition": [[0, "c0"], [1, 2, 3]], "at_ms": 0, "until_ms": 10_000},
        {"one_way": [3, "c1"]},
        {"drop": 1.0, "kinds": ["COMMIT"], "from": [2], "to": [1], "seqs": [5, 6, 7]},
    )
    net = Network(fs, random.Random(0))
    nodes = [0, 1, 2, 3, "c0", "c1"]
    for src in nodes:
        lf = layer(fs, me=src)
        for dst in nodes:
            if dst == src:
                continue
            for data in (commit(5), commit(9), prepare(5)):
                sim_dropped = net.transit(100, src, dst, data) == []
                assert (lf.fate(100, dst, data) == []) == sim_dropped, (src, dst, data)
    # Outside the window the partition is gone.
    assert layer(fs, me=0).fate(10_000, 1, prepare(1)) == [0]


def test_counts_per_kind_and_per_entry():
    fs = faults(
        {"drop": 1.0, "kinds": ["COMMIT"]},
        {"delay_ms": 10, "jitter_ms": 5},
        {"duplicate": 1.0},
        {"reorder": 1.0, "reorder_ms": 20},
    )
    lf = layer(fs)
    assert lf.fate(0, 1, commit(1)) == []
    times = lf.fate(0, 1, prepare(1))
    assert len(times) == 2 and all(10 <= t <= 15 + 20 + 20 for t in times)
    assert lf.counts == Counter(dropped=1, delayed=1, reordered=1, duplicated=1)
    assert lf.per_fault == [1, 1, 1, 1]


def test_not_applied_before_the_epoch_or_to_peers_outside_the_scenario():
    fs = faults({"drop": 1.0})
    t = FakeTransport()
    lf = layer(fs, transport=t, epoch=time.time() + 3600)  # scenario time is negative
    lf.send(1, prepare(1))
    lf.plan.epoch = None  # not known yet
    lf.send(2, prepare(1))
    lf.plan.epoch = time.time()
    lf.send(3, prepare(1))
    lf.send_client("observer", b"reply")  # the runner's observer is no scenario node
    lf.send_client("c1", b"reply")
    assert [to for to, _ in t.sent] == [1, 2, "observer"]


async def test_delayed_and_duplicated_copies_never_block_the_sender(autojump_clock):
    fs = faults({"delay_ms": 50}, {"duplicate": 1.0})
    t = FakeTransport()
    lf = layer(fs, transport=t)
    async with trio.open_nursery() as nursery:
        await nursery.start(lf.run)
        before = trio.current_time()
        lf.broadcast(prepare(1))
        assert trio.current_time() == before and t.sent == []  # queued, not waited for
        await trio.sleep(0.049)
        assert t.sent == []
        await trio.sleep(0.1)
        assert sorted(to for to, _ in t.sent) == [1, 1, 2, 2, 3, 3]
        assert t.flushes > 0
        nursery.cancel_scope.cancel()


async def test_epoch_read_from_the_plan_file_and_counts_written(tmp_path, autojump_clock):
    path = str(tmp_path / "plan.json")
    stats = tmp_path / "stats"
    stats.mkdir()
    fs = faults({"drop": 1.0, "to": [1]}, {"one_way": [0, 2]})
    plan = FaultPlan(faults=fs, seed=5, clients=2, twins={3: ("127.0.0.1", 9999)}, stats_dir=str(stats))
    write_plan(path, plan)
    loaded = load_plan(path)
    assert loaded.faults == fs and loaded.twins == {3: ("127.0.0.1", 9999)} and loaded.epoch is None
    assert load_plan(path, epoch=12.5).epoch == 12.5
    t = FakeTransport()
    lf = LinkFaults(t, 0, loaded)
    async with trio.open_nursery() as nursery:
        await nursery.start(lf.run)
        lf.send(1, prepare(1))
        assert t.sent == [(1, prepare(1))]  # no epoch yet: as it is
        plan.epoch = time.time()
        write_plan(path, plan)
        await trio.sleep(0.1)
        assert lf.plan.epoch == plan.epoch
        lf.send(1, prepare(1))
        lf.send(2, prepare(1))
        lf.send(3, prepare(1))
        assert [to for to, _ in t.sent] == [1, 3]
        nursery.cancel_scope.cancel()
    total = sum_stats(str(stats), 2)
    assert total["dropped"] == 2 and total["per_fault"] == [1, 1]
    (written,) = stats.iterdir()
    assert json.loads(written.read_text())["node"] == 0


def test_pbft_replica_link_fault_options_are_checked(tmp_path):
    import subprocess
    import sys

    def replica(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pbft", "replica", "--config", str(tmp_path / "c.toml"), "--id", "3", *args],
            capture_output=True, text=True, timeout=30,
        )

    proc = replica("--twin")
    assert proc.returncode == 2 and "--twin and --fault-epoch need --link-faults" in proc.stderr
    plan = tmp_path / "plan.json"
    write_plan(str(plan), FaultPlan(faults=faults({"drop": 0.5})))
    proc = replica("--link-faults", str(plan), "--twin")
    assert proc.returncode == 2 and "names no twin address for replica 3" in proc.stderr
    (tmp_path / "bad.json").write_text("[1, 2]")
    proc = replica("--link-faults", str(tmp_path / "bad.json"))
    assert proc.returncode == 2 and "not a link-fault plan" in proc.stderr
