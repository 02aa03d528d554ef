"""`pbft fuzz`'s progress: runs per second, violations so far and what the seed draws,
redrawn in place on a terminal and a line every ten seconds in a log."""

from __future__ import annotations

import io

from pbft.cli.scenario import FuzzProgress
from pbft.sim.fuzz import describe, mutation_scenario, random_scenario
from pbft.sim.result import RunResult
from pbft.sim.scenario import ByzantineSpec, NetworkFault, Scenario


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def result(violations: list) -> RunResult:
    return RunResult("x", 0, violations, 0, 0, 0, [], False)


def test_describe_says_what_a_seed_draws():
    s = Scenario(
        byzantine=(ByzantineSpec("replica", 0, "equivocate", {}),
                   ByzantineSpec("replica", 2, "", {"rule": [{}, {}]}),
                   ByzantineSpec("client", 1, "client-replay", {})),
        network=(NetworkFault(partition=((0,), (1, 2, 3))), NetworkFault(crash=2, on="checkpoint"),
                 NetworkFault(twin=3), NetworkFault(drop=0.5, kinds=("COMMIT",))),
        broken="weak-prepare-quorum",
    )
    assert describe(s) == ("equivocate@0 rules(2)@2 client-replay@c1 partition crash 2 on checkpoint "
                           "twin 3 drop(filtered) broken:weak-prepare-quorum")
    assert describe(Scenario()) == "no faults"
    for seed in range(20):  # every drawn scenario can be described
        assert describe(random_scenario(seed)) and describe(mutation_scenario(seed))


def test_the_bar_redraws_in_place_on_a_terminal():
    out = Terminal()
    bar = FuzzProgress(4, out)
    bar.TTY_EVERY = 0.0
    bar.run(10, Scenario(), result([]))
    bar.run(11, Scenario(byzantine=(ByzantineSpec("replica", 0, "silent", {}),)), result(["v"]))
    bar.done()
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    last = text.rstrip().split("\r")[-1]
    assert "2/4 seeds" in last and "1 violation " in last and "seed 11: silent@0" in last


def test_a_log_gets_a_line_now_and_then_not_a_redraw():
    out = io.StringIO()
    bar = FuzzProgress(100, out)
    for seed in range(50):
        bar.run(seed, Scenario(), result([]))
    bar.done()
    assert out.getvalue() == ""  # a fast campaign writes nothing between its results
    bar.LOG_EVERY = 0.0
    bar.run(50, Scenario(), result([]))
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue() and "51/100 seeds" in out.getvalue()


def test_a_campaign_bar_counts_violations_and_crashes_and_names_its_jobs():
    from pbft.sim.campaign import SeedOutcome
    from pbft.sim.fuzz import FuzzViolation

    out = io.StringIO()
    bar = FuzzProgress(3, out, label="2 jobs, shard 1/4 (seeds 25-49)")
    bar.outcome(SeedOutcome(25, "no faults"))
    bar.outcome(SeedOutcome(27, "silent@0", violation=FuzzViolation(27, "liveness", "d", "")))
    assert out.getvalue() == ""
    bar.outcome(SeedOutcome(26, "", crash="Traceback"))  # the last seed: always a line
    line = out.getvalue()
    assert line.count("\n") == 1 and "3/3 seeds" in line and "1 violation  1 crash  2 jobs, shard 1/4" in line
