"""Protocol events are logged once each: a view change in a real loopback cluster gives
exactly one "view change started" and one "installed" line per replica and view, and
every line renders as one JSON object with ts, level, replica, event and fields.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from types import SimpleNamespace

import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import build_node
from pbft.node.process import _JsonFormatter, setup_logging
from pbft.protocol.viewchange import ViewStatus


async def test_view_change_is_logged_once_per_replica(tmp_path, caplog):
    path = generate_cluster(
        os.path.join(tmp_path, "l"), f=1, clients=["alice"], ports=free_ports(4),
        cluster_id="l", checkpoint_interval=4, log_window=8, view_change_timeout_ms=300,
    )
    config = load_cluster(path)
    caplog.set_level(logging.INFO, logger="pbft")
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nodes = []
            for i in config.replica_ids():
                node = build_node(config, load_identity(config, i), i)
                await nursery.start(node.run)
                nodes.append(node)
            async with open_client(path, "alice", timeout=30) as client:
                await client.put(b"k", b"before")
                nodes[0].stop()
                await client.put(b"k", b"after")
                # Let every backup finish installing the view it moved to.
                while not all(n.replica.view >= 1 and n.replica.status is ViewStatus.NORMAL for n in nodes[1:]):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    records = [r for r in caplog.records if r.name.startswith("pbft")]
    events = [r for r in records if getattr(r, "event", None)]
    started = Counter((r.replica, r.fields["view"]) for r in events if r.event == "view-change-started")
    installed = Counter((r.replica, r.fields["view"]) for r in events if r.event == "view-installed")
    for i in (1, 2, 3):
        view = nodes[i].replica.view
        assert started[(i, 1)] == 1, started
        assert installed[(i, view)] == 1, installed
    assert all(n == 1 for n in started.values()) and all(n == 1 for n in installed.values())
    # The core's Note saying the same is not logged a second time.
    texts = [r.getMessage() for r in records]
    for i in (1, 2, 3):
        assert sum(f"replica {i}: view change to view 1 started" in t for t in texts) == 1
    assert any("connected to replica" in t for t in texts)

    formatter = _JsonFormatter()
    for r in records:
        line = formatter.format(r)
        assert "\n" not in line
        obj = json.loads(line)
        assert {"ts", "level", "replica", "event", "fields"} <= set(obj)
    obj = json.loads(formatter.format(next(r for r in events if r.event == "view-installed")))
    assert obj["event"] == "view-installed" and obj["level"] == "info"
    assert obj["replica"] in (1, 2, 3) and obj["fields"]["primary"] == obj["fields"]["view"] % 4


def test_json_format_names_the_process_replica(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(SimpleNamespace(log_level="info", log_format="json", command="replica", id=2))
        logging.getLogger("pbft.transport").info("plain line %d", 7)
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    obj = json.loads(line)
    assert obj["replica"] == 2 and obj["event"] == "log" and obj["msg"] == "plain line 7"
    assert obj["fields"] == {} and obj["level"] == "info" and isinstance(obj["ts"], float)
