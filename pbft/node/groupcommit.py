"""Group commit: a replica's writes made durable before the sends they cover
(docs/architecture.md, "The durability contract"), taken out of pbft.node.node.

The node's stepping task steps the input it waited for plus whatever else is already
queued (at most GROUP_COMMIT_LIMIT inputs) and hands the group's actions here: every
Persist/Truncate of those steps is written in one transaction (`Storage.apply`: one
commit, one fsync), and only then are their sends performed (`perform`, the node's).
No send is ever performed before the commit that covers it, so a replica killed at any
point never contradicts what it sent. One exception, on purpose: EXECUTED and checkpoint
records bind the replica to nothing it sends, so a group that wrote only those and sends
only replies gets no commit of its own (its writes join the next one, at the latest on
the next tick), so its replies never wait for such records (`writes_to_commit`; the rule
is `protocol.ready.Durability`).

With fsync "always" the commits are pipelined: one long-lived commit thread
(`_CommitThread`) fsyncs one commit at a time and wakes the loop once per commit, while
the stepping task goes on stepping; the writes of the batches stepped meanwhile go into
the next commit, and each batch's actions wait, in step order, behind the commit that
covers its writes (a batch without writes behind the batches before it: a vote it
resends was persisted by one of them). HELD_LIMIT bounds what waits. With "batch" or
"off" a commit costs ~0.03 ms and stays on the event loop, before the batch's sends. So
does an "always" commit while commits are fast (INLINE_COMMIT) and none is in flight:
the thread pays off only when fsync is slow enough to be worth stepping through.

The node drives it, per group of stepped inputs:

    writes = commits.writes_to_commit(actions, ticked)
    if writes and commits.inline():
        commits.make_durable(writes) (False: stop), then perform(actions)
    else:
        commits.hold_until_durable(writes, actions); await commits.wait_for_room()

and runs `run` (the commit loop) as a task when `pipelined`. A failed write (full disk)
calls `on_failure` once (the node stops; nothing more is sent without durability).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import trio

from ..protocol.events import Action
from ..protocol.ready import Durability, Ready
from .storage import Storage, StorageError

log = logging.getLogger("pbft.node")

GROUP_COMMIT_LIMIT = 256
"""Inputs stepped before one storage commit (and the sends it covers)."""
HELD_LIMIT = 4096
"""Stepped inputs whose actions wait for a commit (fsync "always"); beyond it the stepping
task waits for the commit in flight instead of stepping more."""
INLINE_COMMIT = 0.001
"""With fsync "always", a commit is made on the event loop, not the commit thread, while
the lower quartile of the last COMMIT_WINDOW commits took less than this and none is in
flight:
handing a commit to the thread and back costs ~0.3 ms of thread switches, more than a fast
disk's fsync (1 client on this VM: p50 4.5-5.5 ms inline vs 5.8-6.2 ms threaded, the
same throughput). A low quantile, because on a shared machine (four replicas on two
cores) commits are often descheduled for a millisecond or more, which says nothing about
the disk; a disk that is slow is slow every time."""
COMMIT_WINDOW = 15
DEFERRED_LIMIT = 1024
"""Deferred writes at most before they get a commit of their own."""


class GroupCommit:
    """The commit state of one replica node over its `storage`.

    `perform(actions)` carries out a group's actions once durable (the node's);
    `on_failure(exc)` is called once when a write fails (the node records why and
    stops); `observe(seconds)` is told how long each commit took (the node's metrics);
    `replica_id` names the replica in log lines."""

    def __init__(
        self,
        storage: Storage,
        perform: Callable[[list[Action]], None],
        on_failure: Callable[[StorageError], None],
        observe: Callable[[float], None],
        replica_id: int,
    ) -> None:
        self.storage = storage
        self.replica_id = replica_id
        self._perform = perform
        self._on_failure = on_failure
        self._observe = observe
        self.failed = False
        """A write failed: nothing more is committed or sent."""
        self._committer: _CommitThread | None = None
        self._pending: list[Action] = []
        """Writes of stepped batches not yet handed to the commit thread."""
        self._submitted = 0
        """Commits handed to the commit thread so far (the last one's number)."""
        self._held: deque[tuple[int, list[Action]]] = deque()
        """(commit number it waits for, actions) of stepped batches, in step order."""
        self._held_inputs = 0
        self._deferred: list[Action] = []
        """EXECUTED/checkpoint writes waiting to join the next commit (writes_to_commit)."""
        self._commit_wanted = trio.Event()
        self._released = trio.Event()
        self._committing = False
        """A commit is on the commit thread right now."""
        self._commit_times: deque[float] = deque(maxlen=COMMIT_WINDOW)
        self._commit_fast = True
        """The lower quartile of recent commits took less than INLINE_COMMIT."""

    def start(self, token: trio.lowlevel.TrioToken) -> None:
        """With fsync "always", start the commit thread (then run `run` as a task)."""
        if self.storage.fsync == "always":
            self._committer = _CommitThread(self.storage, token)

    @property
    def pipelined(self) -> bool:
        """Commits go to the commit thread (fsync "always"), `run` hands them over."""
        return self._committer is not None

    def close(self) -> None:
        """Stop the commit thread; on a clean stop, write the deferred records."""
        if self._committer is not None:
            self._committer.close()
            self._committer = None
        self._flush_deferred()

    def inline(self) -> bool:
        """A group's writes are committed on the event loop, now, before its sends: always
        with fsync "batch" or "off"; with "always" while commits are fast and nothing is
        in flight or waiting."""
        return not self.pipelined or (
            self._commit_fast and not self._committing and not self._held and not self._pending
        )

    async def wait_for_room(self) -> None:
        """Wait while more than HELD_LIMIT stepped inputs wait for a commit (or until a
        write failed)."""
        while self._held_inputs > HELD_LIMIT and not self.failed:
            self._released = trio.Event()
            await self._released.wait()

    def _fail(self, exc: StorageError) -> None:
        self.failed = True
        self._on_failure(exc)
        self._released.set()

    def writes_to_commit(self, ready: Ready, ticked: bool) -> list[Action]:
        """The writes one group's commit must make durable before its sends.

        A group that wrote only EXECUTED or checkpoint records (or truncated) and sends
        nothing but replies gets no commit of its own: its writes wait in `_deferred` and
        go with the next commit (the next group with other writes, or the next tick). Its
        replies do not depend on them (`Durability.MAY_FOLLOW_REPLIES`); they still
        wait for earlier commits, where this replica's PREPARED records are
        (`hold_until_durable`). A crash that loses them costs only a re-execution after
        recovery; the simulator models exactly that
        loss (pbft.sim.simulation, `unsynced`). Under load this saves one fsync of the
        three a replica makes per batch."""
        writes: list[Action] = list(ready.writes)
        if (
            ready.durability is Durability.MAY_FOLLOW_REPLIES
            and not ticked
            and len(self._deferred) + len(writes) <= DEFERRED_LIMIT
        ):
            self._deferred.extend(writes)
            return []
        if self._deferred and (writes or ticked):
            writes = self._deferred + writes
            self._deferred = []
        return writes

    def _hold(self, need: int, actions: list[Action]) -> None:
        self._held.append((need, actions))
        self._held_inputs += 1 + len(actions) // 8  # a rough weight: inputs and their actions

    def hold_until_durable(self, writes: list[Action], actions: list[Action]) -> None:
        """Pipelined group commit (fsync "always"): this batch's writes join the next
        commit, and its actions wait, in order behind every earlier batch, until the
        commit that covers them (and all before it) is durable. A batch without writes
        (or whose writes were deferred, `writes_to_commit`) waits only for the batches
        before it: a vote it resends, or the PREPARED record a reply rests on, is there.
        The stepping task goes on stepping while the commit thread fsyncs."""
        if writes:
            self._pending.extend(writes)
            self._commit_wanted.set()
            self._hold(self._submitted + 1, actions)  # the commit the pending writes go into
        elif self._held:
            self._hold(self._held[-1][0], actions)
        else:
            self._perform(actions)  # nothing in flight is ahead of it

    async def run(self) -> None:
        """Hand the pending writes to the commit thread, one commit at a time; once one is
        durable, perform the actions it covers, in order. A failed commit stops the node
        (`on_failure`) and nothing it covers is ever sent."""
        assert self._committer is not None
        while True:
            while not self._pending:
                await self._commit_wanted.wait()
                self._commit_wanted = trio.Event()
            writes, self._pending = self._pending, []
            self._submitted += 1
            started = time.monotonic()
            self._committing = True
            with trio.CancelScope(shield=True):  # never close the database under a commit
                error = await self._committer.commit(writes)
            self._committing = False
            if isinstance(error, StorageError):
                self._fail(error)
                return
            if error is not None:
                raise error  # a bug, not the disk
            self.observe_commit(time.monotonic() - started)
            durable = self._submitted
            held = self._held
            while held and held[0][0] <= durable:
                _, actions = held.popleft()
                self._held_inputs -= 1 + len(actions) // 8
                self._perform(actions)
            self._released.set()

    def make_durable(self, writes: list[Action]) -> bool:
        """Commit `writes` on the event loop (fsync "batch" or "off", or "always" on a
        disk that fsyncs fast); False (and the node stops) if that fails."""
        started = time.monotonic()
        try:
            self.storage.apply(writes)
        except StorageError as exc:
            self._fail(exc)
            return False
        self.observe_commit(time.monotonic() - started)
        return True

    def observe_commit(self, seconds: float) -> None:
        """Count a commit of `seconds` (metrics, and the inline-or-thread choice)."""
        self._observe(seconds)
        times = self._commit_times
        times.append(seconds)
        self._commit_fast = sorted(times)[len(times) // 4] < INLINE_COMMIT

    def _flush_deferred(self) -> None:
        """On a clean stop, write the EXECUTED/checkpoint records still waiting for a
        commit (losing them is safe, but the restart would re-execute those batches). Not
        after a storage failure: that database takes nothing more."""
        if not self._deferred or self.failed:
            return
        writes, self._deferred = self._deferred, []
        try:
            self.storage.apply(writes)
        except StorageError as exc:
            log.warning("replica %d: could not write its last executions on stop: %s", self.replica_id, exc)


class _CommitThread:
    """One long-lived thread that makes batches of writes durable (fsync "always").

    The event loop hands it a batch (`commit`), the thread runs `Storage.apply` (the fsync
    is ~0.1 ms of kernel CPU and ~0.2 ms of waiting on this VM) and wakes the loop once,
    through the Trio token. A worker from `trio.to_thread` per commit cost ~20 µs more CPU
    per commit than this queue and thread. One commit at a time: the caller awaits each."""

    def __init__(self, storage: Storage, token: trio.lowlevel.TrioToken) -> None:
        self._storage = storage
        self._token = token
        self._work: queue.SimpleQueue[list[Action] | None] = queue.SimpleQueue()
        self._done_send, self._done_recv = trio.open_memory_channel(1)
        self._thread = threading.Thread(target=self._run, name=f"pbft-commit-{id(self):x}", daemon=True)
        self._thread.start()

    async def commit(self, writes: list[Action]) -> BaseException | None:
        """Make `writes` durable in one transaction; the exception if that failed."""
        self._work.put(writes)
        return await self._done_recv.receive()

    def close(self) -> None:
        """Stop the thread (no commit is in flight: `commit` is awaited shielded)."""
        self._work.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (writes := self._work.get()) is not None:
            error: BaseException | None = None
            try:
                self._storage.apply(writes)
            except BaseException as exc:  # handed to the loop: the thread never dies silently
                error = exc
            try:
                self._token.run_sync_soon(self._done_send.send_nowait, error)
            except trio.RunFinishedError:
                return
