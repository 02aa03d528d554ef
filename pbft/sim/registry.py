"""Lookup of Byzantine behaviours by name, tolerant of the adversary modules being absent.

The behaviours live in pbft/adversary (another team's files); the simulator only names
them. Missing modules mean "no behaviours installed", never an import error.
"""

from __future__ import annotations

import importlib
from typing import Any


def _attr(module: str, name: str) -> dict[str, Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return {}
    value = getattr(mod, name, None)
    return dict(value) if isinstance(value, dict) else {}


def replica_registry() -> dict[str, Any]:
    return _attr("pbft.adversary.behaviours", "REGISTRY")


def client_registry() -> dict[str, Any]:
    return _attr("pbft.adversary.behaviours", "CLIENT_REGISTRY")


def broken_replicas() -> dict[str, Any]:
    return _attr("pbft.adversary.broken", "BROKEN")
