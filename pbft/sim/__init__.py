"""The deterministic simulator: the attacker's workbench (docs/architecture.md, docs/formats.md).

    scenario.py    the TOML scenario format: parse, validate, write back
    network.py     per-message fate (drop, delay, duplicate, reorder, partition, one-way)
    simulation.py  n unmodified cores and closed-loop clients in virtual time
    oracle.py      the checks of docs/attacks.md, run after every step
    fuzz.py        ByzzFuzz-style random schedules with shrinking
    result.py      the result of one run (simulated or real) and its JSON

Behaviours come by name from pbft.adversary.catalogue; the commands that drive all this
(`pbft scenario run|list`, `pbft fuzz`) are in pbft.cli.scenario.

Everything is driven by one `random.Random(seed)`; the same seed gives the same run, and
the same `trace_digest`, in any process.
"""
