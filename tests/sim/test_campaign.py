"""Fuzz campaigns (pbft.sim.campaign, issue 21 item 2): shards are disjoint and cover the
range; a seed runs the same with one job, two, or in any shard; the merge of a
campaign's shards is the unsharded result; a run that raises or a worker that dies is
reported with its seed, never a hang."""

from __future__ import annotations

import os
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.sim import campaign
from pbft.sim.campaign import MergeError, Options, SeedOutcome, merge, run_campaign, shard_range
from pbft.sim.scenario import parse_scenario
from pbft.sim.simulation import run_scenario

pytestmark = pytest.mark.timeout(60)

BROKEN = Options(f=1, mode="mutation", broken="weak-prepare-quorum")
"""Mutation seeds 0-5 on this broken core: seeds 0 and 1 fail (agreement), quickly."""
SEEDS = range(0, 6)


def stripped(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in campaign.TIMING_FIELDS}


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 10**7), seeds=st.integers(0, 5000), count=st.integers(1, 64))
def test_shards_are_disjoint_and_cover_the_range(start, seeds, count):
    parts = [shard_range(start, seeds, i, count) for i in range(count)]
    seen = [s for p in parts for s in p]
    assert seen == list(range(start, start + seeds))  # in order, each once: disjoint, covering
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@given(i=st.integers(0, 100), k=st.integers(1, 100))
def test_shard_text_round_trips_and_nonsense_is_refused(i, k):
    if i < k:
        assert campaign.parse_shard(f"{i}/{k}") == (i, k)
    else:
        with pytest.raises(ValueError):
            campaign.parse_shard(f"{i}/{k}")


@pytest.mark.parametrize("text", ["", "1", "a/b", "1/0", "-1/3", "3/3", "1/2/3"])
def test_bad_shards_are_one_sentence(text):
    with pytest.raises(ValueError, match="I/K|K must"):
        campaign.parse_shard(text)


def test_one_job_two_jobs_and_shards_give_the_same_runs(tmp_path):
    one = run_campaign(SEEDS, BROKEN, jobs=1, out_dir=str(tmp_path / "one"))
    assert [o.seed for o in one.violations] == [0, 1] and not one.crashes
    two = run_campaign(SEEDS, BROKEN, jobs=2, out_dir=str(tmp_path / "two"))
    assert stripped(two.to_json())["violations"] != []
    docs = []
    for i in range(3):
        part = run_campaign(shard_range(0, 6, i, 3), BROKEN, jobs=1 + i % 2, start=0, total=6, shard=f"{i}/3",
                            out_dir=str(tmp_path / "one"))
        docs.append((f"shard-{i}.json", part.to_json()))
    merged = merge(docs)
    assert merged["merged_from"] == ["shard-0.json", "shard-1.json", "shard-2.json"]
    want = stripped(one.to_json())
    assert stripped(two.to_json()) == {**want, "violations": [
        {**v, "file": v["file"].replace("/one/", "/two/")} for v in want["violations"]]}
    assert stripped(merged) == want
    assert [d["runs_digest"] for _, d in docs] != [want["runs_digest"]] * 3


def test_a_violation_is_written_as_a_scenario_file_that_replays(tmp_path):
    seen = []
    result = run_campaign(range(0, 2), BROKEN, jobs=1, out_dir=str(tmp_path), on_outcome=seen.append)
    assert [o.seed for o in seen] == [0, 1] and all(o.violation for o in seen)
    for o in result.violations:
        assert o.file == str(tmp_path / f"fuzz-{o.seed}.toml")
        text = open(o.file, encoding="utf-8").read()
        assert text.startswith(f"# pbft fuzz: seed {o.seed}, agreement:")
        assert text.endswith(o.violation.toml)
        s = parse_scenario(tomllib.loads(text), o.file)
        r = run_scenario(s)
        assert r.violations and r.violations[0].check == o.violation.check
    assert sorted(os.listdir(tmp_path)) == ["fuzz-0.toml", "fuzz-1.toml"]  # no temporary left


def fake(seed: int, *args) -> SeedOutcome:
    """A runner for the crash tests (a worker imports it from this module): seed 3 raises,
    seed 5 kills its process, the others pass at once."""
    if seed == 3:
        raise RuntimeError("the simulator fell over")
    if seed == 5:
        os._exit(7)
    return SeedOutcome(seed, "fake", digest=f"d{seed}")


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_that_raises_is_a_crash_with_its_seed(jobs):
    seeds = range(0, 5)
    result = run_campaign(seeds, Options(), jobs=jobs, runner=fake)
    assert result.runs == 5 and not result.violations and result.failed
    (crash,) = result.crashes
    assert crash.seed == 3 and "RuntimeError: the simulator fell over" in crash.crash
    doc = result.to_json()
    assert doc["crashes"][0]["seed"] == 3 and doc["ranges"] == [[0, 5]]


def test_a_worker_that_dies_is_named_and_the_campaign_goes_on():
    result = run_campaign(range(0, 12), Options(), jobs=2, runner=fake)
    assert result.runs == 12 and not result.interrupted
    assert [(o.seed, "died" in o.crash) for o in result.crashes] == [(3, False), (5, True)]
    assert result.digest == run_campaign(range(0, 12), Options(), jobs=2, runner=fake).digest


def test_a_real_crash_writes_the_seed_scenario_with_the_traceback(tmp_path):
    bad = Options(f=1, mode="random", behaviours=("no-such-behaviour",))
    o = campaign.run_seed(4, bad, out_dir=str(tmp_path))
    assert o.crash and o.file == str(tmp_path / "fuzz-4.toml") and o.scenario
    text = open(o.file, encoding="utf-8").read()
    assert text.startswith("# pbft fuzz: seed 4 crashed the simulator:")
    assert parse_scenario(tomllib.loads(text), o.file).seed == 4


def doc(**kw) -> dict:
    base = {"format": campaign.FORMAT, "mode": "random", "f": 1, "broken": "", "behaviours": None,
            "start": 0, "seeds": 10, "shard": None, "ranges": [[0, 10]], "runs": 10, "violations": [],
            "crashes": [], "runs_digest": "0" * 64, "interrupted": False, "jobs": 1, "seconds": 1.0,
            "runs_per_second": 10.0}
    return {**base, **kw}


def test_merge_refuses_other_options_overlaps_and_strangers():
    with pytest.raises(MergeError, match=r"b.json and a.json ran different campaigns: f 2 and 1"):
        merge([("a.json", doc()), ("b.json", doc(f=2, start=10, ranges=[[10, 20]]))])
    with pytest.raises(MergeError, match=r"a.json and b.json both ran seeds 5 to 9"):
        merge([("a.json", doc()), ("b.json", doc(start=5, ranges=[[5, 15]]))])
    with pytest.raises(MergeError, match=r"a.json twice ran seeds 0 to 9"):
        merge([("a.json", doc()), ("a.json", doc())])
    with pytest.raises(MergeError, match=r"x.json is not a result of `pbft fuzz"):
        merge([("x.json", {"runs": 3})])
    partial = {k: v for k, v in doc().items() if k not in ("ranges", "runs_digest")}
    with pytest.raises(MergeError, match=r"y.json lacks the fields ranges, runs_digest"):
        merge([("y.json", partial)])


def test_merge_of_disjoint_results_adds_up_and_names_the_gaps():
    v = {"seed": 25, "check": "agreement", "detail": "d", "scenario": ""}
    out = merge([("a", doc(seeds=40, shard="0/4", runs_digest="0f" * 32)),
                 ("c", doc(seeds=40, shard="2/4", ranges=[[20, 30]], violations=[v], runs_digest="f0" * 32))])
    assert out["ranges"] == [[0, 10], [20, 30]] and out["runs"] == 20 and out["violations"] == [v]
    assert out["runs_digest"] == "ff" * 32 and out["start"] == 0 and out["seeds"] == 40
    assert campaign.missing(out) == [[10, 20], [30, 40]]
    assert campaign.missing(doc(seeds=40, shard="1/4", ranges=[[10, 14], [15, 20]])) == [[14, 15]]


def test_the_coverage_report_sums_the_runs_and_names_what_none_reached():
    from collections import Counter

    from pbft.sim.coverage import UNIVERSE
    from pbft.sim.fuzz import scenario_of

    result = run_campaign(range(3), Options(), jobs=1)
    doc = result.to_json()
    want: Counter = Counter()
    for seed in range(3):
        want.update(run_scenario(scenario_of(seed, 1)).coverage)
    assert doc["coverage"] == dict(sorted(want.items()))
    assert doc["coverage"]["message:PRE-PREPARE"] > 0 and doc["coverage"]["event:committed"] > 0
    assert doc["never_reached"] == [i for i in UNIVERSE if not want.get(i)]
    assert "message:QUERY-STATUS" in doc["never_reached"]  # only `pbft status` sends it


def test_a_pool_that_broke_between_two_waits_loses_no_seed(monkeypatch):
    """A worker can die after one wait and before the next submission: `submit` itself
    then raises BrokenProcessPool (seen once in `make test`). The seed being submitted
    and those in hand are run again alone, like the seeds of a pool that broke in a
    wait; none is lost or taken twice."""
    import concurrent.futures as cf

    calls = {"submit": 0}

    class Pool:
        def submit(self, fn, *args):
            calls["submit"] += 1
            if calls["submit"] == 4:
                raise cf.process.BrokenProcessPool("a worker died")
            fut: cf.Future = cf.Future()
            fut.set_result(fn(*args))
            return fut

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(campaign, "_pool", lambda jobs: Pool())
    taken: list[int] = []
    campaign._parallel(iter(range(10)), 2, lambda seed, *a: SeedOutcome(seed, "fake"), (None, None, None, None),
                       lambda o: taken.append(o.seed))
    assert sorted(taken) == list(range(10))
