"""pbft.node.groupcommit (driven by pbft.node.node): the pipelined group commit (fsync "always") and the tick feed.

The stepping task keeps stepping while a commit is in flight on the commit thread, and
nothing a step sends leaves before the commit that covers its Persist actions; sends stay
in step order. No sockets: a recorder stands in for the transport.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

import trio
from conftest import decoded, make_config, make_replica, sign_request

from pbft.node.groupcommit import _CommitThread
from pbft.node.node import TICK, ReplicaNode
from pbft.node.storage import Storage
from pbft.protocol.events import Received
from pbft.protocol.messages import PrePrepare
from pbft.protocol.ready import Ready
from pbft.service.kv import op_put


class GatedStorage:
    """A Storage whose commits wait for `gate`, recording what each one wrote."""

    fsync = "always"

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.commits: list[list[object]] = []
        self.threads: list[threading.Thread] = []

    def apply(self, writes):
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.gate.wait(10)
        n = self.inner.apply(writes)
        self.commits.append(list(writes))
        return n


def make_node(cfg, storage):
    sent: list[tuple[int, object]] = []  # (commits durable when sent, frame)

    class Recorder:
        connected: set[int] = set()
        outboxes: dict[int, object] = {}

        def send(self, *args):
            sent.append((len(storage.commits), args[-1]))

        broadcast = send_client = send

        def flush(self):
            pass

    node = ReplicaNode.__new__(ReplicaNode)  # no sockets: only the stepping tasks
    node.__init__(cfg, make_replica(cfg, 0), server_context=None, client_context=None,
                  identify=None, storage=storage.inner)
    node.transport = Recorder()
    return node, sent


async def until(predicate) -> None:
    while not predicate():
        await trio.sleep(0.005)


@asynccontextmanager
async def stepping(node, storage):
    """The node's stepping and commit tasks, with a commit thread over `storage`."""
    node.commits._committer = _CommitThread(storage, trio.lowlevel.current_trio_token())
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                node._cancel = nursery.cancel_scope
                nursery.start_soon(node.commits.run)
                nursery.start_soon(node._step_loop)
                yield
                nursery.cancel_scope.cancel()
    finally:
        node.commits._committer.close()


async def test_steps_go_on_during_a_commit_and_sends_wait_for_theirs(tmp_path):
    cfg = make_config()
    with Storage.open(str(tmp_path / "d"), cfg, 0) as inner:
        storage = GatedStorage(inner)
        node, sent = make_node(cfg, storage)
        node.commits._commit_fast = False  # a slow disk: commits go to the thread
        async with stepping(node, storage):
            await node._send.send(Received("alice", sign_request("alice", op_put(b"k", b"1"), 1)))
            await until(storage.entered.is_set)  # commit 1 is in flight, blocked
            await node._send.send(Received("bob", sign_request("bob", op_put(b"k", b"2"), 1)))
            await until(lambda: node._inputs == 2)  # stepped meanwhile
            assert sent == [] and len(node.commits._held) == 2  # both wait for commit 1
            storage.gate.set()
            await until(lambda: len(sent) >= 1 and not node.commits._held)
    pps = [(durable, decoded(frame)[1]) for durable, frame in sent]
    pps = [(d, m) for d, m in pps if isinstance(m, PrePrepare)]
    assert [m.seq for _, m in pps] == [1]
    assert all(d == 1 for d, _ in sent)  # nothing left before the commit covering it
    assert len(storage.commits) == 1


async def test_ticks_are_coalesced_and_counted(tmp_path):
    cfg = make_config()
    node = ReplicaNode.__new__(ReplicaNode)
    node.__init__(cfg, make_replica(cfg, 0), server_context=None, client_context=None,
                  identify=None)
    node._ticks_owed = 7
    node._tick_queued = True
    node._step(TICK)
    assert node.replica.ticks == 7 and node._ticks_owed == 0 and not node._tick_queued


def test_replies_wait_for_earlier_commits_but_not_their_own_executed_records(tmp_path):
    """A group whose only writes are EXECUTED records (deferred) sends its replies as soon
    as the commits before it are durable: those hold this replica's PREPARED records,
    which the replies rest on; the EXECUTED records themselves are not waited for."""
    from pbft.protocol.events import Broadcast, Persist, Record, SendClient

    cfg = make_config()
    with Storage.open(str(tmp_path / "d"), cfg, 0) as inner:
        node, sent = make_node(cfg, GatedStorage(inner))

        def executed(seq):
            return Persist(Record.EXECUTED, seq, 0, "", b"")

        def group(actions):
            node.commits.hold_until_durable(node.commits.writes_to_commit(Ready.of(actions), ticked=False), actions)

        group([executed(1), SendClient("alice", b"r1")])  # nothing in flight: at once
        assert sent == [(0, b"r1")] and node.commits._deferred == [executed(1)] and not node.commits._held
        prepared = Persist(Record.PREPARED, 2, 0, "", b"cert")
        group([prepared, Broadcast(b"commit 2")])  # commit 1 will hold it
        assert node.commits._pending == [executed(1), prepared] and [n for n, _ in node.commits._held] == [1]
        group([executed(2), SendClient("bob", b"r2")])  # behind commit 1, no commit of its own
        assert len(sent) == 1 and [n for n, _ in node.commits._held] == [1, 1]
        assert node.commits._pending == [executed(1), prepared] and node.commits._deferred == [executed(2)]


def test_executed_only_groups_ride_with_the_next_commit(tmp_path):
    """A group that wrote only EXECUTED/checkpoint records and sends only replies gets no
    commit of its own: its writes go first into the next group's commit, or the next
    tick's; a group that also broadcasts (a checkpoint vote) commits at once."""
    from pbft.protocol.events import Broadcast, Persist, Record, SendClient

    cfg = make_config()
    with Storage.open(str(tmp_path / "d"), cfg, 0) as inner:
        node, _ = make_node(cfg, GatedStorage(inner))
        e1, e2 = (Persist(Record.EXECUTED, s, 0, "", b"pp") for s in (1, 2))
        vote = Persist(Record.VOTE, 3, 0, "prepare", b"v")
        assert node.commits.writes_to_commit(Ready.of([e1, SendClient("a", b"r")]), ticked=False) == []
        assert node.commits.writes_to_commit(Ready.of([e2, SendClient("b", b"r")]), ticked=False) == []
        assert node.commits.writes_to_commit(Ready.of([vote, Broadcast(b"p")]), ticked=False) == [e1, e2, vote]
        assert node.commits.writes_to_commit(Ready.of([e1, SendClient("a", b"r")]), ticked=False) == []
        assert node.commits.writes_to_commit(Ready.of([]), ticked=True) == [e1]  # the tick flushes them
        assert node.commits.writes_to_commit(Ready.of([e2, Broadcast(b"checkpoint")]), ticked=False) == [e2]
        assert node.commits.writes_to_commit(Ready.of([]), ticked=True) == []


async def test_fast_commits_stay_on_the_loop_slow_ones_go_to_the_thread(tmp_path):
    """fsync "always": while commits are fast and none is in flight, a batch is committed
    on the event loop (no thread hand-off); once they are slow, the commit thread takes
    them and stepping goes on during each fsync."""
    import time as _time

    cfg = make_config(batch_max=8)  # a second request is proposed at once (batch_max // 8)
    with Storage.open(str(tmp_path / "d"), cfg, 0) as inner:
        storage = GatedStorage(inner)
        storage.gate.set()
        node, sent = make_node(cfg, storage)
        node.commits.storage = storage  # inline commits go through the recorder too
        loop_thread = threading.current_thread()
        async with stepping(node, storage):
            await node._send.send(Received("alice", sign_request("alice", op_put(b"k", b"1"), 1)))
            await until(lambda: len(storage.commits) == 1 and sent)
            assert storage.threads == [loop_thread]  # fast: inline
            real_apply = storage.apply

            def slow_apply(writes):
                _time.sleep(0.005)
                return real_apply(writes)

            storage.apply = slow_apply
            for _ in range(15):  # slow every time: the lower quartile is slow
                node.commits.observe_commit(0.005)
            await node._send.send(Received("bob", sign_request("bob", op_put(b"k", b"2"), 1)))
            await until(lambda: len(storage.commits) == 2 and not node.commits._held)
            assert storage.threads[1] is not loop_thread  # slow: the commit thread


def test_a_clean_stop_writes_the_deferred_executions(tmp_path):
    from pbft.protocol.events import Persist, Record, SendClient

    cfg = make_config()
    with Storage.open(str(tmp_path / "d"), cfg, 0) as inner:
        node, _ = make_node(cfg, GatedStorage(inner))
        executed = Persist(Record.EXECUTED, 1, 0, "", b"")
        assert node.commits.writes_to_commit(Ready.of([executed, SendClient("a", b"r")]), ticked=False) == []
        node.commits._flush_deferred()
        assert executed in inner.load() and node.commits._deferred == []
