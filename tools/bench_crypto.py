"""Ed25519 in pbft: each library's cost on pbft's own payloads, whether it runs with the
GIL released (so verification could use a second core), and what each library does at
the edges pbft pins (docs/protocol.md, "Signatures"; issue 20).

    python tools/bench_crypto.py [--seconds S] [--edges] [--threads] [--stage] [--json FILE]

Costs are CPU time per call (process_time), through pbft's own path (`KeyPair.sign`,
`Verifier.verify` with its checks), on the signing payloads of a put request, a PREPARE
vote and a PRE-PREPARE carrying a batch of 16 requests. `--threads` runs verification of
a fixed number of signatures on 1 and 2 threads and reports the wall-clock speedup: a
library that holds the GIL shows none. `--stage` runs the replica's pre-verification stage
(pbft.node.preverify, `[[replica]] verify_threads`) on groups of request frames, as a
replica's event loop would: wall-clock time and the event loop thread's own CPU time per
signature, inline (0 threads: `Verifier.verify` on the loop) and with 1 and 2 threads.
Interleave runs when comparing builds.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbft.protocol import crypto  # noqa: E402
from pbft.protocol.crypto import Ed25519, KeyPair, Verifier, seal  # noqa: E402
from pbft.protocol.messages import Envelope, Prepare, PrePrepare, Request, envelope_from_bytes  # noqa: E402
from pbft.service.kv import op_put  # noqa: E402

CLUSTER = "bench"


def payloads() -> dict[str, Envelope]:
    key = KeyPair.from_seed(b"bench")
    req = seal(key, CLUSTER, "c0", Request(op_put(b"c0/k0", b"v" * 100), 1, "c0", False))
    batch = tuple(
        seal(key, CLUSTER, f"c{i}", Request(op_put(b"k%d" % i, b"v" * 100), 1, f"c{i}", False)).to_bytes()
        for i in range(16)
    )
    d = crypto.batch_digest(batch)
    return {
        "request": req,
        "prepare": seal(key, CLUSTER, 1, Prepare(0, 1, d)),
        "pre-prepare(16)": seal(key, CLUSTER, 0, PrePrepare(0, 1, d, batch)),
    }


def cpu_per_call(fn, seconds: float) -> float:
    n, t0 = 0, time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            fn()
        n += 50
    return (time.process_time() - t0) / n


def costs(seconds: float) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for impl in Ed25519:
        previous = crypto.use(impl)
        try:
            key = KeyPair.from_seed(b"bench")
            by_payload = {}
            for name, env in payloads().items():
                signer = env.signer
                envs = Envelope(env.body, signer, key.sign(crypto.signing_payload(CLUSTER, env.body)))
                v = Verifier(CLUSTER, {signer: key.public})
                assert v.verify(envs)
                body = crypto.signing_payload(CLUSTER, env.body)
                by_payload[name] = {
                    "bytes": len(body),
                    "sign_us": round(cpu_per_call(lambda b=body, k=key: k.sign(b), seconds) * 1e6, 1),
                    "verify_us": round(cpu_per_call(lambda e=envs, v=v: v.verify(e), seconds) * 1e6, 1),
                }
            out[impl.library] = by_payload
        finally:
            crypto.use(previous)
    return out


def threads(count: int = 4000) -> dict[str, dict[str, float]]:
    out = {}
    env = payloads()["request"]
    for impl in Ed25519:
        previous = crypto.use(impl)
        try:
            key = KeyPair.from_seed(b"bench")
            signed = Envelope(env.body, env.signer, key.sign(crypto.signing_payload(CLUSTER, env.body)))
            v = Verifier(CLUSTER, {env.signer: key.public})
            walls = {}
            for t in (1, 2, 1, 2):
                def work(k=count // t, v=v, signed=signed):
                    for _ in range(k):
                        v.verify(signed)
                ts = [threading.Thread(target=work) for _ in range(t)]
                t0 = time.perf_counter()
                for x in ts:
                    x.start()
                for x in ts:
                    x.join()
                walls.setdefault(t, []).append(time.perf_counter() - t0)
            one, two = min(walls[1]), min(walls[2])
            out[impl.library] = {"1_thread_s": round(one, 3), "2_threads_s": round(two, 3),
                                 "speedup": round(one / two, 2)}
        finally:
            crypto.use(previous)
    return out


def stage(count: int = 4096, group: int = 64, repeats: int = 3) -> dict[str, dict[str, float]]:
    """The pre-verification stage alone on `count` distinct signed requests, `group`
    frames per round: wall and event-loop-thread CPU per signature; best of `repeats`."""
    import trio

    from pbft.node.preverify import PreVerify
    from pbft.protocol.crypto import VERDICTS
    from pbft.protocol.events import Received

    keys = {f"c{i}": KeyPair.from_seed(b"c%d" % i) for i in range(group)}
    frames = [
        Received(None, seal(keys[f"c{i % group}"], CLUSTER, f"c{i % group}",
                            Request(op_put(b"k%d" % i, b"v" * 100), i + 1, f"c{i % group}", False)).to_bytes())
        for i in range(count)
    ]
    envs = [envelope_from_bytes(f.data) for f in frames]
    members = {name: k.public for name, k in keys.items()}

    async def pooled(threads: int) -> tuple[float, float]:
        v = Verifier(CLUSTER, members, memo=VERDICTS)
        pool = PreVerify(v, threads)
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(0, count, group):
            parts = pool.plan(frames[i : i + group])
            await pool.check(parts)
            assert all(v.verify(e) for e in envs[i : i + group])  # found, not checked again
        assert v.checked == count
        return time.perf_counter() - t0, time.thread_time() - c0

    async def inline() -> tuple[float, float]:
        v = Verifier(CLUSTER, members)
        t0, c0 = time.perf_counter(), time.thread_time()
        for e in envs:
            assert v.verify(e)
        return time.perf_counter() - t0, time.thread_time() - c0

    out: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for threads in (0, 1, 2):
            wall, cpu = trio.run(inline) if threads == 0 else trio.run(pooled, threads)
            row = {"wall_us": round(wall / count * 1e6, 1), "loop_cpu_us": round(cpu / count * 1e6, 1)}
            best = out.get(str(threads))
            if best is None or row["wall_us"] < best["wall_us"]:
                out[str(threads)] = row
    base = out["0"]["wall_us"]
    for row in out.values():
        row["speedup"] = round(base / row["wall_us"], 2)
    return out


def edges() -> dict[str, dict[str, bool]]:
    """What each raw library does with a signature whose R is the identity (r = 0) and
    the equation holds, which pbft refuses under both."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "protocol"))
    import test_ed25519_rules as ref  # the reference curve arithmetic of the tests

    a, _ = ref.secret(ref.SEED)
    public = KeyPair(ref.SEED).public
    msg = ref.payload(b"prepare")
    sig = ref.sign_with(a, b"", public, msg, r_point=ref.IDENTITY)
    return {"small-order R (r = 0)": {"libsodium": ref.raw_sodium(public, sig, msg),
                                      "OpenSSL": ref.raw_openssl(public, sig, msg),
                                      "pbft (either)": ref.pbft_verdicts(public, sig, b"prepare") == {True}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--edges", action="store_true")
    ap.add_argument("--threads", action="store_true")
    ap.add_argument("--stage", action="store_true", help="the replica's pre-verification stage, 0/1/2 threads")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    doc: dict[str, object] = {"costs": costs(args.seconds)}
    for lib, rows in doc["costs"].items():  # type: ignore[union-attr]
        for name, r in rows.items():
            print(f"{lib:40s} {name:16s} {r['bytes']:5d} B  sign {r['sign_us']:6.1f} us  verify {r['verify_us']:6.1f} us")
    if args.threads:
        doc["threads"] = threads()
        for lib, r in doc["threads"].items():  # type: ignore[union-attr]
            print(f"{lib:40s} verify x4000: 1 thread {r['1_thread_s']} s, 2 threads {r['2_threads_s']} s, "
                  f"speedup {r['speedup']}")
    if args.stage:
        doc["stage"] = stage()
        for pool, r in doc["stage"].items():  # type: ignore[union-attr]
            print(f"pre-verification stage, {pool} thread(s): {r['wall_us']:5.1f} us wall and "
                  f"{r['loop_cpu_us']:5.1f} us of event-loop CPU per signature, speedup {r['speedup']}")
    if args.edges:
        doc["edges"] = edges()
        for case, r in doc["edges"].items():  # type: ignore[union-attr]
            print(f"{case}: " + ", ".join(f"{k} {'accepts' if v else 'refuses'}" for k, v in r.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
