"""The container files under deploy/: the image, the compose group and its keys.

Without a container runtime: the compose file parses; it names replica0..3 on one
user-defined network, each mounting its own host directory read-only at /etc/pbft; the
keys made by deploy/compose-keys.sh (the documented steps) give each replica the
address `replicaI:7000`, its service's name, and each host directory holds its own
private key only; every service's command parses with pbft's own CLI; the image is
python:3.11-slim, `pip install .`, a non-root user, a data volume, both ports exposed, a
HEALTHCHECK on /readyz that reaches the replicas' --metrics address, entrypoint `pbft`;
and .dockerignore keeps keys/ out of the build context.

With a runtime (`docker info` answers and a compose command exists): build the image,
bring the compose group up, wait for the four to be healthy, read /readyz inside each,
run the demo client (put, get, status), stop the primary and write again (a view
change); then run compose.host.yaml four times with host networking, as on four hosts
(loopback addresses here), and use the group from outside; tear everything down. Those
two skip, saying why, when there is no runtime, or when the base image can be neither
found locally nor pulled (PBFT_IMAGE_BASE names another one with python 3.11 as
`python`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

import pytest
import yaml

from pbft.cli.main import build_parser
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.protocol.config import split_hostport

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
REPLICAS = [f"replica{i}" for i in range(4)]
CONFIG = "/etc/pbft/cluster.toml"
DATA = "/var/lib/pbft"
IMAGE_UID = 10001


def compose(name: str = "compose.yaml") -> dict:
    with open(os.path.join(DEPLOY, name)) as f:
        return yaml.safe_load(f)


def interpolate(value, env: dict[str, str]):
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}` in every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        assert op != ":?", f"${{{name}}} must be set: {arg}"
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def containerfile() -> list[str]:
    """The Containerfile's instructions, continuation lines joined, comments dropped."""
    with open(os.path.join(DEPLOY, "Containerfile")) as f:
        text = f.read()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return [ln.strip() for ln in "\n".join(lines).replace("\\\n", " ").splitlines() if ln.strip()]


def instructions(name: str) -> list[str]:
    return [ln[len(name):].strip() for ln in containerfile() if ln.split()[0].upper() == name]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def pbft_command() -> list[str]:
    return [sys.executable, "-m", "pbft"]


def pbft_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> str:
    """Host directories made by deploy/compose-keys.sh, with this checkout's pbft."""
    out = os.path.join(tmp_path_factory.mktemp("compose"), "keys")
    env = {**pbft_env(), "PBFT": shlex.join(pbft_command())}
    done = subprocess.run([os.path.join(DEPLOY, "compose-keys.sh"), out], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_compose_names_four_replicas_on_one_user_defined_network():
    doc = compose()
    services = doc["services"]
    assert [s for s in services if s.startswith("replica")] == REPLICAS
    assert set(doc["networks"]) == {"pbft"}
    assert doc["networks"]["pbft"] in (None, {}) or doc["networks"]["pbft"].get("driver", "bridge") == "bridge"
    for name in [*REPLICAS, "client"]:
        assert services[name]["networks"] == ["pbft"], name
        assert "network_mode" not in services[name]
    assert services["client"]["profiles"] == ["demo"]
    assert {f"data{i}" for i in range(4)} <= set(doc["volumes"])


def test_replica_commands_parse_with_the_cli():
    parser = build_parser()
    for i, name in enumerate(REPLICAS):
        service = compose()["services"][name]
        args = parser.parse_args([str(a) for a in service["command"]])
        assert (args.command, args.id, args.config) == ("replica", i, CONFIG)
        assert args.data == f"{DATA}/replica-{i}"
        assert f"data{i}:{DATA}" in service["volumes"]
        assert service["hostname"] == name
        # The health check reaches the address the replica serves /readyz on.
        url = urlparse(env_of(service)["PBFT_READYZ_URL"])
        host, port = split_hostport(args.metrics)
        assert url.path == "/readyz" and url.port == port
        assert host in ("0.0.0.0", url.hostname)
        assert "healthcheck" not in service or "readyz" in str(service["healthcheck"])


def test_one_replica_per_host_compose_file():
    raw = compose("compose.host.yaml")
    with pytest.raises(AssertionError, match="PBFT_ID"):
        interpolate(raw, {})
    doc = interpolate(raw, {"PBFT_ID": "2"})
    (name, service), = doc["services"].items()
    assert service["network_mode"] == "host"
    args = build_parser().parse_args([str(a) for a in service["command"]])
    assert (args.command, args.id, args.config) == ("replica", 2, CONFIG)
    assert args.data == f"{DATA}/replica-2" and f"data:{DATA}" in service["volumes"]
    assert "/etc/pbft:/etc/pbft:ro" in service["volumes"]
    assert env_of(service)["PBFT_READYZ_URL"] == f"http://{args.metrics}/readyz" == \
        "http://127.0.0.1:9100/readyz"
    moved = interpolate(raw, {"PBFT_ID": "1", "PBFT_METRICS": "10.0.1.10:9200"})["services"][name]
    assert env_of(moved)["PBFT_READYZ_URL"] == "http://10.0.1.10:9200/readyz"
    assert moved["command"][moved["command"].index("--metrics") + 1] == "10.0.1.10:9200"


def test_client_commands_parse_with_the_cli():
    parser = build_parser()
    client = compose()["services"]["client"]
    assert client["entrypoint"][0] == "sh"
    script = client["command"][0]
    lines = [ln for ln in script.splitlines() if ln.strip()]
    assert lines
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "pbft"
        args = parser.parse_args(words[1:])
        assert args.config == CONFIG and args.id == "ops"
    assert {shlex.split(ln)[1] for ln in lines} == {"client", "status"}
    for name in REPLICAS:
        assert client["depends_on"][name] == {"condition": "service_healthy"}


def test_addresses_match_the_cluster_file_the_documented_steps_make(keys):
    services = compose()["services"]
    for i, name in enumerate(REPLICAS):
        host_dir = os.path.join(keys, "hosts", f"replica-{i}")
        mount = [v for v in services[name]["volumes"] if v.endswith(":/etc/pbft:ro")]
        assert len(mount) == 1 and mount[0].rsplit(":", 2)[0].endswith(f"}}/hosts/replica-{i}"), mount
        assert sorted(f for f in os.listdir(host_dir) if f.endswith(".key")) == [f"replica-{i}.key"]
        config = load_cluster(os.path.join(host_dir, "cluster.toml"))
        assert [r.id for r in config.replicas] == [0, 1, 2, 3]
        replica = config.replicas[i]
        assert (replica.host, replica.port) == (name, 7000)
        assert str(replica.port) in instructions("EXPOSE")[0].split()
        load_identity(config, i)  # its key, certificate and CA are all there and agree
        if os.geteuid() == 0:
            assert os.stat(os.path.join(host_dir, f"replica-{i}.key")).st_uid == IMAGE_UID
    client_dir = os.path.join(keys, "hosts", "client-ops")
    assert [v.rsplit(":", 2)[0] for v in services["client"]["volumes"]] == [
        "${PBFT_KEYS:-../keys/compose}/hosts/client-ops"]
    assert sorted(f for f in os.listdir(client_dir) if f.endswith(".key")) == ["client-ops.key"]
    config = load_cluster(os.path.join(client_dir, "cluster.toml"))
    assert config.clients[0].id == "ops"
    assert "ca.key" not in os.listdir(client_dir)


def test_the_image_definition():
    args = instructions("ARG")
    assert "BASE=python:3.11-slim" in args
    assert all(base.split()[0] == "${BASE}" for base in instructions("FROM"))
    assert any(re.search(r"pip install .*\s\.(\s|$)", run) for run in instructions("RUN"))
    copies = [c.split() for c in instructions("COPY")]
    sources = {w for c in copies if not c[0].startswith("--from") for w in c[:-1]}
    assert sources == {"pyproject.toml", "README.md", "pbft"}, "only the package goes in; never keys"
    user = instructions("USER")
    assert user and user[-1] not in ("root", "0"), "the replica runs as a non-root user"
    assert instructions("ENTRYPOINT") == ['["pbft"]']
    assert set(instructions("EXPOSE")[0].split()) == {"7000", "9100"}
    assert DATA in instructions("VOLUME")[0]
    health = instructions("HEALTHCHECK")
    assert len(health) == 1 and "PBFT_READYZ_URL" in health[0]
    env = " ".join(instructions("ENV"))
    assert "PBFT_READYZ_URL=http://127.0.0.1:9100/readyz" in env
    # The entrypoint is the console script the package installs.
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert re.search(r'^pbft = "pbft\.cli\.main:main"$', f.read(), re.M)


def test_dockerignore_keeps_keys_out_of_the_context():
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "*", "an allow-list: everything out, then the package back in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "pbft"}


# ------------------------------------------------------------------ with a runtime


def runtime() -> tuple[list[str] | None, str]:
    """(the compose command, "") when a container runtime answers, else (None, why not)."""
    if shutil.which("docker") is None:
        return None, "no `docker` command on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return None, f"`docker info` failed: {lines[-1] if lines else info.returncode}"
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if plugin.returncode == 0:
        return ["docker", "compose"], ""
    if shutil.which("docker-compose"):
        return ["docker-compose"], ""
    return None, "the runtime answers but there is neither `docker compose` nor `docker-compose`"


def base_image() -> tuple[str, str]:
    """(the base image, "") if it is here or can be pulled, else ("", why not)."""
    base = os.environ.get("PBFT_IMAGE_BASE", "python:3.11-slim")
    here = subprocess.run(["docker", "image", "inspect", base], capture_output=True, timeout=30)
    if here.returncode == 0:
        return base, ""
    pull = subprocess.run(["docker", "pull", base], capture_output=True, text=True, timeout=300)
    if pull.returncode == 0:
        return base, ""
    lines = pull.stderr.strip().splitlines()
    return "", (f"a runtime answers but the base image {base} is not here and cannot be pulled "
                f"({lines[-1] if lines else pull.returncode}); set PBFT_IMAGE_BASE to a local "
                "image with python 3.11 as `python`")


def readable_keys(hosts: str) -> None:
    """Not root: the keys cannot be given to the image's uid, so let it read them (the
    replica warns about such a key; this is a test)."""
    if os.geteuid() == 0:
        return
    for name in os.listdir(hosts):
        for f in os.listdir(os.path.join(hosts, name)):
            if f.endswith(".key"):
                os.chmod(os.path.join(hosts, name, f), 0o644)


def needs_runtime() -> tuple[list[str], str]:
    """(the compose command, a base image) or skip, saying why."""
    compose_cmd, why = runtime()
    if compose_cmd is None:
        skip(why)
    base, why = base_image()
    if not base:
        skip(why)
    return compose_cmd, base


def run(*cmd: str, env=None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    print(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done


def wait_healthy(containers: dict[str, str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        health = {
            name: run("docker", "inspect", "-f", "{{.State.Health.Status}}", cid).stdout.strip()
            for name, cid in containers.items()
        }
        if all(h == "healthy" for h in health.values()):
            return
        assert time.monotonic() < deadline, f"not healthy within {seconds} s: {health}"
        time.sleep(2)


@pytest.fixture(scope="module")
def image():
    """The image, built once from deploy/Containerfile; removed at the end."""
    compose_cmd, base = needs_runtime()
    tag = f"pbft:test-{os.getpid()}"
    run("docker", "build", "-f", os.path.join(DEPLOY, "Containerfile"), "--build-arg",
        f"BASE={base}", "-t", tag, ".", timeout=600)
    yield compose_cmd, tag
    run("docker", "image", "rm", tag, check=False)


def skip(reason: str) -> None:
    print(f"test_container: skipped: {reason}")
    pytest.skip(reason)


@pytest.mark.timeout(900)
def test_the_group_runs_in_containers(image, keys):
    compose_cmd, tag = image
    readable_keys(os.path.join(keys, "hosts"))
    env = {**os.environ, "PBFT_KEYS": keys, "PBFT_IMAGE": tag}
    dc = [*compose_cmd, "-p", f"pbfttest{os.getpid()}", "-f", os.path.join(DEPLOY, "compose.yaml")]
    try:
        run(*dc, "up", "-d", env=env)
        wait_healthy({name: run(*dc, "ps", "-q", name, env=env).stdout.strip() for name in REPLICAS})
        probe = ("import urllib.request as u; r = u.urlopen('http://127.0.0.1:9100/readyz'); "
                 "print(r.status, r.read().decode())")
        for name in REPLICAS:
            assert run(*dc, "exec", "-T", name, "python", "-c", probe, env=env).stdout.startswith("200 ")
        demo = run(*dc, "--profile", "demo", "run", "--rm", "client", env=env).stdout
        assert "ok\nblue\n" in demo and "healthy (view 0, primary 0)" in demo, demo
        # Stop the primary: the other three change view and still answer.
        run(*dc, "stop", "replica0", env=env)
        client = [*dc, "--profile", "demo", "run", "--rm", "--no-deps", "--entrypoint", "pbft", "client"]
        put = run(*client, "client", "--config", CONFIG, "--id", "ops", "put", "shape", "square", env=env)
        assert put.stdout.strip().endswith("ok")
        status = run(*client, "status", "--config", CONFIG, env=env, check=False)
        assert "degraded" in status.stdout and "replica 0 is unreachable" in status.stdout, status.stdout
        assert status.returncode == 3
    finally:
        run(*dc, "--profile", "demo", "down", "-v", "--remove-orphans", env=env, check=False)


def free_run_of_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that are all free now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + count >= 65536:
            continue
        try:
            socks = []
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no run of free ports")


@pytest.mark.timeout(900)
def test_one_replica_per_host_with_host_networking(image, tmp_path):
    """compose.host.yaml, once per replica as on four hosts: here the four "hosts" share
    this machine's network, so the replicas get loopback addresses on distinct ports."""
    compose_cmd, tag = image
    first = free_run_of_ports(8)
    cluster = tmp_path / "cluster"
    run(*pbft_command(), "keygen", "--dir", str(cluster), "--f", "1", "--clients", "ops",
        "--host", "127.0.0.1", "--base-port", str(first), env=pbft_env())
    hosts = tmp_path / "hosts"
    run(os.path.join(DEPLOY, "host-dirs.sh"), str(cluster), str(hosts))
    readable_keys(str(hosts))
    projects = {}
    for i in range(4):
        projects[i] = (
            [*compose_cmd, "-p", f"pbfthost{os.getpid()}-{i}", "-f", os.path.join(DEPLOY, "compose.host.yaml")],
            {**os.environ, "PBFT_IMAGE": tag, "PBFT_ID": str(i), "PBFT_ETC": str(hosts / f"replica-{i}"),
             "PBFT_METRICS": f"127.0.0.1:{first + 4 + i}"},
        )
    try:
        for dc, env in projects.values():
            run(*dc, "up", "-d", env=env)
        wait_healthy({f"replica{i}": run(*dc, "ps", "-q", "replica", env=env).stdout.strip()
                      for i, (dc, env) in projects.items()})
        config = str(hosts / "client-ops" / "cluster.toml")
        client = [*pbft_command(), "client", "--config", config, "--id", "ops"]
        assert run(*client, "put", "colour", "blue", env=pbft_env()).stdout.strip() == "ok"
        assert run(*client, "get", "colour", env=pbft_env()).stdout.strip() == "blue"
        status = run(*pbft_command(), "status", "--config", config, env=pbft_env()).stdout
        assert "healthy" in status
        with urllib.request.urlopen(f"http://127.0.0.1:{first + 4}/readyz", timeout=5) as r:
            assert r.status == 200
    finally:
        for dc, env in projects.values():
            run(*dc, "down", "-v", env=env, check=False)
