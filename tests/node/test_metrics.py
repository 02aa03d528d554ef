"""Prometheus metrics of real ReplicaNodes on loopback (mutual TLS), scraped over HTTP
twice during a workload: names start with pbft_, counters only grow, gauges are sane.
"""

from __future__ import annotations

import os

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.metrics import NodeMetrics, parse_hostport, peek_type
from pbft.node.node import build_node
from pbft.protocol.messages import envelope_slot as peek_slot


async def http_get(port: int, path: str = "/metrics") -> tuple[int, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(values: dict, name: str, **labels) -> float:
    return sum(
        v for (n, ls), v in values.items()
        if n == name and all(dict(ls).get(k) == w for k, w in labels.items())
    )


async def test_metrics_endpoint_during_a_workload(tmp_path):
    path = generate_cluster(
        os.path.join(tmp_path, "m"), f=1, clients=["alice"], ports=free_ports(4),
        cluster_id="m", checkpoint_interval=4, log_window=8, view_change_timeout_ms=300,
    )
    config = load_cluster(path)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nodes = []
            for i in config.replica_ids():
                node = build_node(config, load_identity(config, i), i, metrics_address=("127.0.0.1", 0))
                await nursery.start(node.run)
                nodes.append(node)
            port = nodes[1].metrics_port
            assert port
            async with open_client(path, "alice", timeout=30) as client:
                for i in range(5):
                    await client.put(b"k", b"v%d" % i)
                status, first_text = await http_get(port)
                assert status == 200
                for i in range(5, 15):
                    await client.put(b"k", b"v%d" % i)
                status, second_text = await http_get(port)
                assert status == 200
            assert (await http_get(port, "/nope"))[0] == 404
            nursery.cancel_scope.cancel()

    first, second = samples(first_text), samples(second_text)
    names = {n for n, _ in second}
    assert all(n.startswith("pbft_") for n in names), sorted(n for n in names if not n.startswith("pbft_"))
    for name in (
        "pbft_view", "pbft_last_executed", "pbft_stable_checkpoint", "pbft_view_changes_total",
        "pbft_messages_in_total", "pbft_messages_out_total", "pbft_batch_size_count",
        "pbft_commit_latency_seconds_count", "pbft_queue_depth", "pbft_storage_write_seconds_count",
    ):
        assert name in names, name
    # Counters only grow, and this workload made them grow.
    for key, value in first.items():
        if key[0].endswith(("_total", "_count", "_sum")) and key in second:
            assert second[key] >= value, key
    for name in ("pbft_messages_in_total", "pbft_messages_out_total", "pbft_batch_size_count",
                 "pbft_commit_latency_seconds_count"):
        assert total(second, name) > total(first, name), name
    assert total(second, "pbft_messages_in_total", type="pre-prepare") > 0
    assert total(second, "pbft_messages_out_total", type="prepare") > 0
    # Gauges are sane: view 0, progress, a stable checkpoint at or below it.
    assert total(second, "pbft_view") == 0
    executed = total(second, "pbft_last_executed")
    assert executed >= total(first, "pbft_last_executed") and executed >= 1
    assert 0 <= total(second, "pbft_stable_checkpoint") <= executed
    assert {dict(ls)["peer"] for n, ls in second if n == "pbft_queue_depth"} == {"0", "2", "3"}
    assert total(second, "pbft_view_changes_total") == 0
    # Ed25519 work: a backup verified at least each of the 10 requests between the scrapes,
    # and signed its votes.
    assert total(second, "pbft_signatures_total", op="verify") - total(first, "pbft_signatures_total", op="verify") >= 10
    assert total(second, "pbft_signatures_total", op="sign") > total(first, "pbft_signatures_total", op="sign")


def test_peek_reads_type_and_slot_without_decoding():
    from pbft.protocol.crypto import KeyPair, seal
    from pbft.protocol.messages import Prepare, PrePrepare

    key = KeyPair.from_seed(b"x")
    pp = seal(key, "c", 0, PrePrepare(3, 70000, b"d" * 32, (b"r",))).to_bytes()
    assert peek_type(pp) == "pre-prepare" and peek_slot(pp) == (3, 70000)
    p = seal(key, "c", 1, Prepare(3, 5, b"d" * 32)).to_bytes()
    assert peek_type(p) == "prepare" and peek_slot(p) is None
    assert peek_type(b"") == peek_type(b"\xff\x00") == "unknown"


def test_registry_is_per_node_and_hostport_parses():
    a, b = NodeMetrics(0), NodeMetrics(1)
    a.view_changes.inc()
    assert b"pbft_view_changes_total 1.0" in a.text()
    assert b"pbft_view_changes_total 0.0" in b.text()
    assert parse_hostport("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_hostport("[::1]:0") == ("::1", 0)
    for bad in ("9100", "host:", "h:99999"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


def test_fast_histogram_buckets_are_inclusive_and_cumulative():
    from pbft.node.metrics import FastHistogram

    h = FastHistogram("x", "doc", (1, 2, 4))
    for v in (0.5, 1, 1.5, 4, 9):
        h.observe(v)
    fam = h.family()
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name == "x_bucket"}
    assert buckets == {"1.0": 2, "2.0": 3, "4.0": 4, "+Inf": 5}
    assert [s.value for s in fam.samples if s.name in ("x_count", "x_sum")] == [5, 16.0]


async def test_an_idle_connection_flood_is_capped_and_a_scrape_still_answered():
    # Found by a red-team pass: every idle connection held a file descriptor for up to
    # REQUEST_TIMEOUT, so a flood took all of the process's (and the replica stopped at
    # its next write of HISTORY). Connections beyond MAX_CONNECTIONS are closed at once.
    from pbft.node import metrics

    listeners = await metrics.bind_metrics("127.0.0.1", 0)
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(metrics.serve_metrics, listeners, lambda: b"up 1\n")
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(metrics.MAX_CONNECTIONS)]
        await trio.sleep(0.2)  # the server has taken them all
        with trio.fail_after(2):  # well before REQUEST_TIMEOUT frees any of them
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            assert await extra.receive_some(10) == b""  # closed at once, unread
        for s in idle[:1]:
            await s.aclose()
        await trio.sleep(0.2)
        with trio.fail_after(2):
            assert await http_get(port) == (200, "up 1\n")
        for s in idle[1:]:
            await s.aclose()
        nursery.cancel_scope.cancel()
