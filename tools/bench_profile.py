"""Profile one replica of a bench run with py-spy (tools only, not part of `pbft`).

    .venv/bin/python tools/bench_profile.py [--replica 0 | --worker 0] [--clients 16]
        [--duration 10] [--f 1] [--workers W] [--out DIR] [--idle] [--gil]
        [--fsync always|batch|off]

Runs `pbft.cluster.bench.run_once` and, once the measurement window opens, attaches
`py-spy record --format raw` to the chosen replica process (or, with --worker, to one of
the client worker processes) for the whole window. Writes DIR/replica-R.txt (or
DIR/worker-W.txt) (collapsed stacks, one `stack count` per line) and prints the top
functions by self time and by inclusive time. py-spy must be installed in the venv
(`.venv/bin/pip install py-spy`) and allowed to ptrace (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import shutil
import subprocess
import sys


def py_spy() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    found = exe if os.path.exists(exe) else shutil.which("py-spy")
    if not found:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def top(path: str, count: int = 25) -> list[str]:
    """Self and inclusive sample counts per function from a collapsed-stack file."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            k = int(n)
            total += k
            frames = [_short(f) for f in stack.split(";") if f]
            if frames:
                own[frames[-1]] += k
            for fr in set(frames):
                incl[fr] += k
    out = [f"{total} samples"]
    out.append("-- self time --")
    out += [f"{100 * v / total:5.1f}%  {name}" for name, v in own.most_common(count)]
    out.append("-- inclusive time --")
    out += [f"{100 * v / total:5.1f}%  {name}" for name, v in incl.most_common(count)]
    return out


def _short(frame: str) -> str:
    # py-spy raw frames look like "func (path/to/file.py:123)"; drop the line number so
    # one function is one row, and shorten site-packages paths.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def main() -> int:
    from pbft.cluster.bench import run_once

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replica", type=int, default=0)
    p.add_argument("--worker", type=int, default=None,
                   help="profile this client worker process instead of a replica")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--f", type=int, default=1)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", default="profile")
    p.add_argument("--idle", action="store_true", help="also sample idle (waiting) threads")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--gil", action="store_true",
                   help="only sample the thread holding the GIL (Python CPU, no waits)")
    p.add_argument("--fsync", default=None, help="the replicas' [storage] fsync policy")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    who = f"worker-{args.worker}" if args.worker is not None else f"replica-{args.replica}"
    out = os.path.join(args.out, f"{who}.txt")
    exe = py_spy()

    def attach(cluster):
        if args.worker is not None:
            # The bench's client workers are this process's multiprocessing children
            # (the replicas are plain subprocesses of the launcher).
            workers = sorted(multiprocessing.active_children(), key=lambda c: c.pid)
            pid = workers[args.worker].pid
        else:
            pid = cluster.procs[args.replica].pid
        cmd = [exe, "record", "--format", "raw", "-o", out, "-r", str(args.rate),
               "-d", str(int(args.duration)), "-p", str(pid), "--nonblocking"]
        if args.idle:
            cmd.append("--idle")
        if args.gil:
            cmd.append("--gil")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def done() -> None:
            try:
                proc.wait(timeout=args.duration + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        return done

    run = run_once(args.f, args.clients, args.duration, workers=args.workers, profile=attach,
                   fsync=args.fsync)
    print(f"throughput {run.throughput_rps:.1f} req/s, p50 {run.latency_ms['p50']:.2f} ms, "
          f"cpu {run.cpu}")
    if os.path.exists(out):
        print(f"profile of {who}: {out}")
        print("\n".join(top(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
