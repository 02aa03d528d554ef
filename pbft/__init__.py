"""pbft: Practical Byzantine Fault Tolerance on Trio.

`open_client` is the Python API (README, sending requests from Python). Its errors, importable from here:
`ConfigError` (a bad cluster file, client name or key: raised by `open_client`),
`ClientError` (`put`, `get` or `delete`: the key-value store refused the request;
`execute` returns a service's error result as bytes instead, docs/services.md),
`RequestTooLarge` (a `ClientError`: a
request over a size limit, refused before anything is sent), `ReplicasDisagree` (a
`ClientError`: the replicas answered with results no f+1 of them agree on; docs/services.md)
and `TimestampError`; a call
that gets no answer within its timeout raises the built-in `TimeoutError`. Wrong arguments
are refused before anything is sent: `TypeError` for a key, value or operation that is not
bytes (or a timeout that is not a number), `ValueError` for a timeout that is not a finite
number of seconds above zero, `ClientError` for a call on a closed client.
"""

from __future__ import annotations

from .errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ClientError", "ConfigError", "ReplicasDisagree", "RequestTooLarge", "TimestampError", "open_client"]

_RUNTIME = ("ClientError", "ReplicasDisagree", "RequestTooLarge", "TimestampError")


def open_client(cluster_file: str, client_id: str, **kwargs):
    """`async with pbft.open_client(path, "alice") as c: await c.put(b"k", b"v")`.

    Imported lazily so the pure core never pulls in Trio."""
    from .node.client import open_client as _open

    return _open(cluster_file, client_id, **kwargs)


def __getattr__(name: str):
    # The client's errors live beside it in pbft.node, which imports Trio: load it
    # only when one is asked for.
    if name in _RUNTIME:
        from .node import client

        return getattr(client, name)
    raise AttributeError(f"module 'pbft' has no attribute {name!r}")
