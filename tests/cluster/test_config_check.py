"""Issue 14, cluster files: every unknown or misspelt key is refused with a suggestion, and
`pbft config check` reports every problem (and unsafe setting) of a file in one run."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import client_key, cluster_dict

from pbft.cli.main import main
from pbft.cluster.configcheck import check_cluster_file, is_loopback
from pbft.cluster.keygen import generate_cluster
from pbft.node.clusterfile import load_cluster
from pbft.node.storage import FSYNC_POLICIES
from pbft.protocol.config import (
    ARRAYS,
    FSYNC_VALUES,
    REQUIRED,
    SECTIONS,
    ConfigError,
    check_cluster,
    parse_cluster,
    section_name,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(generate_cluster(str(tmp_path_factory.mktemp("p") / "demo"))).parent


@pytest.fixture
def cluster_dir(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "demo"
    shutil.copytree(pristine, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def full_dict() -> dict:
    """A good parsed file that uses every section and every field of the format."""
    data = cluster_dict()
    data["cluster"].update(pipeline=4, tick_ms=10, retransmit_ms=250, linger_ms=10_000)
    data["storage"] = {"fsync": "always"}
    data["service"] = {"class": "pbft.service.ledger:Ledger", "accounts": 4}
    data["replica"][0]["metrics"] = "127.0.0.1:9100"
    data["replica"][0]["verify_threads"] = 1
    data["client"][0]["certificate"] = "client-alice.pem"
    data["operator"] = {"public_key": client_key("the-operator").public.hex(), "certificate": "operator.pem"}
    data["epoch"] = [{"epoch": 1, "after": 4, "command": _command(data)}]
    return data


def _command(data: dict) -> str:
    """The operator's signed command that makes epoch 1 of `data` (the same membership)."""
    from pbft.protocol.config import OPERATOR, parse_cluster
    from pbft.protocol.crypto import seal
    from pbft.protocol.epochs import Membership, reconfigure_operation
    from pbft.protocol.messages import Request

    config = parse_cluster(data)
    request = Request(reconfigure_operation(1, Membership.of(config)), 1, OPERATOR)
    return seal(client_key("the-operator"), config.signing_domain, OPERATOR, request).to_bytes().hex()


# ---------------------------------------------------------------------------- the cases of the issue

ISSUE_CASES = [
    (
        "view_change_timeout_ms = 1000",
        "view_change_timout_ms = 50",
        "[cluster]: unknown field 'view_change_timout_ms' (did you mean 'view_change_timeout_ms'?).",
    ),
    (
        "batch_max = 256",
        "batchmax = 12",
        "[cluster]: unknown field 'batchmax' (did you mean 'batch_max'?).",
    ),
    (
        "[tls]",
        '[storag]\nfsync = "off"\n\n[tls]',
        "unknown table [storag] (did you mean [storage]?).",
    ),
    (
        'address = "127.0.0.1:7000"',
        'adress = "127.0.0.1:7000"',
        "[[replica]] #1: the field 'address' is missing (is 'adress' a misspelling of it?).",
    ),
]


@pytest.mark.parametrize(("old", "new", "sentence"), ISSUE_CASES, ids=[c[1].split()[0] for c in ISSUE_CASES])
def test_misspellings_from_the_issue_are_refused_with_their_suggestion(
    cluster_dir: Path, old: str, new: str, sentence: str
) -> None:
    path = cluster_dir / "cluster.toml"
    edit(path, old, new)
    with pytest.raises(ConfigError) as info:
        load_cluster(str(path))
    assert str(info.value) == f"{path}: {sentence}"


def test_good_files_pass_the_strict_check(pristine: Path) -> None:
    # What keygen writes and what the tests build must keep loading.
    for data in (cluster_dict(), cluster_dict(f=2, clients=()), full_dict()):
        config, errors = check_cluster(data)
        assert errors == [] and config is not None
    assert full_dict()["replica"][0]["metrics"] == parse_cluster(full_dict()).replicas[0].metrics
    report = check_cluster_file(str(pristine / "cluster.toml"))
    assert (report.errors, report.warnings, report.notes) == ([], [], [])


def _misspell(name: str) -> str:
    return name + name[-1]  # "batch_max" -> "batch_maxx", "f" -> "ff", "tls" -> "tlss"


@pytest.mark.parametrize(
    ("section", "key"),
    [(s, k) for s, fields in SECTIONS.items() for k in fields],
    ids=[f"{s}.{k}" for s, fields in SECTIONS.items() for k in fields],
)
def test_every_field_of_every_section_is_checked(section: str, key: str) -> None:
    data = full_dict()
    table = data[section][0] if isinstance(data[section], list) else data[section]
    table[_misspell(key)] = table.pop(key)
    errors = check_cluster(data)[1]
    where = f"{section_name(section)} #1" if isinstance(data[section], list) else section_name(section)
    if key in REQUIRED[section]:
        expected = f"{where}: the field '{key}' is missing (is '{_misspell(key)}' a misspelling of it?)."
    else:
        expected = f"{where}: unknown field '{_misspell(key)}' (did you mean '{key}'?)."
    assert expected in errors, errors


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_table_name_is_checked(section: str) -> None:
    data = full_dict()
    data[_misspell(section)] = data.pop(section)
    errors = check_cluster(data)[1]
    shown = f"[[{_misspell(section)}]]" if section in ARRAYS else f"[{_misspell(section)}]"
    if section in REQUIRED[""]:
        assert any(f"(is {shown} a misspelling of it?)" in e for e in errors), errors
    else:
        assert f"unknown table {shown} (did you mean {section_name(section)}?)." in errors


@pytest.mark.parametrize(
    ("mutate", "sentence"),
    [
        (lambda d: d["cluster"].update(fsync="off"), "[cluster]: unknown field 'fsync' (it belongs in [storage])."),
        (lambda d: d.update(f=1), "unknown top-level field 'f' (it belongs in [cluster])."),
        (lambda d: d["tls"].update(zzz=1), "[tls]: unknown field 'zzz' (known: ca)."),
        (lambda d: d.update(replica=d["replica"][0]), "[replica] must be written [[replica]], one table per replica."),
        (lambda d: d.update(storage={"fsync": "sometimes"}), "[storage]: 'fsync' must be \"always\", \"batch\" or \"off\", not 'sometimes'."),
        (lambda d: d["replica"][1].update(metrics="9100"), "[[replica]] #2: 'metrics' must look like HOST:PORT, not '9100'."),
        (lambda d: d["cluster"].update(f=True), "[cluster]: 'f' must be an integer from 1 to 33, not True."),
    ],
    ids=["wrong-section", "top-level", "no-suggestion", "table-not-array", "fsync-value", "metrics-value", "bad-f"],
)
def test_other_mistakes_say_where_the_key_goes(mutate, sentence: str) -> None:
    data = full_dict()
    mutate(data)
    assert check_cluster(data)[1] == [sentence]
    with pytest.raises(ConfigError, match="^" + sentence.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("?", r"\?").replace(".", r"\.")):
        parse_cluster(data)


def test_check_cluster_collects_every_problem() -> None:
    data = full_dict()
    data["cluster"]["batchmax"] = 12
    data["cluster"]["f"] = 0
    data["replica"][2]["address"] = "nowhere"
    data["client"][1]["public_key"] = "zz"
    data["storag"] = {}
    errors = check_cluster(data)[1]
    assert len(errors) == 5, errors
    assert check_cluster(copy.deepcopy(data))[0] is None


def test_storage_policies_agree() -> None:
    assert set(FSYNC_VALUES) == set(FSYNC_POLICIES)


# ---------------------------------------------------------------------------- pbft config check


def run_check(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str]]:
    code = main(["config", "check", *args])
    return code, capsys.readouterr().out.splitlines()


def test_config_check_clean_file_exits_0(cluster_dir: Path, capsys) -> None:
    code, lines = run_check(capsys, str(cluster_dir / "cluster.toml"), "--strict")
    assert code == 0
    assert lines == [f"{cluster_dir / 'cluster.toml'}: ok (cluster 'demo', f = 1, 4 replicas, 2 clients)"]


def test_config_check_reports_several_problems_and_exits_2(cluster_dir: Path, capsys) -> None:
    path = cluster_dir / "cluster.toml"
    for old, new, _ in ISSUE_CASES:
        edit(path, old, new)
    edit(path, "id = 2\n", 'id = "2"\n')
    code, lines = run_check(capsys, str(path))
    assert code == 2
    errors = [line for line in lines if ": error: " in line]
    for _, _, sentence in ISSUE_CASES:
        assert f"{path}: error: {sentence}" in lines, lines
    assert any("[[replica]] #3: 'id' must be an integer" in e for e in errors)
    assert len(errors) == 5, lines
    assert lines[-1] == f"{path}: 5 errors, 0 warnings"


def test_config_check_finds_disk_problems_of_a_valid_file(cluster_dir: Path, capsys) -> None:
    (cluster_dir / "client-bob.pem").unlink()
    shutil.copy(cluster_dir / "replica-1.key", cluster_dir / "replica-2.key")
    code, lines = run_check(capsys, str(cluster_dir / "cluster.toml"))
    assert code == 2
    assert any("client-bob.pem does not exist" in line for line in lines), lines
    assert any("replica-2.key does not match replica 2's public_key" in line for line in lines), lines


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: os.chmod(d / "replica-1.key", 0o644), "replica-1.key is not private (mode 0644: its group and others can read it)"),
        (lambda d: os.chmod(d / "ca.key", 0o604), "ca.key is not private (mode 0604: others can read it)"),
        (lambda d: _append(d, '\n[storage]\nfsync = "off"\n'), 'fsync = "off": nothing is ever fsynced'),
        (lambda d: _append(d, '\n[storage]\nfsync = "batch"\n'), "may forget votes it sent and then equivocate"),
        (lambda d: edit(d / "cluster.toml", 'certificate = "replica-1.pem"', 'certificate = "replica-1.pem"\nmetrics = "0.0.0.0:9100"'),
         "[[replica]] #2: metrics = '0.0.0.0:9100' is not a loopback address"),
        (lambda d: os.chmod(d / "cluster.toml", 0o666), "can change it (and so add their own key as a member)"),
    ],
    ids=["group-readable-key", "world-readable-ca-key", "fsync-off", "fsync-batch", "metrics", "writable-file"],
)
def test_config_check_warns_about_insecure_settings(cluster_dir: Path, capsys, setup, needle: str) -> None:
    setup(cluster_dir)
    path = str(cluster_dir / "cluster.toml")
    code, lines = run_check(capsys, path)
    assert code == 0
    warnings = [line for line in lines if line.startswith(f"{path}: warning: ")]
    assert len(warnings) == 1 and needle in warnings[0], lines
    assert lines[-1] == f"{path}: 0 errors, 1 warning"
    assert run_check(capsys, path, "--strict")[0] == 1
    doc = json.loads(run_check(capsys, path, "--json")[1][0])
    assert doc["errors"] == [] and len(doc["warnings"]) == 1


def _append(d: Path, text: str) -> None:
    with open(d / "cluster.toml", "a") as fh:
        fh.write(text)


def test_config_check_of_a_missing_file(tmp_path: Path, capsys) -> None:
    code, lines = run_check(capsys, str(tmp_path / "nope.toml"))
    assert code == 2 and "does not exist" in lines[0]


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.org")


@pytest.mark.parametrize(
    ("service", "needle"),
    [
        ('class = "nope_no_such_module:X"', "nope_no_such_module"),
        ('class = "nothere.py:X"', "nothere.py"),
        ('class = "pbft.service.ledger:Ledger"\nidentity = "ledger 999"', "identity = 'ledger 999'"),
        ('class = "pbft.service.ledger:Ledger"\nno_such_parameter = 1', "no_such_parameter"),
    ],
    ids=["no module", "no file", "another identity", "unknown parameter"],
)
def test_config_check_loads_the_service_as_a_starting_replica_would(cluster_dir: Path, service: str, needle: str) -> None:
    # Found by a red-team pass: each was "ok" to the check and failed only when a replica
    # started (pbft.node.node loads the service with the same make_service).
    path = cluster_dir / "cluster.toml"
    path.write_text(path.read_text() + f"\n[service]\n{service}\n")
    report = check_cluster_file(str(path))
    assert len(report.errors) == 1 and needle in report.errors[0], report.errors


def test_config_check_passes_a_service_a_replica_can_start(cluster_dir: Path) -> None:
    path = cluster_dir / "cluster.toml"
    path.write_text(path.read_text() + '\n[service]\nclass = "pbft.service.ledger:Ledger"\naccounts = 4\n')
    report = check_cluster_file(str(path))
    assert report.errors == [] and report.config.service is not None
