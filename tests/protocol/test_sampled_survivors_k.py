"""An eleventh batch of gaps found by a sampled mutation run of the core (docs/mutation.md):
the Byzantine behaviour a replica names in the STATUS it answers to a client's status
query (Replica._status) and the client a read-only request's query is asked for
(Replica.on_read_only).

Each test names the surviving mutants it kills. f = 1, n = 4 (make_config). Notes:
build/survivors-k-notes.md.
"""

from __future__ import annotations

import random

from conftest import (
    actions_of,
    decoded,
    feed,
    make_config,
    make_replica,
    replica_key,
    seal_as,
    sign_request,
)

from pbft.adversary import Behaviour
from pbft.adversary.base import ByzantineReplica
from pbft.protocol import codec
from pbft.protocol.events import Reason, Received, Rejected, SendClient
from pbft.protocol.messages import QueryStatus, Reply, Status
from pbft.service.api import Hosted, Service

# -- the behaviour a replica runs, said in its STATUS (Replica._status) ----------------------


class Shy(Behaviour):
    """Behaves correctly, but is a Byzantine behaviour all the same (an attack test)."""

    name = "shy"


def _status_answer(actions, client: str = "alice"):
    [sc] = actions_of(actions, SendClient)
    env, msg = decoded(sc.data)
    assert sc.client == client and isinstance(msg, Status)
    return env, msg


def test_a_replica_under_a_behaviour_names_it_in_the_status_it_answers_a_client():
    """A replica run under a Byzantine behaviour (an attack test) says so in the signed
    STATUS it answers to a client's QUERY-STATUS, so that `pbft status` shows a flag left
    in a unit file: wrapping a core in a ByzantineReplica sets its `behaviour_label`, and
    the label is the Status's `behaviour`. Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁ_status__mutmut_12 (the label not passed on: every
    STATUS said "")."""
    cfg = make_config()
    core = make_replica(cfg, 1)
    liar = ByzantineReplica(core, Shy(core, replica_key(1), {}, random.Random(0)))
    assert core.behaviour_label == "shy"
    actions = list(liar.step(Received("alice", seal_as("alice", QueryStatus(5)))))
    env, msg = _status_answer(actions)
    assert msg == Status(0, 0, 0, 0, "shy")
    assert env.signer == 1 and core.verifier.verify(env)  # signed with the label in it


def test_a_status_names_whatever_label_the_node_set_and_an_honest_one_names_none():
    """The label is the node's (`pbft.node` sets "broken:<name>", rules "<name>+rules"):
    the core sends what it was given, and a replica that runs no behaviour sends "" (a
    Status of four fields, the bytes every other STATUS has). Same mutant as above."""
    cfg = make_config()
    honest = make_replica(cfg, 1)
    _, msg = _status_answer(feed(honest, "alice", seal_as("alice", QueryStatus(5))))
    assert msg == Status(0, 0, 0, 0) and msg.behaviour == ""
    flagged = make_replica(cfg, 1)
    flagged.behaviour_label = "broken:quorum"
    env, msg = _status_answer(feed(flagged, "bob", seal_as("bob", QueryStatus(5))), "bob")
    assert msg == Status(0, 0, 0, 0, "broken:quorum")
    assert flagged.verifier.verify(env)


# -- a read-only request is a query of the client that sent it (Replica.on_read_only) --------


class Diaries(Service):
    """Each client's diary. A client reads its own diary as a query (read-only, section
    5.1.3); a read of another's diary is not a query: it is ordered, so that `execute`
    can record who read whose diary."""

    def setup(self, state):
        state.put(b"alice", b"dear diary")
        state.put(b"bob", b"nothing happened")

    def execute(self, state, operation, client):
        owner = codec.decode(operation)[1]
        state.put(b"read-by/" + client.encode(), owner.encode())
        return state.get(owner.encode()) or b""

    def query(self, state, operation, client):
        op = codec.decode(operation)
        if op[0] != "read" or op[1] != client:
            return None  # not a query: another's diary is read in order
        return state.get(client.encode())


def _read(owner: str) -> bytes:
    return codec.encode(["read", owner])


def test_a_read_only_request_is_a_query_of_the_client_that_sent_it():
    """`on_read_only` asks the service whether the operation is a query for the client
    that sent it, then answers from the same query: a service may answer a client's read
    of its own data and order everything else. Here alice's read of her own diary is
    answered at once, from her query. Found by mutation testing: mutant
    pbft.protocol.replica.xǁReplicaǁon_read_only__mutmut_21 (the query asked for no
    client: alice's read was refused as "not a query")."""
    rep = make_replica(make_config(), 1, service=Hosted(Diaries()))
    actions = feed(rep, "alice", sign_request("alice", _read("alice"), 1, read_only=True))
    assert actions_of(actions, Rejected) == []
    assert rep.rejects[("alice", Reason.BAD_REQUEST)] == 0
    [sc] = actions_of(actions, SendClient)
    reply = decoded(sc.data)[1]
    assert sc.client == "alice" and isinstance(reply, Reply)
    assert (reply.client, reply.timestamp, reply.replica) == ("alice", 1, 1)
    assert reply.result == b"dear diary"
    # bob's read of his own diary is his query, not alice's.
    actions = feed(rep, "bob", sign_request("bob", _read("bob"), 1, read_only=True))
    [sc] = actions_of(actions, SendClient)
    assert sc.client == "bob" and decoded(sc.data)[1].result == b"nothing happened"


def test_a_read_only_request_that_is_not_a_query_for_its_client_is_refused():
    """bob's read-only request for alice's diary is not a query for bob (the service
    returns None): it is refused as BAD_REQUEST, unanswered, and the client falls back to
    the ordered path. The other side of the test above: what the service decides for the
    client that asks, not for any client."""
    rep = make_replica(make_config(), 1, service=Hosted(Diaries()))
    actions = feed(rep, "bob", sign_request("bob", _read("alice"), 1, read_only=True))
    assert actions == [Rejected("bob", Reason.BAD_REQUEST, "read-only request is not a query")]
    assert rep.rejects[("bob", Reason.BAD_REQUEST)] == 1
