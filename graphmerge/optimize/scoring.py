"""Models scored on a search's tasks outside its trials: the sources at the best trial's budget (the
reference lines of report.png) and, with `held_out:` objectives, the best model, the Pareto members
and the sources on held-out data."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphmerge.atomic import atomic_write_bytes
from graphmerge.errors import SpecError
from graphmerge.eval_settings import EvaluationRequest
from graphmerge.executor import RunContext
from graphmerge.optimize.params import OptimizeParams
from graphmerge.plan import Model

Evaluate = Callable[[RunContext, EvaluationRequest, Model], dict[str, Any]]


@dataclass(frozen=True)
class Evaluator:
    """How the bridge scores a model, handed in by the node that owns evaluation (module-level
    functions, so a trial runner carrying it pickles to Dask workers). `check` validates the tasks and
    the model's tokenizer without evaluating."""

    run: Evaluate
    check: Evaluate


def score_models(
    ctx: RunContext, evaluate: Evaluate, request: EvaluationRequest, models: Mapping[str, Model]
) -> dict[str, dict[str, Any]]:
    """{name: {scores: {task: value}, score: weighted sum}} for each model, through the evaluation cache."""
    weights = {t.task: t.weight for t in request.tasks}
    out = {}
    started = time.perf_counter()
    for name, model in models.items():
        scores = dict(evaluate(ctx, request, model)["scores"])
        out[name] = {"scores": scores, "score": sum(scores[t] * w for t, w in weights.items())}
    # Counted with the evaluate nodes' time, so that a search's report splits its wall time completely.
    ctx.stats.op_seconds["evaluate"] = (
        ctx.stats.op_seconds.get("evaluate", 0.0) + time.perf_counter() - started
    )
    return out


def check_held_out(params: OptimizeParams) -> None:
    """Unknown held-out tasks or metrics are errors before the search, not after hours of trials."""
    from graphmerge.evaluation.tasks import task_metrics

    include = [str(p) for p in params.include_path]
    for o in params.objectives:
        if o.held_out is None:
            continue
        metrics = task_metrics(o.held_out, include)
        if o.metric is not None and o.metric not in metrics:
            raise SpecError(
                f"held-out task {o.held_out!r} does not report metric {o.metric!r}",
                where=f"objective {o.task}",
                fix=f"pick a held-out task with the same metric (it reports {metrics})",
            )


def held_out_report(
    ctx: RunContext,
    evaluate: Evaluate,
    params: OptimizeParams,
    sources: Mapping[str, Model],
    best: Model,
    pareto: Mapping[str, Model],
    out_dir: Path,
) -> dict[str, Any] | None:
    """Best model, Pareto members and sources scored on the held-out tasks; also written to held_out.json."""
    if not any(o.held_out for o in params.objectives):
        return None
    request = params.request(params.evaluation.held_out_limit, held_out=True)
    scored = score_models(ctx, evaluate, request, {"best": best, **pareto, **sources})
    report = {
        "tasks": {o.task: o.held_out for o in params.objectives},
        "limit": request.limit,
        "best": scored["best"],
        "pareto": {k: scored[k] for k in pareto},
        "sources": {k: scored[k] for k in sources},
    }
    atomic_write_bytes(out_dir / "held_out.json", (json.dumps(report, indent=2) + "\n").encode())
    line = ", ".join(f"{k} {v['score']:.4g}" for k, v in report["sources"].items())
    ctx.log(f"{ctx.node_name}: held-out score: best {scored['best']['score']:.4g}; sources: {line}")
    return report
