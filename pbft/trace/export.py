"""Exports of a trace for tools people already use (docs/formats.md, "Exports of a trace").

- `shiviz`: the ShiViz log format, one event per host (replica `r0`, client `c0`) with a
  vector clock. A send ticks its sender's clock; a delivery merges the clock of the send
  it delivers (matched by sender, receiver and message id, first sent first matched:
  every send so matched happened before the delivery, so the clocks stay causal even
  when the network reordered two copies of the same bytes) and ticks the receiver's.
  Protocol events, client operations, drops, crashes and restarts are local events; the
  oracle's violation is an event of a host of its own, `oracle`.
- `mermaid`: a Mermaid `sequenceDiagram` of a time window: an arrow per message sent,
  lies drawn as crosses labelled FORGED / MUTATED with what they replace, drops as dotted
  crosses, equivocations (one sender, one kind and slot, different digests to different
  receivers) and evidence as notes, protocol events as notes, the violation as a note
  across every lane; cut after `limit` messages with a note saying how many were left.
- `porcupine` / `knossos`: the client operations as a history for a key-value model,
  Porcupine's operations in JSON, or a Jepsen/Knossos EDN history (one map per line).

Everything here reads a trace (`pbft.sim.trace.read_trace`) and writes text; nothing
runs a simulation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..protocol import codec
from ..sim.trace import read_trace

SHIVIZ_REGEX = r"(?<host>\S*) (?<clock>{.*})\n(?<event>.*)"
"""The parsing regular expression ShiViz is given (the first line of the log)."""

ORACLE_HOST = "oracle"

_UNSAFE = re.compile(r"[^\w.-]")

VOTES = frozenset({"PRE-PREPARE", "PREPARE", "COMMIT", "CHECKPOINT"})
"""The kinds whose (view, seq) names one digest: two digests from one sender is an
equivocation (a STATE-CHUNK's digest differs per chunk, honestly)."""

LOCAL_EVENTS = frozenset({
    "prepared", "committed", "executed", "checkpoint-stable", "view-change-started", "view-installed",
    "state-transfer-started", "state-installed", "rejected", "evidence", "submit", "complete", "crash",
    "restart", "drop", "start",
})


class HistoryFormat(Enum):
    PORCUPINE = "porcupine"
    KNOSSOS = "knossos"


def host(node: Any) -> str:
    """A lane's name: replicas `r0`, clients as they are named (`c0`), anything but
    letters, digits, `_`, `.` and `-` made `_` (ShiViz hosts and Mermaid participants are
    single words)."""
    if isinstance(node, int):
        return f"r{node}"
    return _UNSAFE.sub("_", str(node)) or "_"


def message_label(rec: dict[str, Any]) -> str:
    """`PREPARE v0 n3 d=abcd1234` (what the record says of the message)."""
    parts = [rec.get("kind") or "garbage"]
    if "view" in rec:
        parts.append(f"v{rec['view']}")
    if "seq" in rec:
        parts.append(f"n{rec['seq']}")
    if "client" in rec and "timestamp" in rec:
        parts.append(f"{rec['client']} t={rec['timestamp']}")
    if rec.get("digest"):
        parts.append(f"d={rec['digest']}")
    return " ".join(parts)


def event_text(rec: dict[str, Any]) -> str:
    """A one-line description of a protocol event, client operation or fault record."""
    kind = rec["type"]
    if kind == "rejected":
        text = f"rejected from {host(rec['peer']) if rec.get('peer') is not None else 'unauthenticated'}: {rec['reason']}"
        return text + (f" ({rec['detail']})" if rec.get("detail") else "")
    if kind == "evidence":
        return f"evidence against r{rec['culprit']}: {rec['kind']}"
    if kind in ("view-change-started", "view-installed"):
        return f"{kind} v{rec['view']}" + (f" (primary r{rec['primary']})" if "primary" in rec else "")
    if kind in ("checkpoint-stable", "state-transfer-started", "state-installed"):
        return f"{kind} n{rec['seq']} d={rec['digest']}"
    if kind in ("prepared", "committed", "executed"):
        return f"{kind} v{rec['view']} n{rec['seq']} d={rec['digest']}"
    if kind == "submit":
        return f"submit t={rec['timestamp']} {rec['op']}" + (" (read-only)" if rec.get("read_only") else "")
    if kind == "complete":
        return f"complete t={rec['timestamp']} -> {rec['result']}"
    if kind == "crash":
        return "crash"
    if kind == "restart":
        return "restart" + (" from nothing (amnesia)" if rec.get("amnesia") else "")
    if kind == "start":  # a real replica process starting (recovered from its data directory)
        return f"start (pid {rec.get('pid')}, view {rec.get('view')}, executed {rec.get('last_executed')})"
    if kind == "drop":
        return f"{rec['kind'] or 'message'} {rec['id']} to {host(rec['to'])} dropped ({rec.get('reason') or 'network'})"
    if kind == "violation":
        return f"VIOLATION {rec['check']}: {rec['detail']}"
    return kind


def _mermaid_where(rec: dict[str, Any]) -> str:
    """`_where`, as a Mermaid participant."""
    if rec["type"] in ("submit", "complete"):
        return _mermaid_id(rec["client"])
    return _mermaid_id(rec["from"] if rec["type"] == "drop" else rec["replica"])


def _where(rec: dict[str, Any]) -> str:
    """The lane a local event happens on."""
    if rec["type"] in ("submit", "complete"):
        return host(rec["client"])
    if rec["type"] == "drop":
        return host(rec["from"])
    return host(rec["replica"])


# -- ShiViz ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShivizEvent:
    host: str
    clock: dict[str, int]
    text: str


def shiviz_events(records: Iterable[dict[str, Any]]) -> Iterator[ShivizEvent]:
    """The trace's events with vector clocks (see the module docstring)."""
    clocks: dict[str, dict[str, int]] = {}
    sent: dict[tuple[str, str, str], deque[dict[str, int]]] = {}
    last: dict[tuple[str, str, str], dict[str, int]] = {}

    def tick(h: str) -> dict[str, int]:
        clock = clocks.setdefault(h, {})
        clock[h] = clock.get(h, 0) + 1
        return dict(clock)

    for rec in records:
        kind = rec["type"]
        if kind == "send":
            src, dst = host(rec["from"]), host(rec["to"])
            clock = tick(src)
            sent.setdefault((src, dst, rec["id"]), deque()).append(clock)
            text = f"send {message_label(rec)} to {dst} [{rec['id']}]"
            if rec.get("lie"):
                text += f" {rec['lie'].upper()}" + (f", replaces {rec['honest']}" if rec.get("honest") else "")
            yield ShivizEvent(src, clock, text)
        elif kind == "deliver":
            src, dst = host(rec["from"]), host(rec["to"])
            key = (src, dst, rec["id"])
            queue = sent.get(key)
            theirs = queue.popleft() if queue else last.get(key, {})
            if queue is not None and not queue:
                del sent[key]
            last[key] = theirs  # a duplicated copy delivered again merges the same send
            mine = clocks.setdefault(dst, {})
            for h, c in theirs.items():
                if c > mine.get(h, 0):
                    mine[h] = c
            yield ShivizEvent(dst, tick(dst), f"deliver {message_label(rec)} from {src} [{rec['id']}]")
        elif kind in LOCAL_EVENTS:
            h = _where(rec)
            yield ShivizEvent(h, tick(h), event_text(rec))
        elif kind == "violation":
            yield ShivizEvent(ORACLE_HOST, tick(ORACLE_HOST), event_text(rec))


def shiviz_lines(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The ShiViz log: the regex line, then two lines per event."""
    yield SHIVIZ_REGEX
    for ev in shiviz_events(records):
        yield f"{ev.host} {json.dumps(ev.clock, separators=(', ', ': '))}"
        # One line per event: ShiViz's regex reads no further than a line break of any
        # kind (`\r`, U+2028, U+2029 too), and the rest would be taken for events.
        yield " ".join(ev.text.splitlines())


# -- Mermaid --------------------------------------------------------------------------------


def _mermaid_text(text: object) -> str:
    # `;` ends a statement and `#` starts an entity code in Mermaid, `%%` a directive or
    # comment, and every line break (Mermaid reads `\r` as one) a new statement: a label
    # from a trace stays one literal line.
    flat = " ".join(str(text).splitlines())
    return flat.replace(";", ",").replace("#", "no. ").replace("%%", "%")


_MERMAID_WORDS = (
    "participant", "actor", "as", "loop", "alt", "else", "opt", "par", "and", "rect", "end",
    "note", "activate", "deactivate", "critical", "break", "box", "autonumber", "link",
    "create", "destroy", "title", "left", "right", "over",
)


def _mermaid_id(node: Any) -> str:
    """A lane's Mermaid participant: `r0` for a replica, a client's name if it is a plain
    word (`c0`). Any other name (one with a character Mermaid reads as syntax, such as the
    `-` of an arrow, or one starting with a keyword such as `end` or `opt`) becomes `c_`,
    the name with every other character made `_`, and a short hash of it, so that two
    names never share a lane."""
    if isinstance(node, int):
        return f"r{node}"
    name = str(node)
    if (re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) and not name.lower().startswith(_MERMAID_WORDS)
            and not name.startswith("c_") and not re.fullmatch(r"r[0-9]+", name)):  # not the other forms
        return name
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"c_{safe}_{hashlib.blake2b(name.encode('utf-8', 'backslashreplace'), digest_size=3).hexdigest()}"


@dataclass(frozen=True, slots=True)
class Window:
    """Records from `start` to `end` (ms: virtual, or a merged real trace's since its
    origin), at most `limit` messages."""

    start: float | None = None
    end: float | None = None
    limit: int = 200

    def holds(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t <= self.end)


def mermaid_lines(records: Iterable[dict[str, Any]], window: Window = Window()) -> Iterator[str]:
    """A Mermaid `sequenceDiagram` of the messages and events in `window`."""
    it = iter(records)
    header = next(it)
    n = int(header.get("n", 0))
    byzantine = set(header.get("byzantine", []))
    clients = [str(c) for c in header.get("clients", [])]
    lanes = [f"r{i}" for i in range(n)] + [_mermaid_id(c) for c in clients]
    yield "sequenceDiagram"
    for i in range(n):
        yield f"    participant r{i} as replica {i}" + (" (Byzantine)" if i in byzantine else "")
    for c in clients:
        yield f"    participant {_mermaid_id(c)} as client {_mermaid_text(c)}"
    span = f"{lanes[0]},{lanes[-1]}" if len(lanes) > 1 else (lanes[0] if lanes else ORACLE_HOST)
    shown = left = 0
    # (sender, kind, view, seq) -> {digest: first receiver}: equivocations in the window
    slots: dict[tuple, dict[str, str]] = {}
    pending_drop: dict[tuple[Any, Any, str], int] = {}
    out: list[str] = []
    violations: list[str] = []
    for rec in it:
        kind = rec["type"]
        t = rec.get("t", 0)
        if kind == "violation" and window.holds(t):
            violations.append(f"    Note over {span}: {_mermaid_text(event_text(rec))} (at {t} ms)")
            continue
        if not window.holds(t):
            continue
        if kind == "send":
            if shown >= window.limit:
                left += 1
                continue
            shown += 1
            src, dst = _mermaid_id(rec["from"]), _mermaid_id(rec["to"])
            label = message_label(rec)
            lie = rec.get("lie")
            if lie:
                arrow = "-x"
                label = f"{lie.upper()} {label}"
            else:
                arrow = "->>"
            out.append(f"    {src}{arrow}{dst}: {_mermaid_text(label)}")
            pending_drop[(rec["from"], rec["to"], rec["id"])] = len(out) - 1
            if lie == "mutated" and rec.get("honest"):
                replaced = f"{rec['honest']}" + (f" d={rec['honest_digest']}" if rec.get("honest_digest") else "")
                out.append(f"    Note over {src}: mutated, replaces {_mermaid_text(replaced)}")
            elif lie == "forged":
                out.append(f"    Note over {src}: forged (its honest core sent nothing like it)")
            if rec["kind"] in VOTES and rec.get("digest") and "seq" in rec:
                slot = (src, rec["kind"], rec.get("view"), rec["seq"])
                digests = slots.setdefault(slot, {})
                if rec["digest"] not in digests:
                    digests[rec["digest"]] = dst
                    if len(digests) == 2:
                        (d1, to1), (d2, to2) = digests.items()
                        out.append(
                            f"    Note over {src}: "
                            + _mermaid_text(f"EQUIVOCATION {rec['kind']} v{rec.get('view')} n{rec['seq']}: "
                                            f"d={d1} to {to1}, d={d2} to {to2}")
                        )
        elif kind == "drop":
            at = pending_drop.pop((rec["from"], rec["to"], rec["id"]), None)
            if at is not None and "-x" not in out[at].split(":")[0]:
                head, label = out[at].split(": ", 1)
                src, dst = head.strip().split("->>")
                reason = rec.get("reason") or "network"
                out[at] = f"    {src}--x{dst}: {_mermaid_text(label)} (dropped: {_mermaid_text(reason)})"
        elif kind in LOCAL_EVENTS and kind != "drop":
            if shown >= window.limit:
                continue  # the diagram stops at its last message
            note = event_text(rec)
            if kind == "evidence":
                note = "EVIDENCE " + note
            out.append(f"    Note over {_mermaid_where(rec)}: {_mermaid_text(note)}")
    yield from out
    if left:
        yield f"    Note over {span}: {left} more messages left out (--max {window.limit})"
    yield from violations


# -- client histories -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: called at trace position `call` (virtual ms `call_ms`),
    returned at `ret` (None: never completed)."""

    client: str
    timestamp: int
    f: str  # put, get, delete, or the raw operation's name
    key: str | None
    value: str | None
    call: int
    call_ms: float
    ret: int | None = None
    ret_ms: float | None = None
    result: Any = None  # decoded: True/False, a value string, None, or {"error": text}


def _text(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            s = v.decode("ascii")
            return s if s.isprintable() else "0x" + v.hex()
        except UnicodeDecodeError:
            return "0x" + v.hex()
    if isinstance(v, dict):
        return {str(_text(k)): _text(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_text(x) for x in v]
    return v


REAL_RESULTS = {"ok": True, "(not found)": None}
"""What a real run's driver writes as a `complete` record's `result` (it has the text,
not the bytes): `ok` for a write, `(not found)` for a missing key, else the value."""


def _decode(rec: dict[str, Any], full: str, short: str) -> Any:
    """The record's full value (`op_hex`/`result_hex`) decoded, else its summary."""
    raw = rec.get(full)
    if raw is not None:
        try:
            return codec.decode(bytes.fromhex(raw))
        except (ValueError, codec.CodecError):
            return None
    text = rec.get(short)
    return REAL_RESULTS.get(text, text) if short == "result" else text


def operations(records: Iterable[dict[str, Any]]) -> list[Operation]:
    """Every client operation of the trace in call order, each with its completion."""
    ops: list[Operation] = []
    open_: dict[tuple[str, int], int] = {}
    for index, rec in enumerate(records):
        kind = rec["type"]
        if kind == "submit":
            op = _decode(rec, "op_hex", "op")
            if isinstance(op, str):  # a trace without op_hex: its summary, "put k v"
                op = op.split(" ", 2)
            f, key, value = "?", None, None
            if isinstance(op, list) and op:
                f = str(_text(op[0]))
                key = _text(op[1]) if len(op) > 1 else None
                value = _text(op[2]) if len(op) > 2 else None
            open_[(rec["client"], rec["timestamp"])] = len(ops)
            ops.append(Operation(str(rec["client"]), rec["timestamp"], f, key, value, index, rec["t"]))
        elif kind == "complete":
            at = open_.pop((rec["client"], rec["timestamp"]), None)
            if at is None:
                continue
            result = _text(_decode(rec, "result_hex", "result"))
            o = ops[at]
            ops[at] = Operation(o.client, o.timestamp, o.f, o.key, o.value, o.call, o.call_ms, index, rec["t"], result)
    return ops


def _client_id(name: str, order: dict[str, int]) -> int:
    return order.setdefault(name, len(order))


def porcupine(ops: list[Operation]) -> list[dict[str, Any]]:
    """Porcupine operations for a key-value model: Input {Op, Key, Value}, Output {Value}
    for a get, {Ok} for a put, {Existed} for a delete, {Error} for a refused operation,
    {Unknown: true} (and Return after everything) for one that never completed."""
    order: dict[str, int] = {}
    end = max((o.ret if o.ret is not None else o.call for o in ops), default=0) + 1
    out = []
    for o in ops:
        inp: dict[str, Any] = {"Op": o.f, "Key": o.key}
        if o.f == "put":
            inp["Value"] = o.value
        if o.ret is None:
            output: dict[str, Any] = {"Unknown": True}
        elif isinstance(o.result, dict) and "error" in o.result:
            output = {"Error": o.result["error"]}
        elif o.f == "get":
            output = {"Value": o.result}
        elif o.f == "delete":
            output = {"Existed": o.result}
        else:
            output = {"Ok": o.result}
        out.append({"ClientId": _client_id(o.client, order), "Input": inp, "Call": o.call, "Output": output,
                    "Return": o.ret if o.ret is not None else end})
    return out


def _edn(v: Any) -> str:
    if v is None:
        return "nil"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + " ".join(_edn(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_edn(k)} {_edn(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))  # an EDN string is a JSON string for what we write


def knossos(ops: list[Operation]) -> Iterator[str]:
    """A Jepsen/Knossos history, one EDN map per line, keys independent (`:value [key v]`):
    a put is a :write of its value, a delete a :write of nil, a get a :read. An operation
    that never completed ends with :info, and its client goes on as a new process (Jepsen's
    rule: a process with an indeterminate operation never invokes again)."""
    order: dict[str, int] = {}
    clients = len({o.client for o in ops}) or 1
    crashed: dict[str, int] = {}  # client -> how many of its operations never completed
    end = max((o.ret if o.ret is not None else o.call for o in ops), default=0) + 1
    end_ms = max((o.ret_ms if o.ret_ms is not None else o.call_ms for o in ops), default=0)
    # (trace position, tie-break, process, type, f, value, virtual ms, error)
    events: list[tuple[int, int, int, str, str, Any, float, str]] = []
    for o in ops:
        process = _client_id(o.client, order) + clients * crashed.get(o.client, 0)
        f = {"put": "write", "delete": "write", "get": "read"}.get(o.f, o.f)
        wrote = o.value if o.f == "put" else None
        events.append((o.call, 0, process, "invoke", f, [o.key, wrote], o.call_ms, ""))
        if o.ret is None:
            crashed[o.client] = crashed.get(o.client, 0) + 1
            events.append((end, o.call, process, "info", f, [o.key, wrote], end_ms, ""))
        elif isinstance(o.result, dict) and "error" in o.result:
            events.append((o.ret, 0, process, "fail", f, [o.key, wrote], o.ret_ms or 0, str(o.result["error"])))
        else:
            value = [o.key, o.result if f == "read" else wrote]
            events.append((o.ret, 0, process, "ok", f, value, o.ret_ms or 0, ""))
    events.sort(key=lambda e: (e[0], e[1]))
    for index, (_, _, process, type_, f, value, t_ms, error) in enumerate(events):
        extra = f", :error {_edn(error)}" if error else ""
        yield (f"{{:process {process}, :type :{type_}, :f :{f}, :value {_edn(value)}, "
               f":time {round(t_ms * 1_000_000)}, :index {index}{extra}}}")


def history_lines(records: Iterable[dict[str, Any]], fmt: HistoryFormat) -> Iterator[str]:
    ops = operations(records)
    if fmt is HistoryFormat.PORCUPINE:
        yield json.dumps(porcupine(ops), indent=1)
    else:
        yield from knossos(ops)


def load(path: str) -> Iterator[dict[str, Any]]:
    """The trace's records (TraceError, one sentence, for a file that is not a trace)."""
    return read_trace(path)
