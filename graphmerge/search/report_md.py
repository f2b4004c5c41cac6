"""report.md: one page per search that says what it found and what it cost.

Pure: everything comes in as plain values (the result, the scores of the sources and of the held-out
runs, the time measured around the search) and one markdown string comes out; the optimize node
gathers the inputs and writes the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import EXAMPLES_RUN, TrialRecord


@dataclass(frozen=True)
class Scored:
    """A model's scores on the objectives (and, when the search has them, on the held-out tasks)."""

    name: str
    role: str  # "source", "best", "pareto"
    scores: Mapping[str, float]
    score: float
    held_out: float | None = None
    trial: int | None = None


@dataclass(frozen=True)
class TimeSplit:
    """Seconds of the optimize node. `tensor_s` and `evaluation_s` were spent in this process;
    `worker_*` inside trials that ran on Dask workers (summed over workers)."""

    wall_s: float
    tensor_s: float
    evaluation_s: float
    in_flight: int = 1  # trials at once; 1 and `distributed` False: trials ran in this process
    distributed: bool = False
    worker_trial_s: float = 0.0
    worker_tensor_s: float = 0.0
    worker_evaluation_s: float = 0.0
    trials_span_s: float = 0.0  # from the first evaluated trial's start to the last one's end


@dataclass(frozen=True)
class ReportInputs:
    node: str
    facade: str
    seed: int
    objectives: Sequence[str]
    trials: Sequence[TrialRecord]  # this run's told trials, then logged ones it did not ask again
    told: int  # how many of `trials` this run told
    best: TrialRecord
    models: Sequence[Scored]  # sources, best, Pareto members
    recipe_text: str
    recipe_file: str
    time: TimeSplit
    max_budget: int | None = None  # examples per task of a full-fidelity trial
    scoring_examples: int | None = None  # examples run to score sources/held-out in this process
    held_out_tasks: Mapping[str, str] = field(default_factory=dict)  # objective -> held-out task
    notes: Sequence[str] = ()


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "–"


def _int(x: Any) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return 0


def trial_examples(record: TrialRecord) -> int | None:
    """lm-eval examples a trial ran (cache misses); None when its log line predates the count."""
    value = record.extra.get(EXAMPLES_RUN)
    return None if value is None else _int(value)


def _scores_table(inputs: ReportInputs) -> list[str]:
    held = bool(inputs.held_out_tasks)
    head = ["model", *inputs.objectives, "sum (weighted)"]
    if held:
        head.append("held-out sum")
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    for m in inputs.models:
        label = (
            m.name if m.role == "source" else f"**{m.name}**" + (f" (trial #{m.trial})" if m.trial else "")
        )
        row = [label, *(_f(m.scores.get(o)) for o in inputs.objectives), _f(m.score)]
        if held:
            row.append(_f(m.held_out))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _examples(inputs: ReportInputs) -> list[str]:
    told = list(inputs.trials[: inputs.told])
    fresh = [r for r in told if not r.replayed and not r.infeasible]
    counted = [trial_examples(r) for r in inputs.trials if not r.infeasible]
    known = [c for c in counted if c is not None]
    total = sum(known)
    by_limit: dict[Any, list[TrialRecord]] = {}
    for r in inputs.trials:
        if not r.infeasible:
            by_limit.setdefault(r.limit, []).append(r)
    out = [
        f"- **{total:,} examples** evaluated by the {len(known)} trials of this search"
        + (
            f" ({len(counted) - len(known)} logged trials carry no count)"
            if len(known) < len(counted)
            else ""
        )
        + f"; {sum(trial_examples(r) or 0 for r in fresh):,} of them by the {len(fresh)} trials evaluated in this run.",
    ]
    n_tasks = len(inputs.objectives)
    if inputs.max_budget is not None:
        full = len(counted) * inputs.max_budget * n_tasks
        out.append(
            f"- The same {len(counted)} trials at full fidelity ({inputs.max_budget} examples × {n_tasks} tasks) "
            f"would evaluate {full:,}: this search spent {_share(total, full)} of that."
        )
    budgets = ", ".join(
        f"{'all' if limit is None else limit}: {len(rs)} trials"
        for limit, rs in sorted(by_limit.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
    )
    if budgets:
        out.append(f"- Trials per budget (examples per task): {budgets}.")
    if inputs.scoring_examples is not None:
        out.append(
            f"- Scoring the sources and the chosen models (reference lines, held-out tasks) ran "
            f"{inputs.scoring_examples:,} more examples."
        )
    return out


def _reuse(inputs: ReportInputs) -> list[str]:
    told = list(inputs.trials[: inputs.told])
    fresh = [r for r in told if not r.replayed and not r.infeasible]
    x = [r.extra for r in fresh]
    executed = sum(_int(e.get("executed")) for e in x)
    cached = sum(_int(e.get("cached")) for e in x)
    cold = sum(_int(e.get("cold_tasks")) for e in x)
    ev_run = sum(_int(e.get("evaluations_run")) for e in x)
    ev_cached = sum(_int(e.get("evaluations_cached")) for e in x)
    replayed = sum(1 for r in told if r.replayed)
    lines = [
        f"- Trials: {inputs.told} told in this run: {len(fresh)} evaluated, {replayed} replayed from the trial log, "
        f"{sum(1 for r in told if r.infeasible)} infeasible or failed"
        + (
            f"; {len(inputs.trials) - inputs.told} more logged trials kept in the history."
            if len(inputs.trials) > inputs.told
            else "."
        ),
    ]
    if fresh:
        lines += [
            f"- Tensor tasks of the evaluated trials: {executed:,} computed, {cached:,} served from the cache "
            f"({_share(cached, executed + cached)} reused).",
            f"- From an empty cache each trial would compute its whole model: {cold:,} tasks in all; "
            f"the search computed {_share(executed, cold)} of that.",
            f"- Evaluations (one per task and model): {ev_run} run, {ev_cached} from the cache.",
        ]
    return lines


def _time(t: TimeSplit) -> list[str]:
    if not t.distributed:
        overhead = max(0.0, t.wall_s - t.tensor_s - t.evaluation_s)
        rows = [
            ("tensor work (merges, slicing, reads, cache)", t.tensor_s),
            ("evaluation (lm-eval)", t.evaluation_s),
            ("overhead (SMAC, planning, model loading, plots)", overhead),
            ("**wall time**", t.wall_s),
        ]
        return ["| part | time | share |", "| --- | ---: | ---: |"] + [
            f"| {name} | {_seconds(v)} | {_share(v, t.wall_s)} |" for name, v in rows
        ]
    other = max(0.0, t.worker_trial_s - t.worker_tensor_s - t.worker_evaluation_s)
    busy = _share(t.worker_trial_s, t.trials_span_s * t.in_flight)
    rows = [
        ("tensor work in trials", t.worker_tensor_s),
        ("evaluation in trials", t.worker_evaluation_s),
        ("rest of the trials (loading the sources on each worker, planning)", other),
        ("**trials, summed over workers**", t.worker_trial_s),
    ]
    driver = [
        ("tensor work (sources, held-out)", t.tensor_s),
        ("evaluation (sources, held-out)", t.evaluation_s),
        ("overhead (SMAC, waiting for workers, plots)", max(0.0, t.wall_s - t.tensor_s - t.evaluation_s)),
        ("**wall time**", t.wall_s),
    ]
    return (
        [
            f"Trials ran on Dask workers, {t.in_flight} at a time; from the first trial's start to the last "
            f"one's end ({_seconds(t.trials_span_s)}) the workers were busy with trials {busy} of the time "
            f"(trial seconds / (that span × {t.in_flight})).",
            "",
            "| on the workers | time | share |",
            "| --- | ---: | ---: |",
        ]
        + [f"| {n} | {_seconds(v)} | {_share(v, t.worker_trial_s)} |" for n, v in rows]
        + ["", "| in this process | time | share |", "| --- | ---: | ---: |"]
        + [f"| {n} | {_seconds(v)} | {_share(v, t.wall_s)} |" for n, v in driver]
    )


def render_report(inputs: ReportInputs) -> str:
    best = inputs.best
    budget = "the full tasks" if best.limit is None else f"{best.limit} examples per task"
    lines = [
        f"# Search `{inputs.node}`",
        "",
        f"SMAC {inputs.facade}, seed {inputs.seed}, {len(inputs.trials)} trials. "
        f"Best: trial #{best.number}, weighted score **{best.score:.4g}** on {budget}.",
        *(f"\n{n}" for n in inputs.notes),
        "",
        "## Scores",
        "",
        "Objectives at the best trial's budget"
        + (
            "; held-out: " + ", ".join(f"{k} → {v}" for k, v in inputs.held_out_tasks.items())
            if inputs.held_out_tasks
            else ""
        )
        + ".",
        "",
        *_scores_table(inputs),
        "",
        "## Best recipe",
        "",
        f"Configuration of trial #{best.number}; `{inputs.recipe_file}` is the graph that rebuilds the model.",
        "",
        "```yaml",
        inputs.recipe_text.rstrip(),
        "```",
        "",
        "## Examples spent",
        "",
        *_examples(inputs),
        "",
        "## Reuse",
        "",
        *_reuse(inputs),
        "",
        "## Wall time",
        "",
        *_time(inputs.time),
        "",
    ]
    return "\n".join(lines)
