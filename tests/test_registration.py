"""graphmerge/registration.py: one registry type behind node types, tensor ops, merge methods and search
strategies; built-ins load through the same entry points as plugins, or by import from a source checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

from graphmerge.errors import GraphmergeError, MergeError, SpecError
from graphmerge.registration import Registry

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"

# Every registry of the package, by the module and name it lives under.
REGISTRIES = {
    "graphmerge.nodes": ("graphmerge.registry", "NODE_TYPES"),
    "graphmerge.methods": ("graphmerge.methods.registry", "METHODS"),
    "graphmerge.strategies": ("graphmerge.strategies.base", "STRATEGIES"),
}

# Prints, as JSON, how each group was loaded and how many entries each registry holds.
PROBE = """
import json
from graphmerge.registration import LOADED_GROUPS
from graphmerge.registry import NODE_TYPES
from graphmerge.tensor_ops import TENSOR_OPS
from graphmerge.methods.registry import METHODS
from graphmerge.strategies import STRATEGIES
counts = {"nodes": len(NODE_TYPES), "ops": len(TENSOR_OPS), "methods": len(METHODS),
          "strategies": len(STRATEGIES)}
print(json.dumps({"loaded": LOADED_GROUPS, "counts": counts}))
"""


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), str(REPO)])
    return env


def _dist_info(folder: Path, name: str, groups: dict[str, dict[str, str]]) -> None:
    """A real installed-distribution record (what pip writes), with these entry points."""
    info = folder / f"{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def _probe(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> dict:
    proc = subprocess.run([*cmd, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pyproject_entry_points() -> dict[str, dict[str, str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]


def test_pyproject_declares_each_registrys_builtin_catalogue():
    import importlib

    declared = _pyproject_entry_points()
    for group, (module, name) in REGISTRIES.items():
        registry = getattr(importlib.import_module(module), name)
        assert registry.group == group
        assert declared[group] == {"builtin": registry.builtin}
    from graphmerge.tensor_ops import TENSOR_OPS

    assert TENSOR_OPS.builtin == declared[TENSOR_OPS.group]["builtin"]


@pytest.mark.slow
def test_builtins_load_through_entry_points_when_installed_and_by_import_from_a_checkout(tmp_path):
    # Installed: a dist-info with pyproject's entry points, first on the path (shadowing any other install).
    installed = tmp_path / "installed"
    _dist_info(installed, "graphmerge", _pyproject_entry_points())
    via_entry_points = _probe([sys.executable], _env(installed))
    assert set(via_entry_points["loaded"].values()) == {"entry point"}, via_entry_points

    # Not installed: site-packages without graphmerge's dist-info or editable finder, as on a machine
    # that runs the checkout from PYTHONPATH.
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    bare = tmp_path / "site"
    bare.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("graphmerge", "__editable__")):
            (bare / entry.name).symlink_to(entry)
    # The checkout itself, without the `graphmerge.egg-info` an editable install may leave beside the
    # package (its entry points would be found on PYTHONPATH): only the package folder.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "graphmerge").symlink_to(REPO / "graphmerge")
    env = {**_env(bare), "PYTHONPATH": os.pathsep.join([str(bare), str(checkout)])}
    from_checkout = _probe([sys.executable, "-S"], env, cwd=checkout)  # `-c` puts the cwd on sys.path
    assert set(from_checkout["loaded"].values()) == {"fallback import"}, from_checkout

    assert from_checkout["counts"] == via_entry_points["counts"]
    assert via_entry_points["counts"]["strategies"] >= 4 and via_entry_points["counts"]["methods"] >= 10


def test_a_second_registration_under_a_name_is_an_error_and_the_same_one_is_not():
    from graphmerge import tensor_op
    from graphmerge.tensor_ops import TENSOR_OPS

    def twice(x):
        return x

    tensor_op("test_registration_op", version="1")(twice)
    try:
        tensor_op("test_registration_op", version="1")(twice)  # a module imported twice
        assert TENSOR_OPS.get("test_registration_op").fn is twice

        def other(x):
            return -x

        with pytest.raises(GraphmergeError, match="tensor op 'test_registration_op' is registered twice"):
            tensor_op("test_registration_op", version="1")(other)
    finally:
        TENSOR_OPS.remove("test_registration_op")


@pytest.mark.parametrize(
    ("getter", "typo", "error", "expected"),
    [
        ("graphmerge.methods.registry:get_method", "tiez", MergeError, "did you mean 'ties'?"),
        ("graphmerge.strategies:get_strategy", "lfz", SpecError, "did you mean 'lfs'?"),
        ("graphmerge.tensor_ops:get_tensor_op", "mergee", GraphmergeError, "did you mean 'merge'?"),
        ("graphmerge.methods.registry:get_method", "qqqqqqqq", MergeError, "use one of: arcee_fusion, "),
    ],
)
def test_unknown_names_raise_one_error_of_the_registrys_kind_with_a_hint(getter, typo, error, expected):
    import importlib

    module, name = getter.split(":")
    with pytest.raises(error) as caught:
        getattr(importlib.import_module(module), name)(typo)
    assert "unknown" in str(caught.value) and repr(typo) in str(caught.value)
    assert expected in str(caught.value)


def test_a_failing_entry_point_is_one_error_naming_it(tmp_path, monkeypatch):
    (tmp_path / "catalogue_ok.py").write_text("LOADED = True\n")
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    _dist_info(tmp_path, "broken_plugin", {"graphmerge.test_broken": {"broken": "broken_plugin"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[int] = Registry("widget", group="graphmerge.test_broken", builtin="catalogue_ok")
    with pytest.raises(GraphmergeError, match=r"entry point broken = broken_plugin .* RuntimeError: boom"):
        registry.find("x")
    assert sys.modules["catalogue_ok"].LOADED  # the catalogue itself came by import: no entry point for it


STRATEGY_PLUGIN = (REPO / "examples" / "halfway_strategy.py").read_text()


def _search_graph(folder: Path) -> Path:
    graph = folder / "g.yaml"
    graph.write_text(
        textwrap.dedent(
            f"""\
            nodes:
              add: {{op: load, path: {TINY / "add"}}}
              reverse: {{op: load, path: {TINY / "reverse"}}}
              search:
                op: optimize
                strategy: halfway
                models: [add, reverse]
                objectives: [{{task: tiny_add, metric: exact_match}}]
                include_path: [{REPO / "graphs" / "tasks"}]
                config: {{w: 0.3}}
            """
        )
    )
    return graph


@pytest.mark.slow
def test_a_new_strategy_is_one_file_loaded_by_plugin_or_entry_point(tmp_path, capsys):
    from graphmerge.cli import main
    from graphmerge.strategies import STRATEGIES

    (tmp_path / "halfway_strategy.py").write_text(STRATEGY_PLUGIN)
    graph = _search_graph(tmp_path)

    assert main(["validate", str(graph)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "node 'search'" in err and "unknown strategy 'halfway'" in err

    try:
        assert main(["validate", str(graph), "--plugin", str(tmp_path / "halfway_strategy.py")]) == 0
        assert STRATEGIES.get("halfway").doc.startswith("halfway: one weight")
    finally:
        STRATEGIES.remove("halfway")

    _dist_info(tmp_path, "halfway_strategy", {"graphmerge.strategies": {"halfway": "halfway_strategy"}})
    by_entry_point = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", "validate", str(graph)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert by_entry_point.returncode == 0, by_entry_point.stderr


def test_strategies_load_only_when_a_search_looks_one_up(tmp_path):
    """`viz` of a search graph validates its parameters but loads no strategy (nor ConfigSpace)."""
    graph = _search_graph(tmp_path)
    probe = (
        "import json, sys\n"
        "from graphmerge.cli import main\n"
        f"code = main(['viz', {str(graph)!r}, '--format', 'dot', '-o', {str(tmp_path / 'g.dot')!r}])\n"
        "loaded = [m for m in sys.modules if m.startswith(('ConfigSpace', 'smac', 'graphmerge.strategies'))]\n"
        "print(json.dumps([code, loaded]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []]
