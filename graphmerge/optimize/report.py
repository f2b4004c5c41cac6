"""The optimize node's report.md: gathers what the search found and what it cost from the node's run,
and writes the page `graphmerge.search.report_md` renders."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphmerge.executor import RunContext, RunStats


@dataclass(frozen=True)
class Stopwatch:
    """The node's clock and counters when its search began."""

    started: float
    stats: RunStats

    @classmethod
    def start(cls, ctx: RunContext) -> Stopwatch:
        return cls(time.perf_counter(), ctx.stats.snapshot())


def write_report_md(
    ctx: RunContext,
    clock: Stopwatch,
    *,
    settings: Any,  # graphmerge.search.SmacSettings
    result: Any,  # graphmerge.search.SearchResult
    references: Mapping[str, Mapping[str, Any]],
    held_out: Mapping[str, Any] | None,
    recipe_path: Path,
    out_dir: Path,
    in_flight: int,
) -> Path:
    from graphmerge.atomic import atomic_write_bytes
    from graphmerge.search.pareto import member_name
    from graphmerge.search.report_md import ReportInputs, Scored, TimeSplit, render_report, trial_examples

    best = result.best
    held = held_out or {}

    def held_score(group: str, name: str | None = None) -> float | None:
        entry = held.get(group)
        if entry is not None and name is not None:
            entry = entry.get(name)
        return None if entry is None else float(entry["score"])

    models = [
        Scored(name, "source", v["scores"], v["score"], held_score("sources", name))
        for name, v in references.items()
    ]
    models.append(Scored("best", "best", best.scores, best.score, held_score("best"), trial=best.number))
    for i, rec in enumerate(result.pareto):
        name = member_name(i)
        models.append(
            Scored(name, "pareto", rec.scores, rec.score, held_score("pareto", name), trial=rec.number)
        )

    delta = ctx.stats.since(clock.stats)
    evaluate_s = ctx.stats.op_seconds.get("evaluate", 0.0) - clock.stats.op_seconds.get("evaluate", 0.0)
    fresh = [r for r in result.trials if not r.replayed and not r.infeasible]
    distributed = bool(settings.distributed)
    remote = fresh if distributed else []
    time_split = TimeSplit(
        wall_s=time.perf_counter() - clock.started,
        tensor_s=float(delta["tensor_seconds"]),
        evaluation_s=max(0.0, evaluate_s - float(delta["tensor_seconds"])),
        in_flight=in_flight,
        distributed=distributed,
        # finished - started spans the whole call on the worker, its first trial's context building included
        worker_trial_s=sum(max(0.0, r.finished - r.started) for r in remote),
        worker_tensor_s=sum(float(r.extra.get("tensor_s", 0.0)) for r in remote),
        worker_evaluation_s=sum(float(r.extra.get("evaluation_s", 0.0)) for r in remote),
        trials_span_s=max((r.finished for r in remote), default=0.0)
        - min((r.started for r in remote), default=0.0),
    )
    trial_run_examples = sum(trial_examples(r) or 0 for r in fresh)
    notes = []
    if result.diverged:
        notes.append(f"Note: {result.divergence_note()}.")
    inputs = ReportInputs(
        node=ctx.node_name,
        facade=settings.facade,
        seed=settings.seed,
        objectives=[o.name for o in settings.objectives],
        trials=result.all_trials,
        told=len(result.trials),
        best=best,
        models=models,
        recipe_text=recipe_path.read_text(),
        recipe_file=recipe_path.name,
        time=time_split,
        max_budget=settings.max_budget,
        scoring_examples=max(0, int(delta["examples_evaluated"]) - trial_run_examples),
        held_out_tasks=dict(held.get("tasks") or {}),
        notes=notes,
    )
    path = out_dir / "report.md"
    atomic_write_bytes(path, render_report(inputs).encode())
    return path
