"""The cluster file's checks, word for word (docs/formats.md): every problem `check_cluster`
reports is a sentence a person reads, naming the table and the entry it is in; every field
it accepts lands in the ClusterConfig; the `[[epoch]]` entries are applied.

Found by mutation testing (docs/mutation.md): the other tests of the cluster file look
for one word of each sentence and for the fields they need, so a wrong section name in a
sentence, a field read under another name or a setting dropped on its way into the
ClusterConfig went unnoticed."""

from __future__ import annotations

import copy

import pytest
from conftest import client_key, cluster_dict

from pbft.protocol.config import OPERATOR, ServiceSpec, check_cluster, parse_cluster, service_spec
from pbft.protocol.crypto import seal
from pbft.protocol.epochs import Membership, reconfigure_operation
from pbft.protocol.messages import Request

KNOWN_TABLES = "[cluster], [tls], [storage], [service], [[replica]], [[client]], [operator], [[epoch]]"
CLUSTER_FIELDS = (
    "id, f, checkpoint_interval, log_window, batch_max, pipeline, view_change_timeout_ms, "
    "tick_ms, retransmit_ms, linger_ms"
)
CLIENT_ID = "'id' must be 1-64 letters, digits, '.', '_' or '-'."


def _cluster(**fields):
    return lambda d: d["cluster"].update(fields)


def _replica(i: int, **fields):
    return lambda d: d["replica"][i].update(fields)


def _both(*edits):
    def edit(d):
        for e in edits:
            e(d)
    return edit


def _without_f(d):
    del d["cluster"]["f"]


# (an edit of a good file, every sentence check_cluster must say about it, in order)
SENTENCES = {
    "f above 33": (_cluster(f=34), ["[cluster]: 'f' must be an integer from 1 to 33, not 34."]),
    "pipeline 0": (_cluster(pipeline=0), ["[cluster]: 'pipeline' must be an integer from 1 to 8, not 0."]),
    "tick_ms 0": (_cluster(tick_ms=0), ["[cluster]: 'tick_ms' must be an integer from 1 to 1000, not 0."]),
    "retransmit_ms below the tick": (
        _cluster(retransmit_ms=5), ["[cluster]: 'retransmit_ms' must be an integer from 10 to 3600000, not 5."],
    ),
    "a misspelt [cluster]": (
        lambda d: d.update(clster=d.pop("cluster")),
        ["the cluster file has no [cluster] table (is [clster] a misspelling of it?)."],
    ),
    "a field of [cluster] at the top": (
        lambda d: d.update(f=1), ["unknown top-level field 'f' (it belongs in [cluster])."],
    ),
    "an unknown table": (
        lambda d: d.update(zzz={"a": 1}), [f"unknown table [zzz] (known: {KNOWN_TABLES})."],
    ),
    "a table named as a field": (
        lambda d: d.update(address={"a": 1}), [f"unknown table [address] (known: {KNOWN_TABLES})."],
    ),
    "an unknown top-level field": (
        lambda d: d.update(zzz=1), [f"unknown top-level field 'zzz' (known: {KNOWN_TABLES})."],
    ),
    "a field of [[replica]] in [cluster]": (
        _cluster(address="127.0.0.1:1"), ["[cluster]: unknown field 'address' (it belongs in [[replica]])."],
    ),
    "an unknown field of [cluster]": (
        _cluster(zzz=1), [f"[cluster]: unknown field 'zzz' (known: {CLUSTER_FIELDS})."],
    ),
    "[service] with a misspelt class": (
        lambda d: d.update(service={"clas": "a:B"}),
        ["[service]: the field 'class' is missing (is 'clas' a misspelling of it?)."],
    ),
    "[service] without a class": (
        lambda d: d.update(service={"accounts": 3}), ["[service]: the field 'class' is missing."],
    ),
    "[service] class a number": (
        lambda d: d.update(service={"class": 5}),
        ["[service]: 'class' must be a string naming module.path:Class or FILE.py:Class."],
    ),
    "[service] class without a colon": (
        lambda d: d.update(service={"class": "Ledger"}),
        ["[service]: 'class' must be a string naming module.path:Class or FILE.py:Class."],
    ),
    "a replica's key a number": (
        _replica(1, public_key=5), ["[[replica]] #2: 'public_key' must be a string, not 5."],
    ),
    "a client's key a number": (
        lambda d: d["client"][0].update(public_key=5), ["[[client]] #1: 'public_key' must be a string, not 5."],
    ),
    "the operator's key a number": (
        lambda d: d.update(operator={"public_key": 5}),
        ["[operator]: 'public_key' must be 64 hex digits (an Ed25519 key)."],
    ),
    "a replica id a string, f missing": (
        _both(_without_f, _replica(1, id="1")),
        ["[cluster]: the field 'f' is missing.", "[[replica]] #2: 'id' must be an integer, not '1'."],
    ),
    "a replica id negative, f missing": (
        _both(_without_f, _replica(1, id=-1)),
        ["[cluster]: the field 'f' is missing.", "[[replica]] #2: 'id' must be between 0 and n-1, not -1."],
    ),
    "a replica id too large": (
        _replica(1, id=4), ["[[replica]] #2: 'id' must be between 0 and 3, not 4."],
    ),
    "a certificate a number": (_replica(1, certificate=3), ["[[replica]] #2: 'certificate' must be a path."]),
    "metrics not HOST:PORT": (
        _replica(1, metrics="nope"), ["[[replica]] #2: 'metrics' must look like HOST:PORT, not 'nope'."],
    ),
    "two bad client ids": (
        lambda d: (d["client"][0].update(id="a b"), d["client"][1].update(id="c d")),
        [f"[[client]] #1: {CLIENT_ID}", f"[[client]] #2: {CLIENT_ID}"],
    ),
    # A duplicate is reported with the first entry's other problem, not only once that
    # problem is mended (the point of reporting every problem in one run).
    "a client named twice, the first with a bad key": (
        lambda d: (d["client"][0].update(public_key="00"), d["client"][1].update(id="alice")),
        [
            "[[client]] #1: 'public_key' must be 64 hex digits (an Ed25519 key).",
            "[[client]] #2: client id 'alice' appears twice.",
        ],
    ),
    "a replica id twice, the first with a bad address": (
        _both(_replica(0, address="nope"), _replica(1, id=0)),
        [
            "[[replica]] #1: 'address' must look like HOST:PORT, not 'nope'.",
            "[[replica]] #2: replica id 0 appears twice.",
        ],
    ),
    "batch_max 0": (_cluster(batch_max=0), ["[cluster]: 'batch_max' must be an integer from 1 to 4096, not 0."]),
    "[tls] ca a number": (lambda d: d["tls"].update(ca=3), ["[tls]: 'ca' must be a path."]),
    # An entry that is not a table is reported, and the entries after it still checked.
    "a client entry not a table, the next one bad": (
        lambda d: (d["client"].__setitem__(0, 5), d["client"][1].update(id="a b")),
        ["[[client]] #1 must be a table.", f"[[client]] #2: {CLIENT_ID}"],
    ),
    "a client named operator": (
        lambda d: d["client"][1].update(id=OPERATOR),
        ["[[client]] #2: the client id 'operator' is reserved for [operator]."],
    ),
}


@pytest.mark.parametrize(("edit", "sentences"), SENTENCES.values(), ids=SENTENCES.keys())
def test_every_problem_is_its_own_sentence_naming_where_it_is(edit, sentences):
    data = copy.deepcopy(cluster_dict())
    edit(data)
    config, errors = check_cluster(data)
    assert config is None
    assert errors == sentences


def test_every_setting_of_the_file_lands_in_the_configuration():
    data = cluster_dict()
    # Values other than the defaults, and each at an edge it may take.
    data["cluster"].update(pipeline=1, tick_ms=7, retransmit_ms=7, view_change_timeout_ms=10, linger_ms=0)
    data["storage"] = {"fsync": "off"}
    data["replica"][1].update(metrics="127.0.0.1:0", verify_threads=64)  # port 0: any free one
    data["operator"] = {"public_key": client_key("the-operator").public.hex()}
    data["service"] = {"class": "app.py:Counter", "identity": "counter 2", "start": 3}
    config = parse_cluster(data, base_dir="/srv/pbft")
    assert (config.pipeline, config.tick_ms, config.retransmit_ms) == (1, 7, 7)
    assert (config.view_change_timeout_ms, config.linger_ms, config.fsync) == (10, 0, "off")
    assert config.replicas[1].metrics == "127.0.0.1:0" and config.replicas[1].verify_threads == 64
    assert config.replicas[0].metrics == "" and config.replicas[0].verify_threads == 0
    assert config.operator_key == client_key("the-operator").public
    assert config.requesters == ("alice", "bob", OPERATOR)
    assert config.service == ServiceSpec("app.py:Counter", (("start", 3),), "/srv/pbft", "counter 2")
    assert config.base_dir == "/srv/pbft"


def test_the_log_window_may_be_one_checkpoint_interval():
    data = cluster_dict()
    data["cluster"].update(checkpoint_interval=4, log_window=4, pipeline=4)
    config = parse_cluster(data)
    assert (config.checkpoint_interval, config.log_window) == (4, 4)


def test_without_an_operator_nobody_may_reconfigure():
    config = parse_cluster(cluster_dict())
    assert config.operator_key == b"" and config.requesters == ("alice", "bob")


def test_a_service_table_on_its_own_has_no_base_directory_and_no_identity():
    problems: list[str] = []
    spec = service_spec({"class": "a.b:C", "n": 1}, problems.append, "[service]")
    assert spec == ServiceSpec("a.b:C", (("n", 1),), "", "") and problems == []


def _operator_command(data: dict, epoch: int) -> str:
    config = parse_cluster(data)
    membership = Membership.of(config)
    request = Request(reconfigure_operation(epoch, membership), epoch, OPERATOR)
    return seal(client_key("the-operator"), config.signing_domain, OPERATOR, request).to_bytes().hex()


def test_the_epoch_entries_of_the_file_are_applied_in_order():
    data = cluster_dict()
    data["operator"] = {"public_key": client_key("the-operator").public.hex()}
    first = _operator_command(data, 1)
    data["epoch"] = [{"epoch": 1, "after": 4, "command": first}]
    config = parse_cluster(data)
    assert config.epoch == 1
    assert config.commands == ((1, 4, bytes.fromhex(first)),)
    assert [c.epoch for c in config.earlier] == [0]
    # `after` may be left out: 0.
    data["epoch"] = [{"epoch": 1, "command": first}]
    assert parse_cluster(data).commands == ((1, 0, bytes.fromhex(first)),)


def _with_epoch(**entry):
    """A good file with an operator, and one [[epoch]] entry: the operator's command for
    epoch 1, with `entry`'s fields in place of the good ones."""
    data = cluster_dict()
    data["operator"] = {"public_key": client_key("the-operator").public.hex()}
    data["epoch"] = [{"epoch": 1, "after": 4, "command": _operator_command(data, 1), **entry}]
    return data


def _signed_by(signer: str, epoch: int = 1) -> str:
    data = cluster_dict()
    config = parse_cluster(data)
    request = Request(reconfigure_operation(epoch, Membership.of(config)), epoch, OPERATOR)
    return seal(client_key(signer), config.signing_domain, OPERATOR, request).to_bytes().hex()


NOT_THE_COMMAND = "[[epoch]] #1: 'command' does not hold the operator's command for epoch 1"
EPOCH_SENTENCES = {
    "another epoch": (_with_epoch(epoch=2), ["[[epoch]] #1: 'epoch' must be 1, the next one, not 2."]),
    "after negative": (_with_epoch(after=-1), ["[[epoch]] #1: 'after' must be a non-negative integer."]),
    "after a string": (_with_epoch(after="4"), ["[[epoch]] #1: 'after' must be a non-negative integer."]),
    "signed by another key": (
        _with_epoch(command=_signed_by("mallory")), [f"{NOT_THE_COMMAND} (it is not a request the operator signed)."],
    ),
    "the command of epoch 2": (
        _with_epoch(command=_signed_by("the-operator", 2)), [f"{NOT_THE_COMMAND} (the command is for epoch 2)."],
    ),
    "command not hex": (
        _with_epoch(command="zz"),
        [f"{NOT_THE_COMMAND} (non-hexadecimal number found in fromhex() arg at position 0)."],
    ),
    "command a number": (_with_epoch(command=5), ["[[epoch]] #1: 'command' must be a string, not 5."]),
}


@pytest.mark.parametrize(("data", "sentences"), EPOCH_SENTENCES.values(), ids=EPOCH_SENTENCES.keys())
def test_a_bad_epoch_entry_is_one_sentence(data, sentences):
    assert check_cluster(data) == (None, sentences)


def test_an_epoch_entry_needs_the_operators_key():
    data = _with_epoch()
    del data["operator"]
    assert check_cluster(data) == (
        None, ["[[epoch]] #1: an [[epoch]] entry needs the [operator] key that signed it."],
    )


GOOD_ADDRESSES = {
    "127.0.0.1:7000": ("127.0.0.1", 7000),
    "[::1]:7000": ("::1", 7000),
    "[fe80::1%eth0]:7000": ("fe80::1%eth0", 7000),
    "replica-0.example.org.:65535": ("replica-0.example.org.", 65535),
    "pbft_replica_1:1": ("pbft_replica_1", 1),
    # The longest name: 253 characters in labels of at most 63.
    ("a" * 63 + ".") * 3 + "a" * 61 + ":7000": (("a" * 63 + ".") * 3 + "a" * 61, 7000),
}
# Found by a red-team pass: each of these was "ok" to `pbft config check` (and written by
# `pbft keygen --host`), and failed only when a replica tried to listen or connect.
BAD_ADDRESSES = (
    "[::1:7000", "[zz]:7000", "::1:7000", "127.0.0.1:\u0667\u0660\u0660\u0660", "bad host:7000",
    "x" * 254 + ":7000", ("a" * 63 + ".") * 3 + "a" * 62 + ":7000", "a..b:7000", "-a:7000", ":7000", "h:", "h:65536", "host",
)


@pytest.mark.parametrize(("address", "split"), GOOD_ADDRESSES.items())
def test_an_address_is_a_host_name_or_an_ip_address_and_a_port(address, split):
    from pbft.protocol.config import split_hostport

    assert split_hostport(address) == split


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_an_address_a_resolver_would_not_take_is_refused(address):
    data = copy.deepcopy(cluster_dict())
    data["replica"][2]["address"] = address
    config, errors = check_cluster(data)
    assert config is None
    assert errors == [f"[[replica]] #3: 'address' must look like HOST:PORT, not {address!r}."]


def test_a_service_spec_digest_is_pinned():
    # Part of the signing domain (crypto.py): replicas of different builds must compute
    # the same 16 hex digits from the same [service] table (a mutation test found the
    # length unread).
    spec = ServiceSpec("pbft.service.ledger:Ledger", (("accounts", 4),), "/srv", "ledger 1")
    assert spec.digest() == "96c29df991897af9"
    assert ServiceSpec("pbft.service.ledger:Ledger", (("accounts", 4),), "/elsewhere", "ledger 1").digest() == spec.digest()
