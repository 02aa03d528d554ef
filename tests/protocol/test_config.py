"""Cluster configuration (docs/formats.md) and quorum sizes (OSDI'99 section 4)."""

from __future__ import annotations

import copy
import itertools

import pytest
from conftest import CLUSTER_ID, cluster_dict, make_config, replica_key
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol.config import (
    LINGER_MAX_MS,
    LINGER_MS,
    VERIFY_THREADS,
    ConfigError,
    parse_cluster,
)


def test_good_dict_is_accepted():
    cfg = parse_cluster(cluster_dict(), base_dir="/keys")
    assert cfg.cluster_id == CLUSTER_ID
    assert cfg.f == 1 and cfg.n == 4
    assert [r.id for r in cfg.replicas] == [0, 1, 2, 3]
    assert cfg.replicas[2].host == "127.0.0.1" and cfg.replicas[2].port == 7002
    assert cfg.replicas[2].public_key == replica_key(2).public
    assert cfg.replicas[2].certificate == "replica-2.pem"
    assert [c.id for c in cfg.clients] == ["alice", "bob"]
    assert cfg.checkpoint_interval == 4 and cfg.log_window == 8 and cfg.batch_max == 16
    assert cfg.tls_ca == "ca.pem" and cfg.base_dir == "/keys"
    assert cfg.client_index["bob"].id == "bob"
    assert set(cfg.member_keys()) == {0, 1, 2, 3, "alice", "bob"}


def test_replicas_may_be_listed_in_any_order():
    d = cluster_dict()
    d["replica"].reverse()
    assert [r.id for r in parse_cluster(d).replicas] == [0, 1, 2, 3]


def test_defaults():
    d = cluster_dict()
    d["cluster"] = {"id": "x", "f": 1}
    del d["tls"]
    del d["client"]
    cfg = parse_cluster(d)
    assert cfg.checkpoint_interval == 128 and cfg.log_window == 256
    assert cfg.batch_max == 256 and cfg.clients == ()


def test_linger_ms():
    """How long a removed replica lingers: 10 s unless the file says, 0 to 300,000."""
    d = cluster_dict()
    assert parse_cluster(d).linger_ms == LINGER_MS == 10_000
    for ms in (0, 1, 2_500, LINGER_MAX_MS):
        d["cluster"]["linger_ms"] = ms
        assert parse_cluster(d).linger_ms == ms
    d["cluster"]["linger_ms"] = LINGER_MAX_MS + 1
    with pytest.raises(ConfigError) as err:
        parse_cluster(d)
    assert str(err.value) == "[cluster]: 'linger_ms' must be an integer from 0 to 300000, not 300001."


def test_verify_threads_per_replica():
    d = cluster_dict()
    d["replica"][2]["verify_threads"] = 2
    d["replica"][3]["verify_threads"] = 0
    cfg = parse_cluster(d)
    assert [r.verify_threads for r in cfg.replicas] == [VERIFY_THREADS, VERIFY_THREADS, 2, 0]
    d["replica"][1]["verify_threads"] = 65
    with pytest.raises(ConfigError) as err:
        parse_cluster(d)
    assert str(err.value) == "[[replica]] #2: 'verify_threads' must be an integer from 0 to 64, not 65."


def test_ipv6_address():
    d = cluster_dict()
    d["replica"][0]["address"] = "[::1]:7000"
    assert parse_cluster(d).replicas[0].host == "::1"


def _set(path, value):
    def mutate(d):
        target = d
        for p in path[:-1]:
            target = target[p]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


_DELETE = object()

# (mutation, a word the error message must contain)
BAD = {
    "not a table": (lambda d: d.clear() or d.update({"x": 1}), "cluster"),
    "no cluster table": (_set(["cluster"], _DELETE), "cluster"),
    "cluster not a table": (_set(["cluster"], "x"), "cluster"),
    "id missing": (_set(["cluster", "id"], _DELETE), "id"),
    "id not a string": (_set(["cluster", "id"], 7), "id"),
    "id empty": (_set(["cluster", "id"], ""), "id"),
    "id too long": (_set(["cluster", "id"], "x" * 256), "id"),
    "f missing": (_set(["cluster", "f"], _DELETE), "'f'"),
    "f zero": (_set(["cluster", "f"], 0), "'f'"),
    "f negative": (_set(["cluster", "f"], -1), "'f'"),
    "f as string": (_set(["cluster", "f"], "1"), "'f'"),
    "f as bool": (_set(["cluster", "f"], True), "'f'"),
    "f as float": (_set(["cluster", "f"], 1.0), "'f'"),
    "checkpoint_interval zero": (
        _set(["cluster", "checkpoint_interval"], 0),
        "checkpoint_interval",
    ),
    "checkpoint_interval string": (
        _set(["cluster", "checkpoint_interval"], "4"),
        "checkpoint_interval",
    ),
    "log_window below K": (_set(["cluster", "log_window"], 3), "log_window"),
    "log_window zero": (_set(["cluster", "log_window"], 0), "log_window"),
    "batch_max zero": (_set(["cluster", "batch_max"], 0), "batch_max"),
    "batch_max huge": (_set(["cluster", "batch_max"], 10**6), "batch_max"),
    "pipeline zero": (_set(["cluster", "pipeline"], 0), "pipeline"),
    "pipeline above window": (_set(["cluster", "pipeline"], 9), "pipeline"),
    "view_change_timeout_ms tiny": (
        _set(["cluster", "view_change_timeout_ms"], 1),
        "view_change_timeout_ms",
    ),
    "tick_ms zero": (_set(["cluster", "tick_ms"], 0), "tick_ms"),
    "retransmit_ms below tick": (_set(["cluster", "retransmit_ms"], 5), "retransmit_ms"),
    "linger_ms negative": (_set(["cluster", "linger_ms"], -1), "linger_ms"),
    "linger_ms above its cap": (_set(["cluster", "linger_ms"], 300_001), "linger_ms"),
    "linger_ms string": (_set(["cluster", "linger_ms"], "10s"), "linger_ms"),
    "tls not a table": (_set(["tls"], "ca.pem"), "tls"),
    "tls ca not a path": (_set(["tls", "ca"], 3), "ca"),
    "no replicas": (_set(["replica"], _DELETE), "replica"),
    "replicas empty": (_set(["replica"], []), "replica"),
    "replicas not a list": (_set(["replica"], {"id": 0}), "replica"),
    "too few replicas": (lambda d: d["replica"].pop(), "replica"),
    "replica not a table": (_set(["replica", 0], "r0"), "replica"),
    "replica id missing": (_set(["replica", 1, "id"], _DELETE), "id"),
    "replica id string": (_set(["replica", 1, "id"], "1"), "id"),
    "replica id out of range": (_set(["replica", 1, "id"], 4), "id"),
    "replica id negative": (_set(["replica", 1, "id"], -1), "id"),
    "replica id duplicate": (_set(["replica", 1, "id"], 0), "id"),
    "address missing": (_set(["replica", 2, "address"], _DELETE), "address"),
    "address no port": (_set(["replica", 2, "address"], "127.0.0.1"), "address"),
    "address bad port": (_set(["replica", 2, "address"], "127.0.0.1:x"), "address"),
    "address port zero": (_set(["replica", 2, "address"], "127.0.0.1:0"), "address"),
    "address port too big": (_set(["replica", 2, "address"], "127.0.0.1:65536"), "address"),
    "address no host": (_set(["replica", 2, "address"], ":7000"), "address"),
    "address not a string": (_set(["replica", 2, "address"], 7000), "address"),
    "address duplicate": (_set(["replica", 2, "address"], "127.0.0.1:7000"), "address"),
    "replica key missing": (_set(["replica", 3, "public_key"], _DELETE), "public_key"),
    "replica key not hex": (_set(["replica", 3, "public_key"], "zz" * 32), "public_key"),
    "replica key short": (_set(["replica", 3, "public_key"], "ab" * 31), "public_key"),
    "replica key bytes": (_set(["replica", 3, "public_key"], b"\x00" * 32), "public_key"),
    "replica certificate not a path": (_set(["replica", 3, "certificate"], 1), "certificate"),
    "verify_threads negative": (_set(["replica", 1, "verify_threads"], -1), "verify_threads"),
    "verify_threads too many": (_set(["replica", 1, "verify_threads"], 65), "verify_threads"),
    "verify_threads string": (_set(["replica", 1, "verify_threads"], "2"), "verify_threads"),
    "verify_threads bool": (_set(["replica", 1, "verify_threads"], True), "verify_threads"),
    "verify_threads float": (_set(["replica", 1, "verify_threads"], 2.0), "verify_threads"),
    "clients not a list": (_set(["client"], {"id": "alice"}), "client"),
    "client not a table": (_set(["client", 0], "alice"), "client"),
    "client id missing": (_set(["client", 0, "id"], _DELETE), "id"),
    "client id not a string": (_set(["client", 0, "id"], 5), "id"),
    "client id bad characters": (_set(["client", 0, "id"], "al ice"), "id"),
    "client id empty": (_set(["client", 0, "id"], ""), "id"),
    "client id too long": (_set(["client", 0, "id"], "a" * 65), "id"),
    "client id duplicate": (_set(["client", 1, "id"], "alice"), "id"),
    "client key missing": (_set(["client", 0, "public_key"], _DELETE), "public_key"),
    "client key bad": (_set(["client", 0, "public_key"], "00"), "public_key"),
    "client certificate not a path": (_set(["client", 0, "certificate"], []), "certificate"),
}


@pytest.mark.parametrize("mutate,word", BAD.values(), ids=BAD.keys())
def test_bad_field_is_refused_naming_it(mutate, word):
    d = copy.deepcopy(cluster_dict())
    mutate(d)
    with pytest.raises(ConfigError) as info:
        parse_cluster(d)
    message = str(info.value)
    assert word in message
    assert "\n" not in message and message.endswith(".")


def test_non_dict_input():
    with pytest.raises(ConfigError):
        parse_cluster([])  # type: ignore[arg-type]


def test_client_id_with_trailing_newline_is_refused():
    d = cluster_dict()
    d["client"][0]["id"] = "alice\n"
    with pytest.raises(ConfigError):
        parse_cluster(d)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_field_corruption_raises_only_config_error(data):
    """Any value in any field: a ClusterConfig or a ConfigError, never another exception."""
    d = cluster_dict()
    table = data.draw(st.sampled_from(["cluster", "tls", "replica", "client"]))
    junk = st.one_of(
        st.integers(-5, 70000), st.text(max_size=6), st.booleans(), st.none(), st.lists(st.none())
    )
    if table in ("replica", "client"):
        i = data.draw(st.integers(0, len(d[table]) - 1))
        key = data.draw(st.sampled_from(sorted(d[table][i]) + ["extra"]))
        d[table][i][key] = data.draw(junk)
    else:
        key = data.draw(st.sampled_from(sorted(d[table]) + ["pipeline", "tick_ms"]))
        d[table][key] = data.draw(junk)
    try:
        parse_cluster(d)
    except ConfigError:
        pass


# -- quorum sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("f", [1, 2, 3, 4, 5])
def test_quorum_sizes(f):
    cfg = make_config(f=f)
    assert cfg.n == 3 * f + 1 == len(cfg.replicas)
    assert cfg.quorum == 2 * f + 1
    assert cfg.weak_quorum == f + 1
    assert [cfg.primary(v) for v in range(2 * cfg.n)] == list(range(cfg.n)) * 2
    assert list(cfg.replica_ids()) == list(range(cfg.n))


def naive_min_intersection(n: int, q: int) -> int:
    """Smallest intersection of two size-q subsets of n replicas, by enumeration."""
    members = range(n)
    best = n
    for a in itertools.combinations(members, q):
        sa = set(a)
        for b in itertools.combinations(members, q):
            best = min(best, len(sa & set(b)))
    return best


@pytest.mark.parametrize("f", [1, 2])
def test_quorums_intersect_in_a_correct_replica_naive(f):
    cfg = make_config(f=f)
    assert naive_min_intersection(cfg.n, cfg.quorum) == f + 1
    # One less than a quorum may miss every correct replica of another quorum.
    assert naive_min_intersection(cfg.n, cfg.quorum - 1) <= f


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.data())
def test_any_two_quorums_intersect_in_f_plus_one(f, data):
    cfg = make_config(f=f)
    a = data.draw(st.sets(st.integers(0, cfg.n - 1), min_size=cfg.quorum, max_size=cfg.quorum))
    b = data.draw(st.sets(st.integers(0, cfg.n - 1), min_size=cfg.quorum, max_size=cfg.quorum))
    faulty = data.draw(st.sets(st.integers(0, cfg.n - 1), max_size=f))
    assert len(a & b) >= f + 1
    assert (a & b) - faulty  # at least one correct replica in common
    # A weak quorum always contains a correct replica.
    w = data.draw(
        st.sets(st.integers(0, cfg.n - 1), min_size=cfg.weak_quorum, max_size=cfg.weak_quorum)
    )
    assert w - faulty
