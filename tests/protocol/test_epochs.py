"""Changing the group through consensus (pbft.protocol.epochs).

f = 1, n = 4, K = 4, L = 8 (make_config), in the in-memory Router (no loss, no
reordering). The operator's key is in the configuration; its commands are requests whose
operation is ["reconfigure", epoch, membership], executed by the replica core.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from conftest import Router, client_key, make_config, replica_key

from pbft.protocol import codec
from pbft.protocol.client import ClientCore
from pbft.protocol.config import OPERATOR, ClientInfo, ReplicaInfo
from pbft.protocol.crypto import KeyPair, Verifier, seal
from pbft.protocol.epochs import (
    EpochEntry,
    Epochs,
    Membership,
    apply,
    epoch_of_view,
    first_view,
    parse_operation,
    reconfigure_operation,
)
from pbft.protocol.events import Reason, Received, Rejected
from pbft.protocol.messages import Prepare, Status, decode_envelope
from pbft.protocol.viewchange import InvalidCertificate
from pbft.service.kv import op_put

pytestmark = pytest.mark.timeout(60)

OPERATOR_KEY = KeyPair.from_seed(b"test-operator")
NEW_3 = KeyPair.from_seed(b"test-replica-3-epoch-1")


def cluster(**settings) -> tuple[Router, ClientCore]:
    config = replace(make_config(), operator_key=OPERATOR_KEY.public, **settings)
    router = Router.build(config)
    operator = ClientCore(config, OPERATOR, OPERATOR_KEY)
    router.clients[OPERATOR] = operator
    return router, operator


def membership(config, **changes) -> Membership:
    m = Membership.of(config)
    return replace(m, **changes)


def command(router: Router, operator: ClientCore, epoch: int, m: Membership) -> dict:
    router.perform(OPERATOR, operator.submit(reconfigure_operation(epoch, m)))
    router.run()
    src, _, result = router.completed[-1]
    assert src == OPERATOR
    return codec.decode(result)


def replaced_3(config) -> Membership:
    replicas = list(config.replicas)
    replicas[3] = ReplicaInfo(3, "127.0.0.1", 7103, NEW_3.public)
    return membership(config, replicas=tuple(replicas))


def test_a_command_takes_effect_after_the_stable_checkpoint_at_or_after_it():
    router, operator = cluster()
    config = router.config
    router.submit("alice", op_put(b"k", b"v"))
    router.run()
    answer = command(router, operator, 1, replaced_3(config))
    assert answer == {"epoch": 1, "after": 4}  # the command ran at n=2; K = 4
    for rep in router.replicas[:3]:
        # The primary filled up to the boundary with null requests: an idle group gets there.
        assert rep.epochs.current == 1 and rep.config.epoch == 1 and rep.log.low == 4
        assert rep.view == first_view(1) and rep.config.replicas[3].public_key == NEW_3.public
        assert not rep.retired
    old3 = router.replicas[3]
    assert old3.retired and old3.epochs.current == 1  # its own key is not in epoch 1
    assert old3.last_executed == 4  # nothing above the boundary in the old epoch


def test_the_old_key_and_the_old_epoch_are_refused_after_the_change():
    router, operator = cluster()
    command(router, operator, 1, replaced_3(router.config))
    rep = router.replicas[0]
    new_domain = rep.config.replica_domain
    assert new_domain.endswith("/epoch=1")
    view = first_view(1)
    for key, domain in ((replica_key(3), new_domain), (replica_key(3), router.config.cluster_id),
                        (NEW_3, router.config.cluster_id)):
        vote = seal(key, domain, 3, Prepare(view, 5, b"\x01" * 32)).to_bytes()
        out = rep.step(Received(3, vote))
        assert [a.reason for a in out if isinstance(a, Rejected)] == [Reason.BAD_SIGNATURE]
    good = seal(NEW_3, new_domain, 3, Prepare(view, 5, b"\x01" * 32)).to_bytes()
    assert not [a for a in rep.step(Received(3, good)) if isinstance(a, Rejected)]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda c: reconfigure_operation(2, Membership.of(c)), "the next epoch is 1, not 2"),
        (lambda c: reconfigure_operation(1, replace(Membership.of(c), f=2)), "needs replicas 0 to 6"),
        (lambda c: codec.encode(["put", b"k", b"v"]), "reconfigure"),
        (lambda c: reconfigure_operation(1, replace(
            Membership.of(c), clients=(ClientInfo("alice", client_key("bob").public), *c.clients[1:]))),
         "share a public key"),
    ],
    ids=["skips-an-epoch", "n-is-not-3f+1", "not-a-command", "shared-key"],
)
def test_commands_that_break_the_rules_are_refused_with_a_reason(make, error):
    router, operator = cluster()
    router.perform(OPERATOR, operator.submit(make(router.config)))
    router.run()
    answer = codec.decode(router.completed[-1][2])
    assert error in answer["error"]
    assert all(rep.epochs.current == 0 and rep.epochs.pending is None for rep in router.replicas)


def test_a_second_command_while_one_is_pending_is_refused():
    """One change at a time: the core decides a command found pending (executed, its
    boundary not yet stable) as an error, the same at every replica."""
    from pbft.protocol.messages import Request

    router, _ = cluster()
    rep = router.replicas[1]
    c = router.config
    first = Request(reconfigure_operation(1, replaced_3(c)), 1, OPERATOR)
    second = Request(reconfigure_operation(1, Membership.of(c)), 2, OPERATOR)
    data1 = seal(OPERATOR_KEY, c.signing_domain, OPERATOR, first).to_bytes()
    data2 = seal(OPERATOR_KEY, c.signing_domain, OPERATOR, second).to_bytes()
    assert codec.decode(rep._operator_command(first, data1, 5)) == {"epoch": 1, "after": 8}
    assert codec.decode(rep._operator_command(second, data2, 6)) == {"error": "epoch 1 is already pending"}
    assert rep.epochs.boundary() == 8 and rep.epochs.current == 0


def test_a_client_the_operator_adds_writes_at_once():
    router, operator = cluster()
    config = router.config
    dora = KeyPair.from_seed(b"test-client-dora")
    m = membership(config, clients=(*config.clients, ClientInfo("dora", dora.public)))
    command(router, operator, 1, m)
    new_config = router.replicas[0].config
    assert "dora" in new_config.client_index
    client = ClientCore(new_config, "dora", dora)
    router.clients["dora"] = client
    router.perform("dora", client.submit(op_put(b"d", b"1")))
    router.run()
    assert router.completed[-1][0] == "dora" and codec.decode(router.completed[-1][2]) is True


def test_a_client_does_not_count_replies_of_an_epoch_it_does_not_know():
    """A reply from a later epoch is not counted: that epoch's f may be larger than the
    one the client knows, and f+1 of its count could all be faulty."""
    router, operator = cluster()
    command(router, operator, 1, replaced_3(router.config))
    old = ClientCore(router.config, "alice", client_key("alice"), start_timestamp=100)
    router.clients["alice"] = old
    router.perform("alice", old.submit(op_put(b"k", b"w")))
    router.run()
    assert old.outstanding is not None and old.newer_epoch == 1
    assert epoch_of_view(router.replicas[0].view) == 1
    actions = old.reconfigure(router.replicas[0].config)  # the new cluster file
    router.perform("alice", actions)
    router.run()
    assert old.outstanding is None


def _signed_command(config, key3: KeyPair, ts: int) -> bytes:
    replicas = list(config.replicas)
    replicas[3] = ReplicaInfo(3, "127.0.0.1", 7100 + ts, key3.public)
    request = _request_of(reconfigure_operation(1, membership(config, replicas=tuple(replicas))), ts)
    return seal(OPERATOR_KEY, config.signing_domain, OPERATOR, request).to_bytes()


def _request_of(op: bytes, ts: int):
    from pbft.protocol.messages import Request

    return Request(op, ts, OPERATOR)


def test_an_epoch_heard_of_gives_way_to_the_one_the_state_holds_verifier_and_all():
    """A peer may relay an operator command that never took effect (an attempt refused as
    already pending). The verifier built for it while checking proofs must not outlive it
    once the replicated state says otherwise (review: a stale key wedged a laggard), and
    a correct relay's command replaces an epoch only heard of."""
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    v0 = Verifier(config.signing_domain, config.member_keys())
    a, b = KeyPair.from_seed(b"A"), KeyPair.from_seed(b"B")
    epochs = Epochs(config)
    assert epochs.learn(1, _signed_command(config, a, 1), v0) is None and epochs.heard_only(1)
    assert epochs.verifier(1)._raw[3] == a.public
    epochs.add(EpochEntry(1, 4, _signed_command(config, b, 2)))  # the state's entry
    assert not epochs.heard_only(1) and epochs.verifier(1)._raw[3] == b.public
    relearnt = Epochs(config)
    relearnt.learn(1, _signed_command(config, a, 1), v0)
    assert relearnt.learn(1, _signed_command(config, b, 2), v0) is None  # another relay's
    assert relearnt.verifier(1)._raw[3] == b.public


def test_a_plan_that_shrinks_below_its_faulty_replicas_exceeds_the_assumption():
    from pbft.sim.scenario import ByzantineSpec, Reconfigure, Scenario

    byz = (ByzantineSpec("replica", 1, "equivocate", {}), ByzantineSpec("replica", 2, "equivocate", {}))
    s = Scenario(f=2, byzantine=byz)
    assert not s.exceeds_fault_assumption()
    assert replace(s, reconfigure=(Reconfigure(100, f=1),)).exceeds_fault_assumption()
    # Replicas removed by the shrink do not count against the smaller f.
    high = (ByzantineSpec("replica", 5, "equivocate", {}), ByzantineSpec("replica", 6, "equivocate", {}))
    assert not replace(s, byzantine=high, reconfigure=(Reconfigure(100, f=1),)).exceeds_fault_assumption()


def test_nothing_above_the_boundary_is_executed_or_voted_for_in_the_epoch_left():
    """The primary pipelines: slot 5 may be committed before slot 2's command is executed
    and says that epoch 1 begins after checkpoint 4. Execution stops at 4 all the same
    (slot 5 is void: epoch 1 orders it afresh), and once the boundary is known, votes
    above it are refused."""
    from conftest import make_replica, put, sign_commit, sign_pre_prepare, sign_prepare

    from pbft.protocol.crypto import batch_digest
    from pbft.protocol.events import Executed
    from pbft.protocol.messages import Request

    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    rep = make_replica(config, 1)
    command = seal(OPERATOR_KEY, config.signing_domain, OPERATOR,
                   Request(reconfigure_operation(1, replaced_3(config)), 1, OPERATOR)).to_bytes()
    batches = {1: (put("alice", 1),), 2: (command,), 3: (put("alice", 2),), 4: (put("bob", 1),), 5: (put("bob", 2),)}

    def votes(seq: int) -> list:
        d = batch_digest(batches[seq])
        out = [rep.step(Received(r, sign_prepare(r, seq, d))) for r in (2, 3)]
        return out + [rep.step(Received(r, sign_commit(r, seq, d))) for r in (0, 2, 3)]

    for seq, batch in batches.items():
        rep.step(Received(0, sign_pre_prepare(seq, batch)))
    for seq in (5, 4, 3):
        votes(seq)  # committed, but waiting for 1 and 2
    executed = [a.seq for seq in (1, 2) for out in votes(seq) for a in out.actions if isinstance(a, Executed)]
    assert executed == [1, 2, 3, 4] and rep.epochs.boundary() == 4 and rep.last_executed == 4
    before = rep.rejects[(2, Reason.OUT_OF_WINDOW)]
    rep.step(Received(2, sign_prepare(2, 6, b"\x01" * 32)))  # inside the window, above B
    assert rep.log.get(6) is None and rep.rejects[(2, Reason.OUT_OF_WINDOW)] == before + 1


def test_a_member_the_command_keeps_keeps_its_local_settings_and_a_new_one_gets_none():
    """A reconfiguration carries who is in the group, not how each host runs: a replica
    whose address and key are unchanged keeps its certificate, metrics address and
    verify threads from the cluster file, a client whose key is unchanged its
    certificate; a member that is new, or whose key or address changed, starts with none
    (they would be another host's)."""
    base = make_config(clients=("alice", "bob"))
    local = dict(certificate="/etc/pbft/r.pem", metrics="127.0.0.1:9100", verify_threads=2)
    config = replace(
        base,
        replicas=tuple(replace(r, **local) for r in base.replicas),
        clients=tuple(replace(c, certificate=f"/etc/pbft/{c.id}.pem") for c in base.clients),
    )
    replicas = list(Membership.of(config).replicas)
    replicas[2] = ReplicaInfo(2, "127.0.0.1", 7202, replica_key(2).public)  # moved
    replicas[3] = ReplicaInfo(3, "127.0.0.1", 7003, NEW_3.public)  # replaced
    bob = ClientInfo("bob", client_key("bob-again").public)  # a new key
    carol = ClientInfo("carol", client_key("carol").public)
    m = membership(config, replicas=tuple(replicas), clients=(config.clients[0], bob, carol))
    after = apply(config, 1, Membership.decode(m.encode()))  # as a command carries it
    assert after.epoch == 1
    for r in after.replicas[:2]:
        assert (r.certificate, r.metrics, r.verify_threads) == ("/etc/pbft/r.pem", "127.0.0.1:9100", 2)
    for r in after.replicas[2:]:
        assert (r.certificate, r.metrics, r.verify_threads) == ("", "", 0)
    assert [(c.id, c.certificate) for c in after.clients] == [
        ("alice", "/etc/pbft/alice.pem"), ("bob", ""), ("carol", "")
    ]


@pytest.mark.parametrize("forged", ["a client's", "a forged signature", "not a request"])
def test_an_epoch_heard_of_must_be_a_request_the_operator_signed(forged):
    """EPOCHS relays the operator's command; anything else is refused with the same
    reason, whichever of the three checks fails."""
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    verifier = Verifier(config.signing_domain, config.member_keys())
    genuine = _signed_command(config, KeyPair.from_seed(b"A"), 1)
    request = decode_envelope(genuine)[1]
    if forged == "a client's":
        data = seal(client_key("alice"), config.signing_domain, "alice", replace(request, client="alice")).to_bytes()
    elif forged == "a forged signature":
        data = seal(client_key("alice"), config.signing_domain, OPERATOR, request).to_bytes()
    else:
        data = seal(OPERATOR_KEY, config.signing_domain, OPERATOR, Prepare(0, 1, bytes(32))).to_bytes()
    epochs = Epochs(config)
    assert epochs.learn(1, data, verifier) == "not a command signed by the operator"
    assert not epochs.heard_only(1)
    assert epochs.learn(1, genuine, verifier) is None and epochs.heard_only(1)


def _members(f: int) -> Membership:
    n = 3 * f + 1
    return Membership(
        f,
        tuple(ReplicaInfo(i, f"10.0.0.{i % 200 + 1}", 7000 + i, replica_key(i).public) for i in range(n)),
        (ClientInfo("alice", client_key("alice").public),),
    )


def _with_replica(m: Membership, i: int, **changes) -> Membership:
    replicas = list(m.replicas)
    replicas[i] = replace(replicas[i], **changes)
    return replace(m, replicas=tuple(replicas))


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda m: m, None),
        (lambda m: _members(33), None),  # MAX_F itself
        (lambda m: replace(m, f=0), "f must be from 1 to 33"),
        (lambda m: replace(m, f=34), "f must be from 1 to 33"),
        (lambda m: replace(m, f=True), "f must be from 1 to 33"),
        (lambda m: replace(m, replicas=m.replicas[:3]), "f = 1 needs replicas 0 to 3, in order"),
        (lambda m: _with_replica(m, 2, public_key=bytes(31)), "a public key is not 32 bytes"),
        (lambda m: replace(m, clients=(ClientInfo("alice", bytes(33)),)), "a public key is not 32 bytes"),
        (lambda m: _with_replica(m, 2, public_key=bytes(32)), "a public key is not a valid Ed25519 public key (non-canonical, off the curve, "
         "of small order or with a torsion component)"),
        (lambda m: _with_replica(m, 2, public_key=m.replicas[1].public_key), "two members share a public key"),
        (lambda m: _with_replica(m, 2, host="10.0.0.2", port=7001), "replica addresses must be distinct HOST:PORT"),
        (lambda m: _with_replica(m, 2, port=0), "replica addresses must be distinct HOST:PORT"),
        (lambda m: _with_replica(m, 2, port=65536), "replica addresses must be distinct HOST:PORT"),
        (lambda m: _with_replica(m, 2, port=65535), None),
        (lambda m: _with_replica(m, 2, host=""), "replica addresses must be distinct HOST:PORT"),
        (lambda m: _with_replica(m, 2, port=1), None),
        (lambda m: replace(m, clients=(*m.clients, ClientInfo("alice", client_key("alice-2").public))),
         "client ids must be distinct names, none of them 'operator'"),
        (lambda m: replace(m, clients=(ClientInfo("a b", client_key("alice").public),)),
         "client ids must be distinct names, none of them 'operator'"),
        (lambda m: replace(m, clients=(ClientInfo(OPERATOR, client_key("alice").public),)),
         "client ids must be distinct names, none of them 'operator'"),
    ],
    ids=["valid", "f-33", "f-0", "f-34", "f-bool", "too-few", "short-key", "long-client-key", "small-order",
         "shared-key", "same-address", "port-0", "port-65536", "port-65535", "no-host", "port-1",
         "two-alices", "bad-name", "a-client-named-operator"],
)
def test_a_membership_breaking_a_rule_is_named_by_the_rule(make, problem):
    """`Membership.problem`, one rule at a time, with the sentence an operator reads in
    the command's refusal; `decode` gives back what `encode` wrote, or that sentence."""
    m = make(_members(1))
    assert m.problem() == problem
    if problem is None:
        assert Membership.decode(m.encode()) == m
    elif m.f is not True:
        with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
            Membership.decode(m.encode())


def test_a_membership_that_does_not_read_says_so():
    with pytest.raises(ValueError, match=r"^a malformed membership \(.+\)$"):
        Membership.decode(codec.encode([1, [[0, "h", "not a port", b"k"]], []]))
    with pytest.raises(ValueError, match=r"^a malformed membership \(.+\)$"):
        Membership.decode(b"\xff")


def test_the_states_entry_for_an_epoch_replaces_one_heard_of_and_everything_derived_from_it():
    """`Epochs.add`: an entry for an epoch already known with the same configuration
    changes nothing after it; one with another configuration (the state's, over a peer's
    hint) drops the later epochs, which were derived from the other."""
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    verifier = Verifier(config.signing_domain, config.member_keys())
    a, b = KeyPair.from_seed(b"A"), KeyPair.from_seed(b"B")
    epochs = Epochs(config)
    assert epochs.learn(1, _signed_command(config, a, 1), verifier) is None
    epoch1 = epochs.configs[1]
    m2 = replace(Membership.of(epoch1), clients=(*epoch1.clients, ClientInfo("zed", client_key("zed").public)))
    two = seal(OPERATOR_KEY, epoch1.signing_domain, OPERATOR, _request_of(reconfigure_operation(2, m2), 3))
    epochs.add(EpochEntry(2, 8, two.to_bytes()))
    assert sorted(epochs.configs) == [0, 1, 2] and sorted(epochs.entries) == [1, 2]
    epochs.add(EpochEntry(1, 4, _signed_command(config, a, 1)))  # the same configuration
    assert sorted(epochs.configs) == [0, 1, 2] and sorted(epochs.entries) == [1, 2]
    epochs.add(EpochEntry(1, 4, _signed_command(config, b, 2)))  # another one
    assert sorted(epochs.configs) == [0, 1] and sorted(epochs.entries) == [1]
    assert epochs.configs[1].replicas[3].public_key == b.public


@pytest.mark.parametrize(
    "value, error",
    [
        (b"\xff", r"^not a command \(.+\)$"),
        (["reconfigure", 1], r"^the operator's commands are \[\"reconfigure\", epoch, membership\]$"),
        (["put", 1, "M"], r"^the operator's commands are \[\"reconfigure\", epoch, membership\]$"),
        ({"reconfigure": 1}, r"^the operator's commands are \[\"reconfigure\", epoch, membership\]$"),
        (["reconfigure", 0, "M"], r"^a reconfigure command names an epoch from 1 and a membership$"),
        (["reconfigure", "1", "M"], r"^a reconfigure command names an epoch from 1 and a membership$"),
        (["reconfigure", 1, "text"], r"^a reconfigure command names an epoch from 1 and a membership$"),
    ],
    ids=["not-cbor", "two-items", "another-verb", "a-map", "epoch-0", "epoch-text", "membership-text"],
)
def test_an_operation_that_is_not_a_reconfiguration_is_refused_with_its_sentence(value, error):
    m = Membership.of(make_config())
    op = value if type(value) is bytes else codec.encode(
        [m.encode() if x == "M" else x for x in value] if isinstance(value, list) else value
    )
    with pytest.raises(ValueError, match=error):
        parse_operation(op)
    assert parse_operation(reconfigure_operation(1, m)) == (1, m)


def test_a_fork_looks_ahead_with_the_replicas_memo_and_shares_its_verifiers():
    """`Epochs.fork` (recovery's probe of the stored epochs): a verifier it builds is
    shared with the replica's epochs, so it must be built as the replica would build it,
    with the same verdict memo; and the fork resets to what the replica was given."""
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    epochs = Epochs(config, memo=64)
    probe = epochs.fork()
    probe.add(EpochEntry(1, 4, _signed_command(config, KeyPair.from_seed(b"A"), 1)))
    assert probe.verifier(1).memo_size == 64
    assert sorted(epochs.configs) == [0]  # the replica's own epochs are not touched
    probe.reset()
    assert sorted(probe.configs) == [0] and probe.current == 0 and not probe.entries


def test_an_epoch_entry_is_stored_at_its_documented_key_and_a_damaged_one_is_a_sentence():
    """The entry's key and value are part of the replicated state, so of every checkpoint
    digest (docs/reconfiguration.md): replicas of two versions, and a data directory of an
    older one, must agree on them. An entry that does not read stops the load with a
    sentence, and the epochs before it stay."""
    assert EpochEntry.key(1) == b"e\x00\x00\x00\x00\x00\x00\x00\x01"
    assert EpochEntry.key(258) == b"e" + bytes(6) + b"\x01\x02"
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    entry = EpochEntry(1, 4, _signed_command(config, KeyPair.from_seed(b"A"), 1))
    assert codec.decode(entry.encode()) == [4, entry.command]
    stored = {EpochEntry.key(1): entry.encode(), EpochEntry.key(2): b"\xff"}
    epochs = Epochs(config)
    problems = epochs.load(stored.get)
    assert len(problems) == 1 and problems[0].startswith("epoch 2's entry does not read: ")
    assert sorted(epochs.configs) == [0, 1] and epochs.entries[1] == entry


def test_a_proof_no_epoch_accepts_is_refused_with_the_newest_epochs_reason():
    """`Epochs.check_proof` tries the newest epoch first, and a proof that none accepts
    is refused with that epoch's reason (here its quorum, 5 of 7 at f = 2, not epoch
    0's 3 of 4)."""
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    grown = _members(2)
    request = _request_of(reconfigure_operation(1, grown), 1)
    command = seal(OPERATOR_KEY, config.signing_domain, OPERATOR, request).to_bytes()
    epochs = Epochs(config)
    epochs.add(EpochEntry(1, 4, command))
    assert epochs.configs[1].f == 2
    with pytest.raises(InvalidCertificate, match="^checkpoint proof with 0 signers, needs 5$"):
        epochs.check_proof(4, ())
    # verify_any: an envelope signed under one epoch verifies under that one alone.
    status = seal(replica_key(5), epochs.configs[1].replica_domain, 5, Status(first_view(1), 0, 0, 0))
    assert epochs.verify_any(status) == 1
    assert Verifier(config.signing_domain, config.member_keys()).verify(status) is False


def test_an_epoch_heard_of_keeps_one_verifier_of_its_own_and_shares_none():
    """A configuration heard of from a peer gets a verifier of this replica's own, built
    once (its verdict memo is kept between messages), never put in the shared cache."""
    config = replace(make_config(), operator_key=OPERATOR_KEY.public)
    shared: dict = {}
    epochs = Epochs(config, memo=64, shared=shared)
    verifier = Verifier(config.signing_domain, config.member_keys())
    assert epochs.learn(1, _signed_command(config, KeyPair.from_seed(b"A"), 1), verifier) is None
    assert epochs.verifier(1) is epochs.verifier(1)
    assert 1 not in shared
    # The state's entry for it: its verifier is shared (the simulator's replicas share them).
    epochs.add(EpochEntry(1, 4, _signed_command(config, KeyPair.from_seed(b"B"), 2)))
    built = epochs.verifier(1)
    assert shared[1][1] is built and built.memo_size == 64
