"""The simulated network: per-message fate drawn from the run's one seeded RNG.

Theory of operation. Every message a node emits asks `Network.transit(now, src, dst)` for
its delivery times: an empty list means dropped, two entries mean duplicated. The base
latency is a small random delay; each link fault active at `now` (scenario `[[network]]`
entries with a time window) may drop it (probability, partition between groups, one-way
isolation), delay it (base + jitter), reorder it (an extra random delay on some messages,
so later sends overtake it) or duplicate it. Faults are consulted in scenario order and
the RNG is drawn the same number of times in the same order for the same inputs, so a seed
replays exactly. Crashes and twins are node faults; the cluster handles them.

A `[twins]` schedule (scenario.Twins, pbft.sim.twins) partitions *instances*, not node
ids: the two copies of a twinned replica share its id, so `RoundPartitions` says which
of them a message from a given instance reaches, by the round (view) the message belongs to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..protocol import codec
from ..protocol.messages import MsgType, envelope_from_bytes
from .scenario import KINDS, Instance, NetworkFault, Node, Twins

_KIND_OF = {int(t): KINDS[i] for i, t in enumerate(MsgType)}


def classify(data: bytes) -> tuple[str, int | None, int | None]:
    """(kind, view, seq) of an envelope, as far as it can be read; garbage is ("", None, None)."""
    try:
        body = codec.decode(envelope_from_bytes(data).body)
    except codec.CodecError:
        return "", None, None
    if not isinstance(body, list) or not body or type(body[0]) is not int:
        return "", None, None
    kind = _KIND_OF.get(body[0], "")
    view = seq = None
    if kind in ("PRE-PREPARE", "PREPARE", "COMMIT") and len(body) >= 3:
        view, seq = body[1], body[2]
    elif kind == "CHECKPOINT" and len(body) >= 2:
        seq = body[1]
    elif kind in ("VIEW-CHANGE", "NEW-VIEW") and len(body) >= 2:
        view = body[1]
    return kind, view, seq


def matches(nf: NetworkFault, src: Node, dst: Node, info: tuple) -> bool:
    kind, view, seq = info
    return (
        (not nf.from_ or src in nf.from_)
        and (not nf.to or dst in nf.to)
        and (not nf.kinds or kind in nf.kinds)
        and (not nf.views or view in nf.views)
        and (not nf.seqs or seq in nf.seqs)
    )

BASE_DELAY_MS = (1, 4)
"""Latency of a healthy link, uniformly in this range (inclusive), in virtual ms."""
DUPLICATE_GAP_MS = 20
"""A duplicate arrives up to this much after the original."""


class Network:
    def __init__(self, faults: Sequence[NetworkFault], rng: random.Random) -> None:
        self.faults = [nf for nf in faults if nf.is_link_fault]
        self.rng = rng
        self._groups = [
            {node: i for i, group in enumerate(nf.partition) for node in group} for nf in self.faults
        ]
        self.dropped = 0
        self.duplicated = 0
        self.last_fate: Fate | None = None
        """The fate of the message `transit` last decided (read by the trace)."""

    def heal_time(self) -> int:
        """When the last windowed link fault ends (whole-run faults never heal: 0)."""
        ends = [nf.until_ms for nf in self.faults if nf.until_ms is not None]
        return max(ends, default=0)

    def transit(self, now: int, src: Node, dst: Node, data: bytes = b"") -> list[int]:
        rng = self.rng
        delay = rng.randint(*BASE_DELAY_MS)
        fate = self.last_fate = link_fate(self.faults, self._groups, now, src, dst, data, rng)
        if fate.dropped_by >= 0:
            self.dropped += 1
            return []
        times = [now + delay + fate.delay]
        for _ in range(fate.copies - 1):
            self.duplicated += 1
            times.append(now + delay + fate.delay + rng.randint(0, DUPLICATE_GAP_MS))
        return times

    def drop_reason(self, index: int, src: Node, dst: Node) -> str:
        """Why fault `index` (a `Fate.dropped_by`) dropped a message from `src` to `dst`:
        "partition", "one-way" or "drop" (its loss probability)."""
        group = self._groups[index]
        gs, gd = group.get(src), group.get(dst)
        if gs is not None and gd is not None and gs != gd:
            return "partition"
        if self.faults[index].one_way == (src, dst):
            return "one-way"
        return "drop"


@dataclass(slots=True)
class Fate:
    """What the active link faults do to one message (`link_fate`)."""

    delay: int = 0  # extra delay, ms
    copies: int = 1
    dropped_by: int = -1  # index of the fault that dropped it; -1: not dropped
    acted: list[int] = field(default_factory=list)  # faults that delayed, reordered or duplicated it
    delayed: bool = False
    reordered: bool = False


def link_fate(
    faults: Sequence[NetworkFault],
    groups: Sequence[dict[Node, int]],
    now: int,
    src: Node,
    dst: Node,
    data: bytes,
    rng: random.Random,
) -> Fate:
    """The link faults active at `now`, in scenario order, applied to one message from
    `src` to `dst`: the simulator's network and the real processes' link-fault layer
    (pbft.node.linkfaults) both decide by this, drawing `rng` the same way."""
    fate = Fate()
    info = None
    for i, (nf, group) in enumerate(zip(faults, groups, strict=True)):
        if not nf.active(now):
            continue
        if nf.filtered:
            if info is None:
                info = classify(data)
            if not matches(nf, src, dst, info):
                continue
        if group:
            gs, gd = group.get(src), group.get(dst)
            if gs is not None and gd is not None and gs != gd:
                fate.dropped_by = i
                return fate
        if nf.one_way is not None and nf.one_way == (src, dst):
            fate.dropped_by = i
            return fate
        if nf.drop and rng.random() < nf.drop:
            fate.dropped_by = i
            return fate
        acted = False
        if nf.delay_ms or nf.jitter_ms:
            fate.delay += nf.delay_ms + (rng.randint(0, nf.jitter_ms) if nf.jitter_ms else 0)
            fate.delayed = acted = True
        if nf.reorder and rng.random() < nf.reorder:
            fate.delay += rng.randint(0, nf.reorder_ms)
            fate.reordered = acted = True
        if nf.duplicate and rng.random() < nf.duplicate:
            fate.copies += 1
            acted = True
        if acted:
            fate.acted.append(i)
    return fate


VIEWED = frozenset({"PRE-PREPARE", "PREPARE", "COMMIT", "VIEW-CHANGE", "NEW-VIEW"})
"""The kinds whose view (classify) places them in a round; any other message belongs to the
round of the view its sender is in."""


class RoundPartitions:
    """A `[twins]` schedule as a filter on instance-to-instance messages (scenario.Twins
    says what a round is, when it ends and when everything heals)."""

    __slots__ = ("rounds", "round_ms", "heal_ms", "_groups", "_last")

    def __init__(self, twins: Twins) -> None:
        self.rounds = len(twins.rounds)
        self.round_ms = twins.round_ms
        self.heal_ms = twins.heal_ms
        self._groups = twins.groups()
        self._last: tuple[bytes, int | None] = (b"", None)
        """The last message classified and its view (None: it carries none): a broadcast
        hands the same bytes for every receiver."""

    def round_of(self, data: bytes, sender_view: int, now: int) -> int:
        """The round of a message: the view it carries; for any other (STATUS, CHECKPOINT,
        a relayed request, state transfer) the later of its sender's view and the round
        under way, so that a replica left behind in an earlier view still talks to its
        group of the current round (and can learn there where the others are)."""
        last, view = self._last
        if data is not last:
            kind, v, _ = classify(data)
            view = v if kind in VIEWED and type(v) is int else None
            self._last = (data, view)
        if view is not None:
            return view
        return max(sender_view, now // self.round_ms)

    def reaches(self, now: int, round_: int, src: Instance, dst: Instance) -> bool:
        """Whether a message of round `round_` sent at `now` from `src` gets to `dst`."""
        if now >= self.heal_ms or round_ >= self.rounds:
            return True
        if now >= (round_ + 1) * self.round_ms:
            return False  # the round is over: its messages are lost until the heal
        groups = self._groups[round_]
        return groups[src] == groups[dst]
