"""`pbft bench` end to end, tiny: real processes, one second, two clients.

Checks the shape of the JSON report (docs/formats.md), never a speed: these machines
are shared and noisy, so a threshold would only make the suite flaky.
"""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace

import pytest

from pbft.cli.cluster import cmd_bench
from pbft.cluster import bench

TOP_KEYS = {
    "n": int,
    "f": int,
    "clients": int,
    "requests": int,
    "throughput_rps": float,
    "latency_ms": dict,
    "ceiling_rps": float,
    "ratio": float,
    "cores": int,
}


@pytest.mark.timeout(60)
def test_bench_writes_a_well_formed_report(tmp_path):
    out = tmp_path / "bench.json"
    svg = tmp_path / "bench.svg"
    result = subprocess.run(
        [sys.executable, "-m", "pbft", "bench", "--duration", "1", "--clients", "2",
         "--json", str(out), "--plot", str(svg)],
        capture_output=True,
        text=True,
        timeout=50,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "throughput" in result.stdout
    doc = json.loads(out.read_text())
    for key, kind in TOP_KEYS.items():
        assert key in doc, key
        value = doc[key]
        assert isinstance(value, kind) or (kind is float and type(value) is int), (key, value)
    assert doc["f"] == 1 and doc["n"] == 4 and doc["clients"] == 2
    assert doc["cores"] >= 1
    assert doc["requests"] > 0
    for key in ("throughput_rps", "ceiling_rps", "ratio"):
        assert doc[key] > 0, key
    lat = doc["latency_ms"]
    assert set(lat) >= {"p50", "p90", "p99"}
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert doc["ratio"] == pytest.approx(doc["throughput_rps"] / doc["ceiling_rps"], rel=0.01)
    assert doc["throughput_rps"] == pytest.approx(doc["requests"] / doc["duration_s"], rel=0.01)
    # Where the CPU went: the replicas' signature counts come from their metrics. Every
    # replica checks every request's signature, so at least n verifications per request
    # (less a little at the window's edges).
    split, sigs = doc["cpu_split_us"], doc["signatures_per_request"]
    assert set(split) == {"replicas_ed25519", "replicas_other", "clients"}
    assert split["replicas_ed25519"] > 0 and split["clients"] > 0
    assert sigs["verify"] > doc["n"] - 1 and sigs["sign"] > 0
    assert "replicas' Ed25519" in result.stdout
    # --plot: one SVG whose legend counts the same requests as the report
    assert f"bench ({doc['requests']} requests)" in svg.read_text()


def test_percentile_is_nearest_rank():
    values = [float(i) for i in range(1, 101)]
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile([7.0], 90) == 7.0
    assert bench.percentile([], 50) == 0.0


@pytest.mark.timeout(90)
def test_bench_preloads_the_state_and_reports_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "pbft", "bench", "--duration", "2", "--clients", "4",
         "--state-keys", "3000", "--value-size", "50", "--json", str(out)],
        capture_output=True, text=True, timeout=80, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    st = json.loads(out.read_text())["state"]
    assert st["keys"] == 3000 and st["value_size"] == 50 and st["preload_s"] > 0
    assert len(st["rss_mb"]) == 4 and all(x > 0 for x in st["rss_mb"])
    # The replicas' state stores report what each checkpoint cost (read from their metrics).
    assert st["checkpoints"] > 0 and st["checkpoint_cpu_ms"] > 0 and st["checkpoint_bytes"] > 0
    assert "preloaded" in result.stdout and "replica RSS" in result.stdout and "checkpoints" in result.stdout


@pytest.mark.parametrize("args", [["--state-keys", "-1"], ["--value-size", "0"]])
def test_bad_state_arguments_are_one_sentence(args):
    result = subprocess.run([sys.executable, "-m", "pbft", "bench", *args], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_ceiling_is_cores_over_the_crypto_floor():
    cost = bench.CryptoCost(t_sign=20e-6, t_verify=60e-6, payload_bytes=100)
    assert bench.ceiling_rps(cost, n=4, cores=2) == pytest.approx(2 / (4 * 60e-6 + 20e-6))


def test_crypto_is_timed_on_a_request_sized_payload():
    cost = bench.measure_crypto(seconds=0.01)
    assert cost.t_sign > 0 and cost.t_verify > 0
    assert cost.payload_bytes > bench.VALUE_SIZE


def test_the_ceiling_uses_the_fastest_library_and_names_it():
    cost = bench.measure_crypto(seconds=0.02)
    libraries = {lib.split()[0] for lib, _, _ in cost.measured}
    assert libraries == {"libsodium", "OpenSSL"}
    fastest = min(cost.measured, key=lambda c: 4 * c[2] + c[1])
    assert (cost.library, cost.t_sign, cost.t_verify) == fastest
    run = bench.RunResult(n=4, f=1, clients=1, workers=1, duration_s=1.0, requests=10,
                          throughput_rps=10.0, latency_ms={"p50": 1.0, "p90": 1.0, "p99": 1.0}, errors=0)
    doc = bench.report(run, cost, 2)
    assert doc["ed25519"] == cost.library and len(doc["ed25519_measured"]) == 2
    assert doc["ed25519_replicas"].startswith("libsodium")
    assert cost.library in "\n".join(bench.summary(doc))


@pytest.mark.parametrize(
    "change",
    [{"clients": 0}, {"duration": 0}, {"f": 0}, {"behaviour": "no-such-behaviour"}],
)
def test_bad_arguments_are_usage_errors(change):
    from pbft.errors import UsageError

    args = {"f": 1, "clients": 2, "duration": 1.0, "json": None, "behaviour": None,
            "workers": None, "reads": 0.0}
    args.update(change)
    with pytest.raises(UsageError):
        cmd_bench(Namespace(**args, log_level="warning", log_format="text"))
