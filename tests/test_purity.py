"""The core is sans-IO (docs/architecture.md, "The shape"): enforced on the source."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PROTOCOL = pathlib.Path(__file__).resolve().parent.parent / "pbft" / "protocol"
FORBIDDEN = {"trio", "socket", "time", "asyncio", "threading", "sqlite3"}
MODULES = sorted(PROTOCOL.glob("*.py"))


def test_there_are_modules_to_check():
    names = {m.name for m in MODULES}
    assert {"codec.py", "messages.py", "crypto.py", "replica.py", "client.py"} <= names


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_io_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [(m, ln) for m, ln in _imports(tree) if m.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_module_level_random_or_environment(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            bad += [
                (f"from random import {a.name}", node.lineno)
                for a in node.names
                if a.name != "Random"
            ]
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            bad += [
                (f"from os import {a.name}", node.lineno)
                for a in node.names
                if a.name in ("environ", "getenv")
            ]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "random" and node.attr != "Random":
                bad.append((f"random.{node.attr}", node.lineno))
            if node.value.id == "os" and node.attr in ("environ", "getenv", "urandom"):
                bad.append((f"os.{node.attr}", node.lineno))
    assert not bad, f"{path.name} uses {bad}"


def test_checker_catches_what_it_should():
    src = "import time\nfrom trio import open_nursery\nimport random\nrandom.random()\n"
    tree = ast.parse(src)
    assert {m for m, _ in _imports(tree)} == {"time", "trio", "random"}


def test_importing_the_replica_does_not_import_trio():
    code = (
        "import sys\n"
        "import pbft.protocol.replica, pbft.protocol.client, pbft.service.kv\n"
        "bad = sorted({'trio', 'socket', 'asyncio', 'threading', 'sqlite3'} & set(sys.modules))\n"
        "print(','.join(bad))\n"
    )
    root = PROTOCOL.parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "trio" not in out.stdout.split(","), out.stdout
