"""`pbft config check` and the operator's key (walkthrough findings 4 and 13): the
[operator] certificate and private key are checked like a member's, an encrypted
operator key is named among those not checked, and a passphrase mistake common to every
key is said once."""

from __future__ import annotations

import os
import shutil

import pytest

from pbft.cli.main import main
from pbft.cluster.configcheck import check_cluster_file
from pbft.cluster.keygen import generate_cluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster_path(tmp_path):
    return generate_cluster(str(tmp_path / "keys"), f=1, clients=["alice"], ports=[17500, 17501, 17502, 17503],
                            cluster_id="opchk")


def test_a_mismatched_operator_certificate_and_key_are_errors(cluster_path, capsys):
    base = os.path.dirname(cluster_path)
    shutil.copy(os.path.join(base, "client-alice.pem"), os.path.join(base, "client-operator.pem"))
    shutil.copy(os.path.join(base, "client-alice.key"), os.path.join(base, "client-operator.key"))
    assert main(["config", "check", cluster_path]) == 2
    out = capsys.readouterr().out
    assert "client-operator.pem does not hold client 'operator''s public_key in the cluster file" in out
    assert "the private key in " in out and "client-operator.key does not match client 'operator''s public_key" in out
    assert "2 errors" in out


def test_a_missing_operator_key_is_not_a_problem(cluster_path):
    """A host other than the operator's holds no operator key: nothing to check."""
    base = os.path.dirname(cluster_path)
    os.unlink(os.path.join(base, "client-operator.key"))
    os.unlink(os.path.join(base, "client-operator.pem"))
    assert check_cluster_file(cluster_path).errors == []


def test_an_encrypted_operator_key_is_named_among_those_not_checked(tmp_path, monkeypatch):
    path = generate_cluster(str(tmp_path / "enc"), f=1, clients=["alice"], ports=[17510, 17511, 17512, 17513],
                            cluster_id="enc", passphrase=b"secret")
    monkeypatch.delenv("PBFT_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("PBFT_KEY_PASSPHRASE_FILE", raising=False)
    report = check_cluster_file(path)
    assert report.errors == []
    assert "client-operator.key" in report.unopened
    assert report.notes[0].startswith("7 private key files are encrypted")  # 4 replicas, alice, operator, CA


def test_both_passphrase_variables_are_one_error(tmp_path, monkeypatch, capsys):
    path = generate_cluster(str(tmp_path / "enc"), f=1, clients=["alice"], ports=[17520, 17521, 17522, 17523],
                            cluster_id="enc", passphrase=b"secret")
    phrase = tmp_path / "pp"
    phrase.write_text("secret\n")
    monkeypatch.setenv("PBFT_KEY_PASSPHRASE", "secret")
    monkeypatch.setenv("PBFT_KEY_PASSPHRASE_FILE", str(phrase))
    assert main(["config", "check", path]) == 2
    out = capsys.readouterr().out
    assert out.count("set only one of PBFT_KEY_PASSPHRASE and PBFT_KEY_PASSPHRASE_FILE.") == 1, out
    assert "1 error," in out
