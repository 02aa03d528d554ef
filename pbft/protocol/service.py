"""The replicated application as the core calls it: a deterministic state machine.

Every correct replica applies the same operations in the same order, so `execute` must
depend only on the current state and its arguments (no clock, no randomness, no I/O), and
`digest` must be a pure function of the state: replicas compare digests at checkpoints
(OSDI'99 section 4.3) and a state transfer is verified against one.
"""

from __future__ import annotations

from typing import Protocol


class StateMachine(Protocol):
    def execute(self, operation: bytes, client: str) -> bytes:
        """Apply one operation and return its result. Malformed operations return an
        error result: they were ordered, so every replica must treat them alike."""

    def query(self, operation: bytes, client: str) -> bytes | None:
        """Answer a read-only operation from current state, or None if it is not one."""

    def snapshot(self) -> bytes:
        """The whole state as bytes; `restore(snapshot())` gives an equal state."""

    def restore(self, snapshot: bytes) -> None:
        """Replace the state; raises ValueError on a snapshot it cannot read."""

    def digest(self) -> bytes:
        """A 32-byte digest of the state."""
