"""The viewer page: a trace's `Model` packed as compact JSON into one self-contained HTML
file (docs/viewer.md).

The page's template, style and script are package data next to this module
(`viewer.html`, `viewer.css`, `viewer.js`) and are inlined: the page loads nothing, so it
opens offline from a mail attachment or a CI artefact. The data is columnar (one array per
field of the arrows and marks) with strings interned in one table, because a run of
100,000 messages would otherwise spend most of its bytes repeating field names.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from importlib import resources
from typing import Any

from ..errors import UsageError
from .model import Model

FORMAT = 1
"""The version of the embedded data's layout (`v` in it), for the page's script."""


class _Strings:
    """Interned strings: each distinct string once, referred to by index (-1: none)."""

    def __init__(self) -> None:
        self.table: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, s: str | None) -> int:
        if s is None:
            return -1
        i = self._index.get(s)
        if i is None:
            i = self._index[s] = len(self.table)
            self.table.append(s)
        return i


def _n(v: int | None) -> int:
    return -1 if v is None else v


_MARK_COLUMNS = frozenset({"replica", "view", "seq", "digest"})
"""Mark fields packed as columns (the replica is the mark's lane); the rest go in `x`."""


def _i(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _s(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _t(t: float, origin: float) -> float | int:
    d = t - origin
    return int(d) if float(d).is_integer() else round(d, 3)


def pack(model: Model, at: float | None = None) -> dict[str, Any]:
    """The model as the page's data: times relative to the trace's first record (`origin`),
    arrows and marks as columns, strings interned in `S`."""
    S = _Strings()
    o = model.t_start
    arrows = model.arrows
    extra = {}
    for i, a in enumerate(arrows):
        x = {k: v for k, v in a.extra.items() if k not in ("client", "timestamp")}
        if x:
            extra[str(i)] = x
    # Submits and completions are drawn as the client's operation bands, not as marks.
    marks = [m for m in model.marks if m.type not in ("submit", "complete")]
    renumber = {id(m): j for j, m in enumerate(marks)}
    mark_extra = {}
    for j, m in enumerate(marks):
        x = {k: v for k, v in m.fields.items() if k not in _MARK_COLUMNS}
        if x:
            mark_extra[str(j)] = x
    data: dict[str, Any] = {
        "v": FORMAT,
        "header": _header(model.header),
        "origin": o,
        "tEnd": _t(model.t_end, o),
        "lanes": [[lane.name, lane.kind.value, int(lane.byzantine)] for lane in model.lanes],
        "A": {
            "t0": [_t(a.t0, o) for a in arrows],
            "dt": [_t(a.t1, a.t0) for a in arrows],  # t1 - t0: short numbers
            "s": [a.src for a in arrows],
            "d": [a.dst for a in arrows],
            "k": [S(a.kind) for a in arrows],
            "id": [S(a.id) for a in arrows],
            "v": [_n(a.view) for a in arrows],
            "q": [_n(a.seq) for a in arrows],
            "g": [S(a.digest) for a in arrows],
            "z": [a.size for a in arrows],
            # lie | fate << 2 | copy << 4: three mostly-zero fields in one number
            "b": [int(a.lie) | int(a.fate) << 2 | a.copy << 4 for a in arrows],
            "h": [S(a.honest) for a in arrows],
            "hd": [S(a.honest_digest) for a in arrows],
            "cl": [S(_s(a.extra.get("client"))) for a in arrows],
            "ts": [_n(_i(a.extra.get("timestamp"))) for a in arrows],
            "x": extra,
        },
        "M": {
            "t": [_t(m.t, o) for m in marks],
            "l": [m.lane for m in marks],
            "y": [S(m.type) for m in marks],
            "v": [_n(_i(m.fields.get("view"))) for m in marks],
            "q": [_n(_i(m.fields.get("seq"))) for m in marks],
            "g": [S(_s(m.fields.get("digest"))) for m in marks],
            "x": mark_extra,
        },
        "B": [[b.kind, b.lane, _t(b.t0, o), _t(b.t1, o), b.label, int(b.open)] for b in model.bands],
        "E": [[_t(e.t, o), e.lane, e.label, list(e.arrows), e.kind, _n(e.view), _n(e.seq),
               list(e.digests)] for e in model.equivocations],
        "C": [[renumber[id(model.marks[c.mark])], list(c.arrows), c.votes] for c in model.certificates],
        "V": [[_t(v.t, o), v.check, v.detail] for v in model.violations],
        "end": model.end,
        "ignored": model.ignored,
        "at": None if at is None else _t(at, o),
    }
    data["S"] = S.table
    return data


def _header(h: dict[str, Any]) -> dict[str, Any]:
    """The header with the fields the page reads in the types it expects; others left out."""
    out: dict[str, Any] = {}
    for k in ("n", "f", "seed", "version"):
        if _i(h.get(k)) is not None:
            out[k] = h[k]
    for k in ("scenario", "mode", "broken"):
        if isinstance(h.get(k), str):
            out[k] = h[k]
    for k in ("byzantine", "clients"):
        if isinstance(h.get(k), list):
            out[k] = [x for x in h[k] if isinstance(x, int | str) and not isinstance(x, bool)]
    return out


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _title(model: Model) -> str:
    h = model.header
    name = str(h.get("scenario") or "run")
    return f"pbft trace: {name} (seed {h.get('seed', '?')})"


def resolve_at(model: Model, at: str | None) -> float | None:
    """`--at`: a time in ms since the trace's first record (as the page's axis counts), or
    "violation" (the first one's time); None: the page's own choice (the violation if there
    is one, else the start). The result is in the trace's own time."""
    if at is None:
        return model.violations[0].t if model.violations else None
    if at == "violation":
        if not model.violations:
            raise UsageError("--at violation: this trace has no violation.")
        return model.violations[0].t
    try:
        ms = float(at)
    except ValueError:
        raise UsageError(f"--at {at!r}: give a time in ms or 'violation'.") from None
    if not math.isfinite(ms) or ms < 0:
        raise UsageError(f"--at {at}: give a time in ms from 0 (the trace's first record) or 'violation'.")
    length = model.t_end - model.t_start
    if ms > length:
        raise UsageError(f"--at {at}: the run ends {ms_text(length)} ms after its first record; give a time "
                         f"from 0 to {ms_text(length)} or 'violation'.")
    return model.t_start + ms


def ms_text(ms: float) -> str:
    """A time in ms as a person reads it: plain digits, at most three decimals, no
    exponent (`1e+08` is 100000000)."""
    text = f"{ms:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def render(model: Model, at: float | None = None) -> str:
    """The whole page as one string."""
    # ASCII with every "<", ">" and "&" escaped: inside <script> a "</" would end the
    # element and a "<!--" then "<script" would make the parser swallow the rest of the
    # page; and a lone surrogate a trace may hold cannot be written as UTF-8.
    payload = json.dumps(pack(model, at), separators=(",", ":"), ensure_ascii=True)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    script = "\n" + _asset("viewer.js") + "\n"
    # The page runs its own script and nothing else (a hash of it), loads nothing.
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    title = _title(model).encode("utf-8", "backslashreplace").decode("utf-8")
    parts = {
        "@CSP@": policy,
        "/*@CSS@*/": _asset("viewer.css"),
        "\n/*@JS@*/\n": script,
        "@TITLE@": html.escape(title),
        "@DATA@": payload,
    }
    # One pass over the template: a value (a title, the data) holding a key stays as it is.
    pattern = re.compile("|".join(re.escape(k) for k in parts))
    return pattern.sub(lambda m: parts[m.group(0)], _asset("viewer.html"))


def write(model: Model, out: str, at: float | None = None) -> int:
    """Writes the page to `out`; its size in bytes."""
    text = render(model, at)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the page: {exc.strerror or exc}.") from None
    return len(text.encode("utf-8"))
