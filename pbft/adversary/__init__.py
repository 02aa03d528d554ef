"""The public behaviour API (docs/behaviours.md): what a user's attacker imports.

    from pbft.adversary import Behaviour, Param
    from pbft.adversary import Commit, PrePrepare, ...   # the protocol's messages
"""

from ..protocol.crypto import batch_digest
from ..protocol.messages import (
    Checkpoint,
    Commit,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Reply,
    Request,
    ViewChange,
)
from .api import CoreView, Incoming, Outgoing, Param, PreparedView, SlotView
from .base import Behaviour, BehaviourFailure
from .clients import ClientBehaviour

__all__ = [
    "Behaviour",
    "batch_digest",
    "BehaviourFailure",
    "Checkpoint",
    "ClientBehaviour",
    "Commit",
    "CoreView",
    "Incoming",
    "Message",
    "NewView",
    "Outgoing",
    "Param",
    "Prepare",
    "PrePrepare",
    "PreparedView",
    "Reply",
    "Request",
    "SlotView",
    "ViewChange",
]
