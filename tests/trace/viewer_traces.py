"""Traces for the viewer's tests, made once per test process: the equivocation scenario,
passing and under a broken core, and a crash with drops. (Not a conftest.py: other tests
import the top-level conftest by name, and a second one would shadow it.)"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from pbft.sim.scenario import load_scenario
from pbft.sim.simulation import Simulation
from pbft.sim.trace import TraceWriter

SCENARIOS = Path(__file__).parents[1] / "scenarios"


@functools.cache
def _dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="pbft-viewer-traces-"))
    atexit.register(shutil.rmtree, d, True)
    return d


def write_trace(path: Path, broken: str = "", scenario: str = "byz-equivocate.toml") -> Path:
    s = load_scenario(SCENARIOS / scenario)
    if broken:
        s = replace(s, broken=broken)
    with TraceWriter(str(path)) as tw:
        Simulation(s, None, trace=tw).run()
    return path


@functools.cache
def equivocate() -> Path:
    """byz-equivocate.toml, seed 1: PASS, two equivocated slots, a view change."""
    return write_trace(_dir() / "equivocate.jsonl")


@functools.cache
def violation() -> Path:
    """The same under the broken core weak-prepare-quorum: FAIL (prepared-uniqueness) at 4 ms."""
    return write_trace(_dir() / "violation.jsonl", "weak-prepare-quorum")


@functools.cache
def crash() -> Path:
    """byz-lying-state-transfer.toml: a replica crashes (its messages dropped), restarts
    empty and fetches state while another lies."""
    return write_trace(_dir() / "crash.jsonl", scenario="byz-lying-state-transfer.toml")


@functools.cache
def real() -> Path:
    """byz-equivocate.toml run by real processes on loopback (`scenario run --real
    --trace`): one merged trace with wall-clock times."""
    import subprocess
    import sys

    out = _dir() / "real.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pbft", "scenario", "run", str(SCENARIOS / "byz-equivocate.toml"),
                           "--real", "--trace", str(out)], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out
