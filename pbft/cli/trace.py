"""`pbft trace ...`: the handlers of the trace commands (docs/viewer.md)."""

from __future__ import annotations
