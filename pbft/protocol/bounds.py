"""Named bounds on a replica's structures: what `invariants()` asserts and reports read.

Each owner of a bounded structure lists its sizes against their limits (`bounds()`,
read-only: it changes nothing); `invariants()` asserts them, and the simulator's oracle
also keeps the peak of each (`RunResult.resources`). One list serves both, so a bound
reported is the bound checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Bound(NamedTuple):
    """One structure's size against its limit (a NamedTuple: built after every simulated
    step, so cheap to make)."""

    name: str
    size: int
    limit: int
    unit: str = ""

    def sentence(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name} holds {self.size}{unit}, bound {self.limit}"


def check(bounds: Iterable[Bound]) -> None:
    """Assert every bound (AssertionError naming the first structure over its limit)."""
    for b in bounds:
        assert b.size <= b.limit, b.sentence()
