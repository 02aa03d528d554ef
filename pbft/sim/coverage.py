"""What a run, and a fuzz campaign, reached: the coverage report (docs/fuzzing.md).

A campaign that finds nothing says little unless it also says what it exercised. Each
simulated run counts, at the correct replicas:

* `message:KIND`: the messages delivered, by kind (every kind on the wire);
* `rejection:REASON`: the inputs refused or ignored, by reason (events.Reason);
* `event:NAME`: the protocol's transitions: prepared, committed, executed, a checkpoint
  made stable, a view change started, a view installed, a state transfer started and
  installed, a configuration epoch begun, evidence recorded (by kind);
* `check:NAME`: what the oracle's checks looked at.

A campaign sums them; `never_reached` lists the items of the universe (`UNIVERSE`) no run
reached: the rejection reasons no attack provoked, the messages no schedule made
necessary, the transitions no fault drove the group through.
"""

from __future__ import annotations

from collections import Counter

from ..protocol.events import (
    CheckpointStable,
    Committed,
    EpochStarted,
    Evidence,
    Executed,
    Prepared,
    Reason,
    StateInstalled,
    StateTransferStarted,
    ViewChangeStarted,
    ViewInstalled,
)
from .scenario import KINDS

EVENTS = {
    Prepared: "prepared",
    Committed: "committed",
    Executed: "executed",
    CheckpointStable: "checkpoint-stable",
    ViewChangeStarted: "view-change-started",
    ViewInstalled: "view-installed",
    StateTransferStarted: "state-transfer-started",
    StateInstalled: "state-installed",
    EpochStarted: "epoch-started",
}
"""The transitions counted, by action type (Evidence is counted by its kind)."""

EVIDENCE_KINDS = ("equivocate", "double-prepare", "double-commit", "double-checkpoint")

CHECKS = (
    "accounting", "agreement", "checkpoint-digests", "client-correctness", "exactly-once",
    "prepared-uniqueness", "resources", "validity",
)

UNIVERSE: tuple[str, ...] = (
    *(f"message:{k}" for k in KINDS),
    *(f"rejection:{r.value}" for r in Reason),
    *(f"event:{name}" for name in EVENTS.values()),
    *(f"event:evidence:{k}" for k in EVIDENCE_KINDS),
    *(f"check:{c}" for c in CHECKS),
)
"""Every item a campaign could reach."""


def event_name(action: object) -> str | None:
    """The coverage item of one action of a correct replica, or None."""
    name = EVENTS.get(type(action))
    if name is not None:
        return f"event:{name}"
    if isinstance(action, Evidence):
        return f"event:evidence:{action.kind}"
    return None


def never_reached(coverage: dict[str, int]) -> list[str]:
    return [item for item in UNIVERSE if not coverage.get(item)]


def add(total: Counter, coverage: dict[str, int]) -> None:
    for item, count in coverage.items():
        total[item] += count
