"""Health endpoints of a replica (/healthz, /readyz, /status) on real loopback TLS, and the
verdict `pbft status` gives a cluster.

A replica is cut off from the others by routing every link that touches it through a TCP
relay the test can cut and heal (`Relay`): replica 3 dials the others through relays, the
others and the client dial replica 3 through one.
"""

from __future__ import annotations

import json
import os
import re
import time
from types import SimpleNamespace

import pytest
import trio
from test_metrics import http_get, samples

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node import health
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import build_node
from pbft.protocol.messages import Status
from pbft.protocol.viewchange import ViewStatus

SETTINGS = dict(checkpoint_interval=4, log_window=8, view_change_timeout_ms=300)


def make_cluster(tmp_path, name="hl", clients=("alice", "bob")) -> str:
    return generate_cluster(
        os.path.join(tmp_path, name), f=1, clients=list(clients), ports=free_ports(4),
        cluster_id=name, **SETTINGS,
    )


async def get_json(port: int, path: str) -> tuple[int, dict]:
    status, body = await http_get(port, path)
    return status, json.loads(body)


async def wait_ready(port: int, want: bool, timeout: float = 20) -> dict:
    """Poll /readyz until it says `want`; its last body."""
    with trio.fail_after(timeout):
        while True:
            status, body = await get_json(port, "/readyz")
            assert status == (200 if body["ready"] else 503)
            if body["ready"] == want:
                return body
            await trio.sleep(0.05)


async def test_healthz_readyz_and_status_on_a_running_replica(tmp_path):
    path = make_cluster(str(tmp_path))
    config = load_cluster(path)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nodes = []
            for i in config.replica_ids():
                node = build_node(config, load_identity(config, i), i, metrics_address=("127.0.0.1", 0))
                await nursery.start(node.run)
                nodes.append(node)
            async with open_client(path, "alice", timeout=30) as client:
                for i in range(6):
                    await client.put(b"k", b"v%d" % i)
            for node in nodes:
                await wait_ready(node.metrics_port, True)
            node = nodes[2]
            port = node.metrics_port
            assert await get_json(port, "/healthz") == (200, {"alive": True})
            status, body = await get_json(port, "/readyz")
            assert (status, body["ready"], body["failing"]) == (200, True, {})
            status, me = await get_json(port, "/status")
            assert status == 200
            core = node.replica
            assert me["id"] == 2 and me["reachable"] is True
            assert (me["view"], me["primary"], me["view_active"]) == (core.view, core.primary, True)
            assert me["last_executed"] == core.last_executed >= 6
            assert me["stable_checkpoint"] == core.stable_seq >= 4
            assert me["log_size"] == len(core.log)
            assert me["state_transfer"] is None
            assert me["connected"] == [0, 1, 3]
            assert me["behaviour"] is None
            assert me["ready"] is True
            values = samples((await http_get(port))[1])
            assert values[("pbft_ready", ())] == 1
            assert values[("pbft_view_active", ())] == 1
            assert values[("pbft_state_transfer", ())] == 0
            assert values[("pbft_behind", ())] == 0
            assert values[("pbft_primary", ())] == core.primary
            assert (await http_get(port, "/nope"))[0] == 404
            nursery.cancel_scope.cancel()


class Relay:
    """TCP relays to real ports that can be cut (every relayed connection is closed, new
    ones are closed at once) and healed."""

    def __init__(self) -> None:
        self.cut = False
        self._scopes: set[trio.CancelScope] = set()

    async def open(self, nursery: trio.Nursery, target: int) -> int:
        """A relay to 127.0.0.1:target; its port."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(trio.serve_listeners, lambda s: self._relay(s, target), listeners)
        return listeners[0].socket.getsockname()[1]

    async def _relay(self, inbound: trio.SocketStream, target: int) -> None:
        try:
            if self.cut:
                return
            outbound = await trio.open_tcp_stream("127.0.0.1", target)
            try:
                with trio.CancelScope() as scope:
                    self._scopes.add(scope)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, inbound, outbound, nursery.cancel_scope)
                        nursery.start_soon(self._pump, outbound, inbound, nursery.cancel_scope)
                self._scopes.discard(scope)
            finally:
                await trio.aclose_forcefully(outbound)
        except OSError:
            pass
        finally:
            await trio.aclose_forcefully(inbound)

    @staticmethod
    async def _pump(src, dst, scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    def sever(self) -> None:
        self.cut = True
        for scope in list(self._scopes):
            scope.cancel()

    def heal(self) -> None:
        self.cut = False


def with_addresses(path: str, name: str, ports: dict[int, int]) -> str:
    """A copy of the cluster file `path` (same directory) with replica i at ports[i]."""
    config = load_cluster(path)
    with open(path) as fh:
        text = fh.read()
    for i, port in ports.items():
        old = f'"127.0.0.1:{config.replicas[i].port}"'
        assert text.count(old) == 1
        text = text.replace(old, f'"127.0.0.1:{port}"')
    out = os.path.join(os.path.dirname(path), name)
    with open(out, "w") as fh:
        fh.write(text)
    return out


async def test_readyz_false_on_a_cut_off_replica_and_true_once_caught_up(tmp_path):
    path = make_cluster(str(tmp_path))
    config = load_cluster(path)
    relay = Relay()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            relayed = {i: await relay.open(nursery, config.replicas[i].port) for i in range(4)}
            # Replicas 0-2 and the client reach replica 3 through its relay; replica 3
            # reaches the others through theirs.
            others_view = with_addresses(path, "others.toml", {3: relayed[3]})
            thirds_view = with_addresses(path, "third.toml", {i: relayed[i] for i in range(3)})
            nodes = []
            for i in config.replica_ids():
                cfg = load_cluster(thirds_view if i == 3 else others_view)
                node = build_node(cfg, load_identity(cfg, i), i, metrics_address=("127.0.0.1", 0))
                await nursery.start(node.run)
                nodes.append(node)
            port = nodes[3].metrics_port
            async with open_client(others_view, "alice", timeout=30) as client:
                await client.put(b"k", b"v0")
                await wait_ready(port, True)

                relay.sever()
                body = await wait_ready(port, False)
                assert set(body["failing"]) == {"links"}, body
                assert "connected to 0 of 3" in body["failing"]["links"]
                for i in range(1, 15):  # past three checkpoints (K = 4) without replica 3
                    await client.put(b"k", b"v%d" % i)
                ahead = nodes[0].replica
                assert ahead.stable_seq >= 12
                assert (await get_json(port, "/readyz"))[0] == 503
                assert nodes[3].replica.last_executed < 4
                # The others lost a link each, and are ready still: 2f links are enough.
                assert (await get_json(nodes[0].metrics_port, "/readyz"))[1]["ready"] is True

                relay.heal()
                seen: set[str] = set()
                with trio.fail_after(30):
                    while True:
                        status, body = await get_json(port, "/readyz")
                        if status == 200:
                            break
                        seen |= set(body["failing"])
                        await trio.sleep(0.02)
                me = nodes[3].replica
                # Ready only once it has caught up to within the lag limit: past the
                # stable checkpoint the others made while it was away.
                assert me.transfer is None
                assert me.last_executed >= ahead.stable_seq
                assert ahead.last_executed - me.last_executed <= health.lag_limit(config)
                assert seen <= {"links", "state", "lag"}, seen
                status, mine = await get_json(port, "/status")
                assert mine["connected"] == [0, 1, 2] and mine["ready"] is True
            nursery.cancel_scope.cancel()


def fake_node(config, **core):
    """What `health.readiness` reads of a node, for replica 3 in a healthy state unless
    `core` says otherwise (links: the ids connected; since: seconds the links are up)."""
    links = core.pop("links", {0, 1, 2})
    since = core.pop("since", 60.0)
    fields = dict(
        id=3, view=0, primary=0, status=ViewStatus.NORMAL, transfer=None, last_executed=20,
        stable_seq=20, checkpoints=SimpleNamespace(votes={}, claims={}),
        log=[],
    )
    catch_up = SimpleNamespace(progress=core.pop("progress", {}), located=core.pop("located", True))
    fields.update(core, catch_up=catch_up)
    return SimpleNamespace(
        id=3, config=config, replica=SimpleNamespace(**fields), failure=None,
        transport=SimpleNamespace(connected=links),
        links_since=None if since is None else time.monotonic() - since,
    )


@pytest.mark.parametrize(
    "core, failing",
    [
        ({}, set()),
        ({"links": {0}}, {"links"}),
        ({"since": 0.1}, {"links"}),  # just reconnected: it cannot know yet where it is
        ({"since": None}, {"links"}),
        ({"status": ViewStatus.VIEW_CHANGE}, {"view"}),
        ({"transfer": SimpleNamespace(seq=24)}, {"state"}),
        ({"last_executed": 16, "stable_seq": 20}, {"state"}),
        # f+1 = 2 others known past it by more than K = 4 (STATUS, CHECKPOINT, claim).
        ({"progress": {0: (0, 30)}, "checkpoints": SimpleNamespace(votes={}, claims={1: {28: None}})}, {"lag"}),
        ({"progress": {0: (0, 30)}, "checkpoints": SimpleNamespace(votes={28: {1: None, 3: None}}, claims={})}, {"lag"}),
        # One replica alone (maybe lying), or within K: not lagging.
        ({"progress": {0: (0, 900)}}, set()),
        ({"progress": {0: (0, 24), 1: (0, 24)}}, set()),
        ({"located": False}, {"lag"}),  # restarted, has not heard from the others
    ],
)
def test_readiness_conditions(tmp_path, core, failing):
    config = load_cluster(make_cluster(str(tmp_path)))
    r = health.readiness(fake_node(config, **core))
    assert set(r.failing) == failing, r.failing
    assert r.ready == (not failing)


# -- the verdict of `pbft status` ---------------------------------------------------------


def st(view: int, executed: int, stable: int | None = None) -> Status:
    return Status(view, executed, executed // 4 * 4 if stable is None else stable, 3)


@pytest.mark.parametrize(
    "statuses, verdict, reason",
    [
        ({0: st(1, 20), 1: st(1, 20), 2: st(1, 19), 3: st(1, 17)}, "healthy", None),
        ({0: st(1, 20), 1: st(1, 20), 2: st(1, 20)}, "degraded", "replica 3 is unreachable"),
        ({0: st(1, 20), 1: st(1, 20), 2: st(1, 20), 3: st(0, 20)}, "degraded",
         "replica 3 is in view 0, not 1"),
        ({0: st(1, 20), 1: st(1, 20), 2: st(1, 20), 3: st(1, 8)}, "degraded",
         "replica 3 is 12 behind"),
        # One replica claiming to be far ahead (maybe lying) makes nobody else lag.
        ({0: st(1, 900), 1: st(1, 20), 2: st(1, 20), 3: st(1, 20)}, "healthy", None),
        ({0: st(1, 20), 1: st(1, 20)}, "unavailable", "2 replicas agree on a view, 3 needed"),
        ({0: st(1, 20), 1: st(1, 20), 2: st(2, 20), 3: st(2, 20)}, "unavailable", None),
        ({}, "unavailable", "0 replicas agree on a view, 3 needed"),
    ],
)
def test_verdicts(tmp_path, statuses, verdict, reason):
    config = load_cluster(make_cluster(str(tmp_path)))
    j = health.judge(config, statuses)
    assert j.verdict == verdict, j.reasons
    assert j.exit_status == {"healthy": 0, "degraded": 3, "unavailable": 4}[verdict]
    if reason is not None:
        assert reason in j.reasons
    if verdict == "healthy":
        assert j.reasons == []
    text = health.render_text(config, j)
    assert text.splitlines()[-1].startswith(verdict)
    assert len(text.splitlines()) == 1 + config.n + 1
    as_json = health.render_json(config, j)
    assert (as_json["verdict"], as_json["exit_status"]) == (verdict, j.exit_status)
    json.dumps(as_json)


def test_exit_statuses_do_not_clash_with_the_cli():
    assert health.EXIT == {"healthy": 0, "degraded": 3, "unavailable": 4}
    assert not {1, 2} & set(health.EXIT.values())


def run_status(*argv: str) -> tuple[int, str]:
    """`pbft status ARGV` in a worker thread (it runs its own trio.run): (exit status,
    stdout, or stderr when it failed)."""
    import contextlib
    import io

    from pbft.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["status", *argv])
    return code, out.getvalue() if code != 2 else err.getvalue()


async def test_pbft_status_verdicts_and_exit_statuses(tmp_path):
    path = make_cluster(str(tmp_path), clients=("alice", "ops"))
    config = load_cluster(path)

    async def status(*extra: str) -> tuple[int, str]:
        # Not 1 s: on a loaded machine a fresh connection to a replica can take that long.
        return await trio.to_thread.run_sync(run_status, "--config", path, "--timeout", "3", *extra)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = []
            for i in config.replica_ids():
                node = build_node(config, load_identity(config, i), i)
                await nursery.start(node.run)
                nodes.append(node)
            async with open_client(path, "alice", timeout=30) as client:
                for i in range(3):
                    await client.put(b"k", b"v%d" % i)
            code, out = await status()
            assert code == 0, out
            lines = out.splitlines()
            assert lines[0].split() == ["replica", "epoch", "view", "primary", "executed", "stable", "log", "behind"]
            assert len(lines) == 6 and lines[-1] == "healthy (view 0, primary 0)"
            code, out = await status("--json")
            doc = json.loads(out)
            assert (code, doc["verdict"], doc["exit_status"], doc["primary"]) == (0, "healthy", 0, 0)
            assert [r["behind"] for r in doc["replicas"]] == [0, 0, 0, 0]

            nodes[3].stop()
            code, out = await status()
            assert code == 3, out
            assert re.search(r"^\s+3  unreachable$", out, re.M)
            assert out.splitlines()[-1] == "degraded (view 0, primary 0): replica 3 is unreachable"

            nodes[2].stop()
            code, out = await status("--json")
            doc = json.loads(out)
            assert (code, doc["verdict"]) == (4, "unavailable"), out
            assert doc["reasons"][0] == "2 replicas agree on a view, 3 needed"
            nursery.cancel_scope.cancel()


async def test_pbft_status_signs_as_the_client_named_by_id(tmp_path):
    path = make_cluster(str(tmp_path), clients=("alice", "ops"))
    config = load_cluster(path)
    # Without alice's key the default signer (the first client) cannot sign the query;
    # --id ops can.
    os.remove(os.path.join(os.path.dirname(path), "client-alice.key"))
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            for i in config.replica_ids():
                await nursery.start(build_node(config, load_identity(config, i), i).run)
            code, out = await trio.to_thread.run_sync(
                run_status, "--config", path, "--id", "ops", "--timeout", "1"
            )
            assert code == 0, out
            assert out.splitlines()[-1].startswith("healthy")
            code, err = await trio.to_thread.run_sync(run_status, "--config", path)
            assert code == 2 and "alice" in err, err
            code, err = await trio.to_thread.run_sync(run_status, "--config", path, "--id", "nobody")
            assert code == 2 and "nobody" in err, err
            nursery.cancel_scope.cancel()


def test_a_byzantine_replica_says_so_in_pbft_status():
    """A replica wrapped in a Byzantine behaviour names it in its signed answer to a status
    query, and `pbft status` marks it and is at best degraded (issue 14, item 4)."""
    from conftest import make_config, make_replica, seal_as

    from pbft.adversary.base import ByzantineReplica
    from pbft.adversary.catalogue import REGISTRY
    from pbft.node.health import judge, render_text
    from pbft.protocol.events import Received, SendClient
    from pbft.protocol.messages import QueryStatus, Status, decode_envelope, from_body, to_body

    cfg = make_config()
    core = make_replica(cfg, 2)
    import random

    behaviour = REGISTRY["wrong-digest-vote"](core, None, {}, random.Random(1))
    liar = ByzantineReplica(core, behaviour)
    out = liar.step(Received("alice", seal_as("alice", QueryStatus(7))))
    [answer] = [decode_envelope(a.data)[1] for a in out if isinstance(a, SendClient)]
    assert answer.behaviour == "wrong-digest-vote"
    honest = Status(0, 3, 0, 3)
    assert from_body(to_body(honest)) == honest and len(to_body(honest)) == len(to_body(Status(0, 3, 0, 3)))
    assert from_body(to_body(answer)) == answer
    statuses = {0: honest, 1: honest, 2: answer, 3: honest}
    j = judge(cfg, statuses)
    assert j.verdict == "degraded" and "replica 2 runs the Byzantine behaviour wrong-digest-vote" in j.reasons
    assert "BYZANTINE: wrong-digest-vote" in render_text(cfg, j)


def test_transport_read_buffers_are_per_thread():
    """A client running its own Trio loop in another thread (`trio.to_thread`, a program
    with a client per thread, the CLI run from a test) shared the process-wide socket and
    TLS read buffers with the replicas' loop; the reads release the GIL, so one thread
    overwrote bytes the other had just read and TLS handshakes failed (BAD_RECORD_TYPE),
    which `pbft status` showed as a replica unreachable about every sixth call."""
    import threading

    from pbft.node import transport

    here = transport._buffers()
    there = []
    t = threading.Thread(target=lambda: there.append(transport._buffers()))
    t.start()
    t.join()
    assert here is transport._buffers()  # one set per thread, reused
    assert here[0][0] is not there[0][0][0]
    assert here[2] is not there[0][2]

