"""`pbft admin` and a relative `[service] class = "FILE.py:Class"` (red-team finding 4).

The operator's cluster file names the service file relative to its own directory; a new
replica's copy lives two directories deeper (`epoch-E/replica-I/`). The class string is
hashed into the signing domain, so the copy keeps it as written and says where the file is
with `[service] class_dir` (not hashed): the copy must name the same file and give the
same signing domain, or the new replica could not start, or could not talk to the others.
Where this build's parser does not know `class_dir`, `pbft admin` says what to do instead
of printing a start command that fails."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from pbft.cli import main as cli
from pbft.cluster import admin
from pbft.node import client as node_client
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.protocol import codec

pytestmark = pytest.mark.timeout(60)

COUNTERS = Path(__file__).resolve().parent.parent.parent / "examples" / "services" / "counters.py"


def test_the_parser_takes_class_dir_as_where_a_file_is_found_not_as_a_parameter():
    from pbft.protocol.config import service_spec

    spec = service_spec({"class": "x.py:X", "class_dir": "d"}, lambda _: None, "", "/b")
    assert spec is not None and not spec.params and spec.base_dir == "/b/d"
    plain = service_spec({"class": "x.py:X"}, lambda _: None, "", "/b")
    assert spec.digest() == plain.digest()  # not part of the signed identity


@pytest.fixture
def cluster(tmp_path, monkeypatch, capsys):
    """keygen's own layout: counters.py in the working directory, the cluster file in
    keys/svc naming it as ../../counters.py."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(COUNTERS, tmp_path / "counters.py")
    argv = ["keygen", "--dir", "keys/svc", "--service", "counters.py:Counters", "--host", "127.0.0.1",
            "--base-port", "17480"]
    assert cli.main(argv) == 0, capsys.readouterr()
    path = str(tmp_path / "keys" / "svc" / "cluster.toml")
    assert load_cluster(path).service.ref == "../../counters.py:Counters"
    return path


@pytest.fixture
def replicas(monkeypatch):
    @contextlib.asynccontextmanager
    async def open_client(path, name, *, timeout=None, **_):
        config = load_cluster(path)
        load_identity(config, name)

        async def execute(operation):
            return codec.encode({"epoch": config.epoch + 1, "after": 16})

        yield SimpleNamespace(core=SimpleNamespace(timestamp=0), execute=execute)

    monkeypatch.setattr(node_client, "open_client", open_client)


def service_file(config) -> str:
    where = config.service.ref.rpartition(":")[0]
    return os.path.normpath(os.path.join(config.service.base_dir, where))


def test_a_new_replicas_copy_names_the_same_service_file_and_signs_in_the_same_domain(cluster, replicas, tmp_path):
    before = load_cluster(cluster)
    p = admin.plan(cluster, replace={3: "127.0.0.1:17487"})
    assert not p.warnings
    copy_path = os.path.join(p.new_replicas[3], "cluster.toml")
    copy = load_cluster(copy_path)
    assert copy.service.ref == before.service.ref  # as written: it is signed
    assert service_file(copy) == str(tmp_path / "counters.py")
    trio.run(admin.apply, p)
    after, copy = load_cluster(cluster), load_cluster(copy_path)
    assert copy.epoch == after.epoch == 1
    assert copy.signing_domain == after.signing_domain and copy.replica_domain == after.replica_domain
    assert service_file(copy) == str(tmp_path / "counters.py")
    from pbft.adversary.loader import make_service

    make_service(copy.service)  # the new replica loads it
    # The next change, its new replica's directory elsewhere (--out), at another depth.
    p2 = admin.plan(cluster, replace={2: "127.0.0.1:17486"}, out_dir=str(tmp_path / "elsewhere" / "deep" / "er"))
    copy2 = load_cluster(os.path.join(p2.new_replicas[2], "cluster.toml"))
    assert service_file(copy2) == str(tmp_path / "counters.py") and copy2.service.ref == before.service.ref


def test_a_module_path_or_an_absolute_file_is_copied_as_written(tmp_path, replicas, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(COUNTERS, tmp_path / "counters.py")
    argv = ["keygen", "--dir", "keys", "--service", f"{tmp_path / 'counters.py'}:Counters", "--host", "127.0.0.1",
            "--base-port", "17490"]
    assert cli.main(argv) == 0, capsys.readouterr()
    p = admin.plan(str(tmp_path / "keys" / "cluster.toml"), replace={1: "127.0.0.1:17495"})
    assert not p.warnings
    text = Path(p.new_replicas[1], "cluster.toml").read_text()
    assert "class_dir" not in text and f'class = "{tmp_path / "counters.py"}:Counters"' in text
