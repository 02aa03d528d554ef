"""A replica's load (pbft.node.loadmeter) and the core's batching policy it drives:
samples by window, hysteresis between the two states, CPU pressure, and a real node that
tells its core when it goes idle or busy."""

from __future__ import annotations

import time

import pytest
import trio
from test_node import make_cluster

from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.loadmeter import (
    BUSY_ABOVE,
    IDLE_BELOW,
    IDLE_SAMPLES,
    PRESSURE_ABOVE,
    PRESSURE_BELOW,
    WINDOW_S,
    LoadMeter,
    cpu_stall_s,
)
from pbft.node.node import build_node

pytestmark = pytest.mark.timeout(60)


def test_a_sample_needs_a_full_window():
    meter = LoadMeter(0.0, 0.0)
    assert meter.sample(WINDOW_S / 2, WINDOW_S / 2) is None
    assert meter.busy and meter.share == 0.0


class Loop:
    """A meter fed one sample per second at the busy shares given."""

    def __init__(self) -> None:
        self.t = self.cpu = 0.0
        self.meter = LoadMeter(0.0, 0.0, window_s=1.0)

        self.stall: float | None = None

    def run(self, *shares: float, pressure: float | None = None) -> list[bool | None]:
        out = []
        for share in shares:
            self.t, self.cpu = self.t + 1.0, self.cpu + share
            if pressure is not None:
                self.stall = (self.stall or 0.0) + pressure
            out.append(self.meter.sample(self.t, self.cpu, self.stall))
        return out


def test_busy_and_idle_with_hysteresis_between():
    assert 0.1 <= IDLE_BELOW < 0.3 < 0.35 < BUSY_ABOVE < 0.7
    loop = Loop()
    # Starts busy, as a core does; idle only after IDLE_SAMPLES idle samples in a row.
    short = [0.1] * (IDLE_SAMPLES - 1)
    assert loop.run(0.3, *short, 0.3, *short) == [None] * (2 * IDLE_SAMPLES)
    assert loop.meter.busy
    assert loop.run(0.1) == [False]  # the IDLE_SAMPLES-th in a row
    assert loop.run(0.35, 0.1, 0.35) == [None, None, None]  # between: it stays idle
    assert loop.run(0.7) == [True]  # one busy sample is enough
    assert loop.meter.share == pytest.approx(0.7)


def test_cpu_pressure_makes_it_busy_and_keeps_it_from_going_idle():
    loop = Loop()
    loop.run(0.1, pressure=0.0)  # the first total: no pressure known yet
    assert loop.meter.pressure is None
    assert loop.run(*[0.1] * IDLE_SAMPLES, pressure=PRESSURE_BELOW + 0.05) == [None] * IDLE_SAMPLES
    assert loop.meter.pressure == pytest.approx(PRESSURE_BELOW + 0.05)
    assert loop.run(*[0.1] * IDLE_SAMPLES, pressure=PRESSURE_BELOW / 2)[-1] is False
    assert loop.run(0.1, pressure=PRESSURE_ABOVE) == [True]  # its own loop is idle


def test_the_pressure_file_is_read_or_not_known(tmp_path):
    psi = tmp_path / "cpu"
    psi.write_text("some avg10=1.00 avg60=2.00 avg300=3.00 total=2500000\nfull avg10=0.00 total=0\n")
    assert cpu_stall_s(str(psi)) == 2.5
    psi.write_text("garbage\n")
    assert cpu_stall_s(str(psi)) is None
    assert cpu_stall_s(str(tmp_path / "missing")) is None


def test_shares_are_clamped_to_a_core():
    meter = LoadMeter(0.0, 5.0, window_s=1.0)
    assert meter.sample(1.0, 9.0) is None  # four threads at work: a core's worth
    assert meter.share == 1.0
    meter = LoadMeter(0.0, 5.0, window_s=1.0)
    for t in range(1, IDLE_SAMPLES + 1):
        change = meter.sample(float(t), 4.0)  # a total that went down: no CPU
    assert change is False and meter.share == 0.0


async def wait_until(predicate, step: float = 0.05) -> None:
    while not predicate():
        await trio.sleep(step)


async def test_a_node_tells_its_core_when_it_goes_idle_and_busy(tmp_path):
    """The node's plumbing, with its clocks replaced so the host's load does not matter:
    a process that uses no CPU makes the core propose at once, one that uses a whole core
    makes it batch again."""
    config = load_cluster(make_cluster(str(tmp_path), "load"))
    computing = False
    spent = 0.0
    last = time.perf_counter()

    def cpu_time() -> float:  # no CPU while idle; all of the wall time while computing
        nonlocal spent, last
        now = time.perf_counter()
        spent += (now - last) if computing else 0.0
        last = now
        return spent

    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            nodes = []
            for i in config.replica_ids():
                node = build_node(config, load_identity(config, i), i)
                node.cpu_stall = lambda: None
                node.cpu_time = cpu_time
                await nursery.start(node.run)
                nodes.append(node)
            primary = nodes[0]
            await wait_until(lambda: not primary.replica.batching.busy)
            assert primary.load is not None and primary.load.share <= IDLE_BELOW
            computing = True
            await wait_until(lambda: primary.replica.batching.busy)
            assert primary.load.share >= BUSY_ABOVE
            nursery.cancel_scope.cancel()
