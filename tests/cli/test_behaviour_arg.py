"""`pbft replica --behaviour NAME[:key=value,...] | SCENARIO.toml` parsing (no processes)."""

from __future__ import annotations

import os

import pytest

from pbft.adversary import catalogue
from pbft.adversary.catalogue import parse_spec as parse_behaviour_spec
from pbft.cli.replica import resolve_behaviour
from pbft.cluster.keygen import generate_cluster
from pbft.errors import UsageError


def test_name_and_typed_params():
    assert parse_behaviour_spec("double-vote") == ("double-vote", {})
    name, params = parse_behaviour_spec(
        "vote-stuffing:copies=3,claim=false,phases=[prepare,commit],x=1.5,s=abc,q='a b'"
    )
    assert name == "vote-stuffing"
    assert params == {
        "copies": 3,
        "claim": False,
        "phases": ["prepare", "commit"],
        "x": 1.5,
        "s": "abc",
        "q": "a b",
    }
    for bad in (":x=1", "double-vote:leak", "double-vote:a=1,a=2"):
        with pytest.raises(UsageError):
            parse_behaviour_spec(bad)


def test_the_catalogue_is_not_changed_at_run_time(tmp_path):
    before = dict(catalogue.REGISTRY)
    cluster = generate_cluster(os.path.join(tmp_path, "k"), f=1, clients=["alice"], ports=[1, 2, 3, 4])
    resolve_behaviour("double-vote:leak=false", cluster, 1)
    assert dict(catalogue.REGISTRY) == before
    with pytest.raises(TypeError):
        catalogue.REGISTRY["x"] = object  # type: ignore[index]


@pytest.fixture
def cluster(tmp_path):
    return generate_cluster(os.path.join(tmp_path, "k"), f=1, clients=["alice"], ports=[1, 2, 3, 4])


def test_resolve_binds_params_and_checks_them(cluster):
    assert resolve_behaviour(None, cluster, 1) is None
    assert resolve_behaviour("double-vote", cluster, 1).label() == "double-vote"
    spec = resolve_behaviour("double-vote:leak=false", cluster, 1)
    assert spec.label() == "double-vote:leak=False"
    name, params = catalogue.parse_spec(spec.label())
    assert catalogue.lookup(name).name == "double-vote" and params == {"leak": False}
    with pytest.raises(UsageError, match="true or false"):
        resolve_behaviour("double-vote:leak=maybe", cluster, 1)
    with pytest.raises(UsageError, match="no parameter 'nope'"):
        resolve_behaviour("double-vote:nope=1", cluster, 1)
    with pytest.raises(UsageError, match="unknown behaviour"):
        resolve_behaviour("no-such", cluster, 1)


def test_scenario_file_entry_for_this_replica(cluster, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[byzantine]]\nreplica = 2\nbehaviour = "double-vote"\nleak = false\n')
    spec = resolve_behaviour(str(path), cluster, 2)
    assert spec is not None and spec.ref == "double-vote" and spec.params == {"leak": False}
    with pytest.raises(UsageError, match="no \\[\\[byzantine\\]\\] entry for replica 1"):
        resolve_behaviour(str(path), cluster, 1)
    with pytest.raises(UsageError, match="no such scenario file"):
        resolve_behaviour(str(tmp_path / "missing.toml"), cluster, 1)
