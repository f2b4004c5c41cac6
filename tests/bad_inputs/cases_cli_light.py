"""Bad inputs of a light install: a graph that needs an optional extra which is not installed.

The extra's packages are made uninstalled for the CLI's process by `without_extras/sitecustomize.py`
(the same failure as in a fresh `pip install graphmerge` without extras). The answer is one line that
names the node and the extra to install, before anything runs or is written.
"""

from __future__ import annotations

from pathlib import Path

from case import Case

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"
HIDE_DIR = str(Path(__file__).resolve().parent / "without_extras")


def _without(*packages: str) -> dict[str, str]:
    return {"PYTHONPATH": HIDE_DIR, "GRAPHMERGE_TEST_HIDE": ",".join(packages)}


def _write(root: Path, body: str) -> Path:
    path = root / "g.yaml"
    path.write_text(f"vars:\n  tiny: {TINY}\n  tasks: {REPO / 'graphs' / 'tasks'}\n" + body)
    return path


EVALUATE = """nodes:
  base: {op: load, path: ${tiny}/base}
  add: {op: load, path: ${tiny}/add}
  merged: {op: merge, method: linear, models: {base: {weight: 0.5}, add: {weight: 0.5}}}
  score: {op: evaluate, input: merged, tasks: [tiny_add], include_path: [${tasks}], limit: 4}
  out: {op: save, input: merged, path: out/merged}
"""

SEARCH = """nodes:
  base: {op: load, path: ${tiny}/base}
  add: {op: load, path: ${tiny}/add}
  reverse: {op: load, path: ${tiny}/reverse}
  search:
    op: optimize
    strategy: lfs
    base: base
    models: [add, reverse]
    objectives: [{task: tiny_add, metric: exact_match}]
    include_path: [${tasks}]
    smac: {facade: hpo, n_trials: 2, max_budget: 4}
"""


def _evaluate_validate(root: Path) -> list[str]:
    return ["validate", str(_write(root, EVALUATE))]


def _evaluate_run_keeps_output(root: Path) -> list[str]:
    # An earlier output must survive a run that stops for the missing extra.
    (root / "out" / "merged").mkdir(parents=True)
    (root / "out" / "merged" / "config.json").write_text("{}")
    return ["run", str(_write(root, EVALUATE))]


def _search_run(root: Path) -> list[str]:
    return ["run", str(_write(root, SEARCH))]


def _viz_png(root: Path) -> list[str]:
    (root / "g.png").write_bytes(b"old picture")
    return [
        "viz",
        str(_write(root, EVALUATE.replace("  score:", "  # score:"))),
        "--format",
        "png",
        "-o",
        "g.png",
    ]


CASES = [
    Case(
        name="evaluate_without_eval_extra_validate",
        build=_evaluate_validate,
        mentions=("g.yaml:8", "node 'score'", "graphmerge[eval]", "lm_eval"),
        env=_without("lm_eval"),
    ),
    Case(
        name="evaluate_without_eval_extra_run",
        build=_evaluate_run_keeps_output,
        mentions=("node 'score'", "pip install 'graphmerge[eval]'"),
        env=_without("lm_eval"),
    ),
    Case(
        name="optimize_without_search_extra",
        build=_search_run,
        mentions=("node 'search'", "graphmerge[search]", "smac"),
        env=_without("smac", "dask", "distributed"),
    ),
    Case(
        name="viz_png_without_viz_extra",
        build=_viz_png,
        mentions=("png", "graphmerge[viz]"),
        env=_without("matplotlib"),
    ),
]
