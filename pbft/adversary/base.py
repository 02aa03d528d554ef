"""A Byzantine replica is an honest core with a behaviour wrapped around it.

Theory of operation (Malachite's test middlewares, Twins): the honest `Replica` runs
unmodified; a `Behaviour` sees every event before the core does and every action after,
and may drop, delay, alter, duplicate or invent messages. Whatever it invents it signs
with the replica's own key (`forge`), so the attack exercises the protocol's checks, not
just signature checks (docs/attacks.md). The wrapper has the same `step` surface as a
`Replica`, so the simulator and the runtime node drive either without knowing which.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from ..protocol.crypto import KeyPair, seal
from ..protocol.events import Action, Event
from ..protocol.messages import Message
from ..protocol.ready import Ready
from ..protocol.replica import Replica


class Behaviour:
    """Override `on_input` / `on_output`; the defaults pass everything through."""

    name: ClassVar[str] = "honest"
    summary: ClassVar[str] = "behaves correctly"
    targets: ClassVar[str] = "replica"  # or "client"

    def __init__(self, replica: Replica, key: KeyPair, params: dict[str, Any], rng: random.Random):
        self.replica = replica
        self.key = key
        self.params = params
        self.rng = rng

    def forge(self, msg: Message) -> bytes:
        """Sign `msg` as this replica, bypassing its safety rules (that is the lie)."""
        cfg = self.replica.config
        return seal(self.key, cfg.cluster_id, self.replica.id, msg).to_bytes()

    def on_input(self, event: Event) -> list[Event]:
        return [event]

    def on_output(self, actions: list[Action]) -> list[Action]:
        return actions


class ByzantineReplica:
    """`Replica`-compatible wrapper: behaviour.on_input -> core.step -> behaviour.on_output."""

    def __init__(self, replica: Replica, behaviour: Behaviour) -> None:
        self.core = replica
        self.behaviour = behaviour
        replica.behaviour_label = behaviour.name  # `pbft status` shows it

    def step(self, event: Event) -> Ready:
        out: list[Action] = []
        for ev in self.behaviour.on_input(event):
            out.extend(self.core.step(ev))
        return Ready.of(self.behaviour.on_output(out))

    def __getattr__(self, name: str) -> Any:
        # view, last_executed, stable_seq, state_digest(), ... come from the honest core.
        return getattr(self.core, name)
