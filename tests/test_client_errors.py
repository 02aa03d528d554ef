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

from pbft.protocol.messages import MAX_OPERATION
from pbft.runtime.client import ClientError, RequestTooLarge, open_client
from pbft.runtime.keygen import generate_cluster
from pbft.runtime.launcher import free_ports
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
