"""Resource attacks on one replica core (issue 13, items 6 and 7), measured in bytes held
and messages sent, so two builds compare exactly (run each with PYTHONPATH pointing at
its tree; only the public surface, `Replica.step`, is used).

    python tools/attack_core.py [--json]

* future-view: Byzantine replica 1 (primary of view 1) sends a correct replica in view 0
  PRE-PREPAREs for view 1 with 1 MiB batches, 200 over its own channel and 200 over each
  of 4 client channels; reported: bytes the core keeps for the future view.
* status-flood: replica 3 sends 10 signed STATUS per tick for 100 ticks, claiming to be
  at the start; reported: messages the correct replica sends in answer.
* fetch-replay: a FETCH-STATE signed by replica 3 is replayed 100 times by replica 0;
  reported: state chunks sent to replica 3.
* reply-replay: replica 0 relays a client's executed request 100 times; reported:
  replies sent to that client.
"""

from __future__ import annotations

import argparse
import json
import sys

from pbft.protocol.config import ClientInfo, ClusterConfig, ReplicaInfo
from pbft.protocol.crypto import KeyPair, Verifier, batch_digest, seal
from pbft.protocol.events import Received, Send, SendClient, Tick
from pbft.protocol.messages import (
    Checkpoint,
    Commit,
    FetchState,
    Prepare,
    PrePrepare,
    Request,
    Status,
)
from pbft.protocol.replica import Replica
from pbft.service.kv import KeyValueStore, op_put

CLUSTER = "attack-core"
CLIENTS = ("alice", "bob", "carol", "dave")


def key(signer: int | str) -> KeyPair:
    return KeyPair.from_seed(b"attack-%s" % str(signer).encode())


def config() -> ClusterConfig:
    return ClusterConfig(
        CLUSTER,
        1,
        tuple(ReplicaInfo(i, "127.0.0.1", 7000 + i, key(i).public) for i in range(4)),
        tuple(ClientInfo(c, key(c).public) for c in CLIENTS),
        checkpoint_interval=4,
        log_window=8,
    )


def signed(signer: int | str, msg) -> bytes:
    return seal(key(signer), CLUSTER, signer, msg).to_bytes()


def replica(cfg: ClusterConfig, i: int) -> Replica:
    return Replica(cfg, i, key(i), KeyValueStore(), Verifier(CLUSTER, cfg.member_keys()))


def executed(cfg: ClusterConfig, i: int, upto: int) -> Replica:
    """Replica i (a backup) that executed one put per slot up to `upto`."""
    rep = replica(cfg, i)
    for seq in range(1, upto + 1):
        req = signed("alice", Request(op_put(b"k%d" % seq, b"v"), seq, "alice"))
        d = batch_digest((req,))
        rep.step(Received(0, signed(0, PrePrepare(0, seq, d, (req,)))))
        for r in (1, 2, 3):
            if r != i:
                rep.step(Received(r, signed(r, Prepare(0, seq, d))))
        for r in (0, 1, 2, 3):
            if r != i:
                rep.step(Received(r, signed(r, Commit(0, seq, d))))
        if seq % cfg.checkpoint_interval == 0:
            state = rep.checkpoints.own[seq]
            for r in (0, 2, 3):
                if r != i:
                    rep.step(Received(r, signed(r, Checkpoint(seq, state))))
    return rep


def future_view(cfg: ClusterConfig) -> int:
    rep = replica(cfg, 2)
    mib = b"\x01" * (1024 * 1024)
    for channel in (1, *CLIENTS):
        for n in range(200):
            pp = PrePrepare(1, 1 + n % 8, b"\x00" * 32, (mib,))
            rep.step(Received(channel, signed(1, pp)))
    return sum(len(data) for _, data in rep.future.messages)


def status_flood(cfg: ClusterConfig) -> int:
    rep = executed(cfg, 1, 8)
    sent = 0
    for _ in range(100):
        rep.step(Tick())
        for _ in range(10):
            out = rep.step(Received(3, signed(3, Status(0, 0, 0, 0))))
            sent += sum(1 for a in out if isinstance(a, Send))
    return sent


def fetch_replay(cfg: ClusterConfig) -> int:
    rep = executed(cfg, 1, 8)
    fs = signed(3, FetchState(8, rep.checkpoints.own[8], 2, 0, 0))
    sent = 0
    for _ in range(100):
        out = rep.step(Received(0, fs))
        sent += sum(1 for a in out if isinstance(a, Send) and a.to == 3)
    return sent


def reply_replay(cfg: ClusterConfig) -> int:
    rep = executed(cfg, 1, 4)
    req = signed("alice", Request(op_put(b"k4", b"v"), 4, "alice"))
    sent = 0
    for _ in range(100):
        out = rep.step(Received(0, req))
        sent += sum(1 for a in out if isinstance(a, SendClient))
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cfg = config()
    figures = {
        "future_view_bytes_held": future_view(cfg),
        "status_flood_answers": status_flood(cfg),
        "fetch_replay_chunks": fetch_replay(cfg),
        "reply_replay_replies": reply_replay(cfg),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:26} {value:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
