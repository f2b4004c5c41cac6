"""`evaluate`: lm-evaluation-harness tasks on an in-memory model, cached per (model, task, settings)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from graphmerge.cache import atomic_write_bytes
from graphmerge.errors import EvaluationError
from graphmerge.executor import RunContext
from graphmerge.hashing import digest
from graphmerge.params import NodeParams
from graphmerge.plan import Model
from graphmerge.registry import node


class TaskEntry(NodeParams):
    task: str = Field(description="lm-eval task name")
    metric: str | None = Field(None, description="metric to report (default: the task's first metric)")
    weight: float = Field(1.0, ge=0, description="weight in the combined score")


class EvaluateParams(NodeParams):
    input: str = Field(description="the model node to evaluate")
    tasks: list[TaskEntry] = Field(min_length=1, description="tasks and the metric to report for each")
    include_path: list[Path] = Field(
        default_factory=list, description="folders of task YAMLs (relative to the graph)"
    )
    limit: int | None = Field(
        None, ge=1, description="evaluate the first N examples of each task (None: all)"
    )
    num_fewshot: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="dtype the model runs in")
    results_file: Path | None = Field(
        None, description="scores as JSON (default: out/evaluations/NODE.json next to the graph)"
    )

    @field_validator("tasks", mode="before")
    @classmethod
    def _strings_are_tasks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"task": v} if isinstance(v, str) else v for v in value]
        return value


def evaluation_key(model_key: str, task_hash: str, metric: str, params: EvaluateParams) -> str:
    return digest(
        "evaluation",
        model_key,
        task_hash,
        metric,
        params.limit,
        params.num_fewshot,
        params.seed,
        params.dtype,
    )


def _task_specs_and_keys(params: EvaluateParams, model: Model) -> tuple[list, dict[str, str]]:
    from graphmerge.evaluation.tasks import TaskSpec, task_config_hash, task_metrics

    include = [str(p) for p in params.include_path]
    specs: list[TaskSpec] = []
    keys: dict[str, str] = {}
    for entry in params.tasks:
        metric = entry.metric
        if metric is None:
            known = task_metrics(entry.task, include)
            if not known:
                raise EvaluationError(f"task {entry.task} reports no metrics", fix="name one with `metric:`")
            metric = known[0]
        spec = TaskSpec(task=entry.task, metric=metric, weight=entry.weight)
        specs.append(spec)
        keys[spec.task] = evaluation_key(model.key, task_config_hash(spec.task, include), metric, params)
    return specs, keys


def evaluation_state(ctx: RunContext, params: EvaluateParams, inputs: Mapping[str, Any]) -> str:
    """How many of this node's scores the cache already holds (for `graphmerge viz`)."""
    _, keys = _task_specs_and_keys(params, inputs[params.input])
    hits = sum(ctx.cache.get_result(k) is not None for k in keys.values())
    return "cached" if hits == len(keys) else "partial" if hits else "missing"


def run_evaluation(ctx: RunContext, params: EvaluateParams, model: Model) -> dict[str, Any]:
    """Scores of `model` on every task, evaluating only what the cache does not already hold."""
    include = [str(p) for p in params.include_path]
    specs, keys = _task_specs_and_keys(params, model)

    scores: dict[str, float] = {}
    missing = []
    for spec in specs:
        hit = ctx.cache.get_result(keys[spec.task])
        if hit is not None:
            scores[spec.task] = hit
            ctx.stats.evaluations_cached += 1
        else:
            missing.append(spec)
    if missing:
        from graphmerge.evaluation import build_model, evaluate

        if model.tokenizer_dir is None:
            raise EvaluationError(
                "the model has no tokenizer", fix="load models whose folders include tokenizer files"
            )
        tensors = ctx.executor.materialize(model, desc="evaluate")
        hf_model = build_model(dict(model.config), tensors, dtype=params.dtype, device=ctx.device)
        del tensors
        result = evaluate(
            hf_model,
            model.tokenizer_dir,
            missing,
            include_path=include,
            limit=params.limit,
            num_fewshot=params.num_fewshot,
            batch_size=params.batch_size,
            device=str(ctx.device),
            seed=params.seed,
        )
        for spec in missing:
            score = float(result.scores[spec.task])
            ctx.cache.put_result(keys[spec.task], score)
            scores[spec.task] = score
            ctx.stats.evaluations_run += 1
    total = sum(s.weight for s in specs)
    combined = sum(scores[s.task] * s.weight for s in specs) / total if total else 0.0
    return {
        "scores": {s.task: scores[s.task] for s in specs},
        "score": combined,
        "model_key": model.key,
        "limit": params.limit,
    }


def check_evaluation(ctx: RunContext, params: EvaluateParams, model: Model) -> dict[str, Any]:
    """Task names, their data files and metrics, and the model's tokenizer, without evaluating;
    the scores are stand-ins (NaN)."""
    from graphmerge.evaluation.tasks import resolve_tasks

    for folder in params.include_path:
        if not Path(folder).is_dir():
            raise EvaluationError(
                f"include_path {folder} is not a folder", fix="point it at a folder of task YAMLs"
            )
    specs, keys = _task_specs_and_keys(params, model)
    resolve_tasks(specs, [str(p) for p in params.include_path])
    if model.tokenizer_dir is None and any(ctx.cache.get_result(k) is None for k in keys.values()):
        raise EvaluationError(
            "the model has no tokenizer", fix="load models whose folders include tokenizer files"
        )
    nan = float("nan")
    return {
        "scores": {s.task: nan for s in specs},
        "score": nan,
        "model_key": model.key,
        "limit": params.limit,
    }


def evaluate_check(ctx: RunContext, params: EvaluateParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    if params.results_file is not None:
        check_writable_file(Path(params.results_file))
    return check_evaluation(ctx, params, inputs[params.input])


def check_writable_file(path: Path) -> None:
    if path.is_dir():
        raise EvaluationError(f"{path} is a folder", fix="name a file for the results")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise EvaluationError(
            f"cannot write {path}: {ancestor} is not a writable folder", fix="choose another path"
        )


@node(
    "evaluate",
    version="1",
    params=EvaluateParams,
    inputs=["input"],
    cache_state=evaluation_state,
    check=evaluate_check,
)
def evaluate_node(ctx: RunContext, params: EvaluateParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run lm-eval tasks on a model built in memory from the merged tensors (no checkpoint written)."""
    result = run_evaluation(ctx, params, inputs[params.input])
    shown = ", ".join(f"{t}={v:.4f}" for t, v in result["scores"].items())
    if not ctx.node_name.startswith("__"):  # trial evaluations are reported by the search's progress line
        ctx.log(f"evaluate {params.input}: {shown}" + (f" (limit {params.limit})" if params.limit else ""))
    if not ctx.node_name.startswith("__"):  # a graph's own evaluate node, not a search trial's
        path = params.results_file or ctx.graph.dir / "out" / "evaluations" / f"{ctx.node_name}.json"
        atomic_write_bytes(Path(path), json.dumps(result, indent=2).encode())
    return result
