"""The runtime's side of a service that is not deterministic or slow (red-team findings
1, 3, 5, 9): `Diverged` is logged at WARNING (rate-limited), counted
(pbft_state_divergence_total) and shown by `/status`, `/readyz` and `pbft status`; a fatal
one stops the replica with one sentence (exit status 2); a slow step is logged and
counted (pbft_slow_steps_total)."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import generate_latest
from test_health import fake_node, make_cluster
from test_metrics import samples

from pbft.errors import UsageError
from pbft.node import health
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import build_node
from pbft.protocol.events import (
    Diverged,
    Divergence,
    Executed,
    ExecutedRequest,
    Tick,
    status_label,
)
from pbft.protocol.messages import Status
from pbft.protocol.ready import Ready
from pbft.protocol.recovery import ReplayDiverged

pytestmark = pytest.mark.timeout(60)

OWN, OTHER = b"\x01" * 32, b"\x02" * 32


@pytest.fixture
def node(tmp_path):
    config = load_cluster(make_cluster(str(tmp_path)))
    return build_node(config, load_identity(config, 1), 1)


def metric(node, name: str, **labels) -> float:
    values = samples(generate_latest(node.metrics.registry).decode())
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_divergence_is_warned_once_per_interval_and_counted(node, caplog):
    caplog.set_level(logging.INFO, logger="pbft.node")
    d = Diverged(8, OWN, OTHER, Divergence.STABLE)
    node.perform([d])
    node.perform([Diverged(12, OWN, OTHER, Divergence.STABLE)])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the second within the interval is held back
    text = warnings[0].getMessage()
    assert "checkpoint 8" in text and "not deterministic" in text and "version" in text
    assert metric(node, "pbft_state_divergence_total", kind="stable") == 2
    assert metric(node, "pbft_state_divergence_total", kind="split") == 0
    assert node.divergences == {"stable": 2}
    assert node.fatal is None


def test_a_fatal_divergence_stops_the_node_with_one_sentence(node, caplog):
    caplog.set_level(logging.INFO, logger="pbft.node")
    node.perform([Diverged(4, OWN, OTHER, Divergence.REPLAY)])
    assert node.fatal is not None and "\n" not in node.fatal
    assert "not deterministic" in node.fatal and "it signed before" in node.fatal
    assert node.stop_reason == node.fatal
    assert [r.levelno for r in caplog.records if "signed before" in r.getMessage()] == [logging.ERROR]


def test_a_replay_that_diverges_is_a_usage_error_with_its_sentence(node, monkeypatch):
    """At start-up: pbft.cli prints it as one line and exits 2 (no traceback)."""

    class Storage:
        path = "/nowhere"

        def load(self):
            return ["a record"]

    def recover(records):
        raise ReplayDiverged("replica 1 re-executed ...: the service is not deterministic")

    node.storage = Storage()
    monkeypatch.setattr(node.replica, "recover", recover)
    with pytest.raises(UsageError) as err:
        node.recover()
    assert str(err.value) == "replica 1 re-executed ...: the service is not deterministic"


def test_a_slow_step_that_executed_requests_names_the_service(node, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="pbft.node")
    node.slow_step = 0.05
    executed = Executed(0, 1, b"", (ExecutedRequest("alice", 1, b"op", b"r", True),))

    def slow_step(event):
        time.sleep(0.08)
        return Ready.of([executed])

    monkeypatch.setattr(node.replica, "step", slow_step)
    node._step(Tick())
    node._step(Tick())
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "service's execute is the likely cause" in warning.getMessage()
    assert metric(node, "pbft_slow_steps_total") == 2
    assert metric(node, "pbft_longest_step_seconds") >= 0.08
    assert node.slow_steps == 2


def test_a_quick_step_is_not_slow(node, monkeypatch):
    monkeypatch.setattr(node.replica, "step", lambda event: Ready.of([]))
    node._step(Tick())
    assert node.slow_steps == 0 and metric(node, "pbft_slow_steps_total") == 0


def test_status_and_readiness_show_the_divergence(node, tmp_path):
    node.replica.diverged = Diverged(8, OWN, b"", Divergence.SPLIT, 3)
    mine = health.replica_status(node)
    assert mine["diverged"]["kind"] == "split" and mine["diverged"]["seq"] == 8
    assert "divergence" in mine["failing"] and mine["ready"] is False
    config = node.config
    fake = fake_node(config, diverged=Diverged(8, OWN, OTHER))
    assert set(health.readiness(fake).failing) == {"divergence"}


def test_pbft_status_is_never_healthy_while_a_replica_diverged(tmp_path):
    config = load_cluster(make_cluster(str(tmp_path)))
    honest = Status(0, 20, 20, 3)
    diverged = Status(0, 20, 20, 3, status_label("", Diverged(16, OWN, OTHER)))
    j = health.judge(config, {0: honest, 1: honest, 2: diverged, 3: honest})
    assert j.verdict == "degraded"
    assert any(r.startswith("replica 2:") and "not deterministic" in r for r in j.reasons)
    assert j.rows[2]["behaviour"] is None and j.rows[2]["diverged"] == {"kind": "stable", "seq": 16}
    assert "STATE DIVERGED at 16" in health.render_text(config, j)
    assert "BYZANTINE" not in health.render_text(config, j)
    both = Status(0, 20, 20, 3, status_label("silent", Diverged(16, OWN, b"", Divergence.SPLIT, 4)))
    j = health.judge(config, {0: honest, 1: honest, 2: both, 3: honest})
    assert j.rows[2]["behaviour"] == "silent" and j.rows[2]["diverged"]["kind"] == "split"
