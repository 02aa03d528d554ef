"""A user's own replicated service, as docs/services.md builds it: named counters.

    ["add", name, n]  -> the counter's new value (n from -1000 to 1000)
    ["get", name]     -> its value (0 if never added to)            (read-only)
    ["top", k]        -> the k largest counters, [[name, value], ...] (read-only)

State: one key per counter, b"c/" + name, its value as a decimal string.
"""

from __future__ import annotations

import cbor2

from pbft.service.api import Service, State


class Counters(Service):
    name = "example.counters"
    version = "1"

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit

    def execute(self, state: State, operation: bytes, client: str) -> bytes:
        op = cbor2.loads(operation)
        if op[0] == "add":
            _, name, n = op
            if not isinstance(n, int) or isinstance(n, bool) or abs(n) > self.limit:
                raise ValueError(f"add takes an integer from -{self.limit} to {self.limit}")
            value = int(state.get(b"c/" + name.encode()) or b"0") + n
            state.put(b"c/" + name.encode(), str(value).encode())
            return cbor2.dumps(value)
        return self.query(state, operation, client) or cbor2.dumps({"error": "unknown operation"})

    def query(self, state: State, operation: bytes, client: str) -> bytes | None:
        op = cbor2.loads(operation)
        if op[0] == "get":
            return cbor2.dumps(int(state.get(b"c/" + op[1].encode()) or b"0"))
        if op[0] == "top":
            counters = [(k[2:].decode(), int(v)) for k, v in state.scan(b"c/", b"c0", 1000)]
            counters.sort(key=lambda kv: (-kv[1], kv[0]))
            return cbor2.dumps([list(kv) for kv in counters[: op[1]]])
        return None

    def sample_operation(self, rng, client, clients):
        name = rng.choice(["apples", "pears", "plums"])
        r = rng.random()
        if r < 0.6:
            return cbor2.dumps(["add", name, rng.randrange(-5, 10)]), False
        if r < 0.9:
            return cbor2.dumps(["get", name]), True
        return cbor2.dumps(["top", 2]), True
