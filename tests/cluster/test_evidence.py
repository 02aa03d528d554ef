"""Evidence end to end: a Byzantine replica in an in-memory cluster, the honest replicas'
Evidence actions performed by real ReplicaNodes into their SQLite data directories, the
export read back from those directories, and offline verification with nothing but the
cluster file; a tampered export fails.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections import deque

import pytest

from pbft.adversary.catalogue import REGISTRY, ByzantineReplica
from pbft.cli import main as cli
from pbft.cluster import evidence
from pbft.cluster.keygen import generate_cluster
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import ReplicaNode
from pbft.node.storage import EVIDENCE_PER_CULPRIT, Storage
from pbft.protocol.client import ClientCore
from pbft.protocol.events import Broadcast, Evidence, Received, Send, SendClient, Tick
from pbft.protocol.replica import Replica
from pbft.service.kv import KeyValueStore, op_put


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    path = generate_cluster(
        str(root / "c"), f=1, clients=["alice"], ports=[7100, 7101, 7102, 7103],
        cluster_id="ev", checkpoint_interval=4, log_window=8,
    )
    return path, load_cluster(path)


def run_in_memory(config, byz_id, name, params, rounds=3, ticks=30):
    """Four cores (one Byzantine) and one client on a FIFO network; every replica's
    Evidence actions, by replica."""
    keys = {i: load_identity(config, i).key for i in config.replica_ids()}
    cores = [Replica(config, i, keys[i], KeyValueStore()) for i in config.replica_ids()]
    nodes: list = list(cores)
    beh = REGISTRY[name](cores[byz_id], keys[byz_id], params, random.Random(1))
    nodes[byz_id] = ByzantineReplica(cores[byz_id], beh)
    client = ClientCore(config, "alice", load_identity(config, "alice").key)
    q: deque = deque()
    found: dict[int, list[Evidence]] = {i: [] for i in config.replica_ids()}

    def perform(src, actions):
        for a in actions:
            match a:
                case Send(to, data):
                    q.append((src, to, data))
                case Broadcast(data):
                    q.extend((src, r, data) for r in config.replica_ids() if r != src)
                case SendClient(c, data):
                    q.append((src, c, data))
                case Evidence() if isinstance(src, int):
                    found[src].append(a)

    def run():
        steps = 0
        while q:
            steps += 1
            assert steps < 200_000
            src, dst, data = q.popleft()
            node = client if dst == "alice" else nodes[dst]
            perform(dst, node.step(Received(src, data)))

    for i in range(rounds):
        if client.outstanding is None:
            perform("alice", client.submit(op_put(b"k", b"v%d" % i)))
        run()
    for _ in range(ticks):
        for i, node in enumerate(nodes):
            perform(i, node.step(Tick()))
        perform("alice", client.step(Tick()))
        run()
    return found


def store(config, tmp_path, found, honest):
    """Perform each honest replica's Evidence actions through a ReplicaNode with storage,
    twice (duplicates are stored once); the data directories."""
    dirs = []
    for i in honest:
        d = os.path.join(tmp_path, f"replica-{i}")
        with Storage.open(d, config, i, "off") as storage:
            node = ReplicaNode(
                config, Replica(config, i, load_identity(config, i).key, KeyValueStore()),
                server_context=None, client_context=None, identify=None, storage=storage,
            )
            node.perform(found[i])
            node.perform(found[i])
            stored = storage.evidence()
            distinct = {(e.culprit, e.kind, frozenset((e.first, e.second))) for e in found[i]}
            assert len(stored) == len(distinct)
            total = sum(
                v for s in node.metrics.registry.collect() if s.name == "pbft_evidence"
                for v in [x.value for x in s.samples if x.name == "pbft_evidence_total"]
            )
            assert total == len(distinct)
        dirs.append(d)
    return dirs


def test_double_vote_evidence_is_stored_exported_and_verified(cluster, tmp_path):
    path, config = cluster
    found = run_in_memory(config, 1, "double-vote", {"leak": True})
    honest = [0, 2, 3]
    assert any(e.culprit == 1 for i in honest for e in found[i])
    dirs = store(config, str(tmp_path), found, honest)

    doc = evidence.export(config, dirs)
    assert doc["cluster"] == "ev" and doc["records"]
    kinds = set()
    for record in doc["records"]:
        verdict = evidence.verify_evidence(config, record)
        assert verdict.ok, verdict.reason
        assert verdict.culprit == record["culprit"] == 1
        kinds.add(record["kind"])
    assert {"double-prepare", "double-commit"} <= kinds
    # The same pair reported by several replicas is one record naming all of them.
    assert all(r["reported_by"] == sorted(set(r["reported_by"])) for r in doc["records"])


def test_equivocating_primary_is_named(cluster, tmp_path):
    path, config = cluster
    found = run_in_memory(config, 0, "equivocate", {"reflect": True})
    honest = [1, 2, 3]
    dirs = store(config, str(tmp_path), found, honest)
    doc = evidence.export(config, dirs)
    equivocations = [r for r in doc["records"] if r["kind"] == "equivocate"]
    assert equivocations, "no honest replica kept the two pre-prepares"
    for record in doc["records"]:
        verdict = evidence.verify_evidence(config, record)
        assert verdict.ok and verdict.culprit == 0, verdict.reason
    assert "PRE-PREPARE" in evidence.verify_evidence(config, equivocations[0]).reason


def _tampered(record, **change):
    return {**record, **change}


def _flip(b64: str, index: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_records_fail(cluster, tmp_path):
    path, config = cluster
    found = run_in_memory(config, 1, "double-vote", {"leak": True}, rounds=1, ticks=0)
    dirs = store(config, str(tmp_path), found, [0])
    record = evidence.export(config, dirs)["records"][0]
    assert evidence.verify_evidence(config, record).ok
    bad = {
        "signature": _tampered(record, second=_flip(record["second"], -1)),
        "body": _tampered(record, first=_flip(record["first"], 20)),
        "other culprit": _tampered(record, culprit=2),
        "same twice": _tampered(record, second=record["first"]),
        "kind": _tampered(record, kind="equivocate"),
        "unknown kind": _tampered(record, kind="nonsense"),
        "not base64": _tampered(record, first="!!"),
    }
    for what, rec in bad.items():
        verdict = evidence.verify_evidence(config, rec)
        assert not verdict.ok, what


def test_cli_export_and_verify(cluster, tmp_path, capsys):
    path, config = cluster
    found = run_in_memory(config, 1, "double-vote", {"leak": True}, rounds=1, ticks=0)
    root = str(tmp_path / "data")
    store(config, root, found, [0, 2])
    out = str(tmp_path / "export.json")
    assert cli.main(["evidence", "--config", path, "--data", root, "--out", out]) == 0
    capsys.readouterr()
    assert cli.main(["evidence", "--config", path, "--verify", out]) == 0
    text = capsys.readouterr().out
    assert "proven faulty: replica 1" in text and "INVALID" not in text
    assert cli.main(["evidence", "--config", path, "--replica-data", os.path.join(root, "replica-0"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"]

    doc = json.loads(open(out).read())
    doc["records"][0]["second"] = _flip(doc["records"][0]["second"], -3)
    with open(out, "w") as fh:
        json.dump(doc, fh)
    assert cli.main(["evidence", "--config", path, "--verify", out]) == 1
    assert "INVALID" in capsys.readouterr().out
    # No data directory at all: one sentence, exit 2.
    assert cli.main(["evidence", "--config", path, "--data", str(tmp_path / "none")]) == 2


def test_evidence_per_culprit_is_bounded(cluster, tmp_path):
    path, config = cluster
    with Storage.open(str(tmp_path / "r0"), config, 0, "off") as storage:
        for i in range(EVIDENCE_PER_CULPRIT + 5):
            storage.add_evidence(1, "double-prepare", b"a%d" % i, b"b", 0.0)
        assert storage.add_evidence(1, "double-prepare", b"a0", b"b", 0.0) is False
        assert len(storage.evidence()) == EVIDENCE_PER_CULPRIT
