"""report.md of a real short search of the bundled tiny models, checked against the search's other outputs:
trials.jsonl, held_out.json, best_recipe.yaml and run_graph's --json extras."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from test_nodes_optimize import search_graph

from graphmerge.runner import run_graph

SMAC = {"facade": "multi_fidelity", "n_trials": 6, "min_budget": 4, "max_budget": 8, "eta": 2}


def short_search(tmp_path: Path, smac: dict) -> Path:
    """A short LFS search of the bundled tiny models that selects on validation and reports held-out
    scores (10 examples per task); its outputs go to tmp_path/out."""
    objectives = [
        {"task": "tiny_add_val", "metric": "exact_match", "held_out": "tiny_add"},
        {"task": "tiny_reverse_val", "metric": "exact_match", "held_out": "tiny_reverse"},
    ]
    path = search_graph(
        tmp_path, "lfs", {"layer_granularity": 2, "methods": ["linear", "task_arithmetic"]}, smac, objectives
    )
    body = yaml.safe_load(path.read_text())
    body["nodes"]["search"]["evaluation"] = {"held_out_limit": 10}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def table(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the first table after `heading`, by their first cell (markdown emphasis removed)."""
    lines = text.split(f"## {heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = [line for line in lines[start:] if line.startswith("|") or not line]
    rows = rows[: rows.index("")] if "" in rows else rows
    cells = [[c.strip().replace("**", "") for c in row.strip("|").split("|")] for row in rows[2:]]
    return {c[0]: c[1:] for c in cells}


@pytest.mark.slow
def test_report_md_of_a_short_search_agrees_with_its_other_outputs(tmp_path):
    graph = short_search(tmp_path, SMAC)
    run = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert run.extras["files"]["report_md"] == str(out / "report.md")
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    held_out = json.loads((out / "held_out.json").read_text())
    best = run.extras["best"]

    # Scores: every source, the best, on the objectives at the best's budget and on the held-out tasks.
    scores = table(report, "Scores")
    assert set(scores) == {"base", "add", "reverse", f"best (trial #{best['trial']})"}
    for name, ref in run.extras["sources"].items():
        add, rev, total, held = scores[name]
        assert float(add) == pytest.approx(ref["scores"]["tiny_add_val"], abs=5e-4)
        assert float(rev) == pytest.approx(ref["scores"]["tiny_reverse_val"], abs=5e-4)
        assert float(total) == pytest.approx(ref["score"], abs=5e-4)
        assert float(held) == pytest.approx(held_out["sources"][name]["score"], abs=5e-4)
    best_row = scores[f"best (trial #{best['trial']})"]
    assert float(best_row[2]) == pytest.approx(best["score"], abs=5e-4)
    assert float(best_row[3]) == pytest.approx(held_out["best"]["score"], abs=5e-4)

    # The best recipe, verbatim.
    recipe = (out / "best_recipe.yaml").read_text()
    assert recipe.rstrip() in report

    # Examples: the per-trial counts in trials.jsonl, summed; the full-fidelity comparison uses 8 x 2 tasks.
    spent = sum(t["extra"]["examples_run"] for t in trials)
    assert spent > 0 and all(t["extra"]["examples_run"] <= 2 * t["limit"] for t in trials)
    assert f"**{spent:,} examples** evaluated by the 6 trials" in report
    assert f"would evaluate {6 * 8 * 2:,}" in report

    # Reuse: computed and cached tensor tasks of the evaluated trials.
    executed = sum(t["extra"]["executed"] for t in trials)
    cached = sum(t["extra"]["cached"] for t in trials)
    assert f"{executed:,} computed, {cached:,} served from the cache" in report

    # Wall time: the three parts add up to the wall time, and the trials' own measurements fit inside.
    split = table(report, "Wall time")
    seconds = {k.split(" (")[0]: float(re.match(r"([\d.]+) s", v[0]).group(1)) for k, v in split.items()}
    parts = seconds["tensor work"] + seconds["evaluation"] + seconds["overhead"]
    assert parts == pytest.approx(seconds["wall time"], abs=0.2)
    assert seconds["tensor work"] >= sum(t["extra"]["tensor_s"] for t in trials) - 0.1
    assert seconds["evaluation"] >= sum(t["extra"]["evaluation_s"] for t in trials) - 0.1
    assert seconds["wall time"] >= sum(t["time_s"] for t in trials)

    # A rerun replays every trial and says so; the examples spent stay those of the log.
    again = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    assert again.extras["trials_replayed"] == 6
    report = (out / "report.md").read_text()
    assert "0 evaluated, 6 replayed from the trial log" in report
    assert f"**{spent:,} examples** evaluated by the 6 trials of this search; 0 of them" in report


def test_pareto_members_and_worker_time_in_the_report(tmp_path):
    from graphmerge.search import Objective, SmacSettings, TrialOutcome, build_space, run_search
    from graphmerge.search.report_md import ReportInputs, Scored, TimeSplit, render_report

    def two(config, limit):
        x = config["x"]
        return TrialOutcome(
            scores={"a": -((x - 1.0) ** 2), "b": -((x + 1.0) ** 2)}, extra={"examples_run": limit}
        )

    settings = SmacSettings(
        facade="multi_objective", n_trials=8, n_initial=4, min_budget=None, max_budget=None,
        objectives=[Objective(name="a"), Objective(name="b")],
    )  # fmt: skip
    space = build_space({"params": {"x": {"type": "float", "low": -3.0, "high": 3.0}}})
    result = run_search(space, two, settings, tmp_path, write_reports=False)
    members = [
        Scored(f"pareto_{i}", "pareto", r.scores, r.score, trial=r.number)
        for i, r in enumerate(result.pareto)
    ]
    time_split = TimeSplit(
        wall_s=10.0, tensor_s=1.0, evaluation_s=2.0, in_flight=2, distributed=True,
        worker_trial_s=15.0, worker_tensor_s=3.0, worker_evaluation_s=9.0, trials_span_s=8.0,
    )  # fmt: skip
    page = render_report(
        ReportInputs(
            node="search", facade="multi_objective", seed=0, objectives=["a", "b"], trials=result.all_trials,
            told=len(result.trials), best=result.best, models=members, recipe_text="nodes: {}\n",
            recipe_file="best_recipe.yaml", time=time_split,
        )
    )  # fmt: skip
    assert len(result.pareto) >= 2
    for m in members:
        row = next(
            line for line in page.splitlines() if line.startswith(f"| **{m.name}** (trial #{m.trial})")
        )
        assert f"| {m.scores['a']:.3f} | {m.scores['b']:.3f} | {m.score:.3f} |" in row
    assert "busy with trials 94% of the time" in page  # 15 s of trials in 8 s x 2 workers
    assert "| rest of the trials (loading the sources on each worker, planning) | 3.0 s | 20% |" in page
    assert "| overhead (SMAC, waiting for workers, plots) | 7.0 s | 70% |" in page
