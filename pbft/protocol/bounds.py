"""Named bounds on a replica's structures: what `invariants()` asserts and reports read.

Each owner of a bounded structure lists its sizes against their limits (`bounds()`,
read-only: it changes nothing); `invariants()` asserts them, and the simulator's oracle
also keeps the peak of each (`RunResult.resources`). One list serves both, so a bound
reported is the bound checked.

A bound is a plain tuple (name, size, limit) or (name, size, limit, unit): the simulator
builds some forty of them after every step of every correct replica, and a tuple literal
costs a fraction of a named tuple's or a dataclass's construction.
"""

from __future__ import annotations

from collections.abc import Iterable

Bound = tuple[str, int, int] | tuple[str, int, int, str]
"""(name, size, limit[, unit]): one structure's size against its limit."""


def sentence(b: Bound) -> str:
    """`log holds 9 entries, bound 8`."""
    unit = f" {b[3]}" if len(b) > 3 else ""
    return f"{b[0]} holds {b[1]}{unit}, bound {b[2]}"


def check(bounds: Iterable[Bound]) -> None:
    """Assert every bound (AssertionError naming the first structure over its limit)."""
    for b in bounds:
        assert b[1] <= b[2], sentence(b)
