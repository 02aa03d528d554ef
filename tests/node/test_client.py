"""What a client says when a request cannot succeed (issue 14, items 2 and 5).

A request no replica would accept fails at once, naming the limit; a call that times out
names what the client saw: refused connections, replicas that close the TLS connection on
its certificate, replicas that hold a newer timestamp. Loopback only; every wait bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node.client import ClientError, RequestTooLarge, open_client
from pbft.protocol.messages import MAX_OPERATION
from pbft.service.kv import MAX_VALUE

SETTINGS = dict(checkpoint_interval=4, log_window=8, view_change_timeout_ms=300)


def make_cluster(tmp_path, name="errs") -> str:
    return generate_cluster(
        os.path.join(tmp_path, name), f=1, clients=["alice", "bob"], ports=free_ports(4),
        cluster_id=name, **SETTINGS,
    )


@pytest.fixture
def cluster_path(tmp_path):
    return make_cluster(str(tmp_path))


def pbft(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


# -- item 2: oversized requests ---------------------------------------------------------


async def test_a_66_kb_put_raises_clienterror_at_once_naming_the_limit(cluster_path):
    # No replica is running and the timeout is long: only a local refusal is quick.
    with trio.fail_after(5):
        async with open_client(cluster_path, "alice", timeout=30) as client:
            with pytest.raises(ClientError, match=str(MAX_VALUE)) as info:
                await client.put(b"k", b"v" * 66_000)
            assert isinstance(info.value, RequestTooLarge)
            with pytest.raises(RequestTooLarge, match=str(MAX_OPERATION)):
                await client.execute(b"o" * (MAX_OPERATION + 1))
            with pytest.raises(RequestTooLarge, match="1024"):
                await client.get(b"k" * 2000)


def test_a_66_kb_put_from_the_command_line_exits_2_at_once(cluster_path):
    started = time.monotonic()
    result = pbft("client", "--config", cluster_path, "--id", "alice", "put", "k", "v" * 66_000)
    assert time.monotonic() - started < 15
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(MAX_VALUE) in err and "nothing was sent" in err, err


# -- item 5: a timeout names its cause ---------------------------------------------------


async def start_nodes(nursery, path):
    from pbft.node.clusterfile import load_cluster, load_identity
    from pbft.node.node import build_node

    config = load_cluster(path)
    for i in config.replica_ids():
        node = build_node(config, load_identity(config, i), i)
        await nursery.start(node.run)
    return config


async def test_every_replica_refusing_is_named_with_the_addresses(cluster_path):
    from pbft.node.clusterfile import load_cluster

    config = load_cluster(cluster_path)
    with trio.fail_after(10):
        async with open_client(cluster_path, "alice", timeout=1) as client:
            with pytest.raises(TimeoutError) as info:
                await client.put(b"k", b"v")
    message = str(info.value)
    assert message.startswith("no answer from the cluster within 1 seconds: every replica refused")
    assert "is the cluster running?" in message
    for r in config.replicas:
        assert f"{r.host}:{r.port}" in message, message


def test_every_replica_refusing_from_the_command_line(cluster_path):
    result = pbft("client", "--config", cluster_path, "--id", "alice", "--timeout", "1", "get", "k")
    assert result.returncode == 1, result
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "every replica refused the connection" in err, err


async def test_a_client_the_replicas_do_not_know_is_told_so(cluster_path, caplog):
    import logging

    from pbft.cluster.keygen import add_client

    caplog.set_level(logging.DEBUG, logger="pbft.transport")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await start_nodes(nursery, cluster_path)  # they know alice and bob only
            add_client(cluster_path, "carol")
            async with open_client(cluster_path, "carol", timeout=2) as carol:
                with pytest.raises(TimeoutError) as info:
                    await carol.put(b"k", b"v")
            async with open_client(cluster_path, "alice", timeout=10) as alice:
                await alice.put(b"k", b"v")  # the cluster itself is fine
            nursery.cancel_scope.cancel()
    message = str(info.value)
    assert "every replica closed the connection right after the TLS handshake" in message, message
    assert "client carol's certificate" in message and "restart" in message, message
    # Each replica warned once, naming the certificate's subject and the address; the
    # later connections (carol kept retrying) only at debug level.
    warned = [r for r in caplog.records
              if r.levelno == logging.WARNING and "certificate (subject" in r.getMessage()]
    assert len(warned) == 4, [r.getMessage() for r in warned]
    assert all("CN=client-carol" in r.getMessage() and "127.0.0.1:" in r.getMessage()
               for r in warned), warned[0].getMessage()
    repeats = [r for r in caplog.records
               if r.levelno == logging.DEBUG and "unknown certificate" in r.getMessage()]
    assert repeats, "carol's later connections were not logged at debug level"


def test_unknown_certificate_warnings_are_bounded():
    """Once per (subject, host) and period; a full table warns about nothing new."""
    import logging
    from unittest import mock

    from pbft.node import transport as t

    class FakeStream:
        def __init__(self, cn):
            self.cn = cn

    class FakeTcp:
        def __init__(self, host):
            self.socket = mock.Mock(getpeername=lambda: (host, 5555))

    tr = t.Transport.__new__(t.Transport)
    tr._unknown_warned = {}
    now = [0.0]
    with mock.patch.object(t, "_subject", lambda s: s.cn), \
            mock.patch.object(t.trio, "current_time", lambda: now[0]), \
            mock.patch.object(t, "UNKNOWN_CERT_WARNED", 3), \
            mock.patch.object(t.log, "warning") as warning, mock.patch.object(t.log, "debug"):
        for _ in range(5):
            tr._warn_unknown_certificate(FakeStream("CN=a"), FakeTcp("10.0.0.1"))
        assert warning.call_count == 1
        tr._warn_unknown_certificate(FakeStream("CN=a"), FakeTcp("10.0.0.2"))
        tr._warn_unknown_certificate(FakeStream("CN=b"), FakeTcp("10.0.0.1"))
        tr._warn_unknown_certificate(FakeStream("CN=c"), FakeTcp("10.0.0.1"))  # table full
        assert warning.call_count == 3 and len(tr._unknown_warned) == 3
        now[0] = t.UNKNOWN_CERT_WARN_EVERY
        tr._warn_unknown_certificate(FakeStream("CN=c"), FakeTcp("10.0.0.1"))  # expired ones go
        tr._warn_unknown_certificate(FakeStream("CN=a"), FakeTcp("10.0.0.1"))
        assert warning.call_count == 5
    assert logging.getLogger("pbft.transport") is t.log


def test_a_stale_request_is_named_when_too_few_replicas_agree_to_catch_up():
    from unittest import mock

    from conftest import client_key, make_config, replica_key

    from pbft.node.client import Client
    from pbft.protocol.crypto import seal
    from pbft.protocol.events import Received
    from pbft.protocol.messages import Held

    config = make_config()
    transport = mock.Mock(trouble=lambda r: None)
    client = Client(config, "alice", client_key("alice"), transport, timeout=1)
    client.core.submit(b"op")
    ts = client.core.outstanding.timestamp
    data = seal(replica_key(1), config.cluster_id, 1, Held(0, ts, "alice", 1, ts + 50)).to_bytes()
    client.core.step(Received(1, data))
    why = client._why_no_answer()
    assert "replica 1 refused the request as stale" in why and str(ts + 50) in why, why
    assert "clock is behind" in why and "fewer than 2 agree" in why, why
