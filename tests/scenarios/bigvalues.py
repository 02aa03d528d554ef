"""A key-value service whose simulated workload writes 60 KiB values
(view-change-large-batches.toml: large batches across a view change)."""

from __future__ import annotations

from pbft.protocol import codec
from pbft.service.kvservice import KeyValue


class BigValues(KeyValue):
    name = "tools.bigvalues"
    version = "1"

    def sample_operation(self, rng, client, clients):
        key = b"%s/%d" % (client.encode(), rng.randrange(4))
        return codec.encode(["put", key, rng.randbytes(60 * 1024)]), False
