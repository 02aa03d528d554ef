"""Several real processes' traces made one: `pbft trace merge A.jsonl B.jsonl ... -o OUT.jsonl`.

Theory of operation. Each replica process (`pbft replica --trace FILE`) and the scenario
driver (`pbft scenario run --real --trace`) write their own trace, with `t` in Unix ms
on their own host's clock (docs/formats.md, "Traces of real processes"). Processes on
one host share a clock; on several hosts the clocks are offset from one another, and
sorting by raw `t` could put a message's delivery before its sending.

Clock offsets (`estimate_offsets`). Sources whose headers name the same `host` share a
clock: their offset to one another is 0, exactly, and they are estimated as one (a
source without `host` is a host of its own). A message is named by `id` (sha256 of its
bytes) in its sender's `send` record and its receiver's `deliver` record. For two hosts a and b,
d_ab is the least (deliver t in b) - (send t in a) over the messages a sent to b (each
message's first send against its first delivery: a retransmitted or duplicated message
can only make a difference larger, never smaller, than a real one-way delay plus the
offset), and d_ba likewise. If b's clock is θ ahead of a's and the least one-way delay
is δ both ways, d_ab = δ + θ and d_ba = δ - θ, so θ = (d_ab - d_ba) / 2 (NTP's estimate),
true to within (d_ab + d_ba) / 2 whatever the delays (each is at least 0). The reference
is the host of the source of the lowest replica id; every other host's offset is chained
from it along the pairs with the smallest summed error bound (a host with no message
both ways to an estimated one keeps offset 0, `estimated: false`). Sources whose sender
names collide (a twin's two processes) are not used for estimating.

After correction (t - offset), a delivery still before its message's first send (the
estimate's error) is moved to 1 µs after that send and counted (`clamped` in the
header). Records are then sorted by corrected time (stable: one process's records keep
their order), `t` becomes ms since the earliest corrected record (`origin`, Unix ms, in
the header), and the `end` record, if any, goes last with the counts of delivered and
dropped messages filled in.
"""

from __future__ import annotations

import heapq
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..sim.trace import VERSION, TraceError, read_trace

CLAMP_MS = 0.001
"""How far after its send a clamped delivery is put."""


@dataclass(frozen=True)
class Source:
    """One process's trace: its file, its header and its records (header excluded)."""

    path: str
    header: dict[str, Any]
    records: list[dict[str, Any]] = field(repr=False)
    truncated: bool = False
    """Its last line was half a record (a process killed in the middle of a flush): left out."""

    @property
    def node(self) -> Any:
        return self.header.get("node")


@dataclass(frozen=True)
class Offset:
    """How far a source's clock is ahead of the reference's (ms; subtract it from its
    `t`), within `bound_ms`; `pairs`: messages matched each way on the link it was
    estimated over; not `estimated`: offset 0 assumed."""

    offset_ms: float = 0.0
    bound_ms: float | None = None
    estimated: bool = False
    via: str | None = None
    pairs: int = 0


@dataclass(frozen=True)
class Merged:
    header: dict[str, Any]
    records: list[dict[str, Any]]
    clamped: int


def load(path: str) -> Source:
    """One real process's trace; UsageError (one sentence) for anything else."""
    records: list[dict[str, Any]] = []
    truncated = False
    try:
        for rec in read_trace(path):
            records.append(rec)
    except TraceError as exc:
        if not (records and _half_last_line(path, len(records) + 1)):
            raise UsageError(str(exc)) from None
        truncated = True
    header = records[0]  # read_trace checked every record's fields and that each has a time
    if header.get("mode") != "real":
        raise UsageError(f"{path}: not a real process's trace (mode {header.get('mode')!r}); "
                         "only traces of `pbft replica --trace` and the real scenario driver are merged.")
    if header.get("node") is None:
        raise UsageError(f"{path}: a header naming no process (no 'node': a merged trace?); "
                         "only traces of `pbft replica --trace` and the real scenario driver are merged.")
    for i, rec in enumerate(records[1:], 2):
        if rec["type"] == "header":  # a restarted process appends a `start`, never a header
            raise UsageError(f"{path} line {i}: a second header; a process's trace has one, "
                             "so this is not one process's trace.")
    return Source(path, header, records[1:], truncated)


def _half_last_line(path: str, lineno: int) -> bool:
    """Line `lineno` of `path` is its last and has no newline: half a record."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    return not data.endswith(b"\n") and data.count(b"\n") + 1 == lineno


def _first_times(sources: list[Source], kind: str) -> dict[tuple[Any, Any, Any], tuple[int, float]]:
    """(id, from, to) -> (source index, earliest t) of every `kind` record."""
    out: dict[tuple[Any, Any, Any], tuple[int, float]] = {}
    for i, s in enumerate(sources):
        for r in s.records:
            if r["type"] == kind:
                key = (r.get("id"), _name(r.get("from")), _name(r.get("to")))
                seen = out.get(key)
                if seen is None or r["t"] < seen[1]:
                    out[key] = (i, r["t"])
    return out


def _name(node: Any) -> str:
    return str(node)


def hosts(sources: list[Source]) -> list[int]:
    """Per source, the index of its host group (sources naming one `host` share one)."""
    seen: dict[Any, int] = {}
    out = []
    for i, s in enumerate(sources):
        key = s.header.get("host") or ("#", i)
        out.append(seen.setdefault(key, len(seen)))
    return out


def min_delays(sources: list[Source], group: list[int] | None = None) -> dict[tuple[int, int], tuple[float, int]]:
    """(a, b) -> (d_ab, messages matched): the least deliver-minus-send time of the
    messages host a sent and host b delivered (`group`: each source's host, by default
    every source its own)."""
    group = group if group is not None else list(range(len(sources)))
    owners: dict[str, set[int]] = {}
    for i, s in enumerate(sources):
        for r in s.records:
            if r["type"] == "send":
                owners.setdefault(_name(r.get("from")), set()).add(i)
            elif r["type"] == "deliver":
                owners.setdefault(_name(r.get("to")), set()).add(i)
    ambiguous = {name for name, who in owners.items() if len(who) > 1}
    sends = _first_times(sources, "send")
    out: dict[tuple[int, int], tuple[float, int]] = {}
    for key, (b, t_deliver) in _first_times(sources, "deliver").items():
        sent = sends.get(key)
        if sent is None or key[1] in ambiguous or key[2] in ambiguous:
            continue
        a, t_send = sent
        a, b = group[a], group[b]
        if a == b:
            continue
        d = t_deliver - t_send
        best, count = out.get((a, b), (d, 0))
        out[(a, b)] = (min(best, d), count + 1)
    return out


def reference(sources: list[Source]) -> int:
    """The source of the lowest replica id (else the first)."""
    replicas = [(s.node, i) for i, s in enumerate(sources) if isinstance(s.node, int)]
    return min(replicas)[1] if replicas else 0


def estimate_offsets(sources: list[Source]) -> list[Offset]:
    """Each source's offset against the reference (module docstring): NTP's estimate per
    pair of sources with messages both ways, chained along the smallest error bounds."""
    group = hosts(sources)
    d = min_delays(sources, group)
    ref = group[reference(sources)]
    names = {g: _host_name(sources, group, g) for g in set(group)}
    links: dict[int, list[tuple[float, float, int, int]]] = {}
    for (a, b), (dab, nab) in d.items():
        if (b, a) in d:
            dba, nba = d[(b, a)]
            links.setdefault(a, []).append(((dab + dba) / 2, (dab - dba) / 2, b, min(nab, nba)))
    out: dict[int, Offset] = {ref: Offset(0.0, 0.0, True)}
    queue: list[tuple[float, int]] = [(0.0, ref)]
    while queue:
        bound, a = heapq.heappop(queue)
        if bound > (out[a].bound_ms or 0.0):
            continue
        for beta, theta, b, pairs in links.get(a, []):
            total = bound + beta
            if b not in out or total < (out[b].bound_ms or 0.0):
                out[b] = Offset(out[a].offset_ms + theta, total, True, names[a], pairs)
                heapq.heappush(queue, (total, b))
    return [out.get(group[i], Offset()) for i in range(len(sources))]


def _host_name(sources: list[Source], group: list[int], g: int) -> str:
    i = group.index(g)
    return str(sources[i].header.get("host") or os.path.basename(sources[i].path))


def merge(sources: list[Source]) -> Merged:
    """One trace of `sources` (module docstring); UsageError when they are not traces of
    one cluster."""
    if not sources:
        raise UsageError("nothing to merge: name at least one trace file.")
    first = sources[0]
    for s in sources[1:]:
        for key in ("n", "f"):
            if s.header.get(key) != first.header.get(key):
                raise UsageError(
                    f"{first.path} and {s.path} are traces of different clusters "
                    f"({key} = {first.header.get(key)!r} and {s.header.get(key)!r})."
                )
    offsets = estimate_offsets(sources)
    records: list[dict[str, Any]] = []
    end: dict[str, Any] | None = None
    for s, off in zip(sources, offsets, strict=True):
        for r in s.records:
            r = dict(r)
            r["t"] = r["t"] - off.offset_ms
            if r["type"] == "end":
                end = r  # the last one wins (one driver per run)
                continue
            records.append(r)
    clamped = _clamp(records)
    records.sort(key=lambda r: r["t"])
    origin = records[0]["t"] if records else (end["t"] if end else 0.0)
    if end is not None:
        end["t"] = max(end["t"], records[-1]["t"] if records else end["t"])
        end.setdefault("delivered", sum(1 for r in records if r["type"] == "deliver"))
        end.setdefault("dropped", sum(1 for r in records if r["type"] == "drop"))
        records.append(end)
    for r in records:
        r["t"] = round(r["t"] - origin, 3)
    header = _header(sources, offsets, origin, clamped)
    return Merged(header, records, clamped)


def _clamp(records: list[dict[str, Any]]) -> int:
    """Move every delivery that precedes its message's first send to just after it."""
    sends: dict[tuple[Any, str, str], float] = {}
    for r in records:
        if r["type"] == "send":
            key = (r.get("id"), _name(r.get("from")), _name(r.get("to")))
            if key not in sends or r["t"] < sends[key]:
                sends[key] = r["t"]
    clamped = 0
    for r in records:
        if r["type"] == "deliver":
            sent = sends.get((r.get("id"), _name(r.get("from")), _name(r.get("to"))))
            if sent is not None and r["t"] < sent:
                r["t"] = sent + CLAMP_MS
                clamped += 1
    return clamped


def _header(sources: list[Source], offsets: list[Offset], origin: float, clamped: int) -> dict[str, Any]:
    first = sources[0].header
    # Byzantine: what the headers say, and any replica a (re)start says runs a behaviour.
    byzantine = sorted({b for s in sources for b in s.header.get("byzantine", [])} | {
        r["replica"] for s in sources for r in s.records
        if r.get("type") == "start" and r.get("behaviour") and isinstance(r.get("replica"), int)
    })
    clients: list[str] = []
    for s in sources:
        clients += [c for c in s.header.get("clients", []) if c not in clients]
    named = next((s.header for s in sources if "scenario" in s.header), {})
    ref = reference(sources)
    head: dict[str, Any] = {
        "type": "header", "version": VERSION, "scenario": named.get("scenario", ""),
        "seed": named.get("seed"), "n": first.get("n"), "f": first.get("f"), "byzantine": byzantine,
        "clients": clients, "mode": "real", "origin": round(origin, 3),
        "clock_reference": os.path.basename(sources[ref].path),
        "clock_offsets": [
            {"source": os.path.basename(s.path), "node": s.node, "host": s.header.get("host"), "offset_ms": round(o.offset_ms, 3),
             "bound_ms": None if o.bound_ms is None else round(o.bound_ms, 3), "estimated": o.estimated,
             **({"via": o.via, "pairs": o.pairs} if o.via else {})}
            for s, o in zip(sources, offsets, strict=True)
        ],
        "clamped": clamped,
    }
    cut = [os.path.basename(s.path) for s in sources if s.truncated]
    if cut:
        head["truncated"] = cut
    if "broken" in named:
        head["broken"] = named["broken"]
    return head


def write(merged: Merged, out: str) -> None:
    """The merged trace as JSON lines at `out`; UsageError if it cannot be written."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    try:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(dumps(merged.header) + "\n")
            for r in merged.records:
                fh.write(dumps(r) + "\n")
    except OSError as exc:
        raise UsageError(f"-o: cannot write {out}: {exc.strerror or exc}.") from None


def merge_files(paths: list[str], out: str) -> Merged:
    """Read, merge and write: what `pbft trace merge` does."""
    merged = merge([load(p) for p in paths])
    write(merged, out)
    return merged
