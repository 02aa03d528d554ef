"""Layers point one way (issue 15, item 2): a module imports only its own layer or lower.

Every module under pbft/ is read with `ast`; every import in it, at the top or inside a
function, relative or absolute, is resolved to the pbft module it names and the two
layers compared. A failure names the file, the line and both layers.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pbft"

RANKS: dict[str, int] = {
    "pbft.errors": 0,  # user-facing error types; imports nothing from pbft
    "pbft.files": 0,  # reading a person's files into words for a sentence; imports nothing from pbft
    "pbft.protocol": 1,  # the sans-IO core
    "pbft.service": 2,  # the replicated state machines
    "pbft.adversary": 3,  # Byzantine behaviours and their one catalogue
    "pbft.sim": 4,  # simulator, oracle, fuzz, scenario files, the run-result type
    "pbft.node": 5,  # the replica process (and a client's): transport, TLS, storage, ...
    "pbft.cluster": 6,
    "pbft.trace": 6,  # reading traces: the viewer page, exports, merging real traces  # whole-cluster tools and the real-process scenario runner
    "pbft": 6,  # pbft/__init__.py: the public API, re-exported from any layer below cli
    "pbft.cli": 7,  # parser and handlers: only pbft/__main__.py and the entry point
    "pbft.__main__": 8,
}
"""The layer of a module: its longest dotted prefix listed here."""

def rank(module: str) -> int | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in RANKS:
            return RANKS[prefix]
    return None


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path, source: str | None = None) -> list[tuple[str, int]]:
    """(pbft module imported, line) for every import in the file, at any depth; relative
    imports resolved against the file's package, `from X import name` counted as
    `X.name` when that is a module (so `from pbft import cli` is the cli layer)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub if _is_module(sub) else target, node.lineno))
    return [(m, line) for m, line in out if m == "pbft" or m.startswith("pbft.")]


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(path: pathlib.Path, source: str | None = None) -> list[str]:
    me = module_name(path)
    mine = rank(me)
    assert mine is not None, f"{path.relative_to(ROOT)} is in no layer: add it to RANKS"
    out = []
    for target, line in imports(path, source):
        theirs = rank(target)
        assert theirs is not None, f"{path.relative_to(ROOT)}:{line} imports {target}, in no layer"
        if theirs > mine:
            out.append(
                f"{path.relative_to(ROOT)}:{line}: {me} (layer {mine}) imports {target} "
                f"(layer {theirs}), a layer above its own"
            )
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_layer_has_modules():
    layers = {rank(module_name(p)) for p in MODULES}
    assert layers >= {0, 1, 2, 3, 4, 5, 6, 7}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    bad = violations(path)
    assert not bad, "\n".join(bad)


def test_errors_import_nothing_from_pbft():
    assert imports(PACKAGE / "errors.py") == []


def test_only_the_entry_point_imports_the_cli():
    importers = sorted(
        module_name(p)
        for p in MODULES
        if not module_name(p).startswith("pbft.cli")
        and any(m == "pbft.cli" or m.startswith("pbft.cli.") for m, _ in imports(p))
    )
    assert importers == ["pbft.__main__"]


def test_the_checker_catches_upward_imports():
    # A simulator module importing the replica process, top-level and function-local,
    # relative and absolute; and the protocol core importing the command line.
    sim = PACKAGE / "sim" / "network.py"
    src = (
        "from ..node import transport\n"
        "def f():\n"
        "    from ..node.client import open_client\n"
        "    import pbft.cluster.launcher\n"
        "from ..protocol import codec\n"
    )
    bad = violations(sim, src)
    assert len(bad) == 3, bad
    assert bad[0] == (
        "pbft/sim/network.py:1: pbft.sim.network (layer 4) imports pbft.node.transport "
        "(layer 5), a layer above its own"
    )
    assert ":3: " in bad[1] and ":4: " in bad[2]
    core = PACKAGE / "protocol" / "codec.py"
    assert violations(core, "from pbft import cli\n") == [
        "pbft/protocol/codec.py:1: pbft.protocol.codec (layer 1) imports pbft.cli "
        "(layer 7), a layer above its own"
    ]


def test_every_command_has_a_handler_that_imports():
    # No "not available in this build": each command's module imports, plainly.
    import argparse

    from pbft.cli.main import _handler, build_parser

    (top,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = []
    for name, sub in top.choices.items():
        if name in ("scenario", "trace"):  # dispatched per action; `config` has one handler
            (actions,) = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            commands += [f"{name} {action}" for action in actions.choices]
        else:
            commands.append(name)
    assert {"replica", "scenario run", "fuzz", "bench", "evidence"} <= set(commands)
    for command in commands:
        assert callable(_handler(command)), command
