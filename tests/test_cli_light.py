"""A fast, light CLI: what each command imports, --version, --force, and the extras' errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_search_yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"

# Packages of the optional extras, and transformers' model code: a plain merge needs none of them.
HEAVY_FOR_MERGE = ("lm_eval", "smac", "ConfigSpace", "dask", "distributed", "matplotlib", "datasets")
# `--help`, `--version`, `nodes` and `validate` must not pay for torch either: validate plans each tensor
# from the safetensors headers, parsed in plain Python.
HEAVY_FOR_START = (*HEAVY_FOR_MERGE, "torch", "transformers", "safetensors", "numpy")

_PROBE = """
import json, sys
from graphmerge.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _imports(tmp_path: Path, *argv: str, **env: str) -> tuple[int, set[str]]:
    """Run the CLI in a fresh interpreter; its exit code and every module it imported."""
    report = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", _PROBE, str(report), *argv],
        cwd=tmp_path,
        env=_env(**env),
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = json.loads(report.read_text())
    return out["code"], set(out["modules"])


def _heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["nodes"]],
    ids=["help", "version", "nodes"],
)
def test_start_up_imports_nothing_heavy(tmp_path, argv):
    code, modules = _imports(tmp_path, *argv)
    assert code == 0
    assert "graphmerge.cli" in modules
    assert _heavy(modules, HEAVY_FOR_START) == []


def test_validate_of_a_merge_imports_no_extra_and_no_torch(tmp_path):
    code, modules = _imports(tmp_path, "validate", str(REPO / "graphs/ties.yaml"))
    assert code == 0
    assert _heavy(modules, HEAVY_FOR_START) == []


def test_validate_of_a_search_imports_no_torch_lm_eval_or_smac(tmp_path):
    """The search's tasks are found in its include_path YAMLs without lm-eval. (Nor ConfigSpace:
    tests/test_validate_search_light.py.)"""
    code, modules = _imports(tmp_path, "validate", str(REPO / "graphs/dis_search.yaml"))
    assert code == 0
    heavy = ("torch", "transformers", "safetensors", "lm_eval", "smac", "datasets", "dask", "matplotlib")
    assert _heavy(modules, heavy) == []


def test_plain_merge_imports_no_extra_and_no_model_classes(tmp_path):
    code, modules = _imports(
        tmp_path,
        "run",
        str(REPO / "graphs/ties.yaml"),
        "--set",
        f"out={tmp_path / 'ties'}",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    )
    assert code == 0 and (tmp_path / "ties" / "model.safetensors").is_file()
    assert "torch" in modules  # the probe is real: the merge did run
    assert _heavy(modules, HEAVY_FOR_MERGE) == []
    model_code = sorted(m for m in modules if m.startswith("transformers.") and ".modeling_" in m)
    assert model_code == [] and "transformers.modeling_utils" not in modules


def test_version_matches_package_metadata(capsys):
    from importlib.metadata import version

    from graphmerge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"graphmerge {version('graphmerge')}"


PLUGIN = """
import torch
from graphmerge import merge_method

@merge_method("scaled_sum", version="1", base="none")
def scaled_sum(tensors, base, model_params, params, generator):
    return sum(tensors) * FACTOR
"""

GRAPH = f"""
nodes:
  a: {{op: load, path: {TINY / "add"}}}
  b: {{op: load, path: {TINY / "reverse"}}}
  m: {{op: merge, method: scaled_sum, models: {{a: {{}}, b: {{}}}}}}
  out: {{op: save, input: m, path: out}}
"""


def _cli(tmp_path: Path, *argv: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *argv, "--json", "--no-progress"],
        cwd=tmp_path,
        env=_env(GRAPHMERGE_CACHE=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_force_recomputes_what_a_stale_cache_would_reuse(tmp_path):
    """A plugin op edited without bumping its version: the cache cannot see it, --force does."""
    plugin = tmp_path / "plugin.py"
    (tmp_path / "g.yaml").write_text(GRAPH)
    args = ("run", "g.yaml", "--plugin", str(plugin))
    a = load_file(str(TINY / "add/model.safetensors"))
    b = load_file(str(TINY / "reverse/model.safetensors"))
    name = next(n for n in a if n.endswith("mlp.down_proj.weight"))

    plugin.write_text(PLUGIN.replace("FACTOR", "2.0"))
    first = _cli(tmp_path, *args)
    assert first["tasks"]["executed"] == len(a)
    assert torch.equal(load_file(str(tmp_path / "out/model.safetensors"))[name], (a[name] + b[name]) * 2)

    plugin.write_text(PLUGIN.replace("FACTOR", "3.0"))  # same version "1": same cache keys
    stale = _cli(tmp_path, *args)
    assert stale["tasks"]["executed"] == 0 and stale["outputs"] == []

    forced = _cli(tmp_path, *args, "--force")
    assert forced["tasks"]["executed"] == len(a) and forced["outputs"]
    assert torch.equal(load_file(str(tmp_path / "out/model.safetensors"))[name], (a[name] + b[name]) * 3)

    # What --force wrote is the cache now: the next plain run reuses it.
    again = _cli(tmp_path, *args)
    assert again["tasks"]["executed"] == 0 and again["tasks"]["cached"] == 0 and again["outputs"] == []


def test_missing_extra_is_reported_by_validate_with_the_extra_to_install(tmp_path):
    hide = str(REPO / "tests" / "bad_inputs" / "without_extras")
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"nodes:\n  a: {{op: load, path: {TINY / 'add'}}}\n"
        f"  e: {{op: evaluate, input: a, tasks: [tiny_add], include_path: [{REPO / 'graphs/tasks'}]}}\n"
    )
    env = _env(GRAPHMERGE_TEST_HIDE="lm_eval")
    env["PYTHONPATH"] = hide + os.pathsep + env["PYTHONPATH"]
    proc = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", "validate", str(graph)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {graph}:3: node 'e': key 'op': op 'evaluate' needs the [eval] extra, which is not "
        "installed (missing: lm_eval) (pip install 'graphmerge[eval]', or pip install -e '.[eval]' "
        "in a source checkout)"
    )
    # The same graph validates where the extra is installed.
    ok = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", "validate", str(graph)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr


def test_viz_does_not_touch_lm_eval_even_for_built_in_tasks(tmp_path):
    """Naming a built-in task (whose lookup indexes all of lm-eval's tasks) costs viz nothing."""
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"nodes:\n  a: {{op: load, path: {TINY / 'add'}}}\n"
        "  e: {op: evaluate, input: a, tasks: [hellaswag], limit: 2}\n"
    )
    (tmp_path / "cache").mkdir()  # a cache exists, so viz asks every node for its state
    code, modules = _imports(tmp_path, "viz", str(graph), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0
    assert _heavy(modules, HEAVY_FOR_MERGE) == []


@pytest.mark.slow
def test_force_restarts_a_search_and_keeps_the_old_trial_log(tmp_path):
    from graphmerge.runner import run_graph

    graph = tmp_path / "s.yaml"
    graph.write_text(tiny_search_yaml("{facade: hpo, n_trials: 1, max_budget: 2, seed: 0}", out="out"))
    cache = tmp_path / "cache"
    first = run_graph(graph, cache_dir=cache, progress=False)
    # The one trial, plus the source models scored as the report's reference lines.
    assert first.stats.evaluations_run >= 1
    log = (tmp_path / "out/trial_log.jsonl").read_text()
    replay = run_graph(graph, cache_dir=cache, progress=False)
    assert replay.stats.evaluations_run == 0  # the trial is replayed from the log
    forced = run_graph(graph, cache_dir=cache, progress=False, force=True)
    assert forced.stats.evaluations_run == first.stats.evaluations_run
    assert forced.stats.evaluations_cached == 0
    assert (tmp_path / "out/trial_log.jsonl.before-force").read_text() == log
    new_log = [json.loads(line) for line in (tmp_path / "out/trial_log.jsonl").read_text().splitlines()]
    assert sum(entry.get("type") == "trial" for entry in new_log) == 1


def test_lazy_module_imports_on_first_attribute_use(tmp_path, monkeypatch):
    from graphmerge.lazy import LazyModule

    (tmp_path / "gm_lazy_probe.py").write_text(
        "IMPORTS = []\nIMPORTS.append(1)\ndef twice(x):\n    return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    lazy = LazyModule("gm_lazy_probe")
    assert "not loaded yet" in repr(lazy) and "gm_lazy_probe" not in sys.modules
    assert lazy.twice(21) == 42
    assert lazy.twice(1) == 2 and sys.modules["gm_lazy_probe"].IMPORTS == [1]  # imported once
    assert "(loaded)" in repr(lazy) and "twice" in dir(lazy)
    monkeypatch.delitem(sys.modules, "gm_lazy_probe")
