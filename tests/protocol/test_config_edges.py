"""Every setting of the cluster file at each edge of its documented range (docs/formats.md,
"The cluster file"), and every required field, integer, string and path field in each of
the ways it can be wrong, word for word.

Written for a class of mutants (docs/mutation.md, "A third sample"): `test_config_sentences`
pins one sentence per kind of problem, so a range's edge moved by one, a default that
leaves its range, or a sentence that names no table went unseen for the fields it did
not happen to try. Here the table of ranges is the documentation's, and the test walks
all of it."""

from __future__ import annotations

import copy

import pytest
from conftest import cluster_dict

from pbft.protocol.config import check_cluster

# (field, the ClusterConfig attribute, lowest, highest, other [cluster] fields that make
# both edges valid) as docs/formats.md states them.
CLUSTER_INTS = [
    ("f", "f", 1, 33, {}),
    ("checkpoint_interval", "checkpoint_interval", 1, 1 << 20, {"log_window": 1 << 21}),
    ("log_window", "log_window", 1, 1 << 22, {"checkpoint_interval": 1, "pipeline": 1}),
    ("batch_max", "batch_max", 1, 4096, {}),
    ("pipeline", "pipeline", 1, 8, {}),  # at most log_window, 8 in cluster_dict
    ("view_change_timeout_ms", "view_change_timeout_ms", 10, 3_600_000, {}),
    ("tick_ms", "tick_ms", 1, 1000, {"retransmit_ms": 1000}),
    ("retransmit_ms", "retransmit_ms", 10, 3_600_000, {}),  # from tick_ms, 10 by default
    ("linger_ms", "linger_ms", 0, 300_000, {}),
]


def _file(**cluster) -> dict:
    data = cluster_dict()
    data["cluster"].update(cluster)
    return data


def _f_needs_replicas(data: dict) -> dict:
    """f = 33 needs 100 [[replica]] entries: give them (distinct ports and keys)."""
    f = data["cluster"].get("f", 1)
    if f == 1:
        return data
    from conftest import replica_key

    data["replica"] = [
        {"id": i, "address": f"127.0.0.1:{7000 + i}", "public_key": replica_key(i).public.hex()}
        for i in range(3 * f + 1)
    ]
    return data


@pytest.mark.parametrize("field,attr,lo,hi,extra", CLUSTER_INTS, ids=[c[0] for c in CLUSTER_INTS])
def test_each_cluster_integer_is_taken_at_both_edges_of_its_range(field, attr, lo, hi, extra):
    for value in (lo, hi):
        config, errors = check_cluster(_f_needs_replicas(_file(**extra, **{field: value})))
        assert errors == [], (field, value)
        assert getattr(config, attr) == value


@pytest.mark.parametrize("field,attr,lo,hi,extra", CLUSTER_INTS, ids=[c[0] for c in CLUSTER_INTS])
def test_each_cluster_integer_outside_its_range_or_not_an_integer_is_one_sentence(field, attr, lo, hi, extra):
    for value in (lo - 1, hi + 1, "7", 2.0, True):
        data = _file(**extra, **{field: value})
        config, errors = check_cluster(data)
        assert config is None
        said = f"[cluster]: '{field}' must be an integer from {lo} to {hi}, not {value!r}."
        # An f that is wrong is said, and the replicas are not counted against a guess;
        # a log window below the interval is said once more as that.
        assert errors[0] == said, (field, value, errors)
        if field != "log_window":
            assert errors == [said], (field, value, errors)


def test_a_log_window_below_eight_with_no_pipeline_is_taken():
    """`pipeline` defaults to 8 only where the window allows it (docs/formats.md): a file
    with a window of 4 and no `pipeline` was refused with "'pipeline' must be an integer
    from 1 to 4, not 8", a value nobody wrote (found writing this file)."""
    config, errors = check_cluster(_file(checkpoint_interval=2, log_window=4))
    assert errors == [] and config.pipeline == 4
    config, errors = check_cluster(_file(checkpoint_interval=8, log_window=9))
    assert errors == [] and config.pipeline == 8
    data = _file(checkpoint_interval=2, log_window=4, pipeline=0)
    assert check_cluster(data)[1] == ["[cluster]: 'pipeline' must be an integer from 1 to 4, not 0."]


@pytest.mark.parametrize("section,field,where", [
    ("cluster", "id", "[cluster]"),
    ("cluster", "f", "[cluster]"),
    ("replica", "id", "[[replica]] #2"),
    ("replica", "address", "[[replica]] #2"),
    ("replica", "public_key", "[[replica]] #2"),
    ("client", "id", "[[client]] #1"),
    ("client", "public_key", "[[client]] #1"),
])
def test_each_required_field_missing_is_one_sentence(section, field, where):
    data = cluster_dict()
    table = data["cluster"] if section == "cluster" else data[section][1 if section == "replica" else 0]
    del table[field]
    config, errors = check_cluster(data)
    assert config is None
    assert errors[0] == f"{where}: the field '{field}' is missing.", errors


@pytest.mark.parametrize("section,field,value,where,sentence", [
    ("cluster", "id", 5, "[cluster]", "'id' must be a string, not 5."),
    ("cluster", "id", "", "[cluster]", "'id' must be a non-empty string of at most 255 bytes."),
    ("cluster", "id", "é" * 128, "[cluster]", "'id' must be a non-empty string of at most 255 bytes."),
    ("replica", "address", 7000, "[[replica]] #2", "'address' must be a string, not 7000."),
    ("replica", "id", "1", "[[replica]] #2", "'id' must be an integer, not '1'."),
    ("client", "id", 3, "[[client]] #1", "'id' must be a string, not 3."),
])
def test_each_field_of_the_wrong_kind_is_one_sentence_naming_its_table(section, field, value, where, sentence):
    data = cluster_dict()
    table = data["cluster"] if section == "cluster" else data[section][1 if section == "replica" else 0]
    table[field] = value
    config, errors = check_cluster(data)
    assert config is None
    assert f"{where}: {sentence}" in errors, errors


def test_the_longest_cluster_id_is_taken():
    config, errors = check_cluster(_file(id="é" * 127 + "a"))  # 255 bytes
    assert errors == [] and config.cluster_id == "é" * 127 + "a"


PATHS = [
    ("[tls]", lambda d: d["tls"], "ca", "tls_ca"),
    ("[[replica]] #2", lambda d: d["replica"][1], "certificate", None),
    ("[[client]] #1", lambda d: d["client"][0], "certificate", None),
]


@pytest.mark.parametrize("where,table,field,attr", PATHS, ids=[p[0] for p in PATHS])
def test_each_path_field_is_a_string_without_nul(where, table, field, attr):
    for value, sentence in ((3, f"{where}: '{field}' must be a path."),
                            ("a\x00b", f"{where}: '{field}' must be a path without a NUL character.")):
        data = cluster_dict()
        table(data)[field] = value
        config, errors = check_cluster(data)
        assert config is None and errors == [sentence], errors
    data = cluster_dict()
    table(data)[field] = "some/file.pem"
    config, errors = check_cluster(data)
    assert errors == []
    if attr is not None:
        assert getattr(config, attr) == "some/file.pem"
    # Absent, it is the empty path (no file named): never a placeholder.
    data = cluster_dict()
    table(data).pop(field, None)
    config, errors = check_cluster(data)
    assert errors == []
    if attr is not None:
        assert getattr(config, attr) == ""


def test_a_cluster_file_that_is_not_a_table_is_one_sentence():
    for data in ([], "x", 3, None):
        assert check_cluster(data) == (None, ["the cluster file must be a TOML table."])


def test_an_address_missing_from_a_replica_is_said_once():
    """A replica without an address is said to lack it, and nothing is said of an address
    it does not have."""
    data = cluster_dict()
    del data["replica"][1]["address"]
    assert check_cluster(copy.deepcopy(data))[1] == ["[[replica]] #2: the field 'address' is missing."]


def test_parse_cluster_without_a_directory_reads_paths_from_the_current_one():
    """A caller of the Python API that names no base directory gets the current one, as
    `check_cluster` does: relative certificate and service paths are read from there."""
    from pbft.protocol.config import parse_cluster

    assert parse_cluster(cluster_dict()).base_dir == "."
    assert check_cluster(cluster_dict())[0].base_dir == "."
