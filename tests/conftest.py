"""Shared fixtures and helpers for the core's tests.

Everything here is deterministic: keys come from `KeyPair.from_seed`, so a failing test
replays byte for byte. Other test files (simulation, runtime, adversary) may reuse:

* `make_config(f=1, clients=("alice", "bob"), **overrides)`: a ClusterConfig whose keys
  are `replica_key(i)` and `client_key(name)`.
* `seal_as(signer, msg)`: the envelope bytes of `msg` signed by replica `signer` (int) or
  client `signer` (str), for cluster `CLUSTER_ID`; `sign_*` shortcuts for each message.
* `make_replica(config, i)`, `make_client(config, name)`: a core with its key.
* `drive_to_execution(replica, seq, digest)`: feed a replica the prepares and commits of
  the other replicas so that it executes `seq` (its pre-prepare must already be there).
* `Router`: a tiny in-memory network of replicas and clients, like /tmp/smoke.py.
* `actions_of(actions, cls)`, `decoded(data)`: pick actions, decode envelope bytes.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field

import pytest

from pbft.protocol.client import ClientCore
from pbft.protocol.config import ClientInfo, ClusterConfig, ReplicaInfo
from pbft.protocol.crypto import KeyPair, Verifier, batch_digest, seal
from pbft.protocol.events import (
    Action,
    Broadcast,
    Completed,
    Executed,
    Reason,
    Received,
    Rejected,
    Send,
    SendClient,
)
from pbft.protocol.messages import (
    Checkpoint,
    Commit,
    Envelope,
    Message,
    Prepare,
    PrePrepare,
    Reply,
    Request,
    decode_envelope,
)
from pbft.protocol.replica import Replica
from pbft.protocol.viewchange import ViewStatus
from pbft.service.kv import KeyValueStore, op_put
from pbft.sim.oracle import report_problem, tally_problem

CLUSTER_ID = "test-cluster"
DEFAULT_CLIENTS = ("alice", "bob")


# -- keys and config ----------------------------------------------------------------------


@functools.cache
def replica_key(i: int) -> KeyPair:
    return KeyPair.from_seed(b"test-replica-%d" % i)


@functools.cache
def client_key(name: str) -> KeyPair:
    return KeyPair.from_seed(b"test-client-" + name.encode())


def key_of(signer: int | str) -> KeyPair:
    return replica_key(signer) if type(signer) is int else client_key(signer)


def make_config(
    f: int = 1, clients: tuple[str, ...] = DEFAULT_CLIENTS, **overrides
) -> ClusterConfig:
    """n = 3f+1 replicas on 127.0.0.1:7000+i with deterministic keys. Defaults are small
    (K=4, L=8) so checkpoints and water marks are reachable in a few steps."""
    n = 3 * f + 1
    kw = dict(checkpoint_interval=4, log_window=8, batch_max=16, pipeline=4)
    kw.update(overrides)
    return ClusterConfig(
        CLUSTER_ID,
        f,
        tuple(ReplicaInfo(i, "127.0.0.1", 7000 + i, replica_key(i).public) for i in range(n)),
        tuple(ClientInfo(c, client_key(c).public) for c in clients),
        **kw,
    )


def cluster_dict(f: int = 1, clients: tuple[str, ...] = DEFAULT_CLIENTS) -> dict:
    """A good parsed cluster file (what tomllib gives) for parse_cluster."""
    n = 3 * f + 1
    return {
        "cluster": {
            "id": CLUSTER_ID,
            "f": f,
            "checkpoint_interval": 4,
            "log_window": 8,
            "batch_max": 16,
            "view_change_timeout_ms": 1000,
        },
        "tls": {"ca": "ca.pem"},
        "replica": [
            {
                "id": i,
                "address": f"127.0.0.1:{7000 + i}",
                "public_key": replica_key(i).public.hex(),
                "certificate": f"replica-{i}.pem",
            }
            for i in range(n)
        ],
        "client": [{"id": c, "public_key": client_key(c).public.hex()} for c in clients],
    }


@pytest.fixture
def config() -> ClusterConfig:
    return make_config()


# -- signing helpers ----------------------------------------------------------------------


def seal_as(signer: int | str, msg: Message, cluster_id: str = CLUSTER_ID) -> bytes:
    """Envelope bytes of `msg` signed with `signer`'s key and naming `signer`."""
    return seal(key_of(signer), cluster_id, signer, msg).to_bytes()


def forge(signer: int | str, msg: Message, real_signer: int | str | None = None) -> bytes:
    """Envelope naming `signer` but signed with `real_signer`'s key (a forgery)."""
    env = seal(key_of(real_signer if real_signer is not None else signer), CLUSTER_ID, signer, msg)
    return Envelope(env.body, signer, env.signature, env.attachment).to_bytes()


def sign_request(client: str, operation: bytes, timestamp: int, read_only: bool = False) -> bytes:
    return seal_as(client, Request(operation, timestamp, client, read_only))


def make_pre_prepare(seq: int, batch: tuple[bytes, ...], view: int = 0) -> PrePrepare:
    return PrePrepare(view, seq, batch_digest(batch), tuple(batch))


def sign_pre_prepare(
    seq: int,
    batch: tuple[bytes, ...],
    view: int = 0,
    signer: int | None = None,
    digest: bytes | None = None,
    n: int = 4,
) -> bytes:
    """A PRE-PREPARE signed by the primary of `view` (or by `signer`)."""
    batch = tuple(batch)
    pp = PrePrepare(view, seq, digest if digest is not None else batch_digest(batch), batch)
    return seal_as(view % n if signer is None else signer, pp)


def sign_prepare(signer: int, seq: int, digest: bytes, view: int = 0) -> bytes:
    return seal_as(signer, Prepare(view, seq, digest))


def sign_commit(signer: int, seq: int, digest: bytes, view: int = 0) -> bytes:
    return seal_as(signer, Commit(view, seq, digest))


def sign_checkpoint(signer: int, seq: int, digest: bytes) -> bytes:
    return seal_as(signer, Checkpoint(seq, digest))


decoded = decode_envelope


def actions_of(actions: list[Action], cls: type) -> list:
    return [a for a in actions if isinstance(a, cls)]


def broadcast_messages(actions: list[Action]) -> list[Message]:
    """The messages a replica broadcast, decoded, in order."""
    return [decoded(a.data)[1] for a in actions if isinstance(a, Broadcast)]


# -- cores --------------------------------------------------------------------------------


def make_verifier(config: ClusterConfig, memo: int = 0) -> Verifier:
    return Verifier(config.cluster_id, config.member_keys(), memo=memo)


def make_replica(config: ClusterConfig, i: int, verifier: Verifier | None = None, service=None) -> Replica:
    """Replica `i` on a fresh key-value store, or on `service` (a restart's: the store
    as a crash left it)."""
    service = service if service is not None else KeyValueStore()
    return Replica(config, i, replica_key(i), service, verifier or make_verifier(config))


def make_client(config: ClusterConfig, name: str, **kw) -> ClientCore:
    return ClientCore(config, name, client_key(name), **kw)


def feed(replica: Replica, peer: int | str | None, data: bytes) -> list[Action]:
    """The actions of one delivery, as a list (tests compare them with lists)."""
    return list(replica.step(Received(peer, data)))


def drive_to_execution(replica: Replica, seq: int, digest: bytes, view: int = 0) -> list[Action]:
    """Feed `replica` (which holds the pre-prepare for `seq`) the prepares of the backups
    and the commits of all other replicas; return every action it produced."""
    cfg = replica.config
    primary = cfg.primary(view)
    out: list[Action] = []
    for r in cfg.replica_ids():
        if r not in (replica.id, primary):
            out += feed(replica, r, sign_prepare(r, seq, digest, view))
    for r in cfg.replica_ids():
        if r != replica.id:
            out += feed(replica, r, sign_commit(r, seq, digest, view))
    return out


# -- an in-memory network -----------------------------------------------------------------


@dataclass
class Router:
    """Replicas and clients connected by a FIFO queue; no loss, no reordering.

    `submit(client, op)` hands a client's actions to the network; `run()` delivers until
    quiet. Completions are collected in `completed` as (client, timestamp, result)."""

    config: ClusterConfig
    replicas: list[Replica] = field(default_factory=list)
    clients: dict[str, ClientCore] = field(default_factory=dict)
    queue: deque = field(default_factory=deque)
    completed: list[tuple[str, int, bytes]] = field(default_factory=list)
    delivered: int = 0

    @classmethod
    def build(cls, config: ClusterConfig | None = None, services=None) -> Router:
        """A cluster in memory; `services` (one per replica) gives each its service and
        store (a restart's), else fresh key-value stores."""
        config = config or make_config()
        verifier = make_verifier(config, memo=10_000)
        services = services or [None] * config.n
        return cls(
            config,
            [make_replica(config, i, verifier, services[i]) for i in config.replica_ids()],
            {c.id: make_client(config, c.id) for c in config.clients},
        )

    def perform(self, src: int | str, actions: list[Action]) -> None:
        for a in actions:
            match a:
                case Send(to, data):
                    self.queue.append((src, to, data))
                case Broadcast(data):
                    for r in self.config.replica_ids():
                        if r != src:
                            self.queue.append((src, r, data))
                case SendClient(c, data):
                    self.queue.append((src, c, data))
                case Completed(ts, result):
                    self.completed.append((src, ts, result))

    def submit(self, client: str, operation: bytes, read_only: bool = False) -> None:
        self.perform(client, self.clients[client].submit(operation, read_only))

    def run(self, limit: int = 100_000) -> None:
        while self.queue:
            assert self.delivered < limit, "router did not quiesce"
            src, dst, data = self.queue.popleft()
            self.delivered += 1
            if isinstance(dst, int):
                self.perform(dst, self.replicas[dst].step(Received(src, data)))
            elif dst in self.clients:
                self.perform(dst, self.clients[dst].step(Received(src, data)))


# -- one replica under test (the protocol rule tests, tests/protocol/test_4_*.py) ------------
# Each rule test: init (a replica of a 4-replica f=1 cluster, K=4, L=8), act (feed it crafted
# messages signed by whoever the rule is about), check (its actions and state). Replica 0 is
# the primary of view 0; replica 1 is the backup under test unless said otherwise.

D_OTHER = b"\x99" * 32


def put(client: str, ts: int, key: bytes = b"k", value: bytes | None = None) -> bytes:
    """A signed put request: `client` sets `key` to `value` (default: client@ts)."""
    return sign_request(client, op_put(key, value or f"{client}@{ts}".encode()), ts)


@pytest.fixture
def cfg():
    return make_config()


@pytest.fixture
def backup(cfg):
    return make_replica(cfg, 1)


@pytest.fixture
def primary(cfg):
    return make_replica(cfg, 0)


def pre_prepare(backup, seq: int, batch: tuple[bytes, ...]) -> tuple[list, bytes]:
    """Feed `backup` a valid pre-prepare from the primary; return (actions, digest)."""
    return feed(backup, 0, sign_pre_prepare(seq, batch)), batch_digest(batch)


def rejections(actions) -> list[Reason]:
    return [a.reason for a in actions_of(actions, Rejected)]


def snapshot(rep) -> tuple:
    """Everything an input could change; equal before and after a dropped input."""
    return (
        rep.view,
        rep.last_executed,
        rep.next_seq,
        rep.log.low,
        len(rep.log),
        {
            s: (
                sl.view,
                sl.pre_prepare,
                dict(sl.prepares),
                dict(sl.commits),
                sl.prepared,
                sl.committed,
                sl.my_prepare,
                sl.my_commit,
            )
            for s, sl in rep.log.slots.items()
        },
        list(rep.batching.pending.items()),
        dict(rep.requests.waiting),
        rep.status is ViewStatus.NORMAL,
        dict(rep.view_changes.received),
        dict(rep.prepared_certs),
        {s: dict(c) for s, c in rep.checkpoints.claims.items()},
        rep.transfer,
        {c: (r.timestamp, r.result) for c, r in rep.replies.records.items()},
        {s: dict(v) for s, v in rep.checkpoints.votes.items()},
        dict(rep.checkpoints.own),
        rep.checkpoints.stable_digest,
        rep.checkpoints.stable_proof,
        dict(rep.service.data),
        dict(rep.safety.signed),
    )


def executed_seqs(actions) -> list[int]:
    return [a.seq for a in actions_of(actions, Executed)]


def replies(actions) -> list[Reply]:
    return [decoded(a.data)[1] for a in actions_of(actions, SendClient)]


CLIENTS4 = ("alice", "bob", "carol", "dave")


def execute_batch(rep, seq, batch) -> list:
    _, d = pre_prepare(rep, seq, batch)
    return drive_to_execution(rep, seq, d)


# -- the accounting check on every step of the rule tests ------------------------------------


def _accounting_problem(rep: Replica, actions: list, sender_known: bool) -> str | None:
    for a in actions:
        if (problem := report_problem(a, sender_known)) is not None:
            return problem
    return tally_problem(rep.rejects)


@pytest.fixture(autouse=True)
def _accounting(request, monkeypatch):
    """Every step of every replica core in tests/protocol is held to the simulator's
    `accounting` check (docs/attacks.md, "The checks"): a refusal names the sender of what
    was refused (unless a message reached the replica naming none), a reason and a detail; a note has a
    text; no action is None; the tally of refusals holds only positive counts. The rule
    tests reach paths no simulation does (one damaged field, one stale answer)."""
    if request.node.path.parent.name != "protocol":
        yield
        return
    step = Replica.step
    # Replicas (by id(), alive for the test) handed a message with no channel peer: what
    # they refuse of it may be refused later too, on a tick (a request deferred until
    # its client's key is known), still naming no sender.
    unnamed: set[int] = set()

    def checked(self, event):
        if isinstance(event, Received) and event.peer is None:
            unnamed.add(id(self))
        ready = step(self, event)
        problem = _accounting_problem(self, ready.actions, sender_known=id(self) not in unnamed)
        assert problem is None, f"replica {self.id}: {problem}"
        return ready

    monkeypatch.setattr(Replica, "step", checked)
    # The client core is held to the same check: what it refuses names the replica that
    # sent it (a client's every input comes over a channel to a replica).
    client_step = ClientCore.step

    def client_checked(self, event):
        actions = client_step(self, event)
        sender_known = not (isinstance(event, Received) and event.peer is None)
        for a in actions:
            problem = report_problem(a, sender_known)
            assert problem is None, f"client {self.id}: {problem}"
        return actions

    monkeypatch.setattr(ClientCore, "step", client_checked)
    yield
