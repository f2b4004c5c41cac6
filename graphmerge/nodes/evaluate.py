"""`evaluate`: lm-evaluation-harness tasks on an in-memory model, cached per (model, task, settings).

Scores are cached per task; for settings where a score can be assembled from separately evaluated
examples (no few-shot, no bootstrap), the per-example metric values are cached too, so a larger
`limit` evaluates only the new examples. A graph's own evaluate node also writes lm-eval's results
JSON. The evaluated model stays resident between evaluations of one architecture: each new model's
tensors are copied into it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from graphmerge.atomic import atomic_write_bytes
from graphmerge.errors import EvaluationError
from graphmerge.eval_settings import EvaluationOptions, EvaluationRequest, vllm_missing
from graphmerge.eval_settings import approx_parameters as approx_parameters  # imported from here by callers
from graphmerge.executor import RunContext
from graphmerge.hashing import digest
from graphmerge.plan import Model
from graphmerge.registry import node

# Bumped when what a per-example cache entry holds changes meaning.
EXAMPLES_VERSION = 1


class EvaluateParams(EvaluationRequest):
    input: str = Field(description="the model node to evaluate")
    results_file: Path | None = Field(
        None, description="scores as JSON (default: out/evaluations/NODE.json next to the graph)"
    )
    lm_eval_results_file: Path | None = Field(
        None, description="lm-eval's own results JSON (default: out/evaluations/NODE.lm_eval.json)"
    )


def evaluation_key(model_key: str, task_hash: str, metric: str, params: EvaluationOptions) -> str:
    parts: list[Any] = [
        "evaluation",
        model_key,
        task_hash,
        metric,
        params.limit,
        params.num_fewshot,
        params.seed,
        params.dtype,
    ]
    extra = params.key_options()
    if extra:
        parts.append(extra)
    return digest(*parts)


def examples_key(model_key: str, task_hash: str, metric: str, params: EvaluationOptions) -> str:
    """Per-example metric values of one (model, task, metric, settings), whatever the limit."""
    return digest(
        "evaluation-examples",
        EXAMPLES_VERSION,
        model_key,
        task_hash,
        metric,
        params.num_fewshot,
        params.seed,
        params.dtype,
        params.key_options(),
    )


def _task_specs_and_keys(
    params: EvaluationRequest, model: Model
) -> tuple[list, dict[str, tuple[str, str, bool]]]:
    """Specs, and per task: (score key, per-example key, whether the task is a group or tag)."""
    from graphmerge.evaluation.tasks import (
        TaskSpec,
        is_group_or_tag,
        task_config_hash,
        task_filters,
        task_metrics,
    )

    include = [str(p) for p in params.include_path]
    specs: list[TaskSpec] = []
    keys: dict[str, tuple[str, str, bool]] = {}
    for entry in params.tasks:
        metric = entry.metric
        if metric is None:
            known = task_metrics(entry.task, include)
            if not known:
                raise EvaluationError(f"task {entry.task} reports no metrics", fix="name one with `metric:`")
            metric = known[0]
        spec = TaskSpec(task=entry.task, metric=metric, weight=entry.weight)
        # before any cache lookup: a score cached when an unnamed filter was picked silently must not
        # come back for a metric that names none
        filters = task_filters(entry.task, include)
        if spec.filter is None and len(filters) > 1:
            raise EvaluationError(
                f"task {entry.task} reports {metric} under {len(filters)} filters ({', '.join(filters)})",
                where=f"evaluate task {entry.task}",
                fix=f"choose one: metric: {metric},{filters[0]}",
            )
        specs.append(spec)
        task_hash = task_config_hash(spec.task, include)
        is_group = is_group_or_tag(spec.task, include)
        keys[spec.task] = (
            evaluation_key(model.key, task_hash, spec.label, params),
            examples_key(model.key, task_hash, spec.label, params),
            is_group,
        )
    return specs, keys


def _done_key(params: EvaluateParams, model: Model) -> str:
    return digest("evaluate-done", model.key, params.model_dump(mode="json"))


def evaluation_state(ctx: RunContext, params: EvaluateParams, inputs: Mapping[str, Any]) -> str:
    """For `graphmerge viz`: whether this node has evaluated this very model with these settings.
    Not the per-task score keys: their task hashes need lm-eval's task index, which can take minutes
    to build (viz must stay instant and work without the [eval] extra)."""
    return "cached" if ctx.cache.get_result(_done_key(params, inputs[params.input])) else "missing"


class _ModelOnce:
    """The evaluated model, built (or copied into the resident one) on first use only. For vLLM, which
    loads weights only from files, `folder()` writes it to a temporary folder under the cache instead,
    removed by `cleanup()`."""

    def __init__(self, ctx: RunContext, params: EvaluationOptions, model: Model):
        self.ctx, self.params, self.model = ctx, params, model
        self._hf = None
        self._tmp: Path | None = None

    def __call__(self):
        if self._hf is None:
            from graphmerge.evaluation import resident_model

            tensors = self.ctx.executor.materialize(self.model, desc="evaluate")
            self._hf = resident_model(
                dict(self.model.config),
                tensors,
                dtype=self.params.dtype,
                device=self.ctx.device,
                trust_remote_code=self.ctx.trust_remote_code,
                code_dir=self.model.code_dir,
            )
        return self._hf

    def folder(self) -> Path:
        import tempfile

        import torch

        from graphmerge.io.save import write_hf_model

        self._tmp = Path(tempfile.mkdtemp(prefix="vllm-", dir=self.ctx.cache.root))
        tensors = self.ctx.executor.materialize(self.model, desc="evaluate")
        return write_hf_model(
            self._tmp / "model",
            dict(self.model.config),
            tensors.items(),
            tokenizer_from=self.model.tokenizer_dir,
            dtype=getattr(torch, self.params.dtype),
        )

    def cleanup(self) -> None:
        if self._tmp is not None:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _score_value(hit: Any) -> tuple[float, float | None]:
    if isinstance(hit, Mapping):
        return float(hit["score"]), hit.get("stderr")
    return float(hit), None


def run_evaluation(
    ctx: RunContext, params: EvaluationRequest, model: Model, *, lm_eval_results: bool = False
) -> dict[str, Any]:
    """Scores of `model` on every task, evaluating only what the cache does not already hold.

    With ``lm_eval_results`` the answer also holds lm-eval's results dict (``lm_eval``), from the cache
    when this exact evaluation ran before, else from one lm-eval run over all tasks."""
    specs, keys = _task_specs_and_keys(params, model)
    if model.tokenizer_dir is None:
        raise EvaluationError(
            "the model has no tokenizer", fix="load models whose folders include tokenizer files"
        )
    if params.backend == "vllm" and vllm_missing():
        raise EvaluationError(
            "backend vllm needs vLLM, which is not installed",
            fix="pip install 'graphmerge[vllm]' (a CUDA machine), or use backend: hf",
        )
    job = _Job(ctx, params, model, specs, keys)
    try:
        raw = job.with_results() if lm_eval_results else job.per_task()
    finally:
        job.hf.cleanup()
    scores, stderr = job.scores, job.stderr
    total = sum(s.weight for s in specs)
    combined = sum(scores[s.task] * s.weight for s in specs) / total if total else 0.0
    out: dict[str, Any] = {
        "scores": {s.task: scores[s.task] for s in specs},
        "score": combined,
        "model_key": model.key,
        "limit": params.limit,
    }
    if stderr:
        out["stderr"] = {s.task: stderr[s.task] for s in specs if s.task in stderr}
    if raw is not None:
        out["lm_eval"] = raw
    return out


class _Job:
    """One node's evaluation: what to look up, what to run, and the scores found."""

    def __init__(self, ctx: RunContext, params: EvaluationRequest, model: Model, specs, keys):
        self.ctx, self.params, self.model, self.specs, self.keys = ctx, params, model, specs, keys
        self.include = [str(p) for p in params.include_path]
        self.opts = replace(
            params.eval_options(threads=params.torch_threads(model.config)),
            trust_remote_code=ctx.trust_remote_code,
        )
        self.hf = _ModelOnce(ctx, params, model)
        self.device = str(ctx.device)
        self.scores: dict[str, float] = {}
        self.stderr: dict[str, float] = {}

    def _found(self, task: str, score: float, err: float | None) -> None:
        self.scores[task] = score
        if err is not None:
            self.stderr[task] = err

    def _store(self, task: str, score: float, err: float | None) -> None:
        score = float(score)
        value = score if err is None else {"score": score, "stderr": float(err)}
        self.ctx.cache.put_result(self.keys[task][0], value)
        self._found(task, score, err)
        self.ctx.stats.evaluations_run += 1

    def _whole(self, specs, *, with_environment: bool = False):
        from graphmerge.evaluation import evaluate

        result = evaluate(
            _lm_input(self.params, self.hf),
            self.model.tokenizer_dir,
            specs,
            include_path=self.include,
            options=self.opts,
            device=self.device,
            with_environment=with_environment,
        )
        for s in specs:
            self._store(s.task, result.scores[s.task], result.stderr.get(s.task))
        return result

    def with_results(self) -> dict[str, Any]:
        """All tasks in one lm-eval run, for its results JSON (cached as a whole)."""
        raw_key = digest(
            "lm-eval-results", [self.keys[s.task][0] for s in self.specs], self.params.log_samples
        )
        raw = self.ctx.cache.get_result(raw_key)
        if raw is None:
            result = self._whole(self.specs, with_environment=True)
            raw = json.loads(json.dumps(result.raw, default=_jsonable))
            self.ctx.cache.put_result(raw_key, raw)
            return raw
        for s in self.specs:
            self._found(s.task, *_score_value(self.ctx.cache.get_result(self.keys[s.task][0])))
            self.ctx.stats.evaluations_cached += 1
        return raw

    def per_task(self) -> None:
        """Cached scores, then per-example evaluation where it equals a whole run, then whole runs."""
        from graphmerge.evaluation.runner import per_example_ok

        whole, by_example = [], []
        for spec in self.specs:
            hit = self.ctx.cache.get_result(self.keys[spec.task][0])
            if hit is not None:
                self._found(spec.task, *_score_value(hit))
                self.ctx.stats.evaluations_cached += 1
            elif self.params.backend == "hf" and per_example_ok(self.opts, self.keys[spec.task][2]):
                by_example.append(spec)
            else:
                whole.append(spec)
        if by_example:
            self._by_example(by_example)
        if whole:
            self._whole(whole)

    def _by_example(self, specs) -> None:
        from graphmerge.evaluation import score_examples

        cache = self.ctx.cache
        known = {}
        for s in specs:
            stored = cache.get_result(self.keys[s.task][1]) or {}
            known[s.task] = {int(k): v for k, v in stored.items()}
        got = score_examples(
            self.hf, self.model.tokenizer_dir, specs, self.include, known, self.opts, self.device
        )
        for s in specs:
            new = got.new_items[s.task]
            if new:
                merged = {**known[s.task], **new}
                cache.put_result(self.keys[s.task][1], {str(k): v for k, v in sorted(merged.items())})
            self._store(s.task, got.scores[s.task], None)
            self.ctx.stats.examples_evaluated += len(new)


def _lm_input(params: EvaluationOptions, hf: _ModelOnce):
    """What `evaluate` runs on: the resident model (hf) or a model folder (vLLM)."""
    return hf() if params.backend == "hf" else hf.folder()


def _jsonable(value: Any) -> Any:
    """lm-eval's handle_non_serializable: numpy scalars as numbers, sets as lists, the rest as text."""
    if hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def check_evaluation(ctx: RunContext, params: EvaluationRequest, model: Model) -> dict[str, Any]:
    """Task names, their data files and metrics, and the model's tokenizer, without evaluating;
    the scores are stand-ins (NaN)."""
    from graphmerge.evaluation.tasks import check_tasks

    for folder in params.include_path:
        if not Path(folder).is_dir():
            raise EvaluationError(
                f"include_path {folder} is not a folder", fix="point it at a folder of task YAMLs"
            )
    specs, keys = _task_specs_and_keys(params, model)
    check_tasks(specs, [str(p) for p in params.include_path])
    if model.tokenizer_dir is None and any(ctx.cache.get_result(k[0]) is None for k in keys.values()):
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
    extras=("eval",),
    check=evaluate_check,
    summary=lambda name, value: {"scores": {name: value["scores"]}},
)
def evaluate_node(ctx: RunContext, params: EvaluateParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run lm-eval tasks on a model built in memory from the merged tensors (no checkpoint written)."""
    result = run_evaluation(ctx, params, inputs[params.input], lm_eval_results=True)
    shown = ", ".join(
        f"{t}={v:.4f}" + (f"±{result['stderr'][t]:.4f}" if t in result.get("stderr", {}) else "")
        for t, v in result["scores"].items()
    )
    ctx.log(f"evaluate {params.input}: {shown}" + (f" (limit {params.limit})" if params.limit else ""))
    out_dir = ctx.graph.dir / "out" / "evaluations"
    raw = result.pop("lm_eval")
    path = params.results_file or out_dir / f"{ctx.node_name}.json"
    atomic_write_bytes(Path(path), json.dumps(result, indent=2).encode())
    lm_path = params.lm_eval_results_file or out_dir / f"{ctx.node_name}.lm_eval.json"
    atomic_write_bytes(Path(lm_path), json.dumps(raw, indent=2, ensure_ascii=False).encode())
    ctx.cache.put_result(_done_key(params, inputs[params.input]), True)
    return result
