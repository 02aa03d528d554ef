"""What one step hands out, and what must be durable before which of it (etcd's `Ready`).

`Replica.step` returns a `Ready`: its actions in order, the durable writes among them
(`Persist`, `Truncate`), and a `Durability` saying when those writes must be on disk:

- `BEFORE_SENDS`: before any message of this output leaves the replica. A vote signed in
  this step, a prepared certificate, a view change: a restart must remember them before a
  peer can have seen what depends on them, or the replica could contradict itself.
- `MAY_FOLLOW_REPLIES`: the step wrote only records no reply depends on (an EXECUTED
  batch, a stable checkpoint, a truncation) and sends nothing but replies. The replies may
  go first and the writes join a later commit; a crash that loses them costs only a
  re-execution after recovery (the simulator models exactly that loss). Under load this
  saves one fsync of the three a replica makes per batch.
- `NONE`: nothing to write. Its sends still wait behind earlier commits (a vote resent,
  or a reply resting on a PREPARED record of an earlier step, must not overtake them).

The node and the simulator obey `durability` instead of scanning actions themselves, and
join the outputs of several steps with `Ready.join` when they commit them together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from .events import Action, Broadcast, Persist, Record, Send, Truncate

REPLY_INDEPENDENT = frozenset({Record.EXECUTED, Record.CHECKPOINT})
"""Records no reply depends on: a reply rests on the prepared certificates 2f+1 replicas
persisted before their COMMITs, and losing one of these costs only a re-execution."""


class Durability(Enum):
    NONE = "none"
    BEFORE_SENDS = "before-sends"
    MAY_FOLLOW_REPLIES = "may-follow-replies"


@dataclass(frozen=True, slots=True)
class Ready:
    """One step's output (or several steps' joined): iterate it for the actions in order."""

    actions: tuple[Action, ...]
    writes: tuple[Persist | Truncate, ...]
    dependent: bool
    """Whether a write some send may depend on is among `writes` (not REPLY_INDEPENDENT)."""
    peer_sends: bool
    """Whether a Send or Broadcast to a replica is among the actions."""

    @staticmethod
    def of(actions: Iterable[Action]) -> Ready:
        acts = tuple(actions)
        if not acts:
            return EMPTY  # most steps say nothing: one immutable value, not a new one each
        writes: list[Persist | Truncate] = []
        dependent = peer_sends = False
        for a in acts:
            if isinstance(a, Persist):
                writes.append(a)
                dependent = dependent or a.record not in REPLY_INDEPENDENT
            elif isinstance(a, Truncate):
                writes.append(a)
            elif isinstance(a, Send | Broadcast):
                peer_sends = True
        return Ready(acts, tuple(writes), dependent, peer_sends)

    @staticmethod
    def join(readies: Iterable[Ready]) -> Ready:
        """Several outputs made durable by one commit and performed in order: the same
        rule as for one step's output, over the whole."""
        rs = list(readies)
        if len(rs) == 1:
            return rs[0]
        return Ready(
            tuple(a for r in rs for a in r.actions),
            tuple(w for r in rs for w in r.writes),
            any(r.dependent for r in rs),
            any(r.peer_sends for r in rs),
        )

    @property
    def durability(self) -> Durability:
        if not self.writes:
            return Durability.NONE
        if self.dependent or self.peer_sends:
            return Durability.BEFORE_SENDS
        return Durability.MAY_FOLLOW_REPLIES

    def __add__(self, other: Ready | Iterable[Action]) -> Ready:
        """The output of this step followed by another's (or by more actions)."""
        return Ready.join([self, other if isinstance(other, Ready) else Ready.of(other)])

    def __radd__(self, other: Iterable[Action]) -> Ready:
        return Ready.join([Ready.of(other), self])

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)


EMPTY = Ready((), (), False, False)

