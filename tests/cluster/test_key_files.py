"""Issue 14, keys: passphrase-protected private keys, a warning for a key file others can
read, and a keys/ directory whose .gitignore keeps key material out of git."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_keygen import _handshake

from pbft.cli.main import main
from pbft.cluster.configcheck import check_cluster_file
from pbft.cluster.keygen import add_client, generate_cluster
from pbft.node import clusterfile
from pbft.node.clusterfile import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    exposure,
    load_cluster,
    load_identity,
)
from pbft.node.tls import client_context, server_context
from pbft.protocol.config import ConfigError

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]
SECRET = b"correct horse battery staple"


@pytest.fixture(autouse=True)
def no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(PASSPHRASE_FILE_ENV, raising=False)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cluster whose private keys are all encrypted with SECRET."""
    return Path(generate_cluster(str(tmp_path_factory.mktemp("k") / "locked"), passphrase=SECRET))


# ---------------------------------------------------------------------------- passphrases


def test_keygen_encrypts_every_private_key(locked: Path) -> None:
    for key_file in locked.parent.glob("*.key"):
        assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert key_file.stat().st_mode & 0o777 == 0o600


def test_encrypted_key_without_passphrase_is_one_clear_sentence(locked: Path) -> None:
    config = load_cluster(str(locked))
    with pytest.raises(ConfigError) as info:
        load_identity(config, 0)
    key_file = locked.parent / "replica-0.key"
    assert str(info.value) == (
        f"the private key of replica 0, {key_file} is encrypted and no passphrase was given: "
        "set PBFT_KEY_PASSPHRASE to it, or PBFT_KEY_PASSPHRASE_FILE to a file holding it."
    )


def test_encrypted_key_loads_with_the_environment_variable(
    locked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, SECRET.decode())
    config = load_cluster(str(locked))
    identity = load_identity(config, "alice")
    assert identity.key.public == config.client_index["alice"].public_key
    assert identity.key_passphrase == SECRET
    server_context(identity), client_context(identity)  # TLS opens the key file itself


def test_encrypted_key_loads_with_a_passphrase_file(
    locked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_bytes(SECRET + b"\n")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(secret))
    load_identity(load_cluster(str(locked)), 2)


def test_wrong_passphrase(locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "nope")
    with pytest.raises(ConfigError, match=r"cannot be decrypted with the passphrase from "
                       r"PBFT_KEY_PASSPHRASE: wrong passphrase\.$"):
        load_identity(load_cluster(str(locked)), 1)


def test_both_passphrase_settings_is_a_mistake(locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "a")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, "/nonexistent")
    with pytest.raises(ConfigError, match="set only one of"):
        load_identity(load_cluster(str(locked)), 1)


async def test_tls_between_nodes_with_encrypted_keys(
    locked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, SECRET.decode())
    config = load_cluster(str(locked))
    server_sees, client_sees, _ = await _handshake(
        config, load_identity(config, 0), load_identity(config, "bob")
    )
    assert (server_sees, client_sees) == ("bob", 0)


def test_keygen_command_with_passphrase_file_and_add_client(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    directory = tmp_path / "c"
    assert main(["keygen", "--dir", str(directory), "--passphrase-file", str(secret)]) == 0
    assert "the private keys are encrypted" in capsys.readouterr().out
    path = str(directory / "cluster.toml")
    # Adding a client needs the CA key, which is encrypted too.
    with pytest.raises(ConfigError, match="is encrypted and no passphrase was given"):
        add_client(path, "carol")
    monkeypatch.setenv("MY_PW", "s3cret")
    assert main(["keygen", "--add-client", "carol", "--config", path, "--passphrase-env", "MY_PW"]) == 0
    assert (directory / "client-carol.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    monkeypatch.setenv(PASSPHRASE_ENV, "s3cret")
    load_identity(load_cluster(path), "carol")
    report = check_cluster_file(path)
    assert (report.errors, report.warnings, report.notes) == ([], [], [])


def test_keygen_passphrase_env_must_be_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keygen", "--dir", str(tmp_path / "c"), "--passphrase-env", "PBFT_NO_SUCH_VAR"]) == 2
    assert "PBFT_NO_SUCH_VAR is not set" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_config_check_notes_encrypted_keys_it_cannot_open(locked: Path) -> None:
    report = check_cluster_file(str(locked))
    assert report.errors == [] and report.warnings == []
    # 4 replicas, alice, bob, the operator and the CA (the operator's was left out before).
    assert len(report.notes) == 1 and "8 private key files are encrypted" in report.notes[0]
    assert "client-operator.key" in report.notes[0]


# ---------------------------------------------------------------------------- permissions


def test_exposure() -> None:
    assert exposure(0o600) is None and exposure(0o400) is None
    assert exposure(0o640) == "its group can read it"
    assert exposure(0o644) == "its group and others can read it"
    assert exposure(0o602) == "others can write it"


def test_a_node_warns_once_when_its_key_is_readable_by_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clusterfile, "_warned_keys", set())
    config = load_cluster(generate_cluster(str(tmp_path / "c")))
    load_identity(config, 0)
    assert not caplog.records
    key_file = tmp_path / "c" / "replica-0.key"
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pbft.keys"):
        load_identity(config, 0)
        load_identity(config, 0)
    assert [r.getMessage() for r in caplog.records] == [
        f"the private key of replica 0, {key_file}, is not private (mode 0644: its group "
        f"and others can read it); chmod 600 {key_file}"
    ]


# ---------------------------------------------------------------------------- keys/ in git


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_keys_gitignore_keeps_generated_keys_out_of_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "keys").mkdir(parents=True)
    for name in (".gitignore", "README.md"):
        shutil.copy(REPO / "keys" / name, repo / "keys" / name)
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    generate_cluster(str(repo / "keys" / "demo"))
    (repo / "keys" / "loose.key").write_text("a key dropped at the top\n")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
        ).stdout

    git("init", "-q")
    git("add", "-A")
    tracked = sorted(git("ls-files").split())
    assert tracked == [".gitignore", "keys/.gitignore", "keys/README.md"]


# A passphrase that is not UTF-8 (red team 2, finding 4): Python hands the environment
# over as str with the undecodable bytes escaped; those bytes are the passphrase, as a
# passphrase file's would be, never a UnicodeEncodeError traceback.
RAW = b"\xff\xfe pw \xc3"


def test_a_passphrase_that_is_not_utf8_is_used_as_its_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_PW", os.fsdecode(RAW))
    directory = tmp_path / "c"
    assert main(["keygen", "--dir", str(directory), "--passphrase-env", "MY_PW"]) == 0
    path = str(directory / "cluster.toml")
    config = load_cluster(path)
    with pytest.raises(ConfigError, match="is encrypted and no passphrase was given"):
        load_identity(config, "alice")
    monkeypatch.setenv(PASSPHRASE_ENV, os.fsdecode(RAW))
    assert clusterfile.key_passphrase() == (RAW, PASSPHRASE_ENV)
    assert load_identity(config, "alice").key_passphrase == RAW
    # The same bytes in a passphrase file open the same keys.
    monkeypatch.delenv(PASSPHRASE_ENV)
    secret = tmp_path / "pw"
    secret.write_bytes(RAW + b"\n")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(secret))
    assert load_identity(config, 0).key_passphrase == RAW


def test_a_passphrase_no_environment_could_hold_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"^the passphrase in PBFT_KEY_PASSPHRASE cannot be"):
        clusterfile.key_passphrase({PASSPHRASE_ENV: "\ud800"})


def test_commands_given_a_non_utf8_passphrase_never_print_a_traceback(tmp_path: Path) -> None:
    import sys

    from pbft.cluster.launcher import free_ports

    env = {k: v for k, v in os.environb.items() if not k.startswith(b"PBFT_KEY_PASSPHRASE")}
    env[PASSPHRASE_ENV.encode()] = RAW
    directory = tmp_path / "c"

    def pbft(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pbft", *args], capture_output=True, text=True,
                              env=env, timeout=60, stdin=subprocess.DEVNULL)

    ports = free_ports(4)
    made = pbft("keygen", "--dir", str(directory), "--base-port", str(ports[0]),
                "--passphrase-env", PASSPHRASE_ENV)
    assert made.returncode == 0 and "Traceback" not in made.stderr, made
    path = str(directory / "cluster.toml")
    # No replica runs: status finds every one unreachable (exit 4), the client times out
    # (exit 1); both opened the encrypted client key with the raw bytes.
    status = pbft("status", "--config", path, "--timeout", "0.3")
    assert status.returncode == 4 and "Traceback" not in status.stderr, status
    client = pbft("client", "--config", path, "--id", "alice", "--timeout", "0.3", "get", "k")
    assert client.returncode == 1 and "Traceback" not in client.stderr, client
    assert "no answer from the cluster" in client.stderr, client
