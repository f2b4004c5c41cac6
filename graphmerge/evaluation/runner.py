"""Score a model on lm-eval tasks, in memory, deterministically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch

from graphmerge.errors import EvaluationError
from graphmerge.evaluation.tasks import TaskSpec, quiet_lm_eval, resolve_tasks
from graphmerge.io.remote_code import untrusted_error

__all__ = ["EvalResult", "evaluate", "load_tokenizer"]


@dataclass
class EvalResult:
    """scores: task -> the requested metric; raw: lm-eval's per-task results (all metrics),
    the sample counts, and with log_samples=True the per-document samples."""

    scores: dict[str, float]
    raw: dict[str, Any] = field(default_factory=dict)

    def weighted(self, tasks: Sequence[TaskSpec]) -> float:
        """The weight-averaged score over ``tasks``."""
        total = sum(t.weight for t in tasks)
        if total == 0:
            raise EvaluationError("task weights sum to zero", fix="give at least one task a weight > 0")
        return sum(self.scores[t.task] * t.weight for t in tasks) / total


@lru_cache(maxsize=8)
def _tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e):
            raise untrusted_error(path, "tokenizer code") from None
        raise EvaluationError(
            f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}",
            fix="point tokenizer_path at a model folder with tokenizer files",
        ) from None


def load_tokenizer(path: str | os.PathLike, trust_remote_code: bool = False):
    """AutoTokenizer.from_pretrained(path), memoised per resolved path; a folder's own tokenizer
    code runs only with ``trust_remote_code``."""
    return _tokenizer(str(Path(path).expanduser().resolve()), trust_remote_code)


def _quiet_hflm_class():
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        """HFLM without per-request progress bars (unless show_progress)."""

        show_progress = False

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.show_progress)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(
                requests, disable_tqdm=disable_tqdm or not self.show_progress
            )

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or not self.show_progress)

    return QuietHFLM


_HFLM = None


@contextmanager
def _quiet(show_progress: bool):
    """Silence lm-eval/transformers/datasets chatter for one evaluation, restoring it afterwards:
    INFO logs, progress bars, and lm-eval's `git describe` call (which also costs a subprocess)."""
    import datasets
    import lm_eval.api.task as lm_task
    import lm_eval.evaluator as lm_evaluator
    import lm_eval.models.huggingface  # noqa: F401  (its logger must exist before quiet_lm_eval)
    import transformers
    from tqdm import tqdm

    quiet_lm_eval()
    saved_git = lm_evaluator.get_git_commit_hash
    saved_tqdm = lm_task.tqdm
    saved_tf = transformers.logging.get_verbosity()
    saved_ds = datasets.utils.logging.is_progress_bar_enabled()
    lm_evaluator.get_git_commit_hash = lambda: None
    transformers.logging.set_verbosity_error()
    if not show_progress:
        lm_task.tqdm = partial(tqdm, disable=True)
        datasets.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        lm_evaluator.get_git_commit_hash = saved_git
        lm_task.tqdm = saved_tqdm
        transformers.logging.set_verbosity(saved_tf)
        if saved_ds:
            datasets.utils.logging.enable_progress_bar()


def _pick(task_results: Mapping[str, Any], metric: str) -> float | None:
    """lm-eval keys metrics as 'metric,filter'; prefer the unfiltered 'none', else the only one."""
    hits = {
        k.split(",", 1)[1] if "," in k else "": v
        for k, v in task_results.items()
        if k.split(",", 1)[0] == metric
    }
    if not hits:
        return None
    value = hits.get("none", hits[sorted(hits)[0]])
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _reported(task_results: Mapping[str, Any]) -> list[str]:
    names = []
    for k in task_results:
        m = k.split(",", 1)[0]
        if k != "alias" and not m.endswith("_stderr") and m not in names and k != "name":
            names.append(m)
    return names


def evaluate(
    model_or_path: Any,
    tokenizer_path: str | os.PathLike | None,
    tasks: Sequence[TaskSpec | Mapping[str, Any] | str],
    include_path: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = 0,
    batch_size: int = 16,
    device: str = "cpu",
    seed: int = 0,
    *,
    log_samples: bool = False,
    show_progress: bool = False,
    trust_remote_code: bool = False,
) -> EvalResult:
    """Run lm-eval ``tasks`` on a model instance (e.g. from ``build_model``) or a model folder.

    ``limit`` takes the FIRST ``limit`` documents of each task (so smaller budgets are prefixes of
    larger ones); ``None`` takes all. Task names, data files and metrics are checked before the
    model runs; problems raise a one-line EvaluationError. Deterministic for a fixed ``seed``.
    """
    global _HFLM
    specs = [TaskSpec.coerce(t) for t in tasks]
    if not specs:
        raise EvaluationError("no tasks to evaluate", fix="list at least one task")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise EvaluationError(f"limit must be a positive integer count of examples, got {limit!r}")
    with _quiet(show_progress):
        tm = resolve_tasks(specs, include_path)

        from transformers import AutoModelForCausalLM, PreTrainedModel

        if isinstance(model_or_path, (str, os.PathLike)):
            path = Path(model_or_path).expanduser()
            if not (path / "config.json").is_file():
                raise EvaluationError(
                    f"{path} is not a model folder (no config.json)", fix="pass a saved HF model folder"
                )
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    str(path), dtype=torch.float32, trust_remote_code=trust_remote_code
                )
            except ValueError as e:
                if "trust_remote_code" in str(e):
                    raise untrusted_error(path, "model code") from None
                raise
            model = model.to(device).eval()
            tokenizer_path = tokenizer_path or path
        elif isinstance(model_or_path, PreTrainedModel):
            model = model_or_path.eval()
            if str(model.device) != str(torch.device(device)):
                model = model.to(device)
        else:
            raise EvaluationError(
                f"cannot evaluate a {type(model_or_path).__name__}",
                fix="pass a transformers PreTrainedModel or a model folder",
            )
        if tokenizer_path is None:
            raise EvaluationError(
                "no tokenizer_path given", fix="pass the folder holding the tokenizer files"
            )
        tokenizer = load_tokenizer(tokenizer_path, trust_remote_code)

        if _HFLM is None:
            _HFLM = _quiet_hflm_class()
        lm = _HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            device=device,
            trust_remote_code=trust_remote_code,
        )
        lm.show_progress = show_progress

        import lm_eval

        names = list(dict.fromkeys(s.task for s in specs))
        try:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=names,
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=tm,
                log_samples=log_samples,
                bootstrap_iters=0,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        except FileNotFoundError as e:  # data vanished between the check and the run
            raise EvaluationError(f"data file missing: {e}", where=", ".join(names)) from None
        if out is None:
            raise EvaluationError("lm-eval returned no results", where=", ".join(names))

    results: dict[str, Any] = out.get("results", {})
    scores: dict[str, float] = {}
    for s in specs:
        task_res = results.get(s.task)
        if task_res is None:
            raise EvaluationError(
                f"lm-eval gave no results for task {s.task}",
                fix="a tag has no aggregate score: list its tasks instead",
            )
        value = _pick(task_res, s.metric)
        if value is None:
            raise EvaluationError(
                f"task {s.task} did not report metric {s.metric!r}",
                fix=f"it reports: {', '.join(_reported(task_res))}",
            )
        scores[s.task] = value
    raw = {"results": results, "n-samples": out.get("n-samples", {}), "configs": out.get("configs", {})}
    if log_samples:
        raw["samples"] = out.get("samples", {})
    return EvalResult(scores=scores, raw=raw)
