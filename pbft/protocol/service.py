"""The replicated application as the core calls it: a deterministic state machine.

Every correct replica applies the same operations in the same order, so `execute` must
depend only on the current state and its arguments (no clock, no randomness, no I/O). Its
state lives in `root`, the store the replica checkpoints, digests and transfers (store.py,
TOCS 2002 5.3): the service's entries under one prefix, the replica's reply cache under
another. `pbft.service.api.Hosted` is the implementation users' services run in.
"""

from __future__ import annotations

from typing import Protocol

from . import codec
from .messages import MAX_RESULT
from .store import Store

SERVICE_PREFIX = b"s"
"""Keys of the service's entries in the replica's store."""
REPLY_PREFIX = b"r"
"""Keys of the reply cache (one per client) in the replica's store."""


class StateMachine(Protocol):
    root: Store
    """The whole replicated state (the service's entries and the reply cache)."""

    def execute(self, operation: bytes, client: str) -> bytes:
        """Apply one operation and return its result. Malformed operations return an
        error result: they were ordered, so every replica must treat them alike."""

    def query(self, operation: bytes, client: str) -> bytes | None:
        """Answer a read-only operation from current state, or None if it is not one."""

    def reset(self) -> None:
        """Start the state over: empty, then the service's initial state."""


def bounded_result(result: bytes) -> bytes:
    """`result`, or an error result if it is larger than a REPLY may carry (MAX_RESULT):
    the client could not decode such a reply, and the reply cache would keep it in the
    state. The same on every replica, since the result is. `Hosted` (the services' host)
    already gives the same error result and discards the operation's writes; this is for
    any other state machine, whose writes it cannot take back."""
    if len(result) <= MAX_RESULT:
        return result
    return codec.encode({"error": f"result of {len(result)} bytes, larger than {MAX_RESULT}"})  # as api.too_large_result
