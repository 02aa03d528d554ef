"""How much a partial state transfer moves (issue 18, item 3; TOCS 2002 5.3.2).

A donor replica and a lagging one hold the same N keys; the donor then applies W more
writes (the lagging replica missed them) and takes a checkpoint, which 2f+1 replicas
sign. The lagging replica learns it is stable and fetches it, walking the partition tree
from the signed root; every FETCH-STATE goes to the donor's core and every answer back,
through `Replica.step` only. Reported: the state's bytes (keys and values), the bytes of
the answers (signed envelopes), their share of the state, the leaves installed, the
answers, and the time the two cores took.

    python tools/bench_transfer.py --keys 1000000 --missed 1000 [--value-size 100]
        [--sqlite DIR] [--json]

The stores are filled directly (the protocol's execution is not what is measured); the
donor's checkpoint is taken by its store. `--sqlite DIR` puts both states in SQLite
(DurableStore, as a replica process does) instead of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

from pbft.protocol.config import ClientInfo, ClusterConfig, ReplicaInfo
from pbft.protocol.crypto import KeyPair, Verifier, seal
from pbft.protocol.events import Received, Send
from pbft.protocol.messages import Checkpoint, FetchState, StateChunk, decode_envelope
from pbft.protocol.replica import Replica
from pbft.protocol.service import SERVICE_PREFIX
from pbft.protocol.store import MemoryStore
from pbft.service.kv import KeyValueStore

CLUSTER = "bench-transfer"
SEQ = 8


def key(signer: int | str) -> KeyPair:
    return KeyPair.from_seed(b"transfer-%s" % str(signer).encode())


def config() -> ClusterConfig:
    return ClusterConfig(
        CLUSTER, 1,
        tuple(ReplicaInfo(i, "127.0.0.1", 7000 + i, key(i).public) for i in range(4)),
        (ClientInfo("alice", key("alice").public),),
        checkpoint_interval=SEQ, log_window=2 * SEQ,
    )


def make_store(sqlite_dir: str | None, name: str):
    if sqlite_dir is None:
        return MemoryStore()
    from pbft.node.statestore import DurableStore

    path = os.path.join(sqlite_dir, f"{name}.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return DurableStore(path)


def fill(stores, keys: int, value_size: int, rng: random.Random) -> int:
    size = 0
    for i in range(keys):
        k, v = SERVICE_PREFIX + b"key-%d" % i, rng.randbytes(value_size)
        size += len(k) + len(v)
        for s in stores:
            s.put(k, v)
    return size


def run(keys: int, missed: int, value_size: int, sqlite_dir: str | None) -> dict:
    rng = random.Random(18)
    cfg = config()
    verifier = Verifier(cfg.signing_domain, cfg.member_keys())
    donor_store, lag_store = make_store(sqlite_dir, "donor"), make_store(sqlite_dir, "lag")
    t0 = time.perf_counter()
    state_bytes = fill([donor_store, lag_store], keys, value_size, rng)
    fill_s = time.perf_counter() - t0
    donor = Replica(cfg, 1, key(1), KeyValueStore(donor_store), verifier)
    lag = Replica(cfg, 3, key(3), KeyValueStore(lag_store), verifier)
    for _ in range(missed):  # overwrites and new keys, as a workload would
        i = rng.randrange(keys + missed)
        donor_store.put(SERVICE_PREFIX + b"key-%d" % i, rng.randbytes(value_size))
    t0 = time.perf_counter()
    digest = donor_store.checkpoint(SEQ)
    checkpoint_s = time.perf_counter() - t0
    donor.checkpoints.own[SEQ] = digest
    for signer in (0, 1, 2):  # 2f+1 CHECKPOINTs: the lagging replica learns it is stable
        out = lag.step(Received(signer, seal(key(signer), cfg.signing_domain, signer, Checkpoint(SEQ, digest)).to_bytes()))
    assert lag.transfer is not None, "no transfer started"
    answers = answer_bytes = data_bytes = 0
    leaves: set[int] = set()
    nodes: set[tuple[int, int]] = set()
    cpu0, t0 = time.process_time(), time.perf_counter()
    pending = [a.data for a in out if isinstance(a, Send)]
    while lag.transfer is not None or pending:
        if not pending:
            break
        nxt = []
        for data in pending:
            if not isinstance(decode_envelope(data)[1], FetchState):
                continue
            donor.chunks_served.budget.clear()  # the per-period ration is not measured here
            for a in donor.step(Received(3, data)):
                if isinstance(a, Send) and a.to == 3:
                    sc = decode_envelope(a.data)[1]
                    if isinstance(sc, StateChunk):
                        answers += 1
                        answer_bytes += len(a.data)
                        data_bytes += len(sc.data)
                        if sc.level == 0:
                            leaves.add(sc.index)
                        else:
                            nodes.add((sc.level, sc.index))
                    nxt += [b.data for b in lag.step(Received(1, a.data)) if isinstance(b, Send)]
        pending = nxt
    transfer_s, transfer_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ok = lag.last_executed == SEQ and lag.state_digest() == digest
    return {
        "keys": keys, "missed_writes": missed, "value_size": value_size,
        "store": "sqlite" if sqlite_dir else "memory",
        "state_bytes": state_bytes, "answers": answers, "answer_bytes": answer_bytes,
        "data_bytes": data_bytes, "moved_share": round(answer_bytes / state_bytes, 5),
        "leaves_fetched": len(leaves), "nodes_fetched": len(nodes),
        "installed_ok": ok, "fill_s": round(fill_s, 2), "donor_checkpoint_s": round(checkpoint_s, 3),
        "transfer_s": round(transfer_s, 3), "transfer_cpu_s": round(transfer_cpu, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--missed", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--sqlite", metavar="DIR", help="both states in SQLite files in DIR")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = run(a.keys, a.missed, a.value_size, a.sqlite)
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"state         {r['keys']} keys of {r['value_size']} B: {r['state_bytes'] / 1e6:.1f} MB ({r['store']})")
        print(f"missed        {r['missed_writes']} writes")
        print(f"moved         {r['answer_bytes'] / 1e6:.2f} MB in {r['answers']} answers "
              f"({100 * r['moved_share']:.2f}% of the state; {r['data_bytes'] / 1e6:.2f} MB of it data)")
        print(f"time          donor checkpoint {r['donor_checkpoint_s']} s; transfer {r['transfer_s']} s "
              f"({r['transfer_cpu_s']} s CPU, both cores)")
        print(f"fetched       {r['nodes_fetched']} internal nodes, {r['leaves_fetched']} leaves")
        print(f"installed     {'yes, the signed digest' if r['installed_ok'] else 'NO'}")
    return 0 if r["installed_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
