"""pbft: Practical Byzantine Fault Tolerance on Trio."""

from __future__ import annotations

__version__ = "0.1.0"


def open_client(cluster_file: str, client_id: str, **kwargs):
    """`async with pbft.open_client(path, "alice") as c: await c.put(b"k", b"v")`.

    Imported lazily so the pure core never pulls in Trio."""
    from .runtime.client import open_client as _open

    return _open(cluster_file, client_id, **kwargs)
