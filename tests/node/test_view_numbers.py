"""Views as a person reads them: the epoch and the view within it ("epoch 2, view 0"),
in `pbft status` (text and JSON, top level and rows alike), `/status` and the replica's
log lines; the raw number only as `view_number`."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node import health
from pbft.node.clusterfile import load_cluster
from pbft.node.node import ReplicaNode, _of_epoch
from pbft.protocol.epochs import first_view
from pbft.protocol.messages import Status
from pbft.protocol.viewchange import ViewStatus

EPOCH2 = first_view(2)  # epoch 2, view 0: 8589934592


def _config(tmp_path):
    return load_cluster(generate_cluster(os.path.join(tmp_path, "vn"), f=1, clients=["alice"], ports=free_ports(4),
                                         cluster_id="vn", checkpoint_interval=4, log_window=8))


def test_status_json_gives_the_view_one_way_at_the_top_and_in_rows(tmp_path):
    config = _config(tmp_path)
    statuses = {i: Status(EPOCH2 + 1, 20, 20, 3) for i in range(4)}
    doc = health.render_json(config, health.judge(config, statuses))
    assert (doc["epoch"], doc["view"], doc["view_number"]) == (2, 1, EPOCH2 + 1), doc
    for row in doc["replicas"]:
        assert {k: row[k] for k in ("epoch", "view", "view_number")} == {
            k: doc[k] for k in ("epoch", "view", "view_number")}
    assert health.render_text(config, health.judge(config, statuses)).splitlines()[-1] == \
        "healthy (epoch 2, view 1, primary 1)"
    none = health.render_json(config, health.judge(config, {}))
    assert (none["epoch"], none["view"], none["view_number"], none["primary"]) == (None, None, None, None)


def test_one_replica_agrees_in_the_singular(tmp_path):
    config = _config(tmp_path)
    j = health.judge(config, {3: Status(EPOCH2, 5, 4, 1)})
    assert j.reasons[0] == "1 replica agrees on a view, 3 needed", j.reasons
    j = health.judge(config, {2: Status(EPOCH2, 5, 4, 1), 3: Status(EPOCH2, 5, 4, 1)})
    assert j.reasons[0] == "2 replicas agree on a view, 3 needed", j.reasons


def _node(config, view: int):
    core = SimpleNamespace(
        id=3, view=view, primary=0, status=ViewStatus.VIEW_CHANGE, transfer=None, last_executed=20, stable_seq=20,
        checkpoints=SimpleNamespace(votes={}, claims={}), log=[],
        catch_up=SimpleNamespace(progress={}, located=True),
    )
    return SimpleNamespace(
        id=3, config=config, replica=core, failure=None, transport=SimpleNamespace(connected={0, 1, 2}),
        links_since=0.0, port=None, storage=None, behaviour=None, broken=None,
        stop_reason="SIGTERM received", stop_reason_from=None,
    )


def test_replica_status_has_every_field_of_a_status_row(tmp_path):
    config = _config(tmp_path)
    mine = health.replica_status(_node(config, EPOCH2 + 3))
    row = health.judge(config, {i: Status(EPOCH2 + 3, 20, 20, 0) for i in range(4)}).rows[3]
    assert set(row) <= set(mine), set(row) - set(mine)
    assert (mine["epoch"], mine["view"], mine["view_number"], mine["lagging"]) == (2, 3, EPOCH2 + 3, False)
    # A reason names the view as the text does.
    assert health.readiness(_node(config, EPOCH2 + 3)).failing["view"].startswith("epoch 2, view 3 is not active")


def test_log_lines_name_the_epoch_and_the_view_within_it(tmp_path, caplog):
    config = _config(tmp_path)
    node = _node(config, EPOCH2)
    with caplog.at_level(logging.INFO):
        ReplicaNode._log_started(node)
        ReplicaNode._log_stopped(node, None)
    started, stopped = (r for r in caplog.records if getattr(r, "event", "") in ("replica-started", "replica-stopped"))
    assert "(epoch 2, view 0, last executed 20, data " in started.getMessage(), started.getMessage()
    assert stopped.getMessage() == "replica 3 stopped: SIGTERM received (epoch 2, view 0, last executed 20)"
    for r in (started, stopped):
        assert {k: r.fields[k] for k in ("epoch", "view", "view_number")} == {
            "epoch": 2, "view": 0, "view_number": EPOCH2}
    assert health.view_text(5) == "view 5" and _of_epoch(0) == "" and _of_epoch(2) == " (epoch 2)"
