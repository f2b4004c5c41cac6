"""report.md of a real short search of the bundled tiny models, checked against the search's other outputs:
trials.jsonl, held_out.json, best_recipe.yaml and run_graph's --json extras."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"
pytestmark = pytest.mark.slow

GRAPH = {
    "nodes": {
        "base": {"op": "load", "path": str(TINY / "base")},
        "add": {"op": "load", "path": str(TINY / "add")},
        "reverse": {"op": "load", "path": str(TINY / "reverse")},
        "search": {
            "op": "optimize",
            "strategy": "lfs",
            "base": "base",
            "models": ["add", "reverse"],
            "settings": {"layer_granularity": 2, "methods": ["linear", "task_arithmetic"]},
            "objectives": [
                {"task": "tiny_add_val", "metric": "exact_match", "held_out": "tiny_add"},
                {"task": "tiny_reverse_val", "metric": "exact_match", "held_out": "tiny_reverse"},
            ],
            "include_path": [str(REPO / "graphs" / "tasks")],
            "evaluation": {"held_out_limit": 10},
            "smac": {"facade": "multi_fidelity", "n_trials": 6, "min_budget": 4, "max_budget": 8, "eta": 2},
            "out": "OUT",
        },
    }
}


def table(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the first table after `heading`, by their first cell (markdown emphasis removed)."""
    lines = text.split(f"## {heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = [line for line in lines[start:] if line.startswith("|") or not line]
    rows = rows[: rows.index("")] if "" in rows else rows
    cells = [[c.strip().replace("**", "") for c in row.strip("|").split("|")] for row in rows[2:]]
    return {c[0]: c[1:] for c in cells}


def test_report_md_of_a_short_search_agrees_with_its_other_outputs(tmp_path):
    graph = tmp_path / "g.yaml"
    body = json.loads(json.dumps(GRAPH).replace("OUT", str(tmp_path / "out")))
    graph.write_text(yaml.safe_dump(body))
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
    spent = sum(t["extra"]["examples"] for t in trials)
    assert spent > 0 and all(t["extra"]["examples"] <= 2 * t["limit"] for t in trials)
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
