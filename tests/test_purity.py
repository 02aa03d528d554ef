"""The core is sans-IO (docs/architecture.md, "The shape"): enforced on the source.

Pure is every module of the layers up to the adversary's (tests/test_layers.py): the
errors, the protocol core, the services and the Byzantine behaviours, found recursively,
not listed by hand.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
from test_layers import MODULES as ALL_MODULES
from test_layers import module_name, rank

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pbft"
PURE_UP_TO = 3
"""Layers 0 (errors) to 3 (adversary) are pure."""
FORBIDDEN = {"trio", "socket", "time", "asyncio", "threading", "sqlite3"}
MODULES = [p for p in ALL_MODULES if rank(module_name(p)) <= PURE_UP_TO]


def test_there_are_modules_to_check():
    names = {str(m.relative_to(PACKAGE)) for m in MODULES}
    assert {
        "errors.py", "protocol/codec.py", "protocol/messages.py", "protocol/crypto.py",
        "protocol/replica.py", "protocol/client.py", "service/kv.py",
        "adversary/catalogue.py", "adversary/wire.py",
    } <= names
    assert not any(n.startswith(("sim/", "node/", "cluster/", "cli/")) for n in names)


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_io_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [(m, ln) for m, ln in _imports(tree) if m.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
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


def test_importing_the_pure_layers_does_not_import_trio():
    names = ", ".join(module_name(p) for p in MODULES)
    code = (
        "import sys\n"
        f"import {names}\n"
        "bad = sorted({'trio', 'socket', 'asyncio', 'threading', 'sqlite3'} & set(sys.modules))\n"
        "print(','.join(bad))\n"
    )
    root = PACKAGE.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "trio" not in out.stdout.split(","), out.stdout
