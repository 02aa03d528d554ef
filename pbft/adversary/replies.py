"""A replica that lies to clients or keeps its replies to itself.

Theory of operation. Replies are not signed (the client's TLS channel says who sent one),
and a client accepts a result once f+1 replicas sent matching replies (OSDI'99 4.1), so
one of them is correct. `wrong-reply` rewrites this replica's REPLY messages:
`mode = "lie"` (default) changes the result, `mode = "withhold"` never sends one. The
protocol itself is untouched, so ordering, execution and checkpoints go on as for a
correct replica. What a correct cluster does: nothing special. Every replica replies, so
the n-f correct ones give each client its f+1 matching replies without a retransmission,
the lie is never accepted, and no view change follows (the primary did nothing wrong).
A client that asked only f+1 named replicas to reply would be slowed by this replica
whenever it named it; that saving was tried and dropped (no throughput gained here, see
the closing note of issue 7).
"""

from __future__ import annotations

from ..protocol.events import Action, SendClient
from ..protocol.messages import Envelope, Reply, open_envelope, to_body
from .wire import ReplicaBehaviour


class WrongReply(ReplicaBehaviour):
    """REPLY messages with a changed result (`mode = "lie"`) or none at all ("withhold")."""

    name = "wrong-reply"
    summary = "replies to clients with a wrong result, or not at all"
    allowed = ("mode",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.mode = self.p.choice("mode", "lie", ("lie", "withhold"))

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            opened = open_envelope(a.data) if isinstance(a, SendClient) else None
            if opened is None or not isinstance(opened[1], Reply):
                out.append(a)  # not a reply (a STATUS answer, or another action)
                continue
            if self.mode == "withhold":
                continue
            r = opened[1]
            lie = Reply(r.view, r.timestamp, r.client, r.replica, r.result + b"?")
            out.append(SendClient(a.client, Envelope(to_body(lie), self.me, b"").to_bytes()))
        return out


REPLIES = (WrongReply,)
