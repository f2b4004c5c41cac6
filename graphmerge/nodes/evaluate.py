"""`evaluate`: lm-evaluation-harness tasks on an in-memory model, cached per (model, task, settings)."""

from __future__ import annotations

import json
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


def _done_key(params: EvaluateParams, model: Model) -> str:
    return digest("evaluate-done", model.key, params.model_dump(mode="json"))


def evaluation_state(ctx: RunContext, params: EvaluateParams, inputs: Mapping[str, Any]) -> str:
    """For `graphmerge viz`: whether this node has evaluated this very model with these settings.
    Not the per-task score keys: their task hashes need lm-eval's task index, which can take minutes
    to build (viz must stay instant and work without the [eval] extra)."""
    return "cached" if ctx.cache.get_result(_done_key(params, inputs[params.input])) else "missing"


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
        hf_model = build_model(
            dict(model.config),
            tensors,
            dtype=params.dtype,
            device=ctx.device,
            trust_remote_code=ctx.trust_remote_code,
            code_dir=model.code_dir,
        )
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
            trust_remote_code=ctx.trust_remote_code,
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


@node(
    "evaluate",
    version="1",
    params=EvaluateParams,
    inputs=["input"],
    cache_state=evaluation_state,
    extras=("eval",),
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
        ctx.cache.put_result(_done_key(params, inputs[params.input]), True)
    return result
