"""What a trace means, computed once in Python for the viewer page (docs/viewer.md).

Theory of operation. `build(path)` reads a trace (`pbft.sim.trace.read_trace`) record by
record and turns it into a `Model`: lanes (one per replica, then one per client), arrows
(one per copy of a message that was sent: its `send` paired with the `deliver` that ended
it, or the `drop`, or nothing by the end: lost), marks (protocol events, client operations,
crashes, the violation), bands (view changes, crashes), equivocation groups and quorum
certificates. Everything semantic is decided here, so that it can be unit-tested; the page
(`pbft.trace.html`, `viewer.js`) only draws it.

Pairing: a message is named by (from, to, id); copies of one name are matched first in,
first out (the network may reorder, but copies of one name are byte-identical, so which
copy arrived is not observable). A `duplicate` record adds the extra copies. A `deliver`
with no matching `send` (a real replica's trace of a peer not traced) becomes an arrow
that starts where it ends. Records of types this version does not know, and fields it does
not know, are ignored, never an error: the writer may grow.
"""

from __future__ import annotations

import enum
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError


class Fate(enum.IntEnum):
    """How an arrow ends (the page draws the head accordingly)."""

    DELIVERED = 0
    DROPPED = 1  # a cross, with the reason
    LOST = 2  # still in flight when the trace ended


class Lie(enum.IntEnum):
    """What a Byzantine replica's message is, compared with its honest core's."""

    NONE = 0
    FORGED = 1
    MUTATED = 2


class LaneKind(enum.StrEnum):
    REPLICA = "replica"
    CLIENT = "client"


PHASES = ("REQUEST", "PRE-PREPARE", "PREPARE", "COMMIT", "REPLY", "CHECKPOINT", "VIEW-CHANGE",
          "NEW-VIEW", "FETCH-STATE", "STATE-CHUNK")
"""Message kinds in protocol order (the legend's order); others follow as met."""

EVENT_TYPES = ("prepared", "committed", "executed", "checkpoint-stable", "view-change-started",
               "view-installed", "state-transfer-started", "state-installed", "rejected",
               "evidence", "crash", "restart", "start", "violation")
"""Records drawn as marks on a lane (`violation` across all lanes)."""

_SLOT_KINDS = frozenset({"PRE-PREPARE", "PREPARE", "COMMIT", "CHECKPOINT"})
"""Kinds that name a slot and carry a digest: two digests for one slot from one sender
is an equivocation."""


@dataclass(frozen=True)
class Lane:
    name: str  # "0" for replica 0, "c0" for client c0
    kind: LaneKind
    byzantine: bool = False


@dataclass(slots=True)
class Arrow:
    """One copy of one message."""

    t0: float
    t1: float
    src: int  # lane index
    dst: int
    kind: str
    id: str
    view: int | None = None
    seq: int | None = None
    digest: str | None = None
    size: int = 0
    lie: Lie = Lie.NONE
    honest: str | None = None  # id of the honest message a mutated one replaces
    honest_digest: str | None = None
    fate: Fate = Fate.LOST
    copy: int = 0  # 0 for the message, 1.. for duplicates the network made
    extra: dict[str, Any] = field(default_factory=dict)  # fields of its records not above


@dataclass(frozen=True)
class Mark:
    """A protocol event, crash, restart or the violation, at one time on one lane (-1:
    every lane)."""

    t: float
    lane: int
    type: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Band:
    """A span of time on one lane: a view change in progress, a replica down, a client
    operation in flight."""

    kind: str  # "view-change", "down", "op"
    lane: int
    t0: float
    t1: float
    label: str
    open: bool = False  # not over when the trace ended


@dataclass(frozen=True)
class Equivocation:
    """Messages from one sender of one kind for one slot with different digests."""

    t: float
    lane: int
    kind: str
    view: int | None
    seq: int | None
    digests: tuple[str, ...]
    arrows: tuple[int, ...]

    @property
    def label(self) -> str:
        slot = (f"v{self.view} " if self.view is not None else "") + f"n{self.seq}"
        return f"equivocation: {self.kind} {slot}: " + " \u2260 ".join(self.digests)


@dataclass(frozen=True)
class Certificate:
    """The messages that made `mark` (a prepared or committed event) happen, as far as the
    trace shows them: the matching PRE-PREPARE and PREPAREs, or COMMITs, delivered to the
    replica by then, and its own matching send (the first copy of a broadcast)."""

    mark: int
    arrows: tuple[int, ...]
    votes: int  # distinct senders of matching votes, the replica's own included


@dataclass(frozen=True)
class Violation:
    t: float
    check: str
    detail: str


@dataclass
class Model:
    header: dict[str, Any]
    lanes: list[Lane]
    arrows: list[Arrow]
    marks: list[Mark]
    bands: list[Band]
    equivocations: list[Equivocation]
    certificates: list[Certificate]
    violations: list[Violation]
    t_start: float
    t_end: float
    end: dict[str, Any] | None
    ignored: int = 0  # records of types this version does not know

    def lane_of(self, name: str) -> int:
        return next(i for i, lane in enumerate(self.lanes) if lane.name == name)


def _num(v: Any) -> float | None:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _hashable(v: Any) -> Any:
    return v if v is None or isinstance(v, int | str | float) else repr(v)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


_ARROW_FIELDS = {"t", "type", "from", "to", "kind", "id", "view", "seq", "digest", "size", "lie",
                 "honest", "honest_digest"}


class _Builder:
    def __init__(self, header: dict[str, Any]) -> None:
        self.header = header
        self.lanes: list[Lane] = []
        self.index: dict[tuple[str, str], int] = {}
        byz = {b for b in _list(header.get("byzantine")) if _int(b) is not None}
        n = max(0, min(_int(header.get("n")) or 0, 1000))  # a lane each: keep it sane
        for r in range(n):
            self._add_lane(r, byzantine=r in byz)
        for c in _list(header.get("clients")):
            if isinstance(c, str):
                self._add_lane(c)
        self.byz = byz
        self.arrows: list[Arrow] = []
        self.pending: dict[tuple[int, int, str], deque[int]] = defaultdict(deque)
        self.last_sent: dict[tuple[int, int, str], int] = {}
        self.marks: list[Mark] = []
        self.bands: list[Band] = []
        self.violations: list[Violation] = []
        self.vc_open: dict[int, tuple[float, int]] = {}
        self.down: dict[int, float] = {}
        self.ops: dict[tuple[int, Any], tuple[float, str, bool]] = {}
        self.end: dict[str, Any] | None = None
        self.t_start: float | None = None
        self.t_end = 0.0
        self.ignored = 0

    @staticmethod
    def _key(node: Any) -> tuple[str, str] | None:
        if isinstance(node, bool):
            return None
        if isinstance(node, int):
            return ("r", str(node))
        if isinstance(node, str):
            return ("c", node)
        return None

    def _add_lane(self, node: Any, byzantine: bool = False) -> int:
        key = self._key(node)
        assert key is not None
        if key not in self.index:
            kind = LaneKind.REPLICA if key[0] == "r" else LaneKind.CLIENT
            self.index[key] = len(self.lanes)
            self.lanes.append(Lane(key[1], kind, byzantine))
        return self.index[key]

    def lane(self, node: Any) -> int | None:
        key = self._key(node)
        if key is None:
            return None
        i = self.index.get(key)
        return self._add_lane(node, key[0] == "r" and node in self.byz) if i is None else i

    # -- records -------------------------------------------------------------------------

    def record(self, rec: dict[str, Any]) -> None:
        t = _num(rec.get("t"))
        if t is None:
            self.ignored += 1
            return
        if self.t_start is None:
            self.t_start = t
        self.t_end = max(self.t_end, t)
        kind = rec["type"]
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.ignored += 1
            return
        handler(self, t, rec)

    def _send(self, t: float, rec: dict[str, Any]) -> None:
        src, dst, mid = self.lane(rec.get("from")), self.lane(rec.get("to")), _str(rec.get("id"))
        if src is None or dst is None or mid is None:
            self.ignored += 1
            return
        lie = {"forged": Lie.FORGED, "mutated": Lie.MUTATED}.get(rec.get("lie"), Lie.NONE)
        a = Arrow(t, t, src, dst, _str(rec.get("kind")) or "", mid, _int(rec.get("view")),
                  _int(rec.get("seq")), _str(rec.get("digest")), _int(rec.get("size")) or 0, lie,
                  _str(rec.get("honest")), _str(rec.get("honest_digest")))
        a.extra = {k: v for k, v in rec.items() if k not in _ARROW_FIELDS}
        self.arrows.append(a)
        key = (src, dst, mid)
        self.pending[key].append(len(self.arrows) - 1)
        self.last_sent[key] = len(self.arrows) - 1

    def _fate_key(self, rec: dict[str, Any]) -> tuple[int, int, str] | None:
        src, dst, mid = self.lane(rec.get("from")), self.lane(rec.get("to")), _str(rec.get("id"))
        if src is None or dst is None or mid is None:
            return None
        return (src, dst, mid)

    def _deliver(self, t: float, rec: dict[str, Any]) -> None:
        key = self._fate_key(rec)
        if key is None:
            self.ignored += 1
            return
        q = self.pending.get(key)
        if q:
            a = self.arrows[q.popleft()]
        else:  # its send is not in this trace
            a = Arrow(t, t, key[0], key[1], _str(rec.get("kind")) or "", key[2])
            a.extra["unsent"] = True
            self.arrows.append(a)
        a.t1, a.fate = t, Fate.DELIVERED

    def _drop(self, t: float, rec: dict[str, Any]) -> None:
        key = self._fate_key(rec)
        q = self.pending.get(key) if key else None
        if not q:
            self.ignored += 1
            return
        a = self.arrows[q.popleft()]
        a.t1, a.fate = t, Fate.DROPPED
        a.extra["reason"] = rec.get("reason")
        if "fault" in rec:
            a.extra["fault"] = rec["fault"]

    def _delay(self, t: float, rec: dict[str, Any]) -> None:
        key = self._fate_key(rec)
        i = self.last_sent.get(key) if key else None
        if i is None:
            self.ignored += 1
            return
        extra = self.arrows[i].extra
        extra["delay_ms"] = rec.get("ms")
        if rec.get("reordered"):
            extra["reordered"] = True

    def _duplicate(self, t: float, rec: dict[str, Any]) -> None:
        key = self._fate_key(rec)
        i = self.last_sent.get(key) if key else None
        copies = _int(rec.get("copies")) or 1
        if i is None or key is None:
            self.ignored += 1
            return
        first = self.arrows[i]
        first.extra["copies"] = copies
        for c in range(1, copies):
            a = Arrow(first.t0, first.t0, first.src, first.dst, first.kind, first.id, first.view,
                      first.seq, first.digest, first.size, first.lie, first.honest,
                      first.honest_digest, copy=c)
            a.extra = dict(first.extra)
            self.arrows.append(a)
            self.pending[key].append(len(self.arrows) - 1)

    def _mark(self, t: float, rec: dict[str, Any], lane: int | None = None) -> int:
        if lane is None:
            replica = rec.get("replica")
            lane = self.lane(replica) if _int(replica) is not None else None
        fields = {k: v for k, v in rec.items() if k not in ("t", "type")}
        self.marks.append(Mark(t, -1 if lane is None else lane, rec["type"], fields))
        return lane if lane is not None else -1

    def _event(self, t: float, rec: dict[str, Any]) -> None:
        lane = self._mark(t, rec)
        kind = rec["type"]
        if lane < 0:
            return
        if kind == "view-change-started":
            self.vc_open.setdefault(lane, (t, _int(rec.get("view")) or 0))
        elif kind == "view-installed":
            started = self.vc_open.pop(lane, None)
            if started is not None:
                self.bands.append(Band("view-change", lane, started[0], t,
                                       f"view change to v{rec.get('view')}"))
        elif kind == "crash":
            self.down.setdefault(lane, t)
            self.vc_open.pop(lane, None)
        elif kind == "restart":
            since = self.down.pop(lane, None)
            if since is not None:
                self.bands.append(Band("down", lane, since, t, "crashed"))

    def _violation(self, t: float, rec: dict[str, Any]) -> None:
        self._mark(t, rec, -1)
        self.violations.append(Violation(t, str(rec.get("check", "")), str(rec.get("detail", ""))))

    def _submit(self, t: float, rec: dict[str, Any]) -> None:
        lane = self.lane(rec.get("client"))
        if lane is None:
            self.ignored += 1
            return
        self._mark(t, rec, lane)
        op = str(rec.get("op", ""))
        if not rec.get("read_only"):
            # A read-only request that got no quorum of replies is retried on the ordered
            # path as a new request; the first one is over, not lost.
            for key, (t0, op0, ro) in list(self.ops.items()):
                if key[0] == lane and ro and op0 == op:
                    del self.ops[key]
                    self.bands.append(Band("op", lane, t0, t, f"{op} (read-only) → retried as t={rec.get('timestamp')}"))
        self.ops.setdefault((lane, _hashable(rec.get("timestamp"))), (t, op, bool(rec.get("read_only"))))

    def _complete(self, t: float, rec: dict[str, Any]) -> None:
        lane = self.lane(rec.get("client"))
        if lane is None:
            self.ignored += 1
            return
        self._mark(t, rec, lane)
        started = self.ops.pop((lane, _hashable(rec.get("timestamp"))), None)
        if started is not None:
            self.bands.append(Band("op", lane, started[0], t,
                                   f"{started[1]} \u2192 {rec.get('result', '')}"))

    def _end(self, t: float, rec: dict[str, Any]) -> None:
        self.end = {k: v for k, v in rec.items() if k != "type"}

    def finish(self) -> Model:
        t_end = self.t_end
        for q in self.pending.values():
            for i in q:
                self.arrows[i].t1 = t_end  # lost: in flight at the end
        # The page finds what is visible by binary search on these times; a merged trace of
        # real processes may be out of order by a clock's skew.
        self.arrows.sort(key=lambda a: a.t0)
        self.marks.sort(key=lambda m: m.t)
        for lane, (t, view) in self.vc_open.items():
            self.bands.append(Band("view-change", lane, t, t_end, f"view change to v{view}", True))
        for lane, t in self.down.items():
            self.bands.append(Band("down", lane, t, t_end, "crashed", True))
        for (lane, _ts), (t, op, _ro) in self.ops.items():
            self.bands.append(Band("op", lane, t, t_end, f"{op} \u2192 (no result)", True))
        self.bands.sort(key=lambda b: (b.t0, b.lane))
        return Model(self.header, self.lanes, self.arrows, self.marks, self.bands,
                     equivocations(self.arrows), certificates(self.arrows, self.marks,
                                                              self.lanes),
                     self.violations, self.t_start or 0.0, t_end, self.end, self.ignored)


_HANDLERS = {
    "send": _Builder._send,
    "deliver": _Builder._deliver,
    "drop": _Builder._drop,
    "delay": _Builder._delay,
    "duplicate": _Builder._duplicate,
    "violation": _Builder._violation,
    "submit": _Builder._submit,
    "complete": _Builder._complete,
    "end": _Builder._end,
    **{e: _Builder._event for e in EVENT_TYPES if e != "violation"},
}


def equivocations(arrows: list[Arrow]) -> list[Equivocation]:
    """Groups of messages one sender sent for one slot (kind, view, seq) with different
    digests; the group's time is its first message's."""
    slots: dict[tuple[int, str, int | None, int], dict[str, list[int]]] = {}
    for i, a in enumerate(arrows):
        if a.copy or a.kind not in _SLOT_KINDS or a.seq is None or a.digest is None:
            continue
        slots.setdefault((a.src, a.kind, a.view, a.seq), {}).setdefault(a.digest, []).append(i)
    out = []
    for (src, kind, view, seq), by_digest in slots.items():
        if len(by_digest) < 2:
            continue
        members = tuple(sorted(i for ids in by_digest.values() for i in ids))
        out.append(Equivocation(arrows[members[0]].t0, src, kind, view, seq,
                                tuple(by_digest), members))
    out.sort(key=lambda e: (e.t, e.lane))
    return out


def certificates(arrows: list[Arrow], marks: list[Mark], lanes: list[Lane]) -> list[Certificate]:
    """For each prepared and committed mark, the arrows behind it (class docstring)."""
    received: dict[tuple[int, str, int | None, int | None, str | None], list[int]] = defaultdict(list)
    sent: dict[tuple[int, str, int | None, int | None, str | None], list[int]] = defaultdict(list)
    for i, a in enumerate(arrows):
        if a.kind not in ("PRE-PREPARE", "PREPARE", "COMMIT"):
            continue
        slot = (a.kind, a.view, a.seq, a.digest)
        if a.fate is Fate.DELIVERED:
            received[(a.dst, *slot)].append(i)
        if a.copy == 0:
            sent[(a.src, *slot)].append(i)
    out = []
    for mi, m in enumerate(marks):
        if m.type not in ("prepared", "committed") or m.lane < 0:
            continue
        slot = (m.fields.get("view"), m.fields.get("seq"), m.fields.get("digest"))
        kinds = ("PRE-PREPARE", "PREPARE") if m.type == "prepared" else ("COMMIT",)
        chosen: list[int] = []
        voters: set[int] = set()
        for kind in kinds:
            for i in received.get((m.lane, kind, *slot), ()):
                if arrows[i].t1 <= m.t and arrows[i].src not in voters | {m.lane}:
                    chosen.append(i)
                    voters.add(arrows[i].src)
            # its own vote, once: a broadcast is one send record per receiver
            own = next((i for i in sent.get((m.lane, kind, *slot), ()) if arrows[i].t0 <= m.t), None)
            if own is not None:
                chosen.append(own)
                voters.add(m.lane)
        out.append(Certificate(mi, tuple(sorted(chosen)), len(voters)))
    return out


def build(path: str, run: str | None = None) -> Model:
    """The model of one run of the trace at `path` (`pbft.trace.runs`: by default the
    first run with a violation, else the first); UsageError (one sentence) for a file
    that is not a trace."""
    from .runs import load

    return from_records(load(path, run).records)


def from_records(records: Iterable[dict[str, Any]]) -> Model:
    it = iter(records)
    header = next(it, None)
    if header is None or header.get("type") != "header":
        raise UsageError("the trace has no header; is this a trace file?")
    b = _Builder(header)
    for rec in it:
        b.record(rec)
    return b.finish()
