"""Client clocks on the runtime client over real loopback TLS (OSDI'99 section 4.1): a
restarted client whose clock is behind completes; at the end of the timestamps it says so.
"""

from __future__ import annotations

import pytest

from pbft.protocol.client import CATCH_UP_GAP
from pbft.protocol.messages import MAX_U64

NOW = 1_750_000_000_000_000
"""A wall clock in microseconds, as the runtime seeds a client's timestamps."""
HOUR = 3_600 * 10**6
TEN_YEARS = 10 * 365 * 24 * HOUR


# -- the runtime client on real loopback TLS -------------------------------------------------


def fake_clock(monkeypatch, micros: int) -> None:
    """Make the runtime client's wall clock read `micros` microseconds."""
    import types

    from pbft.node import client as runtime_client

    monkeypatch.setattr(runtime_client, "time", types.SimpleNamespace(time_ns=lambda: micros * 1000))


@pytest.mark.parametrize(
    ("first_offset", "second_offset"),
    [(0, -HOUR), (TEN_YEARS, 0)],
    ids=["clock-an-hour-behind", "clock-ten-years-ahead-then-corrected"],
)
async def test_runtime_client_restarted_with_its_clock_behind_completes(
    tmp_path, monkeypatch, first_offset, second_offset
):
    import time

    import trio
    from test_node import make_cluster, start_nodes

    from pbft.node.client import open_client

    path = make_cluster(str(tmp_path), "clock")
    now = time.time_ns() // 1000
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await start_nodes(nursery, path)
            fake_clock(monkeypatch, now + first_offset)
            async with open_client(path, "alice", timeout=10) as client:
                await client.put(b"k", b"first")
                held = client.core.timestamp
            fake_clock(monkeypatch, now + second_offset)  # a new process, its clock behind
            async with open_client(path, "alice", timeout=10) as client:
                assert client.core.timestamp < held
                await client.put(b"k", b"second")
                assert client.core.timestamp == held + CATCH_UP_GAP
                assert await client.get(b"k") == b"second"
                await client.put(b"k", b"third")
                assert client.core.timestamp == held + 2 + CATCH_UP_GAP
            nursery.cancel_scope.cancel()


async def test_runtime_client_at_the_end_of_the_timestamps_raises_timestamperror(tmp_path, monkeypatch):
    import time

    import trio
    from test_node import make_cluster, start_nodes

    from pbft.node.client import ClientError, TimestampError, open_client

    path = make_cluster(str(tmp_path), "clockend")
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await start_nodes(nursery, path)
            fake_clock(monkeypatch, MAX_U64 - 1)  # a clock gone mad: the last timestamp
            async with open_client(path, "alice", timeout=10) as client:
                await client.put(b"k", b"last")
                with pytest.raises(TimestampError, match="largest timestamp"):
                    await client.put(b"k", b"more")
            fake_clock(monkeypatch, time.time_ns() // 1000)  # corrected: still no way on
            async with open_client(path, "alice", timeout=10) as client:
                with pytest.raises(ClientError, match=f"hold timestamp {MAX_U64} for client alice"):
                    await client.put(b"k", b"more")
            # Other clients are not affected.
            async with open_client(path, "bob", timeout=10) as client:
                await client.put(b"k", b"bob")
            nursery.cancel_scope.cancel()
