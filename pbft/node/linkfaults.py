"""Link faults on a real process's sends: for testing only (`pbft scenario run --real`).

Theory of operation. The simulator applies a scenario's `[[network]]` link faults in its
network model (pbft.sim.network): each message's fate is drawn when it is sent, from its
sender, its destination, the time and (for the filters) the message's kind, view and
seq. A real process has no such model between it and its peers, and a proxy in front of
TLS could not read a message's kind. So the same fate is drawn at the sending side of
every process, between the node runtime and the transport: `LinkFaults` has the
transport's sending surface (`send`, `broadcast`, `send_client`, `flush`), and every
replica process started with `pbft replica --link-faults PLAN` and every client of the
scenario runner sends through one. The rules are the simulator's, in its order, with its
matching code (`link_fate` of pbft.sim.network):

* a `partition` drops a message between nodes in different groups (client names "c0",
  "c1", ... may be listed; a node in no group keeps its links), `one_way = [a, b]` drops
  what a sends to b, `drop` drops with that probability;
* `delay_ms` (+ up to `jitter_ms`) delays it, `reorder` adds up to `reorder_ms` to some
  messages so that later ones overtake them, `duplicate` sends a second copy up to
  DUPLICATE_GAP_MS after the first;
* each entry acts only within its window (`at_ms`, `until_ms`) and, with filters, only on
  matching messages (`kinds`, `from`, `to`, `views`, `seqs`).

What differs from the simulator. The healthy latency is the real one (loopback), not
the simulator's 1-4 virtual ms. Time is the wall clock since the run's epoch, which the
runner fixes and writes into the plan once every replica listens (until then, and for
peers the scenario does not name, such as the runner's observer, nothing is applied).
Each process draws from its own RNG, seeded with the scenario seed and its name, so the
fates are random in the same proportions as in the simulator but a real run is not
bit-reproducible (threads, sockets and the scheduler decide the order of sends).
Delayed and duplicated sends never block the sender: they wait in a heap served by one
Trio task (`run`), which hands them to the transport when they fall due.

Twins. The plan names, for each twinned replica, the extra address its second process
listens on (`twins`); every sender's transport also dials it and sends it everything it
sends that replica (pbft.node.transport, `add_twin`), as the simulator delivers every
message to both instances. The second process runs with `--twin` and listens there.

What was applied is counted (`counts`: dropped, delayed, reordered, duplicated; and per
entry, `per_fault`: the messages each entry acted on) and written, as JSON, to
`STATS_DIR/linkfaults-NAME-PID.json` every STATS_EVERY_S and when the process stops (a
SIGKILLed replica loses at most the last STATS_EVERY_S of counts).

With a trace writer (`tracer`, set by the node when it runs with `--trace`), every fate
other than "sent as it is" is also written as a trace record (`drop`, `delay`,
`duplicate`, as the simulator's; times in wall-clock Unix ms, `arrive` the times the
copies are handed to the transport).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import UsageError
from ..protocol.messages import Signer
from ..sim.network import DUPLICATE_GAP_MS, link_fate
from ..sim.scenario import NetworkFault
from .tracing import wall_ms

log = logging.getLogger("pbft.linkfaults")

PLAN_POLL_S = 0.02
"""How often a process whose plan has no epoch yet reads the plan file again."""
STATS_EVERY_S = 0.5
"""How often the counts are written to the stats directory."""
COUNTS = ("dropped", "delayed", "reordered", "duplicated")


@dataclass
class FaultPlan:
    """What the scenario runner hands every process: the link faults, the seed, the
    epoch (wall-clock seconds of scenario time 0; None until the runner fixes it), the
    number of scenario clients (c0..), the twins' extra addresses and where to write the
    counts."""

    faults: tuple[NetworkFault, ...]
    seed: int = 0
    epoch: float | None = None
    clients: int = 0
    twins: dict[int, tuple[str, int]] = field(default_factory=dict)
    stats_dir: str | None = None
    path: str | None = None
    """The file it was read from (read again while `epoch` is None)."""


def fault_json(nf: NetworkFault) -> dict[str, Any]:
    return {k: getattr(nf, k) for k in NetworkFault.__slots__}


def fault_from_json(d: dict[str, Any]) -> NetworkFault:
    d = dict(d)
    d["partition"] = tuple(tuple(g) for g in d.get("partition", ()))
    if d.get("one_way") is not None:
        d["one_way"] = tuple(d["one_way"])
    for k in ("kinds", "from_", "to", "views", "seqs"):
        d[k] = tuple(d.get(k, ()))
    return NetworkFault(**d)


def plan_json(plan: FaultPlan) -> dict[str, Any]:
    return {
        "faults": [fault_json(nf) for nf in plan.faults],
        "seed": plan.seed,
        "epoch": plan.epoch,
        "clients": plan.clients,
        "twins": {str(k): list(v) for k, v in plan.twins.items()},
        "stats_dir": plan.stats_dir,
    }


def write_plan(path: str, plan: FaultPlan) -> None:
    """Write atomically (a process polling the file never reads half of it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(plan_json(plan), fh)
    os.replace(tmp, path)


def load_plan(path: str, epoch: float | None = None) -> FaultPlan:
    """The plan in `path`; `epoch` (`--fault-epoch`) overrides the file's."""
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        plan = FaultPlan(
            faults=tuple(fault_from_json(x) for x in d.get("faults", [])),
            seed=int(d.get("seed", 0)),
            epoch=d.get("epoch"),
            clients=int(d.get("clients", 0)),
            twins={int(k): (str(v[0]), int(v[1])) for k, v in d.get("twins", {}).items()},
            stats_dir=d.get("stats_dir"),
            path=path,
        )
    except OSError as exc:
        raise UsageError(f"--link-faults {path}: cannot read it ({exc.strerror or exc}).") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise UsageError(f"--link-faults {path}: not a link-fault plan ({exc}).") from None
    if epoch is not None:
        plan.epoch = epoch
    return plan


_CLIENT = re.compile(r"c(\d+)")


class LinkFaults:
    """The sending surface of a transport, with the plan's link faults applied to every
    message `me` sends (module docstring)."""

    def __init__(self, transport: Any, me: Signer, plan: FaultPlan, instance: int = 0) -> None:
        self.transport = transport
        self.me = me
        self.plan = plan
        self.faults = [nf for nf in plan.faults if nf.is_link_fault]
        self._groups = [
            {node: i for i, group in enumerate(nf.partition) for node in group} for nf in self.faults
        ]
        self.rng = random.Random(f"{plan.seed}/{me}/{instance}")
        self.instance = instance
        self.counts: Counter[str] = Counter()
        self.per_fault = [0] * len(self.faults)
        self._heap: list[tuple[float, int, Signer, bytes]] = []
        self._n = 0
        self._wake = trio.Event()
        self._dirty = True
        self._in_scenario = self._node(me)
        self.tracer: Any = None
        """A pbft.sim.trace.TraceWriter for the fates (None: not traced)."""

    # -- the fate of one message -------------------------------------------------------

    def _node(self, who: Signer) -> bool:
        """`who` is a node of the scenario (a replica, or a client c0..), not a helper
        such as the runner's observer."""
        if isinstance(who, int):
            return True
        m = _CLIENT.fullmatch(who)
        return m is not None and int(m.group(1)) < self.plan.clients

    def now_ms(self) -> int | None:
        """Scenario time (ms since the epoch), or None while the epoch is not known."""
        if self.plan.epoch is None:
            return None
        return math.floor((time.time() - self.plan.epoch) * 1000)

    def _quiet(self, now: int | None) -> bool:
        return now is None or not self._in_scenario or not any(nf.active(now) for nf in self.faults)

    def fate(self, now: int, dst: Signer, data: bytes) -> list[int]:
        """Delays (ms) of the copies of one message from `me` to `dst` sent at `now`:
        [] dropped, [0] as it is. pbft.sim.network.Network.transit without the base
        latency, counted."""
        if not self._node(dst):
            return [0]
        fate = link_fate(self.faults, self._groups, now, self.me, dst, data, self.rng)
        if fate.dropped_by >= 0:
            if self.tracer is not None:
                self._trace(dst, data, fate, [])
            self.counts["dropped"] += 1
            self.per_fault[fate.dropped_by] += 1
            self._dirty = True
            return []
        for i in fate.acted:
            self.per_fault[i] += 1
            self._dirty = True
        self.counts["delayed"] += fate.delayed
        self.counts["reordered"] += fate.reordered
        delay, copies, rng = fate.delay, fate.copies, self.rng
        times = [delay]
        for _ in range(copies - 1):
            self.counts["duplicated"] += 1
            times.append(delay + rng.randint(0, DUPLICATE_GAP_MS))
        if self.tracer is not None and (delay or copies > 1):
            self._trace(dst, data, fate, times)
        return times

    def _trace(self, dst: Signer, data: bytes, fate: Any, delays: list[int]) -> None:
        """The trace record(s) of one message's fate (`delays`: of each copy, ms; none
        when dropped)."""
        t = wall_ms()
        times = [round(t + d, 3) for d in delays]
        reason = ""
        if fate.dropped_by >= 0:
            nf, group = self.faults[fate.dropped_by], self._groups[fate.dropped_by]
            gs, gd = group.get(self.me), group.get(dst)
            if gs is not None and gd is not None and gs != gd:
                reason = "partition"
            elif nf.one_way == (self.me, dst):
                reason = "one-way"
            else:
                reason = "drop"
        self.tracer.fate(t, self.me, dst, self.tracer.describe(data), fate, reason, times)

    # -- the transport's sending surface ----------------------------------------------

    def send(self, to: int, body: bytes) -> bool:
        now = self.now_ms()
        if self._quiet(now):
            return self.transport.send(to, body)
        return self._apply(now, to, body)  # type: ignore[arg-type]

    def broadcast(self, body: bytes) -> None:
        now = self.now_ms()
        if self._quiet(now):
            self.transport.broadcast(body)
            return
        for to in list(self.transport.outboxes):
            self._apply(now, to, body)  # type: ignore[arg-type]

    def send_client(self, client: str, body: bytes) -> bool:
        now = self.now_ms()
        if self._quiet(now):
            return self.transport.send_client(client, body)
        return self._apply(now, client, body)  # type: ignore[arg-type]

    def flush(self) -> None:
        self.transport.flush()

    def _apply(self, now: int, to: Signer, body: bytes) -> bool:
        times = self.fate(now, to, body)
        ok = True
        for delay in times:
            if delay <= 0:
                ok = self._deliver(to, body)
            else:
                self._n += 1
                heapq.heappush(self._heap, (trio.current_time() + delay / 1000, self._n, to, body))
                self._wake.set()
        return ok

    def _deliver(self, to: Signer, body: bytes) -> bool:
        if isinstance(to, str):
            return self.transport.send_client(to, body)
        return self.transport.send(to, body)

    # -- the task ----------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Send delayed copies when due; read the plan again until it has an epoch;
        write the counts now and then and when cancelled."""
        task_status.started()
        next_stats = trio.current_time()
        try:
            while True:
                now = trio.current_time()
                due = False
                while self._heap and self._heap[0][0] <= now:
                    _, _, to, body = heapq.heappop(self._heap)
                    self._deliver(to, body)
                    due = True
                if due:
                    self.transport.flush()
                if self.plan.epoch is None and self.plan.path is not None:
                    self._poll_epoch()
                if now >= next_stats:
                    self.write_stats()
                    next_stats = now + STATS_EVERY_S
                until = next_stats
                if self.plan.epoch is None:
                    until = min(until, now + PLAN_POLL_S)
                if self._heap:
                    until = min(until, self._heap[0][0])
                self._wake = trio.Event()
                with trio.move_on_at(until):
                    await self._wake.wait()
        finally:
            self._dirty = True
            self.write_stats()

    def _poll_epoch(self) -> None:
        try:
            with open(self.plan.path, encoding="utf-8") as fh:  # type: ignore[arg-type]
                epoch = json.load(fh).get("epoch")
        except (OSError, ValueError):
            return
        if epoch is not None:
            self.plan.epoch = float(epoch)
            log.info("%s: link faults from epoch %.3f on", self.me, self.plan.epoch)

    def stats(self) -> dict[str, Any]:
        return {"node": self.me, "instance": self.instance, **{k: self.counts[k] for k in COUNTS},
                "per_fault": list(self.per_fault)}

    def write_stats(self) -> None:
        d = self.plan.stats_dir
        if d is None or not self._dirty:
            return
        self._dirty = False
        path = os.path.join(d, f"linkfaults-{self.me}-{self.instance}-{os.getpid()}.json")
        try:
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.stats(), fh)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write link-fault counts to %s: %s", path, exc)


def sum_stats(stats_dir: str, entries: int) -> dict[str, Any]:
    """The counts of every process of a run, added up (`per_fault`: one per link-fault
    entry of the plan, in order)."""
    total: dict[str, Any] = {k: 0 for k in COUNTS}
    per = [0] * entries
    try:
        names = sorted(os.listdir(stats_dir))
    except OSError:
        names = []
    for name in names:
        if not (name.startswith("linkfaults-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(stats_dir, name), encoding="utf-8") as fh:
                d = json.load(fh)
        except (OSError, ValueError):
            continue
        for k in COUNTS:
            total[k] += int(d.get(k, 0))
        for i, c in enumerate(d.get("per_fault", [])[:entries]):
            per[i] += int(c)
    total["per_fault"] = per
    return total


def link_fault_entries(faults: Sequence[NetworkFault]) -> list[NetworkFault]:
    return [nf for nf in faults if nf.is_link_fault]
