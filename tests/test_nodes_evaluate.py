"""The evaluate node on the bundled tiny models: cached across processes, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graphmerge.cli import main

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> tuple[int, dict | None, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    return proc.returncode, summary, proc.stderr


@pytest.mark.slow
def test_merge_and_eval_second_run_merges_and_evaluates_nothing(tmp_path):
    args = [
        "run",
        str(REPO / "graphs/merge_and_eval.yaml"),
        "--set",
        "limit=10",
        "--set",
        f"out={tmp_path / 'out'}",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
        "--no-progress",
    ]
    code, first, err = run_cli(*args)
    assert code == 0, err
    assert first["evaluations"] == {"run": 15, "cached": 0}
    assert first["tasks"]["executed"] > 0
    assert set(first["scores"]) == {"eval_ties", "eval_base", "eval_add", "eval_reverse", "eval_sort"}
    assert first["scores"]["eval_add"]["tiny_add"] >= 0.9  # the add expert knows addition

    code, second, err = run_cli(*args)  # a new process: everything comes from the on-disk cache
    assert code == 0, err
    assert second["evaluations"] == {"run": 0, "cached": 15}
    assert second["tasks"]["executed"] == 0 and second["outputs"] == []
    assert second["scores"] == first["scores"]
    assert (
        json.loads((REPO / "graphs/out/evaluations/eval_add.json").read_text())["scores"]
        == first["scores"]["eval_add"]
    )

    # viz knows the evaluations are cached without running them
    from graphmerge.spec import load_graph
    from graphmerge.viz import COLOURS, render

    graph = load_graph(
        REPO / "graphs/merge_and_eval.yaml", overrides={"limit": 10, "out": str(tmp_path / "out")}
    )
    dot = render(graph, "dot", cache_dir=tmp_path / "cache")
    line = next(x for x in dot.splitlines() if x.strip().startswith('"eval_ties" ['))
    assert COLOURS["cached"] in line


def _eval_graph(tmp_path: Path, task_line: str, include: Path) -> Path:
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"""
nodes:
  add: {{op: load, path: {REPO / "models/tiny/add"}}}
  score:
    op: evaluate
    input: add
    tasks: [{task_line}]
    include_path: [{include}]
    limit: 4
"""
    )
    return graph


@pytest.mark.parametrize(
    ("task_line", "expected"),
    [
        ("tiny_ad", "tiny_add"),  # unknown task, with a suggestion
        ("{task: tiny_add, metric: bleu}", "exact_match"),  # a metric the task does not produce
    ],
)
def test_evaluation_errors_are_one_line(tmp_path, capsys, task_line, expected):
    graph = _eval_graph(tmp_path, task_line, REPO / "graphs/tasks")
    assert main(["run", str(graph), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "node 'score'" in err[0] and expected in err[0]


def test_missing_data_file_is_named(tmp_path, capsys):
    tasks = tmp_path / "tasks"
    shutil.copytree(REPO / "graphs/tasks", tasks)
    (tasks / "tiny" / "data" / "add.jsonl").unlink()
    graph = _eval_graph(tmp_path, "tiny_add", tasks)
    assert main(["run", str(graph), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "add.jsonl" in err[0] and "node 'score'" in err[0]
