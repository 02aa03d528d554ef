"""A bad cluster file or key directory is one sentence naming the problem, never a trace."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pbft.cluster.keygen import generate_cluster
from pbft.node.clusterfile import load_cluster, load_identity, node_files
from pbft.protocol.config import ConfigError


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(generate_cluster(str(tmp_path_factory.mktemp("p") / "demo"))).parent


@pytest.fixture
def cluster_dir(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of a good cluster directory for each test to break."""
    target = tmp_path / "demo"
    shutil.copytree(pristine, target)
    return target


def assert_sentence(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text and text.endswith("."), text
    for needle in needles:
        assert needle in text, (needle, text)


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))


def test_the_good_file_loads(cluster_dir: Path) -> None:
    config = load_cluster(str(cluster_dir / "cluster.toml"))
    assert config.base_dir == str(cluster_dir)
    assert config.tls_ca == "ca.pem"


def _second_replica_id(text: str) -> str:
    return text.replace("id = 1\n", "id = 0\n", 1)


def _first_key(text: str) -> str:
    start = text.index('public_key = "') + len('public_key = "')
    return text[:start] + "zz" + text[start + 2 :]


def _set_first_key(text: str, key: str) -> str:
    start = text.index('public_key = "') + len('public_key = "')
    return text[:start] + key + text[start + 64 :]


def _alice_has_replica_0s_key(text: str) -> str:
    keys = [line for line in text.splitlines() if line.startswith("public_key")]
    return text.replace(keys[4], keys[0])


BAD_TEXT: list[tuple[str, Callable[[str], str], tuple[str, ...]]] = [
    ("missing [cluster]", lambda t: t.replace("[cluster]", "[clustre]"), ("no [cluster] table",)),
    ("missing field", lambda t: t.replace("f = 1\n", ""), ("[cluster]", "'f' is missing")),
    ("missing id", lambda t: t.replace('id = "demo"\n', ""), ("[cluster]", "'id' is missing")),
    ("wrong type", lambda t: t.replace("f = 1\n", 'f = "one"\n'), ("'f' must be an integer",)),
    (
        "wrong type in replica",
        lambda t: t.replace("id = 2\n", 'id = "2"\n'),
        ("[[replica]] #3", "'id' must be an integer"),
    ),
    ("replica count", lambda t: t.replace("f = 1\n", "f = 2\n"), ("n = 3f+1 = 7", "found 4")),
    ("duplicate replica", _second_replica_id, ("[[replica]] #2", "replica id 0 appears twice")),
    ("bad hex key", _first_key, ("[[replica]] #1", "'public_key' must be 64 hex digits")),
    (
        # The identity point: 32 bytes of hex, but a key whose "signatures" verify for
        # any message in some libraries (pbft/protocol/crypto.py, public_key_problem).
        "small-order key",
        lambda t: _set_first_key(t, "01" + "00" * 31),
        ("[[replica]] #1", "'public_key' is not a valid Ed25519 public key", "small order"),
    ),
    (
        "bad address",
        lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1"'),
        ("[[replica]] #2", "'address' must look like HOST:PORT"),
    ),
    (
        "bad port",
        lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1:99999"'),
        ("'address' must look like HOST:PORT",),
    ),
    ("TOML syntax", lambda t: t + "[[replica\n", ("is not valid TOML", "line")),
    (
        "duplicate public key",
        _alice_has_replica_0s_key,
        ("replica 0 and client 'alice' have the same public_key",),
    ),
    (
        "bad client name",
        lambda t: t.replace('id = "bob"', 'id = "b o b"'),
        ("[[client]] #2", "'id' must be 1-64"),
    ),
]


@pytest.mark.parametrize(("what", "mutate", "needles"), BAD_TEXT, ids=[b[0] for b in BAD_TEXT])
def test_bad_cluster_file(
    cluster_dir: Path, what: str, mutate: Callable[[str], str], needles: tuple[str, ...]
) -> None:
    path = cluster_dir / "cluster.toml"
    path.write_text(mutate(path.read_text()))
    with pytest.raises(ConfigError) as info:
        load_cluster(str(path))
    assert_sentence(info.value, str(path), *needles)


def test_file_not_found(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    assert_sentence(info.value, "the cluster file", path, "does not exist")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_cluster(str(tmp_path))
    assert_sentence(info.value, str(tmp_path), "is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(cluster_dir: Path) -> None:
    path = cluster_dir / "cluster.toml"
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_cluster(str(path))
    assert_sentence(info.value, str(path), "permission denied")


def test_not_utf8(cluster_dir: Path) -> None:
    path = cluster_dir / "cluster.toml"
    path.write_bytes(b"\xff\xfe" + path.read_bytes())
    with pytest.raises(ConfigError) as info:
        load_cluster(str(path))
    assert_sentence(info.value, str(path), "not UTF-8")


def test_missing_ca_file(cluster_dir: Path) -> None:
    (cluster_dir / "ca.pem").unlink()
    with pytest.raises(ConfigError) as info:
        load_cluster(str(cluster_dir / "cluster.toml"))
    assert_sentence(info.value, "CA certificate", str(cluster_dir / "ca.pem"), "does not exist")


def test_ca_file_is_not_a_certificate(cluster_dir: Path) -> None:
    (cluster_dir / "ca.pem").write_text("hello\n")
    with pytest.raises(ConfigError) as info:
        load_cluster(str(cluster_dir / "cluster.toml"))
    assert_sentence(info.value, str(cluster_dir / "ca.pem"), "is not a PEM certificate")


def test_missing_certificate_file(cluster_dir: Path) -> None:
    (cluster_dir / "client-bob.pem").unlink()
    with pytest.raises(ConfigError) as info:
        load_cluster(str(cluster_dir / "cluster.toml"))
    assert_sentence(info.value, "client 'bob'", "client-bob.pem", "does not exist")


def test_certificate_of_another_key(cluster_dir: Path) -> None:
    shutil.copy(cluster_dir / "replica-1.pem", cluster_dir / "replica-2.pem")
    with pytest.raises(ConfigError) as info:
        load_cluster(str(cluster_dir / "cluster.toml"))
    assert_sentence(info.value, "replica-2.pem does not hold replica 2's public_key")


def test_certificate_from_another_ca(cluster_dir: Path, tmp_path: Path) -> None:
    # A whole foreign identity (key, certificate, public key) grafted onto replica 2.
    other = Path(generate_cluster(str(tmp_path / "other"))).parent
    foreign = load_cluster(str(other / "cluster.toml")).replicas[2].public_key.hex()
    ours = load_cluster(str(cluster_dir / "cluster.toml")).replicas[2].public_key.hex()
    for suffix in ("pem", "key"):
        shutil.copy(other / f"replica-2.{suffix}", cluster_dir / f"replica-2.{suffix}")
    edit(cluster_dir / "cluster.toml", ours, foreign)
    with pytest.raises(ConfigError) as info:
        load_cluster(str(cluster_dir / "cluster.toml"))
    assert_sentence(info.value, "replica-2.pem is not signed by the cluster CA")


# ---------------------------------------------------------------------------- identities


def test_missing_key_file(cluster_dir: Path) -> None:
    config = load_cluster(str(cluster_dir / "cluster.toml"))
    key_file = node_files(str(cluster_dir), "bob")[0]
    os.unlink(key_file)
    with pytest.raises(ConfigError) as info:
        load_identity(config, "bob")
    assert_sentence(info.value, f"no private key for client 'bob' at {key_file}")


def test_private_key_not_matching_public_key(cluster_dir: Path) -> None:
    config = load_cluster(str(cluster_dir / "cluster.toml"))
    shutil.copy(cluster_dir / "replica-1.key", cluster_dir / "replica-2.key")
    with pytest.raises(ConfigError) as info:
        load_identity(config, 2)
    assert_sentence(
        info.value,
        f"the private key in {cluster_dir / 'replica-2.key'} does not match replica 2's "
        "public_key in the cluster file",
    )


def test_key_file_is_garbage(cluster_dir: Path) -> None:
    config = load_cluster(str(cluster_dir / "cluster.toml"))
    (cluster_dir / "replica-3.key").write_text("not a key\n")
    with pytest.raises(ConfigError) as info:
        load_identity(config, 3)
    assert_sentence(info.value, "replica-3.key", "is not a PEM private key")


def test_own_certificate_missing_for_identity(cluster_dir: Path) -> None:
    config = load_cluster(str(cluster_dir / "cluster.toml"))
    (cluster_dir / "replica-0.pem").unlink()
    with pytest.raises(ConfigError) as info:
        load_identity(config, 0)
    assert_sentence(info.value, "no certificate for replica 0", "replica-0.pem")


@pytest.mark.parametrize(
    ("node_id", "needle"),
    [
        (9, "replica 9 is not in the cluster file (ids are 0 to 3)"),
        (-1, "replica -1 is not in the cluster file"),
        ("mallory", "client 'mallory' is not listed in the cluster file"),
        (True, "neither a replica id nor a client name"),
    ],
)
def test_unknown_identity(pristine: Path, node_id: int | str, needle: str) -> None:
    config = load_cluster(str(pristine / "cluster.toml"))
    with pytest.raises(ConfigError) as info:
        load_identity(config, node_id)
    assert_sentence(info.value, needle)


def test_default_layout_when_certificate_field_is_absent(cluster_dir: Path) -> None:
    # Without `certificate` lines the layout default (replica-<i>.pem) is used, and
    # without [tls] the default ca.pem.
    path = cluster_dir / "cluster.toml"
    lines = path.read_text().splitlines(keepends=True)
    kept = [x for x in lines if not x.startswith(("certificate", "[tls]", "ca ="))]
    path.write_text("".join(kept))
    config = load_cluster(str(path))
    identity = load_identity(config, 1)
    assert identity.cert_path == str(cluster_dir / "replica-1.pem")
    assert identity.ca_path == str(cluster_dir / "ca.pem")


def test_a_service_table_names_the_replicated_class_and_its_parameters(cluster_dir: Path) -> None:
    from pbft.node.node import replicated_service
    from pbft.service.ledger import Ledger

    path = cluster_dir / "cluster.toml"
    path.write_text(path.read_text() + '\n[service]\nclass = "pbft.service.ledger:Ledger"\naccounts = 2\nbalance = 7\n')
    config = load_cluster(str(path))
    assert config.service is not None and config.service.kwargs() == {"accounts": 2, "balance": 7}
    hosted = replicated_service(config)
    assert isinstance(hosted.service, Ledger) and hosted.service.balance == 7


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('[service]\nclass = "pbft.service.ledger:Ledger"\nbalance = [1]\n', "[service]: parameter 'balance' must be"),
        ('[service]\nclas = "x:Y"\n', "the field 'class' is missing (is 'clas' a misspelling of it?)"),
    ],
)
def test_a_bad_service_table_is_one_sentence(cluster_dir: Path, table: str, words: str) -> None:
    path = cluster_dir / "cluster.toml"
    path.write_text(path.read_text() + "\n" + table)
    with pytest.raises(ConfigError) as info:
        load_cluster(str(path))
    assert_sentence(info.value, words)


def test_a_service_that_cannot_be_made_stops_the_replica_with_one_sentence(cluster_dir: Path) -> None:
    from pbft.node.node import replicated_service

    path = cluster_dir / "cluster.toml"
    path.write_text(path.read_text() + '\n[service]\nclass = "pbft.service.ledger:Ledger"\nflavour = 1\n')
    with pytest.raises(ConfigError) as info:
        replicated_service(load_cluster(str(path)))
    assert_sentence(info.value, "[service]", "parameters do not fit")


def test_a_replica_refuses_another_version_of_the_service_than_the_cluster_file_names(cluster_dir: Path) -> None:
    """The [service] table's `identity` ("name version", written by keygen --service) is
    bound into the signing domain and checked by every replica when it loads the class:
    a replica with another version of the code refuses to start instead of diverging."""
    from pbft.node.node import replicated_service

    path = cluster_dir / "cluster.toml"
    base = path.read_text()
    path.write_text(base + '\n[service]\nclass = "pbft.service.ledger:Ledger"\nidentity = "pbft.ledger 1"\n')
    same = load_cluster(str(path))
    assert replicated_service(same).service.identity() == "pbft.ledger 1"
    path.write_text(base + '\n[service]\nclass = "pbft.service.ledger:Ledger"\nidentity = "pbft.ledger 2"\n')
    other = load_cluster(str(path))
    assert other.signing_domain != same.signing_domain  # clients of one cannot talk to the other
    with pytest.raises(ConfigError) as info:
        replicated_service(other)
    assert_sentence(info.value, "'pbft.ledger 1'", "identity = 'pbft.ledger 2'", "same service and version")
    path.write_text(base + '\n[service]\nclass = "pbft.service.ledger:Ledger"\nidentity = 2\n')
    with pytest.raises(ConfigError) as info:
        load_cluster(str(path))
    assert_sentence(info.value, "'identity' must be a string")
