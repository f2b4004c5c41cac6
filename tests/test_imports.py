"""The package's import graph: no cycles (static imports, function-level ones included), and every module
imports on its own in a fresh interpreter.

Registries load their catalogues through entry points (graphmerge/registration.py), named as data rather
than imported, so they are not edges here: that is the point of loading them that way."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "graphmerge"


def module_names() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(module: str, path: Path, is_package: bool) -> set[str]:
    """Every module `module` may import: top-level and inside functions, except under `if TYPE_CHECKING`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for other in child.orelse:
                    visit_node(other)
            else:
                visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # submodules; others are dropped
        visit(node)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_graph() -> nx.DiGraph:
    """Edges module -> graphmerge module it imports. Importing a.b.c also runs the packages a and a.b,
    except the packages that contain the importer (those are already being imported)."""
    modules = module_names()
    graph = nx.DiGraph()
    for name, (path, is_package) in modules.items():
        graph.add_node(name)
        for target in imported_names(name, path, is_package):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and not (name == prefix or name.startswith(prefix + ".")):
                    graph.add_edge(name, prefix)
    return graph


def test_the_walker_sees_function_level_imports_and_skips_type_checking_ones(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    import graphmerge.cli\n"
        "def f():\n    from graphmerge.plan import Model\n    import graphmerge.cache as c\n"
    )
    names = imported_names("graphmerge.pkg.m", source, False)
    assert {"graphmerge.pkg.sibling", "graphmerge.plan", "graphmerge.cache"} <= names
    assert "graphmerge.cli" not in names


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert graph.number_of_edges() > 100  # the walker found the package's imports
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    described = [" -> ".join(a for a, _ in nx.find_cycle(graph.subgraph(c))) for c in cycles]
    assert not cycles, "import cycles: " + "; ".join(described)


def test_computing_a_tensor_key_needs_no_registry():
    """The plan layer sits below the nodes: a task carries its op, so a key loads no catalogue."""
    assert not nx.has_path(import_graph(), "graphmerge.plan", "graphmerge.registry")


# One fresh interpreter for all modules; before each import every graphmerge module is dropped, so each
# one is imported first, on its own (third-party packages stay loaded: they are not what is tested).
IMPORT_EACH = """
import importlib, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "graphmerge" or m.startswith("graphmerge.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failures))
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = sorted(module_names())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, json.dumps(names)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}


# The layers of docs/architecture.md, lowest first; a module may import its own layer or lower ones.
LAYERS = [
    ("foundation", {"errors", "hashing", "lazy", "filemode", "registration", "params", "extras", "atomic", "substitution"}),
    ("tensor primitives", {"tensorfile", "nonfinite", "tensor_ops"}),
    ("methods, io, cache, evaluation, search", {"methods", "io", "store", "cache", "evaluation", "eval_settings", "search"}),
    ("plan, strategies", {"plan", "strategies"}),
    ("graph files", {"registry", "convert", "spec", "gradients"}),
    ("executor, search bridge", {"executor", "context", "optimize"}),
    ("nodes", {"nodes"}),
    ("runner", {"runner"}),
    ("commands", {"viz", "describe", "graph_layout", "cli"}),
]
# Imports that still point upwards, each with what removes it (an entry no longer needed is harmless).
UPWARD: set[tuple[str, str]] = set()


def _layer(module: str) -> int:
    unit = module.split(".")[1] if "." in module else ""
    for rank, (_, units) in enumerate(LAYERS):
        if unit in units:
            return rank
    return -1 if not unit else len(LAYERS)  # the package root imports nothing; unknown units fail below


def test_imports_go_down_the_layers():
    graph = import_graph()
    unplaced = sorted(m for m in graph if _layer(m) == len(LAYERS))
    assert not unplaced, f"place these modules in a layer of LAYERS (and docs/architecture.md): {unplaced}"
    upward = {(a, b) for a, b in graph.edges if _layer(b) > _layer(a)}
    assert upward <= UPWARD, "imports going up a layer: " + ", ".join(
        f"{a} ({LAYERS[_layer(a)][0]}) -> {b} ({LAYERS[_layer(b)][0]})" for a, b in sorted(upward - UPWARD)
    )
