"""`pbft keygen`, identities, and mutual TLS 1.3 between the nodes it makes."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pbft.cluster.keygen import add_client, generate_cluster
from pbft.errors import UsageError
from pbft.node.clusterfile import Identity, load_cluster, load_identity, node_files
from pbft.node.tls import client_context, peer_id, server_context
from pbft.protocol.config import ClusterConfig, ConfigError
from pbft.protocol.messages import Signer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> ClusterConfig:
    path = generate_cluster(str(tmp_path_factory.mktemp("k") / "demo"))
    return load_cluster(path)


# ---------------------------------------------------------------------------- keygen output


def test_generated_cluster_loads_with_quorums_for_f1(cluster: ClusterConfig) -> None:
    assert cluster.cluster_id == "demo"
    assert (cluster.f, cluster.n, cluster.quorum, cluster.weak_quorum) == (1, 4, 3, 2)
    assert [(r.id, r.host, r.port) for r in cluster.replicas] == [
        (i, "127.0.0.1", 7000 + i) for i in range(4)
    ]
    assert [c.id for c in cluster.clients] == ["alice", "bob"]
    assert (cluster.checkpoint_interval, cluster.log_window, cluster.batch_max) == (128, 256, 256)
    assert cluster.view_change_timeout_ms == 1000


def test_quorums_for_f2(tmp_path: Path) -> None:
    config = load_cluster(generate_cluster(str(tmp_path / "big"), f=2, clients=["c1"]))
    assert (config.n, config.quorum, config.weak_quorum) == (7, 5, 3)
    assert len(config.replicas) == 7


def test_every_identity_loads_and_matches_the_cluster_file(cluster: ClusterConfig) -> None:
    ids: list[Signer] = [*cluster.replica_ids(), "alice", "bob"]
    for node_id in ids:
        identity = load_identity(cluster, node_id)
        assert identity.node_id == node_id
        assert identity.key.public == cluster.member_keys()[node_id]
        assert os.path.exists(identity.cert_path) and os.path.exists(identity.ca_path)


def test_private_keys_are_owner_only(cluster: ClusterConfig) -> None:
    keys = [p for p in os.listdir(cluster.base_dir) if p.endswith(".key")]
    assert len(keys) == 4 + 2 + 1 + 1  # replicas, clients, CA, operator
    for name in keys:
        mode = stat.S_IMODE(os.stat(os.path.join(cluster.base_dir, name)).st_mode)
        assert mode == 0o600, name


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = generate_cluster(str(tmp_path / "c"))
    before = load_cluster(path).replicas[0].public_key
    with pytest.raises(UsageError, match="already exists; use --force"):
        generate_cluster(str(tmp_path / "c"))
    assert load_cluster(path).replicas[0].public_key == before
    # --force makes new keys, and a key file left with a wide mode is narrowed again.
    key_file = node_files(str(tmp_path / "c"), 0)[0]
    os.chmod(key_file, 0o644)
    generate_cluster(str(tmp_path / "c"), force=True)
    assert load_cluster(path).replicas[0].public_key != before
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_settings_ports_and_cluster_id(tmp_path: Path) -> None:
    path = generate_cluster(
        str(tmp_path / "x"),
        ports=[9001, 9005, 9003, 9002],
        cluster_id='we"ird\\id\x7fé',
        checkpoint_interval=4,
        pipeline=2,
    )
    config = load_cluster(path)
    assert config.cluster_id == 'we"ird\\id\x7fé'
    assert [r.port for r in config.replicas] == [9001, 9005, 9003, 9002]
    assert (config.checkpoint_interval, config.log_window, config.pipeline) == (4, 256, 2)
    big = load_cluster(generate_cluster(str(tmp_path / "y"), checkpoint_interval=1000))
    assert big.log_window == 2000  # the window always spans two checkpoint intervals


def test_ipv6_host(tmp_path: Path) -> None:
    config = load_cluster(generate_cluster(str(tmp_path / "v6"), host="::1"))
    assert config.replicas[1].host == "::1"
    assert config.replicas[1].port == 7001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"f": 0}, "--f must be an integer from 1"),
        ({"clients": ["ok", "not ok"]}, "client name 'not ok' must be"),
        ({"clients": ["a", "a"]}, "given twice"),
        ({"ports": [1, 2]}, "needs 4 ports, 2 were given"),
        ({"base_port": 65534}, "'address' must look like HOST:PORT"),
        ({"checkpont_interval": 4}, "unknown cluster setting 'checkpont_interval'"),
        ({"batch_max": "big"}, "'batch_max' must be an integer"),
        ({"batch_max": 0}, "'batch_max' must be an integer from 1"),
    ],
)
def test_bad_arguments_are_one_sentence_and_write_nothing(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as info:
        generate_cluster(str(tmp_path / "bad"), **kwargs)
    assert "\n" not in str(info.value) and str(info.value).endswith(".")
    assert not (tmp_path / "bad").exists()


def test_add_client(tmp_path: Path) -> None:
    path = generate_cluster(str(tmp_path / "c"), clients=["alice"])
    add_client(path, "carol")
    config = load_cluster(path)
    assert [c.id for c in config.clients] == ["alice", "carol"]
    assert load_identity(config, "carol").key.public == config.client_index["carol"].public_key
    assert path.endswith("cluster.toml") and "pbft keygen" in Path(path).read_text()
    with pytest.raises(UsageError, match="'carol' is already in"):
        add_client(path, "carol")
    with pytest.raises(UsageError, match="client name"):
        add_client(path, "no/slash")


# ---------------------------------------------------------------------------- TLS


async def _handshake(
    config: ClusterConfig, server: Identity, client: Identity
) -> tuple[Signer | None, Signer | None, str | None]:
    """Connect `client` to `server` on loopback; return what each side says the other is."""
    seen: dict[str, Signer | None] = {}
    with trio.fail_after(10):
        listeners = await trio.open_ssl_over_tcp_listeners(
            0, server_context(server), host="127.0.0.1"
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                stream = await listeners[0].accept()
                await stream.do_handshake()
                seen["server"] = peer_id(config, stream)
                await stream.send_all(b"ok")
                await stream.aclose()

            nursery.start_soon(serve)
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", port, ssl_context=client_context(client)
            )
            await stream.do_handshake()
            assert await stream.receive_some() == b"ok"
            seen["client"] = peer_id(config, stream)
            version = stream.version()
            await stream.aclose()
        await listeners[0].aclose()
    return seen["server"], seen["client"], version


async def test_mutual_tls13_between_replicas_names_both_peers(cluster: ClusterConfig) -> None:
    server_sees, client_sees, version = await _handshake(
        cluster, load_identity(cluster, 0), load_identity(cluster, 2)
    )
    assert (server_sees, client_sees, version) == (2, 0, "TLSv1.3")


async def test_client_to_replica(cluster: ClusterConfig) -> None:
    server_sees, client_sees, _ = await _handshake(
        cluster, load_identity(cluster, 3), load_identity(cluster, "bob")
    )
    assert (server_sees, client_sees) == ("bob", 3)


def test_contexts_are_tls13_only_and_mutual(cluster: ClusterConfig) -> None:
    identity = load_identity(cluster, 1)
    for ctx in (server_context(identity), client_context(identity)):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert not ctx.check_hostname


async def test_certificate_from_another_clusters_ca_is_refused(
    cluster: ClusterConfig, tmp_path: Path
) -> None:
    other = load_cluster(generate_cluster(str(tmp_path / "other")))
    intruder = load_identity(other, 1)
    with trio.fail_after(10):
        listeners = await trio.open_ssl_over_tcp_listeners(
            0, server_context(load_identity(cluster, 0)), host="127.0.0.1"
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        refused: list[BaseException] = []
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                stream = await listeners[0].accept()
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    refused.append(exc)
                await stream.aclose()

            nursery.start_soon(serve)
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", port, ssl_context=client_context(intruder)
            )
            # The intruder rejects our server certificate too, so its handshake fails;
            # in TLS 1.3 a client may also only learn of the refusal on its first read.
            with pytest.raises(trio.BrokenResourceError):
                await stream.do_handshake()
                await stream.receive_some()
            await stream.aclose()
        await listeners[0].aclose()
    assert refused and isinstance(refused[0].__cause__, ssl.SSLError)


async def test_client_certificate_cannot_serve(cluster: ClusterConfig) -> None:
    # Client certificates carry clientAuth only: a client cannot pose as a replica.
    refused = False
    try:
        await _handshake(cluster, load_identity(cluster, "alice"), load_identity(cluster, 1))
    except* trio.BrokenResourceError:
        refused = True
    assert refused


def test_peer_id_of_unknown_key_or_no_certificate(cluster: ClusterConfig, tmp_path: Path) -> None:
    other = load_identity(load_cluster(generate_cluster(str(tmp_path / "o"))), 0)
    der = ssl.PEM_cert_to_DER_cert(Path(other.cert_path).read_text())

    class Fake:
        def __init__(self, der: bytes | None) -> None:
            self.der = der

        def getpeercert(self, binary_form: bool = False) -> bytes | None:
            return self.der

    assert peer_id(cluster, Fake(der)) is None
    assert peer_id(cluster, Fake(None)) is None
    assert peer_id(cluster, Fake(b"garbage")) is None
    own = load_identity(cluster, "alice")
    assert peer_id(cluster, Fake(ssl.PEM_cert_to_DER_cert(Path(own.cert_path).read_text()))) == (
        "alice"
    )


def test_unloadable_tls_material_is_a_config_error(cluster: ClusterConfig, tmp_path: Path) -> None:
    good = load_identity(cluster, 0)
    bad = Identity(0, good.key, str(tmp_path / "none.pem"), good.key_path, good.ca_path)
    with pytest.raises(ConfigError, match="none.pem and key .* of replica 0 cannot be loaded"):
        server_context(bad)


# ---------------------------------------------------------------------------- CLI


def _pbft(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_keygen_then_refuses_again(tmp_path: Path) -> None:
    target = str(tmp_path / "x")
    first = _pbft("keygen", "--dir", target, "--clients", "alice, carol", "--base-port", "7100")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"wrote {target}/cluster.toml (4 replicas, clients alice, carol)"
    )
    config = load_cluster(f"{target}/cluster.toml")
    assert config.replicas[0].port == 7100 and "carol" in config.client_index
    again = _pbft("keygen", "--dir", target)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert "already exists" in again.stderr
    forced = _pbft("keygen", "--dir", target, "--force", "--f", "2", "--cluster-id", "prod")
    assert forced.returncode == 0, forced.stderr
    assert load_cluster(f"{target}/cluster.toml").cluster_id == "prod"


def test_cli_keygen_bad_client_name(tmp_path: Path) -> None:
    result = _pbft("keygen", "--dir", str(tmp_path / "y"), "--clients", "a b")
    assert result.returncode == 2
    assert result.stderr.startswith("pbft: the client name 'a b'")
    assert result.stderr.count("\n") == 1


def test_add_client_needs_the_ca_key(tmp_path: Path) -> None:
    path = generate_cluster(str(tmp_path / "c"), clients=[])
    os.unlink(tmp_path / "c" / "ca.key")
    with pytest.raises(ConfigError, match=r"the CA private key .*ca\.key does not exist\."):
        add_client(path, "dave")
    assert "dave" not in load_cluster(path).client_index


def test_cli_add_client(tmp_path: Path) -> None:
    d = tmp_path / "c"
    assert _pbft("keygen", "--dir", str(d)).returncode == 0
    path = str(d / "cluster.toml")
    added = _pbft("keygen", "--add-client", "carol", "--config", path)
    assert added.returncode == 0, added.stderr
    assert "carol" in load_cluster(path).client_index
    load_identity(load_cluster(path), "carol")
    again = _pbft("keygen", "--add-client", "carol", "--config", path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    missing = _pbft("keygen", "--add-client", "dave")
    assert missing.returncode == 2 and "--config" in missing.stderr
