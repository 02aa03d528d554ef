"""A fixed set of fuzz seeds runs clean in CI; the fuzzer's generation is deterministic and
its shrinker keeps a failing schedule failing."""

from __future__ import annotations

import json
import tomllib

from pbft.cli.main import main
from pbft.sim.fuzz import fuzz, random_scenario, shrink
from pbft.sim.scenario import NetworkFault, Scenario, parse_scenario, to_toml
from pbft.sim.simulation import never_healed, run_scenario

CI_SEEDS = 60


def test_fixed_fuzz_seeds_find_no_violation():
    report = fuzz(CI_SEEDS, start=0, f=1)
    assert report.runs == CI_SEEDS
    assert not report.violations, "\n".join(
        f"seed {v.seed}: {v.check}: {v.detail}\n{v.toml}" for v in report.violations
    )


def test_seed_21_a_replica_alone_in_a_higher_view_is_joined():
    """Widened seed 21 left a replica alone in a higher view (issue 13, item 2) before
    the group joined such a replica (Replica._maybe_join_lone_view_change)."""
    assert run_scenario(random_scenario(21, 1)).passed


def test_f2_fuzz_seeds_find_no_violation():
    report = fuzz(6, start=1000, f=2)
    assert not report.violations, [(v.seed, v.check, v.detail) for v in report.violations]


def test_generation_is_deterministic():
    assert random_scenario(17) == random_scenario(17)
    assert random_scenario(17) != random_scenario(18)


def test_shrink_drops_irrelevant_faults():
    # No quorum (three replicas crashed) fails liveness whatever else is going on.
    s = Scenario(
        clients=3,
        requests=6,
        network=(
            NetworkFault(drop=0.05),
            NetworkFault(0, None, crash=1),
            NetworkFault(0, None, crash=2),
            NetworkFault(10, 200, duplicate=0.5),
        ),
    )
    s = Scenario(
        **{
            **{k: getattr(s, k) for k in s.__slots__},
            "expect": s.expect.__class__(liveness_ms=5000),
        }
    )
    assert run_scenario(s).violations[0].check == "liveness"
    small = shrink(s, "liveness")
    assert len(small.network) == 2 and all(nf.crash is not None for nf in small.network)
    assert small.requests == 1 and small.clients == 1


def test_fuzz_cli_json(capsys):
    assert main(["fuzz", "--seeds", "3", "--start", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 3 and out["violations"] == [] and out["runs_per_second"] > 0


GEN_SEEDS = 1000


def _dimensions(s: Scenario) -> set[str]:
    d = set()
    cluster = dict(s.cluster)
    if cluster.get("checkpoint_interval", 8) < 8 or cluster.get("log_window", 32) < 32:
        d.add("small-window")
    if cluster.get("batch_max") == 1:
        d.add("batch-1")
    if cluster.get("pipeline") == 1:
        d.add("pipeline-1")
    for nf in s.network:
        if nf.kinds:
            d.add("kind-filter")
        if nf.from_ or nf.to:
            d.add("sender-receiver-filter")
        if nf.seqs:
            d.add("seq-filter")
        if nf.on is not None:
            d.add(f"on-{nf.on}")
        if nf.amnesia:
            d.add("amnesia")
    if any(nf.on == "transfer" for nf in s.network) and any(
        nf.crash is not None and nf.on is None and nf.until_ms is not None for nf in s.network
    ):
        d.add("lag-then-crash-mid-transfer")
    if len([nf for nf in s.network if nf.on is not None]) >= 2:
        d.add("storm")
    if s.expect.catch_up:
        d.add("catch-up")
    return d


def test_generator_reaches_each_new_dimension_often_and_ordinary_runs_stay_the_majority():
    for f in (1, 2):
        counts: dict[str, int] = {}
        ordinary = 0
        for seed in range(GEN_SEEDS):
            s = random_scenario(seed, f)
            dims = _dimensions(s)
            for k in dims:
                counts[k] = counts.get(k, 0) + 1
            plain = random_scenario(seed, f, wide=False)
            ordinary += (
                not (dims - {"catch-up"})
                and s.network == plain.network
                and s.cluster == plain.cluster
            )
        expected = {
            "small-window",
            "batch-1",
            "pipeline-1",
            "kind-filter",
            "sender-receiver-filter",
            "seq-filter",
            "amnesia",
            "lag-then-crash-mid-transfer",
            "storm",
            "catch-up",
        } | {f"on-{t}" for t in ("checkpoint", "transfer", "installed", "view-change", "new-view")}
        for k in sorted(expected):
            assert counts.get(k, 0) >= 20, (f, k, counts)
        assert ordinary > GEN_SEEDS // 2, (f, ordinary)


def test_generated_scenarios_round_trip_through_scenario_files():
    for f in (1, 2):
        for seed in range(300):
            s = random_scenario(seed, f)
            back = parse_scenario(tomllib.loads(to_toml(s)))
            for field in (
                "f",
                "seed",
                "clients",
                "requests",
                "keys",
                "read_only",
                "cluster",
                "network",
                "expect",
            ):
                assert getattr(back, field) == getattr(s, field), (seed, field)
            assert [(b.target, b.index, b.behaviour, b.params) for b in back.byzantine] == [
                (b.target, b.index, b.behaviour, b.params) for b in s.byzantine
            ]


def test_generated_scenarios_keep_faulty_replicas_within_f_and_catch_up_valid():
    for f in (1, 2):
        for seed in range(GEN_SEEDS):
            s = random_scenario(seed, f)
            assert len(s.faulty_replicas()) <= f, (seed, s.faulty_replicas())
            crashes = [nf.crash for nf in s.network if nf.crash is not None and nf.on is None]
            assert len(crashes) == len(set(crashes)), seed  # one timed crash per replica
            triggered = {nf.crash for nf in s.network if nf.on is not None}
            for rid in triggered:
                timed = [nf for nf in s.network if nf.crash == rid and nf.on is None]
                # A replica with a triggered crash has no timed crash that could overlap it
                # (except the lag-then-crash pair: the trigger arms at its restart).
                assert all(nf.until_ms is not None for nf in timed), seed
                armed = [nf.at_ms for nf in s.network if nf.crash == rid and nf.on is not None]
                assert all(a >= nf.until_ms for nf in timed for a in armed), seed
            if s.expect.catch_up:
                assert not never_healed(s), seed


def test_widening_is_deterministic_and_leaves_the_ordinary_part_alone():
    for seed in (3, 77, 2000123):
        a, b = random_scenario(seed, 2), random_scenario(seed, 2)
        assert a == b and to_toml(a) == to_toml(b)
        plain = random_scenario(seed, 2, wide=False)
        assert a.network[: len(plain.network)] == plain.network and a.byzantine == plain.byzantine
