"""A simulated run's trace as JSON lines (docs/formats.md, "The simulator's trace").

Theory of operation. A `Simulation` given a `TraceWriter` calls it at the points where
something observable happens: a node sends a message (and what the network does to it:
drop with the reason, extra delay, duplicate), a message is delivered, a replica's core
reports a protocol event (prepared, committed, executed, checkpoint stable, view change,
state transfer, rejected input, evidence), a client submits or completes a request, a
replica crashes or restarts, the oracle finds a violation, and the run ends. Each call
writes one JSON object on one line; the first line is a header naming the format version.

The writer only reads: it never draws from the run's RNG nor changes what a node sees, so
a run's `trace_digest` is the same with or without a trace, and two runs of one seed write
byte-identical traces (records are dicts in insertion order, nothing reads the clock).

For a Byzantine replica the simulator hands the writer what its honest core produced in
the same step (`Lies`), and each message the behaviour sent is marked `lie`: "forged"
(the honest core sent nothing like it) or "mutated" (the honest core sent a message of
the same kind and slot to that receiver, which this one replaces; `honest` names it). A
message byte-identical to one the honest core produced (in this step or, held back by
the behaviour, in a recent one) carries no `lie`.

Cost: per message, one classification (cached per distinct message bytes: a broadcast is
decoded once), one sha256 for its id, one dict and one `json.dumps`.

Real processes (`pbft replica --trace FILE`, pbft.node) write the same records with `t` in
wall-clock Unix milliseconds, which the caller passes in (this module reads no clock):
a `header_real` naming the process, a `start` record each time the process starts
(a restarted process appends to its file), and the link-fault layer's fates through
`fate`. They open the file buffered (`buffering`) and call `flush` now and then, so a
record costs no system call. `pbft.trace.merge` makes one trace of several such files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ..protocol import codec
from ..protocol.epochs import MAX_F
from ..protocol.events import (
    Broadcast,
    EpochStarted,
    Evidence,
    Rejected,
    Send,
    SendClient,
)
from ..protocol.messages import MsgType, envelope_from_bytes
from .coverage import EVENTS
from .scenario import KINDS

VERSION = 1
"""The trace format's version: `read_trace` refuses any other."""

_KIND_OF = {int(t): KINDS[i] for i, t in enumerate(MsgType)}
_CACHE_MAX = 8192
_RECENT_HONEST = 4096
"""How many recent honest messages of a Byzantine replica are remembered, so that one the
behaviour held back and released later is not taken for a lie."""


def _hex(b: Any) -> str | None:
    return b.hex()[:8] if isinstance(b, bytes | bytearray) else None


def describe(data: bytes, ident: bool = True) -> dict[str, Any]:
    """kind, view, seq, digest (8 hex of the protocol digest it carries) and id (8 hex of
    sha256 of its bytes) of one message; what cannot be read is left out. Without
    `ident`, no id (judging lies needs none, and hashing a large frame costs)."""
    info: dict[str, Any] = {"kind": "", "id": hashlib.sha256(data).hexdigest()[:8]} if ident else {"kind": ""}
    try:
        body = codec.decode(envelope_from_bytes(data).body)
    except Exception:  # noqa: BLE001 - garbage is described as garbage
        return info
    if not isinstance(body, list) or not body or type(body[0]) is not int:
        return info
    kind = _KIND_OF.get(body[0], "")
    info["kind"] = kind
    if kind in ("PRE-PREPARE", "PREPARE", "COMMIT") and len(body) >= 4:
        info["view"], info["seq"], info["digest"] = body[1], body[2], _hex(body[3])
    elif kind in ("CHECKPOINT", "FETCH-STATE", "STATE-CHUNK") and len(body) >= 3:
        info["seq"], info["digest"] = body[1], _hex(body[2])
    elif kind in ("VIEW-CHANGE", "NEW-VIEW") and len(body) >= 2:
        info["view"] = body[1]
    elif kind == "REQUEST" and len(body) >= 4:
        info["client"], info["timestamp"] = body[3], body[2]
    elif kind == "REPLY" and len(body) >= 4:
        info["view"], info["client"], info["timestamp"] = body[1], body[3], body[2]
    return info


def summary(data: bytes, limit: int = 40) -> str:
    """A short readable form of an operation or result (the key-value service's CBOR-like
    encoding decoded, else hex)."""
    try:
        value = codec.decode(data)
    except Exception:  # noqa: BLE001
        return data.hex()[:limit]
    text = _plain(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(v: Any) -> str:
    if isinstance(v, bytes):
        try:
            return v.decode("ascii") if v.isascii() and v.decode("ascii").isprintable() else v.hex()
        except UnicodeDecodeError:
            return v.hex()
    if isinstance(v, list | tuple):
        return " ".join(_plain(x) for x in v)
    if isinstance(v, dict):
        return " ".join(f"{_plain(k)}={_plain(x)}" for k, x in v.items())
    return str(v)


class Lies:
    """What one Byzantine replica's honest core sent, to judge what its behaviour sent."""

    def __init__(self) -> None:
        self.step: list = []  # the honest core's actions of the current step
        self.recent: dict[bytes, None] = {}
        self._honest: list[tuple[Any, bytes]] = []  # the step's honest (to, data), in order
        self._sent: set[tuple[Any, bytes]] = set()  # what the behaviour sent of them

    def judge(self, n: int, me: Any, describe_: Any) -> Any:
        """A function (to, data) -> (lie, honest id) for this step's sends. It also notes
        each send, so that `withheld()` can say, once the step's sends are done, which of
        the honest core's messages the behaviour did not send."""
        exact: set[tuple[Any, bytes]] = set()
        order: list[tuple[Any, bytes]] = []
        slots: dict[tuple, bytes] = {}
        for a in self.step:
            if isinstance(a, Broadcast):
                targets: list[Any] = [r for r in range(n) if r != me]
            elif isinstance(a, Send):
                targets = [a.to]
            elif isinstance(a, SendClient):
                targets = [a.client]
            else:
                continue
            d = describe_(a.data)
            key = (d["kind"], d.get("view"), d.get("seq"), d.get("client"), d.get("timestamp"))
            for t in targets:
                if (t, a.data) not in exact:
                    exact.add((t, a.data))
                    order.append((t, a.data))
                slots.setdefault((t, *key), a.data)
            self.recent[a.data] = None
        self.step = []
        while len(self.recent) > _RECENT_HONEST:
            del self.recent[next(iter(self.recent))]
        recent = self.recent
        sent: set[tuple[Any, bytes]] = set()
        self._honest, self._sent = order, sent

        def lie(to: Any, data: bytes, d: dict) -> tuple[str | None, str | None]:
            if (to, data) in exact or data in recent:
                sent.add((to, data))
                return None, None
            key = (to, d["kind"], d.get("view"), d.get("seq"), d.get("client"), d.get("timestamp"))
            honest = slots.get(key)
            if honest is not None:
                sent.add((to, honest))  # replaced, not withheld
                return "mutated", describe_(honest)
            return "forged", None

        return lie

    def note_sent(self, to: Any, data: bytes) -> None:
        """A send the judge did not look at (a copy of an honest message: no lie)."""
        self._sent.add((to, data))

    def withheld(self) -> list[tuple[Any, bytes]]:
        """The honest core's messages of the step just judged that the behaviour neither
        sent nor replaced, in the core's order: dropped, or held back to send later."""
        sent = self._sent
        return [(to, data) for to, data in self._honest if (to, data) not in sent]


_NOTES = {**{t: name for t, name in EVENTS.items() if t is not EpochStarted}, Rejected: "rejected", Evidence: "evidence"}
"""What a trace notes of a replica's actions: the protocol's transitions (those the
coverage report counts, but a new configuration epoch, which the trace format has no
record for yet) and its refusals and evidence."""


class TraceWriter:
    """Writes one run's trace to `out` (a path, or an open text file the caller closes)."""

    def __init__(self, out: str | IO[str], *, append: bool = False, buffering: int = -1) -> None:
        if isinstance(out, str):
            self._file: IO[str] = open(  # noqa: SIM115 - closed by close()
                out, "a" if append else "w", encoding="utf-8", buffering=buffering
            )
            self._owned = True
        else:
            self._file, self._owned = out, False
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        self._cache: dict[bytes, dict[str, Any]] = {}
        self.records = 0

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._file.close()
        else:
            self._file.flush()

    def flush(self) -> None:
        """Hand what is buffered to the OS (a real process calls this now and then)."""
        self._file.flush()

    def write(self, record: dict[str, Any]) -> None:
        self.records += 1
        self._file.write(self._dumps(record) + "\n")

    def describe(self, data: bytes) -> dict[str, Any]:
        d = self._cache.get(data)
        if d is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            d = self._cache[data] = describe(data)
        return d

    # -- records --------------------------------------------------------------------------

    def header(self, scenario: str, seed: int, n: int, f: int, byzantine: list[int], clients: list[str],
               broken: str = "") -> None:
        rec: dict[str, Any] = {"type": "header", "version": VERSION, "scenario": scenario, "seed": seed,
                               "n": n, "f": f, "byzantine": byzantine, "clients": clients, "mode": "sim"}
        if broken:
            rec["broken"] = broken
        self.write(rec)

    def header_real(self, node: Any, n: int, f: int, byzantine: list[int], clients: list[str],
                    origin: float, **extra: Any) -> None:
        """The first line of one real process's trace (docs/formats.md, "Traces of real
        processes"): `node` is a replica id or a name ("driver"), `origin` the Unix ms the
        process started at; `extra` (pid, behaviour, scenario, seed, ...) as given."""
        self.write({"type": "header", "version": VERSION, "mode": "real", "node": node, "n": n, "f": f,
                    "byzantine": byzantine, "clients": clients, "origin": origin, **extra})

    def start(self, t: float, rid: int, pid: int, view: int, last_executed: int,
              behaviour: str | None = None) -> None:
        """A replica process started (first or again, after recovering from its store);
        `behaviour` names what it runs when it was started as a Byzantine replica (a
        restart may change that: `pbft demo` restarts a correct replica as a liar)."""
        rec: dict[str, Any] = {"t": t, "type": "start", "replica": rid, "pid": pid, "view": view,
                               "last_executed": last_executed}
        if behaviour:
            rec["behaviour"] = behaviour
        self.write(rec)

    def send(self, t: float, src: Any, dst: Any, data: bytes, lie: str | None = None,
             honest: dict[str, Any] | None = None) -> dict[str, Any]:
        d = self.describe(data)
        rec = {"t": t, "type": "send", "from": src, "to": dst, **d, "size": len(data)}
        if lie is not None:
            rec["lie"] = lie
            if honest is not None:
                rec["honest"] = honest["id"]
                if "digest" in honest:
                    rec["honest_digest"] = honest["digest"]
        self.write(rec)
        return d

    def fate(self, t: float, src: Any, dst: Any, d: dict[str, Any], fate: Any, reason: str, times: list[int]) -> None:
        """What the network did to a message just sent (nothing recorded when it passes
        with the base latency only)."""
        if not times:
            self.write({"t": t, "type": "drop", "from": src, "to": dst, "kind": d["kind"], "id": d["id"],
                        "reason": reason, "fault": fate.dropped_by})
            return
        if fate.delay:
            self.write({"t": t, "type": "delay", "from": src, "to": dst, "kind": d["kind"], "id": d["id"],
                        "ms": fate.delay, "reordered": fate.reordered, "faults": list(fate.acted)})
        if len(times) > 1:
            self.write({"t": t, "type": "duplicate", "from": src, "to": dst, "kind": d["kind"], "id": d["id"],
                        "copies": len(times), "arrive": times})

    def withhold(self, t: float, src: Any, dst: Any, data: bytes) -> None:
        """A Byzantine node's honest core sent `data` to `dst` in this step and its
        behaviour did not (it dropped it, or holds it to send later)."""
        d = self.describe(data)
        rec = {"t": t, "type": "withhold", "from": src, "to": dst, "kind": d["kind"], "id": d["id"]}
        for k in ("view", "seq", "digest"):
            if k in d:
                rec[k] = d[k]
        self.write(rec)

    def deliver(self, t: float, src: Any, dst: Any, data: bytes) -> None:
        d = self.describe(data)
        self.write({"t": t, "type": "deliver", "from": src, "to": dst, "kind": d["kind"], "id": d["id"]})

    def crashed_drop(self, t: float, src: Any, dst: Any, data: bytes) -> None:
        d = self.describe(data)
        self.write({"t": t, "type": "drop", "from": src, "to": dst, "kind": d["kind"], "id": d["id"],
                    "reason": "crashed"})

    def notes(self, t: float, rid: int, correct: bool, actions: Iterable) -> None:
        for a in actions:
            name = _NOTES.get(type(a))
            if name is None:
                continue
            rec: dict[str, Any] = {"t": t, "type": name, "replica": rid}
            if not correct:
                rec["faulty"] = True
            if name == "rejected":
                rec["reason"] = a.reason.value
                rec["peer"] = a.peer
                if a.detail:
                    rec["detail"] = a.detail
            elif name == "evidence":
                rec["culprit"], rec["kind"] = a.culprit, a.kind
            elif name == "view-change-started":
                rec["view"] = a.view
            elif name == "view-installed":
                rec["view"], rec["primary"] = a.view, a.primary
            elif name in ("checkpoint-stable", "state-transfer-started", "state-installed"):
                rec["seq"], rec["digest"] = a.seq, a.digest.hex()[:8]
            else:
                rec["view"], rec["seq"], rec["digest"] = a.view, a.seq, a.digest.hex()[:8]
                if name == "executed":
                    rec["requests"] = [[r.client, r.timestamp] for r in a.requests]
            self.write(rec)

    def submit(self, t: float, client: str, ts: int, op: bytes, read_only: bool) -> None:
        # op_hex: the whole operation, for exports of the history (pbft.trace.export)
        self.write({"t": t, "type": "submit", "client": client, "timestamp": ts, "op": summary(op),
                    "read_only": read_only, "op_hex": op.hex()})

    def complete(self, t: float, client: str, ts: int, result: bytes | str, since: float | None) -> None:
        """`result`: the reply's bytes (summarised), or already a text (a real client's)."""
        rec: dict[str, Any] = {"t": t, "type": "complete", "client": client, "timestamp": ts,
                               "result": result if isinstance(result, str) else summary(result)}
        if not isinstance(result, str):
            rec["result_hex"] = result.hex()  # the whole result, for exports of the history
        if since is not None:
            rec["latency"] = round(t - since, 3)  # an int stays an int (the simulator's)
        self.write(rec)

    def crash(self, t: float, rid: int) -> None:
        self.write({"t": t, "type": "crash", "replica": rid})

    def restart(self, t: float, rid: int, amnesia: bool) -> None:
        self.write({"t": t, "type": "restart", "replica": rid, "amnesia": amnesia})

    def violation(self, t: float, check: str, detail: str) -> None:
        self.write({"t": t, "type": "violation", "check": check, "detail": detail})

    def end(self, t: float, result: Any) -> None:
        self.write({"t": t, "type": "end", "verdict": result.verdict, "violations": len(result.violations),
                    "requests_completed": result.requests_completed, "requests_total": result.requests_total,
                    "view_changes": result.view_changes, "delivered": result.delivered,
                    "dropped": result.dropped, "trace_digest": result.trace_digest,
                    **_figures(result)})


def _figures(result: Any) -> dict[str, Any]:
    """What every check of the oracle looked at and found (as `scenario run --json` gives
    them): `checks`, `latency`, `resources`, `faulty`; absent where the result has none."""
    from dataclasses import asdict

    out: dict[str, Any] = {}
    if getattr(result, "checks", None):
        out["checks"] = dict(result.checks)
    if getattr(result, "latency", None) is not None:
        out["latency"] = asdict(result.latency)
    if getattr(result, "resources", None):
        out["resources"] = {name: asdict(p) for name, p in result.resources.items()}
    if getattr(result, "faulty", None):
        out["faulty"] = {str(node): asdict(f) for node, f in result.faulty.items()}
    return out


def watch_honest(node: Any) -> Lies | None:
    """Have the honest core under a Byzantine node's behaviour (and rules) hand a copy of
    each step's actions to a `Lies`, so a trace (or the simulator's per-node figures) can
    mark what the behaviour changed: the simulator's and the real replica process's."""
    from ..protocol.ready import Ready
    from ..protocol.replica import Replica

    core = node
    while core is not None and not isinstance(core, Replica):
        core = getattr(core, "core", None)
    if core is None:
        return None
    lies = Lies()
    honest_step = core.step

    def step(event: Any) -> Ready:
        ready = honest_step(event)
        lies.step.extend(ready.actions if isinstance(ready, Ready) else ready)
        return ready

    core.step = step
    return lies


class TraceError(ValueError):
    """A file that is not a trace this version reads (one sentence)."""


# -- reading ----------------------------------------------------------------------------------
#
# Every record is checked as it is read against what `TraceWriter` writes (the table of
# docs/formats.md), so that what reads a trace (the exports, the viewer, the merge) gets
# only well-formed records: a known record type with a field missing or of the wrong type
# is refused, naming the line and the field. Fields a record type does not know, and record
# types this version does not know, are let through (the writer may grow; readers skip
# them), but every record other than the header must have a time. A field that is
# optional (what the writer leaves out when it has nothing to say) may also be null.

MAX_N = 3 * MAX_F + 1
"""The most replicas a trace may name: n = 3f + 1 with f at most the protocol's MAX_F (33);
replica ids are 0 to MAX_N - 1 (a reconfigured run may name more than its header's n)."""
MAX_TRACE_CLIENTS = 4096
"""The most clients a header may list (the simulator's runs have at most 64; a real cluster
file may name more)."""
MAX_T = 1e15
"""The latest time a record may have, in ms (virtual, or Unix ms: the year 33658)."""
MAX_COPIES = 1024
"""The most copies a `duplicate` record may say the network made of one message."""
_U64 = 1 << 64


def _show(v: Any) -> str:
    """A value as it stands in the file, cut short."""
    try:
        text = json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _isint(v: Any) -> bool:
    return type(v) is int and -_U64 < v < _U64


def _isnum(v: Any) -> bool:
    return type(v) in (int, float) and -_U64 < v < _U64 and v == v


def _isreplica(v: Any) -> bool:
    return type(v) is int and 0 <= v < MAX_N


def _isnode(v: Any) -> bool:
    return _isreplica(v) or (type(v) is str and v != "")


_CHECKS: dict[str, tuple[Any, str]] = {
    "int": (_isint, "an integer"),
    "nat": (lambda v: _isint(v) and v >= 0, "a non-negative integer"),
    "num": (_isnum, "a finite number"),
    "str": (lambda v: type(v) is str, "a string"),
    "bool": (lambda v: type(v) is bool, "true or false"),
    "replica": (_isreplica, f"a replica id (0 to {MAX_N - 1})"),
    "node": (_isnode, "a replica id or a client name"),
    "client": (lambda v: type(v) is str and v != "", "a client name"),
    "signer": (lambda v: _isint(v) or type(v) is str, "a replica id or a client name"),
    "list[int]": (lambda v: type(v) is list and all(_isint(x) for x in v), "a list of integers"),
    "list[num]": (lambda v: type(v) is list and len(v) <= MAX_COPIES and all(_isnum(x) for x in v),
                  "a list of times"),
    "requests": (lambda v: type(v) is list and all(
        type(r) is list and len(r) == 2 and type(r[0]) is str and _isint(r[1]) for r in v),
        "a list of [client, timestamp] pairs"),
    "copies": (lambda v: type(v) is int and 1 <= v <= MAX_COPIES, f"a number of copies (1 to {MAX_COPIES})"),
    "object": (lambda v: type(v) is dict, "an object"),
    "byzantine": (lambda v: type(v) is list and len(v) <= MAX_N and all(_isreplica(x) for x in v),
                  f"a list of replica ids (0 to {MAX_N - 1})"),
    "clients": (lambda v: type(v) is list and len(v) <= MAX_TRACE_CLIENTS
                and all(type(x) is str and x != "" for x in v),
                f"a list of at most {MAX_TRACE_CLIENTS} client names"),
    "n": (lambda v: type(v) is int and 1 <= v <= MAX_N, f"a number of replicas (1 to {MAX_N})"),
    "f": (lambda v: type(v) is int and 0 <= v <= (MAX_N - 1) // 3, f"a number of faults (0 to {(MAX_N - 1) // 3})"),
    "mode": (lambda v: v in ("sim", "real"), '"sim" or "real"'),
}

_MESSAGE = {"from": "node", "to": "node", "kind": "str", "id": "str"}
_DESCRIBED = {"view": "int?", "seq": "int?", "digest": "str?", "client": "signer?", "timestamp": "int?"}
_SLOT = {"replica": "replica", "view": "int", "seq": "int", "digest": "str", "faulty": "bool?"}
_SEQ = {"replica": "replica", "seq": "int", "digest": "str", "faulty": "bool?"}

_FIELDS: dict[str, dict[str, str]] = {
    # type -> field -> check; "?" at the end: the field may be absent (or, for a message's
    # description, null: what the message carried could not be read).
    "header": {"n": "n", "f": "f", "byzantine": "byzantine", "clients": "clients", "mode": "mode",
               "scenario": "str?", "seed": "int?", "broken": "str?", "node": "node?", "origin": "num?",
               "host": "str?", "pid": "int?", "behaviour": "str?", "twin": "bool?", "clamped": "nat?",
               "clock_reference": "str?"},
    "send": {**_MESSAGE, "size": "nat?", **_DESCRIBED, "lie": "str?", "honest": "str?", "honest_digest": "str?"},
    "withhold": {**_MESSAGE, "view": "int?", "seq": "int?", "digest": "str?"},
    "drop": {**_MESSAGE, "reason": "str?", "fault": "int?"},
    "delay": {**_MESSAGE, "ms": "num?", "reordered": "bool?", "faults": "list[int]?"},
    "duplicate": {**_MESSAGE, "copies": "copies?", "arrive": "list[num]?"},
    "deliver": _MESSAGE,
    "prepared": _SLOT,
    "committed": _SLOT,
    "executed": {**_SLOT, "requests": "requests?"},
    "checkpoint-stable": _SEQ,
    "state-transfer-started": _SEQ,
    "state-installed": _SEQ,
    "view-change-started": {"replica": "replica", "view": "int", "faulty": "bool?"},
    "view-installed": {"replica": "replica", "view": "int", "primary": "replica", "faulty": "bool?"},
    "rejected": {"replica": "replica", "reason": "str", "peer": "node?", "detail": "str?", "faulty": "bool?"},
    "evidence": {"replica": "replica", "culprit": "replica", "kind": "str", "faulty": "bool?"},
    "submit": {"client": "client", "timestamp": "int", "op": "str", "read_only": "bool?", "op_hex": "str?"},
    "complete": {"client": "client", "timestamp": "int", "result": "str", "result_hex": "str?", "latency": "num?"},
    "crash": {"replica": "replica"},
    "restart": {"replica": "replica", "amnesia": "bool?"},
    "start": {"replica": "replica", "pid": "int?", "view": "int?", "last_executed": "int?", "behaviour": "str?"},
    "violation": {"check": "str", "detail": "str"},
    "end": {"verdict": "str?", "violations": "nat?", "requests_completed": "nat?", "requests_total": "nat?",
            "view_changes": "nat?", "delivered": "nat?", "dropped": "nat?", "trace_digest": "str?",
            "wall_ms": "num?", "checks": "object?", "latency": "object?", "resources": "object?",
            "faulty": "object?"},
}
_COMPILED = {
    kind: tuple((name, spec.endswith("?"), *_CHECKS[spec.rstrip("?")]) for name, spec in fields.items())
    for kind, fields in _FIELDS.items()
}


def _problem(rec: dict[str, Any]) -> str | None:
    """What is wrong with one record (a dict with a string `type`), or None."""
    kind = rec["type"]
    what = "the header" if kind == "header" else f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind!r} record"
    if kind != "header":
        t = rec.get("t")
        if not (type(t) in (int, float) and 0 <= t <= MAX_T):
            if "t" not in rec:
                return f"{what} without a numeric 't'"
            return f"{what} has 't' {_show(t)}, not a time in ms (a number from 0 to {MAX_T:.0e})"
    for name, optional, ok, desc in _COMPILED.get(kind, ()):
        if name not in rec:
            if optional:
                continue
            return f"{what} has no {name!r}"
        v = rec[name]
        if not (ok(v) or (optional and v is None and name not in ("byzantine", "clients"))):
            return f"{what} has {name!r} {_show(v)}, not {desc}"
    return None


class _NotJSON(ValueError):
    """NaN or Infinity: Python's json reads them, JSON has no such numbers."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(name)


_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def read_trace(path: str) -> Iterator[dict[str, Any]]:
    """The records of the trace at `path`, header first; TraceError (one sentence) for a
    missing or unreadable file, a line that is not UTF-8 or not a JSON object with a
    `type`, a header missing or of another version, or a record of a known type with a
    field missing or of the wrong type (the table of docs/formats.md; records of types
    this version does not know are passed on, but must have a time `t`). A file may hold
    several runs one after the other (`pbft scenario run A B --trace OUT`), each starting
    with its own header: every header is checked (`split_runs` cuts them apart)."""
    from ..files import Unreadable, check_regular

    try:
        check_regular(os.fspath(path))  # a pipe or a device could block for ever
    except Unreadable as exc:
        raise TraceError(f"{path} {exc}; give a trace file.") from None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except (OSError, ValueError) as exc:
        raise TraceError(f"{path}: cannot read the trace: {getattr(exc, 'strerror', None) or exc}.") from None
    seen = False
    with f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except OSError as exc:
                raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}.") from None
            if not raw:
                break
            lineno += 1
            seen = True
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TraceError(f"{path} line {lineno}: not UTF-8 text; is this a trace file?") from None
            try:
                rec = _decode(line)
            except _NotJSON as exc:
                raise TraceError(f"{path} line {lineno}: {exc} is not a number JSON allows; "
                                 "is this a trace file?") from None
            except RecursionError:
                raise TraceError(f"{path} line {lineno}: nested too deeply to be a trace record.") from None
            except ValueError:
                raise TraceError(f"{path} line {lineno}: not a JSON object; is this a trace file?") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
                raise TraceError(f"{path} line {lineno}: a record without a 'type'; is this a trace file?")
            if lineno == 1 and rec["type"] != "header":
                raise TraceError(f"{path}: the first line is not a trace header; is this a trace file?")
            if rec["type"] == "header" and (type(rec.get("version")) is not int or rec["version"] != VERSION):
                raise TraceError(
                    f"{path} line {lineno}: trace version {_show(rec.get('version'))}, "
                    f"this pbft reads version {VERSION}."
                )
            problem = _problem(rec)
            if problem is not None:
                raise TraceError(f"{path} line {lineno}: {problem}.")
            yield rec
    if not seen:
        raise TraceError(f"{path}: empty file, not a trace.")


def split_runs(records: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The runs of a trace, each starting with its header (records before the first
    header, which `read_trace` refuses, are dropped)."""
    runs: list[list[dict[str, Any]]] = []
    for rec in records:
        if rec.get("type") == "header":
            runs.append([rec])
        elif runs:
            runs[-1].append(rec)
    return runs
