"""The replicated application as the core calls it: a deterministic state machine.

Every correct replica applies the same operations in the same order, so `execute` must
depend only on the current state and its arguments (no clock, no randomness, no I/O). Its
state lives in `root`, the store the replica checkpoints, digests and transfers (store.py,
TOCS 2002 5.3): the service's entries under one prefix, the replica's reply cache under
another. `pbft.service.api.Hosted` is the implementation users' services run in.
"""

from __future__ import annotations

from typing import Protocol

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
        error result: they were ordered, so every replica must treat them alike. A result
        is at most MAX_RESULT bytes, what a REPLY carries (`Hosted` turns a larger one
        into an error result and discards its writes)."""

    def query(self, operation: bytes, client: str) -> bytes | None:
        """Answer a read-only operation from current state, or None if it is not one."""

    def reset(self) -> None:
        """Start the state over: empty, then the service's initial state."""
