"""`pbft keygen --service FILE.py:Class`: FILE relative to --dir (where the cluster file
looks) or, failing that, to the working directory, written so that the cluster file finds
it; a missing file is reported with the full paths looked at. `scenario run --service`
names the full path too."""

from __future__ import annotations

import shutil
from pathlib import Path

from pbft.cli import main as cli
from pbft.node.clusterfile import load_cluster

COUNTERS = Path(__file__).resolve().parent.parent.parent / "examples" / "services" / "counters.py"
SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "net-drop.toml"


def test_a_service_file_in_the_working_directory(tmp_path, monkeypatch, capsys):
    shutil.copy(COUNTERS, tmp_path / "counters.py")
    monkeypatch.chdir(tmp_path)
    argv = ["keygen", "--dir", "keys/svc", "--service", "counters.py:Counters", "--service-param", "limit=50"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    text = (tmp_path / "keys" / "svc" / "cluster.toml").read_text()
    assert 'class = "../../counters.py:Counters"' in text, text
    config = load_cluster(str(tmp_path / "keys" / "svc" / "cluster.toml"))
    assert config.service is not None and dict(config.service.params) == {"limit": 50}


def test_a_service_file_beside_the_cluster_file_is_named_as_given(tmp_path, monkeypatch, capsys):
    (tmp_path / "keys" / "svc").mkdir(parents=True)
    shutil.copy(COUNTERS, tmp_path / "keys" / "svc" / "counters.py")
    shutil.copy(COUNTERS, tmp_path / "counters.py")  # --dir's wins, as before
    monkeypatch.chdir(tmp_path)
    assert cli.main(["keygen", "--dir", "keys/svc", "--force", "--service", "counters.py:Counters"]) == 0, \
        capsys.readouterr().err
    assert 'class = "counters.py:Counters"' in (tmp_path / "keys" / "svc" / "cluster.toml").read_text()


def test_a_missing_service_file_names_where_it_was_looked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["keygen", "--dir", "keys/svc", "--service", "counters.py:Counters"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "keys" / "svc" / "counters.py") in err and str(tmp_path / "counters.py") in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "keys").exists()  # nothing written
    assert cli.main(["scenario", "run", str(SCENARIO), "--service", "counters.py:Counters"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"looked for {tmp_path / 'counters.py'}" in err, err
