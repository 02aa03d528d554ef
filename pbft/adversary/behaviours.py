"""The catalogue of scripted attackers, by the names BYZANTINE.md gives them.

`REGISTRY` maps a replica behaviour's name to its class, constructed as
`Cls(replica, key, params, rng)` and wrapped in `ByzantineReplica`; `CLIENT_REGISTRY`
maps a client behaviour's name to its class, constructed as
`Cls(core, key, params, rng, config)` and wrapped in `ByzantineClient`. Each class has a
`name`, a one-line `summary`, and the parameters it `allowed`; a bad parameter raises
`ValueError` with one sentence when the behaviour is built.

View-change and state-transfer attacks (`fake-prepared-cert`, `drop-cert`,
`bad-new-view`, `view-change-storm`, `lying-state-transfer`) are in viewchange_attacks.py;
`wrong-reply` (lying to clients, or withholding replies) is in replies.py;
`status-flood`, `buffer-stuffing` and `stale-proof` (exhausting a replica, stranding a
laggard) in resources.py.
"""

from __future__ import annotations

from .base import Behaviour, ByzantineReplica
from .clients import CLIENTS, ByzantineClient, ClientBehaviour
from .primary import PRIMARY
from .replies import REPLIES
from .resources import RESOURCES
from .viewchange_attacks import VIEWCHANGE_ATTACKS
from .votes import VOTES
from .wire import BadSignature, Flood, FutureFlood, Replay, SelectiveSend

WIRE = (BadSignature, FutureFlood, SelectiveSend, Flood, Replay)

REGISTRY: dict[str, type[Behaviour]] = {
    cls.name: cls for cls in (*PRIMARY, *VOTES, *WIRE, *VIEWCHANGE_ATTACKS, *REPLIES, *RESOURCES)
}
CLIENT_REGISTRY: dict[str, type[ClientBehaviour]] = {cls.name: cls for cls in CLIENTS}

__all__ = [
    "CLIENT_REGISTRY",
    "REGISTRY",
    "Behaviour",
    "ByzantineClient",
    "ByzantineReplica",
    "ClientBehaviour",
]
