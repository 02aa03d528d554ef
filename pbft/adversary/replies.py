"""A replica that lies to clients or keeps its replies to itself.

Theory of operation. Replies are not signed (the client's TLS channel says who sent one),
and a client needs f+1 matching ones. Under load a client names only f+1 replicas to
reply (`Request.repliers`), so a faulty replica among them can make it wait: this is the
attack on that saving. `wrong-reply` rewrites this replica's REPLY messages: `mode = "lie"`
(default) changes the result, `mode = "withhold"` never sends one. The protocol itself is
untouched, so ordering, execution and checkpoints go on as for a correct replica. What a
correct cluster does: the client's timer fires, it asks the replicas it did not name,
which answer from their reply cache, and it stops naming the liar for
`ClientCore.SUSPECT_REQUESTS` requests. Every request completes with the right result and
no view change follows (the primary did nothing wrong).
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
