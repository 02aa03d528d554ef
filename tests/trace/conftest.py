"""Traces for the viewer's tests: the equivocation scenario, passing and with a broken core."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation
from pbft.sim.trace import TraceWriter

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def write_trace(path: Path, broken: str = "", scenario: str = "byz-equivocate.toml") -> Path:
    s = load_scenario(SCENARIOS / scenario)
    if broken:
        s = replace(s, broken=broken)
    with TraceWriter(str(path)) as tw:
        Simulation(s, None, trace=tw).run()
    return path


@pytest.fixture(scope="session")
def equivocate_trace(tmp_path_factory) -> Path:
    """byz-equivocate.toml, seed 1: PASS, two equivocated slots, a view change."""
    return write_trace(tmp_path_factory.mktemp("trace") / "equivocate.jsonl")


@pytest.fixture(scope="session")
def violation_trace(tmp_path_factory) -> Path:
    """The same under the broken core weak-prepare-quorum: FAIL (prepared-uniqueness) at 4 ms."""
    return write_trace(tmp_path_factory.mktemp("trace") / "violation.jsonl", "weak-prepare-quorum")


@pytest.fixture(scope="session")
def crash_trace(tmp_path_factory) -> Path:
    """byz-lying-state-transfer.toml: a replica crashes (its messages dropped), restarts
    empty and fetches state while another lies."""
    return write_trace(tmp_path_factory.mktemp("trace") / "crash.jsonl", scenario="byz-lying-state-transfer.toml")
