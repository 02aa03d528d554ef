"""`pbft admin` and the files beside the operator's cluster file (walkthrough findings 1,
3 and 5): a rotated client's new key takes the old one's place only once the change has
taken effect, a replaced or removed node's key and certificate are moved aside to
`NAME.before-epoch-E.key/.pem`, `pbft config check` passes after every documented
command, and a command that fails leaves every file that existed before exactly as it was.

The replicas are stood in for by a client that loads the cluster file and the operator's
key exactly as `open_client` does and then answers what f+1 replicas would: the files are
what is tested here (tests/cluster/test_admin_real.py sends a rotation to real replicas)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from types import SimpleNamespace

import pytest

from pbft.cli import main as cli
from pbft.cluster import admin
from pbft.cluster.configcheck import check_cluster_file
from pbft.cluster.keygen import generate_cluster
from pbft.errors import ConfigError, UsageError
from pbft.node import client as node_client
from pbft.node.clusterfile import load_cluster, load_identity, load_replica, read_private_key
from pbft.protocol import codec

pytestmark = pytest.mark.timeout(60)

PORTS = [17400, 17401, 17402, 17403]


@pytest.fixture
def cluster_path(tmp_path):
    return generate_cluster(str(tmp_path / "keys"), f=1, clients=["alice", "bob"], ports=PORTS,
                            cluster_id="adminfiles")


@pytest.fixture
def replicas(monkeypatch):
    """The group taking every change: `after` is the boundary it answers."""
    state = SimpleNamespace(after=16, sent=0)

    @contextlib.asynccontextmanager
    async def open_client(path, name, *, timeout=None, **_):
        config = load_cluster(path)  # what the real client does before it dials
        load_identity(config, name)

        async def execute(operation):
            state.sent += 1
            return codec.encode({"epoch": config.epoch + 1, "after": state.after})

        yield SimpleNamespace(core=SimpleNamespace(timestamp=0), execute=execute)

    monkeypatch.setattr(node_client, "open_client", open_client)
    return state


def snapshot(directory) -> dict[str, tuple[str, int]]:
    """Every file under `directory`: its content's digest and its mode."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = (hashlib.sha256(fh.read()).hexdigest(),
                                                        os.stat(path).st_mode)
    return out


def public_of(path: str) -> bytes:
    return read_private_key(path, "a key").public


# ---------------------------------------------------------------------------- finding 1


def test_rotating_a_client_puts_its_new_key_in_place_once_the_change_took_effect(cluster_path, replicas, capsys):
    base = os.path.dirname(cluster_path)
    old_key = public_of(os.path.join(base, "client-bob.key"))
    with open(os.path.join(base, "client-bob.key"), "rb") as fh:
        old_bytes = fh.read()
    assert cli.main(["admin", "change", "--config", cluster_path, "--rotate-client", "bob"]) == 0
    out = capsys.readouterr().out
    config = load_cluster(cluster_path)
    assert config.epoch == 1 and replicas.sent == 1
    new_key = config.client_index["bob"].public_key
    assert new_key != old_key
    assert load_identity(config, "bob").key.public == new_key  # the new key, in place
    with open(os.path.join(base, "client-bob.before-epoch-1.key"), "rb") as fh:
        assert fh.read() == old_bytes  # the old one, kept aside
    assert not os.path.exists(os.path.join(base, "client-bob.epoch-1.key"))
    assert "client-bob.before-epoch-1.key" in out and "client-bob.before-epoch-1.pem" in out
    assert check_cluster_file(cluster_path).errors == []
    # The old key is refused from the new epoch on: put back in place, it no longer loads.
    os.replace(os.path.join(base, "client-bob.before-epoch-1.key"), os.path.join(base, "client-bob.key"))
    with pytest.raises(ConfigError, match="does not match client 'bob''s public_key"):
        load_identity(load_cluster(cluster_path), "bob")


def test_a_client_certificate_is_checked_against_the_latest_epochs_key(cluster_path, replicas):
    """As a replaced replica's: the [[client]] table's `certificate` names the file of
    the epoch-0 key; once the key changes, the default file must hold the new key."""
    base = os.path.dirname(cluster_path)
    assert cli.main(["admin", "change", "--config", cluster_path, "--rotate-client", "bob"]) == 0
    load_cluster(cluster_path)
    os.replace(os.path.join(base, "client-bob.before-epoch-1.pem"), os.path.join(base, "client-bob.pem"))
    with pytest.raises(ConfigError, match="client-bob.pem does not hold client 'bob''s public_key"):
        load_identity(load_cluster(cluster_path), "bob")


def test_a_rotation_that_times_out_leaves_every_file_as_it_was(cluster_path, capsys):
    """No replica answers (none runs): exit 1, and the operator's directory still works."""
    base = os.path.dirname(cluster_path)
    before = snapshot(base)
    argv = ["admin", "change", "--config", cluster_path, "--rotate-client", "bob", "--timeout", "1"]
    assert cli.main(argv) == 1
    assert "did not answer" in capsys.readouterr().err
    after = snapshot(base)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"client-bob.epoch-1.key", "client-bob.epoch-1.pem"}
    config = load_cluster(cluster_path)
    assert config.epoch == 0
    load_identity(config, "bob")
    assert check_cluster_file(cluster_path).errors == []


def test_a_plan_that_fails_halfway_puts_back_what_it_overwrote(cluster_path, tmp_path, capsys):
    base = os.path.dirname(cluster_path)
    # Left by an earlier plan of the same epoch: overwritten, then put back.
    for name in ("client-bob.epoch-1.key", "client-bob.epoch-1.pem", "client-carol.key"):
        with open(os.path.join(base, name), "w") as fh:
            fh.write(f"an earlier {name}\n")
    os.chmod(os.path.join(base, "client-carol.key"), 0o640)
    before = snapshot(base)
    out = tmp_path / "new"
    out.mkdir()
    (out / "replica-1").write_text("in the way")
    argv = ["admin", "change", "--config", cluster_path, "--rotate-client", "bob", "--add-client", "carol",
            "--replace", "1=127.0.0.1:1", "--out", str(out), "--timeout", "1"]
    assert cli.main(argv) == 2
    assert "cannot write the new nodes' files" in capsys.readouterr().err
    assert snapshot(base) == before
    assert os.listdir(out) == ["replica-1"]


def test_a_change_that_cannot_be_recorded_puts_every_file_back(cluster_path, replicas, monkeypatch):
    base = os.path.dirname(cluster_path)
    before = snapshot(base)
    p = admin.plan(cluster_path, replace={3: "127.0.0.1:17404"}, rotate_clients=["bob"])
    written = snapshot(base)
    real = admin._write_atomic

    def full_disk(path, text):
        if path.startswith(p.new_replicas[3]):
            raise OSError(28, "No space left on device", path)
        real(path, text)

    monkeypatch.setattr(admin, "_write_atomic", full_disk)
    import trio

    with pytest.raises(UsageError, match="took the change to epoch 1 .* every file was put back as it was"):
        trio.run(admin.apply, p)
    assert snapshot(base) == written
    assert {k: v for k, v in written.items() if k in before} == before
    assert load_cluster(cluster_path).epoch == 0
    load_identity(load_cluster(cluster_path), "bob")


def test_apply_refuses_a_plan_whose_new_client_key_was_replaced(cluster_path, replicas):
    import trio

    first = admin.plan(cluster_path, rotate_clients=["bob"])
    admin.plan(cluster_path, rotate_clients=["bob"])  # planned again: new keys
    with pytest.raises(UsageError, match="planned again"):
        trio.run(admin.apply, first)
    assert replicas.sent == 0  # refused before anything was sent


# ---------------------------------------------------------------------------- finding 3


def test_a_replaced_replicas_files_are_moved_aside(cluster_path, replicas, capsys):
    base = os.path.dirname(cluster_path)
    old = public_of(os.path.join(base, "replica-3.key"))
    assert cli.main(["admin", "replace", "3", "127.0.0.1:17404", "--config", cluster_path]) == 0
    out = capsys.readouterr().out
    for suffix in ("key", "pem"):
        assert not os.path.exists(os.path.join(base, f"replica-3.{suffix}"))
        assert f"replica-3.{suffix} -> {base}/replica-3.before-epoch-1.{suffix}" in out
    assert public_of(os.path.join(base, "replica-3.before-epoch-1.key")) == old
    new_dir = os.path.join(base, "epoch-1", "replica-3")
    assert f"--config {new_dir}/cluster.toml --id 3" in out
    assert public_of(os.path.join(new_dir, "replica-3.key")) == load_cluster(cluster_path).replicas[3].public_key
    report = check_cluster_file(cluster_path)
    assert report.errors == [], report.errors
    # What `pbft up` finds beside the cluster file: no key for replica 3, so no
    # replica 3 started with the superseded key.
    with pytest.raises(ConfigError, match="no private key for replica 3"):
        load_replica(cluster_path, 3)
    load_replica(os.path.join(new_dir, "cluster.toml"), 3)


@pytest.mark.parametrize("argv", [
    ["replace", "3", "127.0.0.1:17404"],
    ["replace", "2", "127.0.0.1:17402"],  # a key rotation: the same address
    ["change", "--f", "2", "--add", "4=127.0.0.1:17404", "--add", "5=127.0.0.1:17405", "--add", "6=127.0.0.1:17406"],
    ["change", "--add-client", "carol"],
    ["change", "--remove-client", "alice"],
    ["change", "--rotate-client", "alice", "--rotate-client", "bob"],
    ["change", "--replace", "0=127.0.0.1:17410", "--rotate-client", "alice", "--remove-client", "bob"],
])
def test_config_check_passes_after_every_documented_admin_command(cluster_path, replicas, argv, capsys):
    assert cli.main(["admin", argv[0], "--config", cluster_path, *argv[1:]]) == 0
    config = load_cluster(cluster_path)
    assert config.epoch == 1
    report = check_cluster_file(cluster_path)
    assert (report.errors, report.warnings) == ([], []), capsys.readouterr().out
    base = os.path.dirname(cluster_path)
    for r in config.replicas:  # a key beside the file is the one the latest epoch lists
        if os.path.exists(os.path.join(base, f"replica-{r.id}.key")):
            load_replica(cluster_path, r.id)
    for c in config.clients:
        load_identity(config, c.id)


def test_shrinking_then_growing_again_moves_the_stale_keys_aside(tmp_path, replicas, capsys):
    path = generate_cluster(str(tmp_path / "keys"), f=2, clients=["alice"], ports=list(range(17420, 17427)),
                            cluster_id="regrow")
    base = os.path.dirname(path)
    assert cli.main(["admin", "change", "--config", path, "--f", "1"]) == 0
    assert sorted(n for n in os.listdir(base) if n.startswith("replica-4")) == [
        "replica-4.before-epoch-1.key", "replica-4.before-epoch-1.pem"]
    add = [a for i in (4, 5, 6) for a in ("--add", f"{i}=127.0.0.1:{17430 + i}")]
    assert cli.main(["admin", "change", "--config", path, "--f", "2", *add]) == 0
    assert check_cluster_file(path).errors == []


def test_a_same_address_replace_says_when_the_new_node_can_start(cluster_path, replicas, capsys):
    assert cli.main(["admin", "replace", "2", "127.0.0.1:17402", "--config", cluster_path]) == 0
    out = capsys.readouterr().out
    assert "replica 2 keeps its address: its new node can listen there only once the old one has stopped" in out
    assert "up to 10 s after the change" in out
    assert cli.main(["admin", "replace", "1", "127.0.0.1:17499", "--config", cluster_path]) == 0
    assert "keeps its address" not in capsys.readouterr().out


def test_a_change_the_replicas_refuse_exits_1_and_leaves_every_file_as_it_was(cluster_path, monkeypatch, capsys):
    """The module's promise (pbft/cli/admin.py): 2 a usage or configuration error, 1 the
    replicas refused or did not answer. A refusal used to exit 2, as if the command line
    were wrong."""

    @contextlib.asynccontextmanager
    async def open_client(path, name, *, timeout=None, **_):
        async def execute(operation):
            return codec.encode({"error": "the next epoch is 5, not 2"})

        yield SimpleNamespace(core=SimpleNamespace(timestamp=0), execute=execute)

    monkeypatch.setattr(node_client, "open_client", open_client)
    base = os.path.dirname(cluster_path)
    code = cli.main(["admin", "change", "--config", cluster_path, "--add-client", "carol"])
    assert code == 1
    assert "pbft: the replicas refused the change: the next epoch is 5, not 2." in capsys.readouterr().err
    assert "[[epoch]]" not in open(cluster_path).read()
    assert os.path.exists(os.path.join(base, "client-carol.key"))  # written by the plan, kept for a retry
