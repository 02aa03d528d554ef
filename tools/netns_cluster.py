"""A replica group spread over network namespaces: one "host" per replica, real links.

Usage (as root):
    .venv/bin/python tools/netns_cluster.py run [--f 1] [--delay-ms 20] [--loss 0.01]
        [--clients 4] [--requests 100] [--kill I --kill-after S] [--json FILE]
    .venv/bin/python tools/netns_cluster.py up --dir DIR [same network options]
    .venv/bin/python tools/netns_cluster.py down --dir DIR

Theory of operation. `up` builds n = 3f+1 namespaces `<prefix>h0..h<n-1>` (the hosts,
10.77.0.1..n), one `<prefix>cl` for the clients (10.77.0.100) and one `<prefix>br` in the
middle. Every host and the client namespace get a veth pair whose far end sits in the
`br` namespace; nothing is created in, or routed to, the root namespace, and the
10.77.0.0/24 addresses exist only inside these namespaces. The middle is either

* a kernel bridge (`--link bridge`), with `tc netem` on each host's `eth0` for
  --delay-ms/--loss (which needs a kernel with sch_netem), or
* a small user-space switch (`switch` below, an AF_PACKET learning switch) that delays
  every frame by --delay-ms and drops it with probability --loss: the same one-way figures
  netem on each sender's link gives, for kernels built without netem (this VM's is). It
  runs in the `br` namespace and costs CPU the replicas would otherwise have; run the
  baseline through it too (`--link switch`) to compare like with like.

`--link auto` (the default) takes the bridge when the links are clean or netem exists,
else the switch.

So every frame crosses one emulated link: one-way delay D, round trip 2D, loss p per frame.

Keys are made as an operator would (README "Deploying on several hosts"): `generate_cluster`
on the "trusted machine" (`DIR/keys`, where ca.key stays), the replica addresses rewritten
to each host's own address (every replica listens on port 7000 of its host), then each host
gets a directory of its own with the cluster file, the CA and node certificates (public)
and only its own private key. One `pbft replica` runs in each host namespace, started with
`ip netns exec`; `up` returns once `pbft status` from the client namespace sees every
replica. `run` then drives a closed-loop workload from the client namespace (`workload`
below: each client puts a key and reads it back, N times), optionally SIGKILLs one replica
mid-run, prints throughput and latency, and tears everything down in a `finally`: replicas
and switch terminated (SIGKILL after a grace period), namespaces deleted (which deletes
their veths). `down` does the same for a group `up` left running, from DIR/state.json and
the namespace names; it is safe to run twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SUBNET = "10.77.0"
"""Private addresses used only inside the namespaces this script creates."""
CLIENT_HOST = f"{SUBNET}.100"
PORT = 7000
"""Every replica listens on this port of its own host."""
CMD_TIMEOUT = 15.0
"""Seconds any one `ip`/`tc`/`ethtool` command may take."""
READY_TIMEOUT = 60.0
"""Seconds for every replica to answer `pbft status` after `up` starts them."""
STOP_GRACE = 5.0
"""Seconds a process gets after SIGTERM before SIGKILL."""
WORKLOAD_TIMEOUT = 300.0
"""Seconds the whole workload may take before `run` gives up."""
OP_TIMEOUT = 60.0
"""Seconds one client call may take before it counts as an error."""
MAX_FRAME = 65536
"""Largest frame the switch reads (offloads are off, so frames are at most the MTU)."""
SWITCH_QUEUE = 100_000
"""Frames the switch holds in its delay line; beyond that it drops (a full queue)."""
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class NetnsError(RuntimeError):
    """A setup step failed; the message says which command and what it printed."""


# ---------------------------------------------------------------------------- names


def names(prefix: str, n: int) -> dict[str, object]:
    return {
        "hosts": [f"{prefix}h{i}" for i in range(n)],
        "client": f"{prefix}cl",
        "bridge": f"{prefix}br",
    }


def host_address(i: int) -> str:
    return f"{SUBNET}.{i + 1}"


def our_namespaces(prefix: str) -> list[str]:
    """Namespaces that exist now and carry one of the names this script gives."""
    pattern = re.compile(re.escape(prefix) + r"(h\d+|cl|br)$")
    out = _cmd(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line and pattern.match(line.split()[0])]


# ---------------------------------------------------------------------------- commands


def _cmd(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except FileNotFoundError:
        hint = " (apt-get install ethtool)" if argv[0] == "ethtool" else " (apt-get install iproute2)"
        raise NetnsError(f"{argv[0]} is not installed{hint}.") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(argv)}` did not finish within {CMD_TIMEOUT:g} s.") from None
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def netem_available(prefix: str) -> bool:
    """Whether this kernel has sch_netem: try it on a throwaway veth in our own namespace."""
    ns = f"{prefix}probe"
    _cmd(["ip", "netns", "add", ns])
    try:
        _cmd(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        probe = ["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"]
        return _cmd(probe, check=False).returncode == 0
    finally:
        _cmd(["ip", "netns", "del", ns], check=False)


# ---------------------------------------------------------------------------- network


def build_network(prefix: str, n: int, link: str, delay_ms: float, loss: float) -> None:
    """Namespaces, veths to the middle, addresses, and netem (link == "bridge")."""
    nm = names(prefix, n)
    br = nm["bridge"]
    endpoints = [(ns, host_address(i), f"h{i}") for i, ns in enumerate(nm["hosts"])]
    endpoints.append((nm["client"], CLIENT_HOST, "cl"))
    for ns in [br, *(e[0] for e in endpoints)]:
        _cmd(["ip", "netns", "add", ns])
        _cmd(["ip", "-n", ns, "link", "set", "lo", "up"])
    if link == "bridge":
        _cmd(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        _cmd(["ip", "-n", br, "link", "set", "br0", "up"])
    for ns, address, port in endpoints:
        # Created inside the middle namespace with its peer placed straight into the host's:
        # no interface ever exists in the root namespace.
        _cmd(["ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _cmd(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        _cmd(["ip", "-n", ns, "link", "set", "eth0", "up"])
        if link == "bridge":
            _cmd(["ip", "-n", br, "link", "set", port, "master", "br0"])
            if delay_ms or loss:
                _cmd(["tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "netem",
                      "delay", f"{delay_ms:g}ms", "loss", f"{loss * 100:g}%"])
        else:
            # The switch copies frames through user space: checksums must be complete and
            # frames no larger than the MTU. Without this every TCP segment arrives with a
            # partial checksum and is dropped (ARP still works, so nothing says why): the
            # offloads must go, or the run must not start.
            for where, dev in ((ns, "eth0"), (br, port)):
                offload_off(where, dev)
        _cmd(["ip", "-n", br, "link", "set", port, "up"])


def offload_off(ns: str, dev: str) -> None:
    """Checksum and segmentation offloads off on `dev` in namespace `ns` (ethtool -K)."""
    if shutil.which("ethtool") is None:
        raise NetnsError("ethtool is not installed (apt-get install ethtool): the user-space switch "
                         "needs the veths' checksum offloads off, or TCP gets no segment through.")
    done = _cmd(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "rx", "off",
                 "tso", "off", "gso", "off", "gro", "off"], check=False)
    # ethtool fails as a whole on a feature the driver cannot change (veths take all of these);
    # what matters is that the checksum offloads are off afterwards.
    shown = _cmd(["ip", "netns", "exec", ns, "ethtool", "-k", dev], check=False).stdout
    if re.search(r"^tx-checksumming: on", shown, re.M) or re.search(r"^rx-checksumming: on", shown, re.M):
        raise NetnsError(f"could not turn the checksum offloads off on {dev} in {ns}: "
                         f"{done.stderr.strip() or done.stdout.strip() or 'ethtool said nothing'}")


def switch_ports(n: int) -> list[str]:
    return [f"h{i}" for i in range(n)] + ["cl"]


# ---------------------------------------------------------------------------- keys


def rewrite_addresses(text: str, addresses: dict[int, str]) -> str:
    """Replace each [[replica]]'s address with addresses[id], keeping everything else."""
    out, in_replica, rid = [], False, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_replica, rid = stripped == "[[replica]]", None
        elif in_replica and (m := re.match(r"id\s*=\s*(\d+)\s*$", stripped)):
            rid = int(m.group(1))
        elif in_replica and rid is not None and re.match(r"address\s*=", stripped):
            line = f'address = "{addresses[rid]}"'
        out.append(line)
    return "\n".join(out) + "\n"


def make_keys(directory: str, f: int, clients: list[str]) -> dict[str, str]:
    """Keys on the "trusted machine", then one directory per host holding only its own
    private key. Returns {"keys": ..., "host-<i>": ..., "client": ...} cluster file paths."""
    from pbft.cluster.keygen import generate_cluster
    from pbft.node.clusterfile import load_cluster

    n = 3 * f + 1
    keys = os.path.join(directory, "keys")
    path = generate_cluster(keys, f=f, clients=clients, host=SUBNET + ".1",
                            ports=[PORT + i for i in range(n)], cluster_id="netns")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    text = rewrite_addresses(text, {i: f"{host_address(i)}:{PORT}" for i in range(n)})
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    load_cluster(path)  # what the replicas will read must be valid
    public = [p for p in os.listdir(keys) if p.endswith(".pem")]  # certificates, CA included
    paths = {"keys": path}
    for label, own in [*((f"host-{i}", [f"replica-{i}.key"]) for i in range(n)),
                       ("client", [f"client-{c}.key" for c in clients])]:
        dest = os.path.join(directory, label)
        os.makedirs(dest, mode=0o700)
        for name in ["cluster.toml", *public, *own]:
            shutil.copy2(os.path.join(keys, name), os.path.join(dest, name))
        paths[label] = os.path.join(dest, "cluster.toml")
    return paths


# ---------------------------------------------------------------------------- processes


def spawn_in(ns: str, argv: list[str], log_path: str) -> subprocess.Popen:
    """Start argv inside namespace ns (`ip netns exec` execs it: the pid is the program's),
    in its own session so a Ctrl-C at the terminal reaches only this script."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)


def pbft_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pbft", *args]


def tail(path: str, limit: int = 600) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def status(prefix: str, client_config: str) -> dict:
    """`pbft status --json` from the client namespace ({} if it did not answer)."""
    argv = ["ip", "netns", "exec", f"{prefix}cl", *pbft_argv("status", "--config", client_config, "--json")]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {}
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}


def wait_ready(state: dict, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for i, pid in enumerate(state["replica_pids"]):
            if not _alive(pid):
                log = os.path.join(state["dir"], "logs", f"replica-{i}.log")
                raise NetnsError(f"replica {i} exited during start-up: {tail(log) or '(no output)'}")
        rows = status(state["prefix"], state["configs"]["client"]).get("replicas", [])
        if rows and all(r["reachable"] for r in rows):
            return
        if time.monotonic() > deadline:
            raise NetnsError(f"not every replica answered `pbft status` within {timeout:g} s: {rows}")
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child (down from another process): ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def terminate(pids: list[int], grace: float = STOP_GRACE) -> None:
    """SIGTERM each pid, wait up to `grace`, SIGKILL whatever is left."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------- up / down


def up(args: argparse.Namespace) -> dict:
    """Network, keys, switch, replicas; returns the state `down` needs (also in DIR/state.json)."""
    n = 3 * args.f + 1
    if our_namespaces(args.prefix):
        raise NetnsError(f"namespaces named {args.prefix}* exist already; run `down` first.")
    link = args.link
    emulate = bool(args.delay_ms or args.loss)
    if link == "auto":
        link = "bridge" if not emulate or netem_available(args.prefix) else "switch"
    elif link == "bridge" and emulate and not netem_available(args.prefix):
        raise NetnsError("this kernel has no sch_netem (tc netem); use --link switch or auto.")
    os.makedirs(os.path.join(args.dir, "logs"), exist_ok=True)
    state = {"dir": os.path.abspath(args.dir), "prefix": args.prefix, "n": n, "f": args.f,
             "link": link, "delay_ms": args.delay_ms, "loss": args.loss,
             "clients": [f"c{k}" for k in range(args.clients)], "replica_pids": [],
             "switch_pid": None}
    _save(state)
    try:
        build_network(args.prefix, n, link, args.delay_ms, args.loss)
        state["configs"] = make_keys(state["dir"], args.f, state["clients"])
        if link == "switch":
            argv = [sys.executable, os.path.abspath(__file__), "switch", "--ports",
                    ",".join(switch_ports(n)), "--delay-ms", str(args.delay_ms),
                    "--loss", str(args.loss), "--seed", str(args.seed)]
            log = os.path.join(state["dir"], "logs", "switch.log")
            state["switch_pid"] = spawn_in(f"{args.prefix}br", argv, log).pid
        for i in range(n):
            argv = pbft_argv("--log-level", "info", "replica", "--config",
                             state["configs"][f"host-{i}"], "--id", str(i), "--data",
                             os.path.join(state["dir"], f"host-{i}", "data"))
            log = os.path.join(state["dir"], "logs", f"replica-{i}.log")
            state["replica_pids"].append(spawn_in(f"{args.prefix}h{i}", argv, log).pid)
        _save(state)
        wait_ready(state)
    except BaseException:
        down(state)
        raise
    return state


def down(state: dict) -> None:
    """Stop our processes, delete our namespaces (their veths go with them). Idempotent."""
    prefix = state["prefix"]
    pids = list(state.get("replica_pids", []))
    if state.get("switch_pid"):
        pids.append(state["switch_pid"])
    # Anything else still running inside our namespaces was started by us too.
    for ns in our_namespaces(prefix):
        out = _cmd(["ip", "netns", "pids", ns], check=False).stdout
        pids += [int(p) for p in out.split() if p.isdigit() and int(p) not in pids]
    terminate([p for p in pids if _in_our_namespace(p, prefix)])
    for ns in our_namespaces(prefix):
        _cmd(["ip", "netns", "del", ns], check=False)
    left = our_namespaces(prefix)
    if left:
        raise NetnsError(f"could not delete the namespaces {', '.join(left)}.")


def _in_our_namespace(pid: int, prefix: str) -> bool:
    """Only signal a pid that still lives in one of our namespaces (pids get reused)."""
    if not _alive(pid):
        return False
    out = _cmd(["ip", "netns", "identify", str(pid)], check=False).stdout.split()
    return bool(out) and any(ns in our_namespaces(prefix) for ns in out)


def _save(state: dict) -> None:
    os.makedirs(state["dir"], exist_ok=True)
    with open(os.path.join(state["dir"], "state.json"), "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=1)


# ---------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict:
    keep = args.dir is not None
    args.dir = args.dir or tempfile.mkdtemp(prefix="pbft-netns-")
    state = None
    workload = None
    try:
        started = time.monotonic()
        state = up(args)
        setup_s = time.monotonic() - started
        argv = [sys.executable, os.path.abspath(__file__), "workload", "--config",
                state["configs"]["client"], "--clients", ",".join(state["clients"]),
                "--requests", str(args.requests)]
        out_path = os.path.join(state["dir"], "workload.json")
        log = os.path.join(state["dir"], "logs", "workload.log")
        with open(out_path, "wb") as out, open(log, "ab") as err:
            workload = subprocess.Popen(["ip", "netns", "exec", f"{args.prefix}cl", *argv],
                                        cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
        killed_at = None
        if args.kill is not None:
            time.sleep(args.kill_after)
            if workload.poll() is None:
                _signal(state["replica_pids"][args.kill], signal.SIGKILL)
                killed_at = args.kill_after
        try:
            workload.wait(timeout=WORKLOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise NetnsError(f"the workload did not finish within {WORKLOAD_TIMEOUT:g} s.") from None
        if workload.returncode != 0:
            raise NetnsError(f"the workload failed: {tail(log) or '(no output)'}")
        with open(out_path, encoding="utf-8") as fh:
            result = json.load(fh)
        final = status(args.prefix, state["configs"]["client"]).get("replicas", [])
        result.update(n=state["n"], f=state["f"], link=state["link"], delay_ms=args.delay_ms,
                      loss=args.loss, setup_s=round(setup_s, 1), killed=args.kill,
                      killed_after_s=killed_at, final_status=final)
        return result
    finally:
        if workload is not None and workload.poll() is None:
            terminate([workload.pid])
        if state is not None:
            down(state)
        else:
            down({"prefix": args.prefix})
        if not keep and args.dir and os.path.isdir(args.dir) and not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


def summary(r: dict) -> str:
    def lat(d: dict) -> str:
        return f"p50 {d['p50']:.1f} / p90 {d['p90']:.1f} / p99 {d['p99']:.1f} / max {d['max']:.1f} ms"

    net = f"delay {r['delay_ms']:g} ms one way, loss {r['loss'] * 100:g}% per frame"
    lines = [
        f"n={r['n']} f={r['f']} on {r['n']} namespaces, link: {r['link']} ({net})",
        f"{r['clients']} clients x {r['requests']} (put + get): {r['ops']} operations in "
        f"{r['seconds']:.2f} s = {r['throughput_ops']:.0f} ops/s; errors {r['errors']}",
        f"put latency  {lat(r['put_ms'])}",
        f"get latency  {lat(r['get_ms'])}",
    ]
    if r.get("killed") is not None:
        lines.append(f"replica {r['killed']} SIGKILLed {r['killed_after_s']} s into the workload")
    views = sorted({row.get("view") for row in r["final_status"] if row.get("reachable")})
    answered = [row["id"] for row in r["final_status"] if row.get("reachable")]
    lines.append(f"after: replicas answering {answered}, views {views}; set-up {r['setup_s']} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- workload


def workload_main(args: argparse.Namespace) -> int:
    """Closed loop per client: put k_i, get k_i (checked), N times. Prints one JSON object."""
    import trio

    from pbft.node.client import open_client

    clients = args.clients.split(",")
    lat: dict[str, list[float]] = {"put": [], "get": []}
    errors: list[str] = []

    async def one(name: str) -> None:
        async with open_client(args.config, name, timeout=OP_TIMEOUT) as client:
            for k in range(args.requests):
                key, value = f"{name}-{k}".encode(), os.urandom(16).hex().encode()
                t0 = time.perf_counter()
                await client.put(key, value)
                t1 = time.perf_counter()
                got = await client.get(key)
                t2 = time.perf_counter()
                lat["put"].append((t1 - t0) * 1000)
                lat["get"].append((t2 - t1) * 1000)
                if got != value:
                    errors.append(f"{name}: get {key!r} returned {got!r}")

    async def main() -> float:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for name in clients:
                nursery.start_soon(one, name)
        return time.perf_counter() - started

    seconds = trio.run(main)
    ops = len(lat["put"]) + len(lat["get"])
    print(json.dumps({"clients": len(clients), "requests": args.requests, "ops": ops,
                      "seconds": seconds, "throughput_ops": ops / seconds,
                      "put_ms": percentiles(lat["put"]), "get_ms": percentiles(lat["get"]),
                      "errors": len(errors), "error_samples": errors[:3]}))
    return 1 if errors else 0


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else [xs[0]] * 99
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": max(xs)}


# ---------------------------------------------------------------------------- switch


def switch_main(args: argparse.Namespace) -> int:
    """A learning Ethernet switch between AF_PACKET sockets on the middle namespace's veth
    ends: each frame is dropped with probability --loss, else forwarded --delay-ms later.
    With one constant delay the delay line is a FIFO, so frames keep their order."""
    import collections
    import selectors
    import socket

    delay = args.delay_ms / 1000
    rng = random.Random(args.seed)
    socks: dict[str, socket.socket] = {}
    for port in args.ports.split(","):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((port, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        socks[port] = s
    sel = selectors.DefaultSelector()
    for port, s in socks.items():
        sel.register(s, selectors.EVENT_READ, port)
    where: dict[bytes, str] = {}  # MAC -> port it was last seen on
    line: collections.deque = collections.deque()  # (due, out ports, frame)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    dropped = forwarded = 0

    def emit(outs: list[str], frame: bytes) -> None:
        for out in outs:
            try:
                socks[out].send(frame)
            except OSError:
                pass  # a full device queue loses the frame, as a real link would

    while not stop:
        timeout = max(0.0, line[0][0] - time.monotonic()) if line else 0.5
        for key, _ in sel.select(timeout):
            s, port = key.fileobj, key.data
            while True:
                try:
                    frame, addr = s.recvfrom(MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own transmission on this port
                where[frame[6:12]] = port
                if (args.loss and rng.random() < args.loss) or len(line) >= SWITCH_QUEUE:
                    dropped += 1
                    continue
                dst = where.get(frame[0:6])
                outs = [dst] if dst is not None else [p for p in socks if p != port]
                if dst == port:
                    continue
                forwarded += 1
                if delay:
                    line.append((time.monotonic() + delay, outs, frame))
                else:
                    emit(outs, frame)
        now = time.monotonic()
        while line and line[0][0] <= now:
            _, outs, frame = line.popleft()
            emit(outs, frame)
    print(f"switch: forwarded {forwarded} frames, dropped {dropped}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "up"):
        s = sub.add_parser(name)
        s.add_argument("--f", type=int, default=1, choices=[1, 2])
        s.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per link")
        s.add_argument("--loss", type=float, default=0.0, help="drop probability per frame")
        s.add_argument("--link", choices=["auto", "bridge", "switch"], default="auto",
                       help="kernel bridge + tc netem, or the user-space switch")
        s.add_argument("--clients", type=int, default=4)
        s.add_argument("--prefix", default="pbft-", help="namespace name prefix")
        s.add_argument("--seed", type=int, default=1, help="the switch's loss randomness")
        s.add_argument("--dir", default=None, required=name == "up",
                       help="keys, per-host directories, logs, state.json")
    r = sub.choices["run"]
    r.add_argument("--requests", type=int, default=100, help="put+get pairs per client")
    r.add_argument("--kill", type=int, default=None, metavar="I", help="SIGKILL replica I mid-run")
    r.add_argument("--kill-after", type=float, default=2.0, metavar="S")
    r.add_argument("--json", default=None, metavar="FILE", help="also write the result here")
    r.add_argument("--keep", action="store_true", help="keep the temporary directory")
    d = sub.add_parser("down")
    d.add_argument("--dir", default=None)
    d.add_argument("--prefix", default="pbft-")
    w = sub.add_parser("workload", help="(internal) the client workload, in the client namespace")
    w.add_argument("--config", required=True)
    w.add_argument("--clients", required=True)
    w.add_argument("--requests", type=int, default=100)
    sw = sub.add_parser("switch", help="(internal) the user-space switch, in the middle namespace")
    sw.add_argument("--ports", required=True)
    sw.add_argument("--delay-ms", type=float, default=0.0)
    sw.add_argument("--loss", type=float, default=0.0)
    sw.add_argument("--seed", type=int, default=1)
    return p


def _on_sigterm(signum, frame):
    raise SystemExit(143)  # unwinds through the `finally` that tears everything down


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "workload":
        return workload_main(args)
    if args.command == "switch":
        return switch_main(args)
    if os.geteuid() != 0:
        print("netns_cluster: network namespaces need root.", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "down":
            state = {"prefix": args.prefix}
            path = os.path.join(args.dir, "state.json") if args.dir else None
            if path and os.path.exists(path):
                with open(path, encoding="utf-8") as fh:
                    state = json.load(fh)
            down(state)
            print("down: processes stopped, namespaces deleted")
            return 0
        if args.command == "up":
            state = up(args)
            print(f"up: {state['n']} replicas on {', '.join(host_address(i) for i in range(state['n']))}"
                  f" (link {state['link']}); clients: ip netns exec {args.prefix}cl "
                  f".venv/bin/pbft client --config {state['configs']['client']} --id c0 put k v")
            print(f"stop with: {sys.argv[0]} down --dir {args.dir}")
            return 0
        result = run(args)
        print(summary(result))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(result, fh, indent=1)
        return 0 if result["errors"] == 0 else 1
    except NetnsError as exc:
        print(f"netns_cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("netns_cluster: interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
