"""One valid client flooding the replicas (issue 13, item 9): its newer writes are not
verified one by one while an older one waits here; the newest per client and channel is
taken at the next tick (`verified.DeferredRequests`, docs/robustness.md)."""

from __future__ import annotations

from conftest import feed, forge, make_config, make_replica, sign_request

from pbft.protocol.events import Reason, Send, Tick
from pbft.protocol.messages import Request
from pbft.service.kv import op_put


def put(client: str, ts: int) -> bytes:
    return sign_request(client, op_put(b"k", f"{client}@{ts}".encode()), ts)


def counting(rep) -> list[int]:
    """Count the signature verifications `rep` makes."""
    calls = [0]
    real = rep.verifier.verify

    def verify(env):
        calls[0] += 1
        return real(env)

    rep.verifier.verify = verify
    return calls


def test_a_flooding_client_costs_the_primary_one_verification_per_tick():
    primary = make_replica(make_config(pipeline=1, batch_max=16), 0)
    feed(primary, "alice", put("alice", 1))  # proposed at once: in flight
    feed(primary, "alice", put("alice", 2))  # waits in pending (pipeline full)
    assert primary.batching.pending["alice"][0].timestamp == 2
    calls = counting(primary)
    for ts in range(3, 103):
        assert feed(primary, "alice", put("alice", ts)) == []
    assert calls[0] == 0  # a hundred newer requests, none verified yet
    feed(primary, "bob", put("bob", 1))  # another client is not held up
    assert calls[0] == 1 and "bob" in primary.batching.pending
    primary.step(Tick())
    assert calls[0] == 2
    assert primary.batching.pending["alice"][0].timestamp == 102  # only the newest
    # Older than the one waiting: superseded, dropped unverified.
    feed(primary, "alice", put("alice", 50))
    primary.step(Tick())
    assert calls[0] == 2 and primary.batching.pending["alice"][0].timestamp == 102


def test_a_backup_relays_a_flooding_client_once_per_tick_not_per_request():
    backup = make_replica(make_config(), 1)
    first = put("alice", 1)
    assert feed(backup, "alice", first) == [Send(0, first)]
    calls = counting(backup)
    for ts in range(2, 52):
        assert feed(backup, "alice", put("alice", ts)) == []
    assert calls[0] == 0
    newest = put("alice", 51)
    assert [a for a in backup.step(Tick()) if isinstance(a, Send)] == [Send(0, newest)]
    assert calls[0] == 1 and backup.requests.waiting["alice"][0] == 51


def test_a_forged_relayed_request_does_not_displace_the_clients_own():
    backup = make_replica(make_config(), 1)
    feed(backup, "alice", put("alice", 1))
    forged = forge("alice", Request(op_put(b"k", b"x"), 99, "alice", False), real_signer="bob")
    feed(backup, 2, forged)  # a Byzantine replica relays a forgery with a larger timestamp
    feed(backup, "alice", put("alice", 2))
    backup.step(Tick())
    assert backup.requests.waiting["alice"][0] == 2
    assert backup.rejects[(2, Reason.BAD_REQUEST)] == 1
