"""The shipped attack examples (examples/attacks/) and a user's file on real processes.

`pbft scenario run --real` starts each Byzantine replica with `--behaviour SCENARIO.toml`,
so the replica process loads the example's Python file itself (relative to the scenario
file); `pbft replica --behaviour FILE.py:Class:k=v` loads one directly. Each run is a
subprocess or a LocalCluster with hard timeouts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import LocalCluster, free_ports
from pbft.node.client import open_client
from pbft.node.clusterfile import load_cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "attacks"
HARD_TIMEOUT_S = 120


def test_examples_pass_on_real_processes():
    files = sorted(str(p) for p in EXAMPLES.glob("*.toml"))
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", *files, "--real", "--json"],
        capture_output=True, text=True, timeout=HARD_TIMEOUT_S, cwd="/",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(proc.stdout)}
    assert len(results) == len(files) >= 3
    for r in results.values():
        assert r["verdict"] == "PASS" and r["requests_completed"] == r["requests_total"] > 0, r
    # The two-faced primary is found out and replaced, on real processes too.
    assert results["example-two-faced-primary"]["view_changes"] >= 1


def test_replica_loads_a_users_file_by_path(tmp_path):
    attack = tmp_path / "mute.py"
    attack.write_text(textwrap.dedent("""
        from pbft.adversary import Behaviour, Param

        class Mute(Behaviour):
            '''Sends no PREPAREs to the replicas listed.'''
            parameters = {"to": Param.replicas([1])}

            def on_send(self, out):
                if out.kind == "PREPARE" and out.to in self.args.to:
                    out.drop()
    """))
    path = generate_cluster(os.path.join(tmp_path, "keys"), f=1, clients=["c0"], ports=free_ports(4),
                            cluster_id="user", checkpoint_interval=8, log_window=16)
    cluster = LocalCluster(path, load_cluster(path), log_dir=str(tmp_path),
                           behaviours={2: f"{attack}:Mute:to=[1,3]"})
    cluster.start(timeout=30)
    try:
        async def main():
            async with open_client(path, "c0", timeout=20) as client:
                for i in range(5):
                    await client.put(b"k", b"v%d" % i)
                assert await client.get(b"k") == b"v4"
                return await client.status(timeout=3)

        statuses = trio.run(main)
        assert statuses[2].behaviour == "Mute" and not statuses[1].behaviour
        log = Path(cluster.log_path(2)).read_text()
        assert "BYZANTINE" in log and f"{attack}:Mute:to=[1, 3]" in log
    finally:
        cluster.stop(grace=3)


def test_replica_refuses_a_bad_file_in_one_sentence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from pbft.adversary import Behaviour\n\nclass B(Behaviour):\n    x = 1 +\n")
    path = generate_cluster(os.path.join(tmp_path, "keys"), f=1, clients=["c0"], ports=free_ports(4))
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "replica", "--config", path, "--id", "1", "--behaviour", f"{bad}:B"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "bad.py line 4: syntax error" in err, err



def test_an_attackers_failure_on_real_processes_is_its_own_verdict(tmp_path):
    (tmp_path / "oops.py").write_text(textwrap.dedent("""
        from pbft.adversary import Behaviour

        class Oops(Behaviour):
            def on_send(self, out):
                # Every send, not only COMMITs: on a loaded machine replica 2 can lag so
                # far that the five requests complete before it commits anything (seen in
                # a full `make test`), but it always sends something (a STATUS at least).
                raise ZeroDivisionError("my bug")
    """))
    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "oops"\n[workload]\nclients = 1\nrequests = 5\n'
                        '[[byzantine]]\nreplica = 2\nbehaviour = "oops.py:Oops"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(scenario), "--real", "--json"],
        capture_output=True, text=True, timeout=HARD_TIMEOUT_S,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (r,) = json.loads(proc.stdout)
    assert r["verdict"] == "ATTACKER-FAILED" and r["violations"] == [] and r["attacker_failure_count"] > 0
    assert "behaviour Oops raised ZeroDivisionError: my bug in on_send" in r["attacker_failures"][0]
