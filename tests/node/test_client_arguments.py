"""The Python API refuses wrong arguments at once, locally, in one sentence (red team 2,
findings 5 and 6): a key, value or operation that is not bytes is a TypeError naming the
argument before anything is sent (a str operation used to be sent, dropped by the
replicas, and waited on for ever); a bad timeout is a TypeError or ValueError of ours,
not trio's; a call on a closed client is a ClientError, not a wait for ever.

No replica runs (every call would time out), so only a local refusal is quick; every
wait is bounded by trio.fail_after. Loopback only.
"""

from __future__ import annotations

import math
import os
import pathlib

import pytest
import trio

import pbft
from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node.client import ClientError, open_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster_path(tmp_path_factory):
    return generate_cluster(
        str(tmp_path_factory.mktemp("args") / "c"), f=1, clients=["alice"], ports=free_ports(4),
        cluster_id="args",
    )


NOT_BYTES = [("hello", "str"), ([1, 2], "list"), (None, "None"), (1, "int"), (bytearray(b"k"), "bytearray")]


@pytest.mark.parametrize(("bad", "kind"), NOT_BYTES)
async def test_an_operation_key_or_value_that_is_not_bytes_is_a_typeerror_at_once(cluster_path, bad, kind):
    # timeout=None (the default): before the fix a str operation waited for ever.
    with trio.fail_after(10):
        async with open_client(cluster_path, "alice") as client:
            with pytest.raises(TypeError, match=rf"^operation must be bytes, not {kind}"):
                await client.execute(bad)
            with pytest.raises(TypeError, match=rf"^key must be bytes, not {kind}"):
                await client.put(bad, b"v")
            with pytest.raises(TypeError, match=rf"^value must be bytes, not {kind}"):
                await client.put(b"k", bad)
            with pytest.raises(TypeError, match=rf"^key must be bytes, not {kind}"):
                await client.get(bad)
            with pytest.raises(TypeError, match=rf"^key must be bytes, not {kind}"):
                await client.delete(bad)
            assert client.sent == 0  # nothing went out


async def test_a_str_says_to_encode_it_and_read_only_must_be_a_bool(cluster_path):
    with trio.fail_after(10):
        async with open_client(cluster_path, "alice") as client:
            with pytest.raises(TypeError, match=r"encode a str first"):
                await client.get("a")
            with pytest.raises(TypeError, match=r"^read_only must be True or False, not str"):
                await client.execute(b"op", read_only="yes")
            assert client.sent == 0


async def test_any_call_after_the_client_is_closed_is_a_clienterror(cluster_path):
    with trio.fail_after(10):
        async with open_client(cluster_path, "alice") as client:
            pass
        for call in (client.get(b"a"), client.put(b"k", b"v"), client.delete(b"k"),
                     client.execute(b"op"), client.status(timeout=1)):
            with pytest.raises(ClientError, match=r"^the client alice is closed"):
                await call
    assert pbft.ClientError is ClientError


@pytest.mark.parametrize(
    ("bad", "error"),
    [(-1, ValueError), (0, ValueError), (math.nan, ValueError), (math.inf, ValueError),
     (10**400, ValueError), ("x", TypeError), (None, TypeError), (True, TypeError)],
)
async def test_a_bad_status_timeout_is_ours_not_trios(cluster_path, bad, error):
    with trio.fail_after(10):
        async with open_client(cluster_path, "alice") as client:
            with pytest.raises(error, match=r"^timeout must be a positive number of seconds, not "):
                await client.status(timeout=bad)


@pytest.mark.parametrize(
    ("bad", "error"),
    [("5", TypeError), (True, TypeError), (b"1", TypeError), (-5, ValueError), (math.nan, ValueError),
     (0.0, ValueError)],
)
async def test_a_bad_open_client_timeout_is_one_sentence(cluster_path, bad, error):
    with trio.fail_after(10):
        with pytest.raises(error, match=r"^timeout must be None or a positive number of seconds, not "):
            async with pbft.open_client(cluster_path, "alice", timeout=bad):
                pass  # pragma: no cover


async def test_the_cluster_file_may_be_any_path_and_nothing_else(cluster_path):
    with trio.fail_after(10):
        for path in (os.fsencode(cluster_path), pathlib.Path(cluster_path)):
            async with pbft.open_client(path, "alice", timeout=1) as client:
                assert client.path == cluster_path
        for bad, kind in ((None, "None"), (5, "int")):
            with pytest.raises(TypeError, match=rf"^cluster_file must be a path .*, not {kind}$"):
                async with pbft.open_client(bad, "alice"):
                    pass  # pragma: no cover
        with pytest.raises(TypeError, match=r"^client_id must be a str .*, not bytes$"):
            async with pbft.open_client(cluster_path, b"alice"):
                pass  # pragma: no cover
