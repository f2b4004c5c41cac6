"""The optimize node end to end on the bundled tiny models: strategies, recipe export, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import saved_tensors

from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
GRAPHS = REPO / "graphs"
pytestmark = pytest.mark.slow


def search_graph(
    tmp_path: Path, strategy: str, settings: dict, smac: dict, objectives=None, extra: str = ""
) -> Path:
    objectives = objectives or [
        {"task": "tiny_add", "metric": "exact_match"},
        {"task": "tiny_reverse", "metric": "exact_match"},
    ]
    body = {
        "vars": {"out": str(tmp_path / "out")},
        "nodes": {
            "base": {"op": "load", "path": str(REPO / "models/tiny/base")},
            "add": {"op": "load", "path": str(REPO / "models/tiny/add")},
            "reverse": {"op": "load", "path": str(REPO / "models/tiny/reverse")},
            "search": {
                "op": "optimize",
                "strategy": strategy,
                "base": "base" if strategy != "prune" else "add",
                "models": ["add", "reverse"] if strategy != "prune" else ["reverse"],
                "settings": settings,
                "objectives": objectives,
                "include_path": [str(GRAPHS / "tasks")],
                "smac": smac,
                "out": "${out}",
            },
            "best": {"op": "save", "input": "search.best", "path": "${out}/best_model"},
        },
    }
    path = tmp_path / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


SMALL = {"facade": "multi_fidelity", "n_trials": 6, "min_budget": 8, "max_budget": 16, "eta": 2, "seed": 0}


def test_dis_search_saves_best_report_and_a_recipe_that_reproduces_it(tmp_path):
    graph = search_graph(tmp_path, "dis", {"fix_layers": 1, "max_layers": 5}, SMALL)
    cache = tmp_path / "cache"
    result = run_graph(graph, cache_dir=cache, progress=False)
    out = tmp_path / "out"
    assert result.extras["trials"] == 6
    for name in ("trials.jsonl", "trials.csv", "report.png", "best_recipe.yaml"):
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all({"config", "budget", "scores"} <= row.keys() for row in rows)
    # Initial design: the base, then each source model exactly as it is.
    first_seen = list(dict.fromkeys(json.dumps(r["config"], sort_keys=True) for r in rows))
    assert [json.loads(c).get("ends") for c in first_seen[:3]] == ["base", "add", "reverse"]
    assert rows[1]["scores"]["tiny_add"] >= 0.75  # the add expert alone

    # The exported recipe is a standalone graph reproducing the best model bit for bit.
    recipe = out / "best_recipe.yaml"
    replay = run_graph(
        recipe, overrides={"out": str(tmp_path / "replayed")}, cache_dir=tmp_path / "fresh", progress=False
    )
    assert replay.stats.outputs == [str(tmp_path / "replayed")]
    best, again = saved_tensors(out / "best_model"), saved_tensors(tmp_path / "replayed")
    assert best.keys() == again.keys() and all(best[k].equal(again[k]) for k in best)

    # A second run replays every trial from the log: nothing is evaluated or computed again.
    second = run_graph(graph, cache_dir=cache, progress=False)
    assert second.extras["trials_replayed"] == 6 and second.extras["trials_evaluated"] == 0
    assert second.stats.evaluations_run == 0 and second.stats.tasks_executed == 0


def test_lfs_search_reuses_tasks_across_trials(tmp_path):
    graph = search_graph(
        tmp_path, "lfs", {"layer_granularity": 2, "methods": ["linear", "task_arithmetic", "ties"]}, SMALL
    )
    result = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    cold = [r["extra"]["cold_tasks"] for r in rows]
    executed = [r["extra"]["executed"] for r in rows]
    assert all(e <= c for e, c in zip(executed, cold))
    assert sum(executed) < sum(cold)  # the embedding merge and repeated recipes are shared
    assert (tmp_path / "out" / "best_model" / "config.json").exists()
    assert result.extras["best"]["scores"]


def test_lfs_multi_objective_returns_a_pareto_set(tmp_path):
    smac = {**SMALL, "facade": "multi_objective", "n_trials": 8}
    graph = search_graph(
        tmp_path, "lfs_mo", {"layer_granularity": 2, "methods": ["linear", "task_arithmetic"]}, smac
    )
    result = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    pareto = result.extras["pareto"]
    assert len(pareto) >= 2
    for a in pareto:  # no member dominates another
        for b in pareto:
            if a is not b:
                assert (
                    not all(a["scores"][k] >= b["scores"][k] for k in a["scores"])
                    or a["scores"] == b["scores"]
                )
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 0


def test_prune_search_removes_k_layers(tmp_path):
    graph = search_graph(tmp_path, "prune", {"remove": 1, "fix_layers": 1}, {**SMALL, "n_trials": 4})
    result = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    config = json.loads((tmp_path / "out" / "best_model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    unpruned = result.extras["unpruned"]
    assert unpruned["score_kept"] == pytest.approx(result.extras["best"]["score"] / unpruned["score"])


def test_fixed_config_and_explicit_space(tmp_path):
    body = {
        "nodes": {
            "base": {"op": "load", "path": str(REPO / "models/tiny/base")},
            "add": {"op": "load", "path": str(REPO / "models/tiny/add")},
            "reverse": {"op": "load", "path": str(REPO / "models/tiny/reverse")},
            "search": {
                "op": "optimize",
                "models": ["base", "add", "reverse"],
                "objectives": [{"task": "tiny_add"}, {"task": "tiny_reverse"}],
                "include_path": [str(GRAPHS / "tasks")],
                "space": {"params": {"lam": {"type": "float", "low": 0.2, "high": 1.0}}},
                "trial": {
                    "nodes": {
                        "model": {
                            "op": "merge",
                            "method": "task_arithmetic",
                            "base": "base",
                            "models": {"add": {"weight": 1.0}, "reverse": {"weight": 1.0}},
                            "params": {"lambda": "${params.lam}"},
                        }
                    }
                },
                "config": {"lam": 0.5},
                "evaluation": {"limit": 16},
                "out": str(tmp_path / "out"),
            },
        }
    }
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(body))
    result = run_graph(path, cache_dir=tmp_path / "cache", progress=False)
    assert result.extras["trials"] == 1 and set(result.extras["best"]["scores"]) == {
        "tiny_add",
        "tiny_reverse",
    }
    recipe = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert recipe["nodes"]["model"]["params"] == {"lambda": 0.5}


def _trial_lines(log: Path) -> int:
    try:
        return sum(1 for line in log.read_text().splitlines() if '"order"' in line)
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_search_resumes_to_the_same_result(tmp_path, sig):
    smac = {**SMALL, "n_trials": 8}
    settings = {"fix_layers": 1, "max_layers": 5}
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference = search_graph(reference_dir, "dis", settings, smac)
    run_graph(reference, cache_dir=reference_dir / "cache", progress=False)
    want = [json.loads(line) for line in (reference_dir / "out" / "trials.jsonl").read_text().splitlines()]

    graph = search_graph(tmp_path, "dis", settings, smac)
    log = tmp_path / "out" / "trial_log.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "graphmerge.cli",
        "run",
        str(graph),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    deadline = time.time() + 240
    while _trial_lines(log) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    done_before = _trial_lines(log)
    assert 3 <= done_before < 8
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err.decode()
        assert "interrupted" in err.decode()

    resumed = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    assert resumed.extras["trials"] == 8
    assert resumed.extras["trials_replayed"] == done_before  # finished trials are not evaluated again
    got = [json.loads(line) for line in (tmp_path / "out" / "trials.jsonl").read_text().splitlines()]
    strip = lambda rows: [(r["config"], r["budget"], r["scores"]) for r in rows]  # noqa: E731
    assert strip(got) == strip(want)

    extended = run_graph(graph, cache_dir=tmp_path / "cache", overrides={}, progress=False)
    assert extended.extras["trials_evaluated"] == 0


def test_parallel_trials_on_dask_workers(tmp_path):
    smac = {**SMALL, "n_trials": 4, "n_workers": 2}
    graph = search_graph(tmp_path, "dis", {"fix_layers": 1, "max_layers": 5}, smac)
    result = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(
        r["extra"]["evaluations_run"] == 2 for r in rows
    )  # evaluated in the workers
    assert result.extras["trials"] == 4
    assert (tmp_path / "out" / "best_model" / "config.json").exists()
