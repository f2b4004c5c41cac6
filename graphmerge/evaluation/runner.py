"""Score a model on lm-eval tasks, in memory, deterministically, through lm-eval's public API.

Two ways in:
- ``evaluate``: one ``lm_eval.evaluator.evaluate`` run over the first ``limit`` examples, returning
  lm-eval's whole results dict (what its CLI writes) as well as the chosen scores;
- ``score_examples``: scores assembled from per-example metric values, evaluating only the examples
  the caller does not already hold, so raising a budget from 25 to 50 examples runs 25.

Both go through ``lm_eval.evaluator.evaluate`` rather than ``simple_evaluate``: the latter collects
the environment (torch's ``collect_env``, which spawns subprocesses) and a git hash on every call.
``environment_info`` does that once per process, for the results files that want it.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack, contextmanager, redirect_stderr
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from graphmerge.errors import EvaluationError
from graphmerge.evaluation.option_checks import check_batch_size, check_limit
from graphmerge.evaluation.tasks import TaskSpec, quiet_lm_eval, resolve_tasks, task_manager
from graphmerge.io.remote_code import untrusted_error

__all__ = [
    "EvalOptions",
    "EvalResult",
    "environment_info",
    "evaluate",
    "load_tokenizer",
    "score_examples",
]


@dataclass(frozen=True)
class EvalOptions:
    """lm-eval settings, named as ``simple_evaluate`` names them.

    ``limit``: a count of examples (the first N of each task) or a fraction in (0, 1) of each task.
    ``batch_size``: a number, ``auto`` or ``auto:N`` (lm-eval's batch-size search).
    ``bootstrap_iters`` > 0 adds lm-eval's bootstrap standard errors. ``threads``: torch CPU threads
    while evaluating (None leaves torch's setting alone).
    """

    limit: int | float | None = None
    num_fewshot: int | None = 0
    batch_size: int | str = 16
    max_batch_size: int | None = None
    seed: int = 0
    bootstrap_iters: int = 0
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None
    gen_kwargs: Mapping[str, Any] | None = None
    log_samples: bool = False
    show_progress: bool = False
    threads: int | None = None
    backend: str = "hf"
    # May transformers import code shipped in the model folder (never scores-relevant, so not keyed).
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        check_limit(self.limit)
        check_batch_size(self.batch_size)
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            raise EvaluationError(
                "fewshot_as_multiturn needs apply_chat_template",
                fix="set apply_chat_template: true (or drop fewshot_as_multiturn)",
            )
        if self.bootstrap_iters < 0:
            raise EvaluationError(
                "bootstrap_iters must be >= 0", fix="0 skips stderr; lm-eval's default is 100000"
            )


@dataclass
class EvalResult:
    """scores: task -> the requested metric; stderr: task -> its bootstrap standard error (when
    bootstrap_iters > 0); raw: lm-eval's results dict (results, configs, versions, n-shot,
    higher_is_better, n-samples, config and, with log_samples, samples)."""

    scores: dict[str, float]
    raw: dict[str, Any] = field(default_factory=dict)
    stderr: dict[str, float] = field(default_factory=dict)

    def weighted(self, tasks: Sequence[TaskSpec]) -> float:
        """The weight-averaged score over ``tasks``."""
        total = sum(t.weight for t in tasks)
        if total == 0:
            raise EvaluationError("task weights sum to zero", fix="give at least one task a weight > 0")
        return sum(self.scores[t.task] * t.weight for t in tasks) / total


# ------------------------------------------------------------------------------------------ pieces
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
# The last wrapper built: it holds its model, so the model's id cannot be reused while it is here.
_LM_SLOT: tuple[tuple, Any] | None = None


def _lm(model, tokenizer_path, opts: EvalOptions, device: str):
    """An HFLM around ``model``; the same model and batch settings reuse the wrapper."""
    global _HFLM, _LM_SLOT
    key = (
        id(model),
        str(Path(tokenizer_path).expanduser().resolve()),
        opts.batch_size,
        opts.max_batch_size,
        device,
    )
    if _LM_SLOT is not None and _LM_SLOT[0] == key:
        lm = _LM_SLOT[1]
    else:
        if _HFLM is None:
            _HFLM = _quiet_hflm_class()
        extra = {"max_batch_size": opts.max_batch_size} if opts.max_batch_size else {}
        lm = _HFLM(
            pretrained=model,
            tokenizer=load_tokenizer(tokenizer_path, opts.trust_remote_code),
            batch_size=opts.batch_size,
            device=device,
            trust_remote_code=opts.trust_remote_code,
            **extra,
        )
        _LM_SLOT = (key, lm)
    lm.show_progress = opts.show_progress
    return lm


class _NoProgressBars(io.TextIOBase):
    """stderr minus tqdm's bars (lm-eval draws one per task while building requests, with no switch
    to turn it off): every bar update starts with a carriage return; everything else goes through."""

    def __init__(self, target):
        self._target = target
        self._after_bar = False

    @property
    def encoding(self):
        return getattr(self._target, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if s.startswith("\r") or (self._after_bar and s == "\n"):
            self._after_bar = s != "\n"
            return len(s)
        self._after_bar = False
        return self._target.write(s)

    def flush(self) -> None:
        self._target.flush()


@contextmanager
def _quiet(show_progress: bool):
    """lm-eval/transformers/datasets at warning level and, unless show_progress, without progress bars,
    for one evaluation; restored afterwards."""
    import datasets
    import lm_eval.models.huggingface  # noqa: F401  (its logger must exist before quiet_lm_eval)
    import transformers

    quiet_lm_eval()
    saved_tf = transformers.logging.get_verbosity()
    saved_ds = datasets.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    with ExitStack() as stack:
        if not show_progress:
            datasets.disable_progress_bars()
            stack.enter_context(redirect_stderr(_NoProgressBars(sys.stderr)))
        try:
            yield
        finally:
            transformers.logging.set_verbosity(saved_tf)
            if saved_ds:
                datasets.enable_progress_bars()


@contextmanager
def _torch_threads(n: int | None):
    if n is None or n == torch.get_num_threads():
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _model(model_or_path: Any, tokenizer_path, device: str, trust_remote_code: bool = False):
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
        return model.to(device).eval(), tokenizer_path or path
    if isinstance(model_or_path, PreTrainedModel):
        model = model_or_path.eval()
        if str(model.device) != str(torch.device(device)):
            model = model.to(device)
        if tokenizer_path is None:
            raise EvaluationError(
                "no tokenizer_path given", fix="pass the folder holding the tokenizer files"
            )
        return model, tokenizer_path
    if callable(model_or_path):  # built on first use (score_examples may need no model at all)
        return _model(model_or_path(), tokenizer_path, device, trust_remote_code)
    raise EvaluationError(
        f"cannot evaluate a {type(model_or_path).__name__}",
        fix="pass a transformers PreTrainedModel or a model folder",
    )


def _vllm_lm(folder: Any, tokenizer_path, opts: EvalOptions):
    """lm-eval's registered `vllm` model on a model folder (vLLM loads weights from files)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise EvaluationError(
            "backend vllm needs vLLM, which is not installed",
            fix="pip install 'graphmerge[vllm]' (a CUDA machine), or use backend: hf",
        )
    if not isinstance(folder, (str, os.PathLike)):
        raise EvaluationError(
            "backend vllm evaluates a model folder", fix="pass the folder the model was saved to"
        )
    from lm_eval.api.registry import get_model

    extra = {"max_batch_size": opts.max_batch_size} if opts.max_batch_size else {}
    return get_model("vllm")(
        pretrained=str(folder),
        tokenizer=str(tokenizer_path or folder),
        batch_size=opts.batch_size,
        seed=opts.seed,
        **extra,
    )


# Built tasks (data loaded, settings applied) kept for the next evaluation with the same manager and
# settings: a search evaluates the same tasks in every trial. Each value holds its manager, so the
# manager's id in the key cannot be reused while the entry lives.
_TASKS: OrderedDict[tuple, tuple[Any, dict[str, Any]]] = OrderedDict()
_TASKS_KEPT = 4


def _load_tasks(tm, names: Sequence[str], opts: EvalOptions) -> dict[str, Any]:
    """TaskManager.load plus the per-task settings simple_evaluate applies (generation kwargs,
    few-shot count unless the task pins 0), reused while the settings are the same; the few-shot
    sampler is re-seeded on every call, so each evaluation draws as a freshly loaded task would."""
    import lm_eval.api.task  # noqa: F401  (its logger must exist before quiet_lm_eval)

    quiet_lm_eval()
    key = (id(tm), tuple(names), json.dumps(opts.gen_kwargs, sort_keys=True, default=str), opts.num_fewshot)
    if key in _TASKS:
        _TASKS.move_to_end(key)
        loaded = _TASKS[key][1]
    else:
        loaded = tm.load(list(names))
        for task in loaded["tasks"].values():
            if opts.gen_kwargs and task.get_config("output_type") == "generate_until":
                task.set_config(key="generation_kwargs", value=dict(opts.gen_kwargs), update=True)
            if opts.num_fewshot is not None:
                if task.get_config("num_fewshot") != 0:
                    task.set_config(key="num_fewshot", value=opts.num_fewshot)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
        _TASKS[key] = (tm, loaded)
        while len(_TASKS) > _TASKS_KEPT:
            _TASKS.popitem(last=False)
    for task in loaded["tasks"].values():
        task.set_fewshot_seed(seed=opts.seed)
    return loaded


def _seed(seed: int) -> None:
    import numpy as np
    from lm_eval.utils import set_torch_seed

    random.seed(seed)
    np.random.seed(seed)
    set_torch_seed(seed)


def _run(lm, loaded, opts: EvalOptions, names: Sequence[str], *, limit=None, samples=None, log_samples=False):
    import lm_eval

    _seed(opts.seed)
    try:
        out = lm_eval.evaluate(
            lm=lm,
            task_dict=loaded,
            limit=limit,
            samples=samples,
            bootstrap_iters=opts.bootstrap_iters,
            log_samples=log_samples,
            system_instruction=opts.system_instruction,
            apply_chat_template=opts.apply_chat_template,
            fewshot_as_multiturn=opts.fewshot_as_multiturn,
            verbosity="WARNING",
        )
    except FileNotFoundError as e:  # data vanished between the check and the run
        raise EvaluationError(f"data file missing: {e}", where=", ".join(names)) from None
    except ValueError as e:  # lm-eval's own checks (chat template missing, unsafe code, ...)
        text = str(e).splitlines()[0]
        fix = (
            "use a tokenizer with a chat template, or apply_chat_template: false" if "chat" in text else None
        )
        raise EvaluationError(f"lm-eval refused the run: {text}", where=", ".join(names), fix=fix) from None
    if out is None:
        raise EvaluationError("lm-eval returned no results", where=", ".join(names))
    return out


def pick_metric(task_results: Mapping[str, Any], spec: TaskSpec) -> tuple[float | None, float | None]:
    """(value, stderr) of ``spec``'s metric in one task's lm-eval results (keys 'metric,filter').
    Without a chosen filter the metric must have exactly one; several raise an error naming them."""
    hits = {
        k.split(",", 1)[1] if "," in k else "none": v
        for k, v in task_results.items()
        if k.split(",", 1)[0] == spec.metric
    }
    if not hits:
        return None, None
    if spec.filter is None and len(hits) > 1:
        raise EvaluationError(
            f"task {spec.task} reports {spec.metric} under filters {', '.join(sorted(hits))}",
            fix=f"choose one: metric: {spec.metric},{sorted(hits)[0]}",
        )
    filt = spec.filter or next(iter(hits))
    if filt not in hits:
        raise EvaluationError(
            f"task {spec.task} has no filter {filt!r} for {spec.metric}",
            fix=f"its filters: {', '.join(sorted(hits))}",
        )
    err = task_results.get(f"{spec.metric}_stderr,{filt}")
    try:
        value = float(hits[filt])
    except (TypeError, ValueError):
        return None, None
    try:
        stderr = float(err) if err is not None else None
    except (TypeError, ValueError):  # lm-eval writes "N/A" when it cannot bootstrap
        stderr = None
    return value, stderr


def _reported(task_results: Mapping[str, Any]) -> list[str]:
    names = []
    for k in task_results:
        m = k.split(",", 1)[0]
        if k != "alias" and not m.endswith("_stderr") and m not in names and k != "name":
            names.append(m)
    return names


@lru_cache(maxsize=1)
def environment_info() -> dict[str, Any]:
    """lm-eval's environment fields (pretty_env_info, versions, ...), collected once per process:
    torch's collect_env spawns subprocesses and costs about a second."""
    from lm_eval.loggers.utils import add_env_info

    # lm-eval's git_hash describes the working directory's repository (and prints git's "fatal" outside
    # one); it says nothing about a merged model, so it is left empty.
    info: dict[str, Any] = {"git_hash": None}
    add_env_info(info)
    return info


def _model_config(lm, opts: EvalOptions, model, device: str) -> dict[str, Any]:
    """The results dict's `config` section, as simple_evaluate fills it."""
    if isinstance(model, (str, os.PathLike)):
        name = str(model)
    else:
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    config: dict[str, Any] = {"model": name, "model_args": None}
    if hasattr(lm, "get_model_info"):
        config.update(lm.get_model_info())
    config.update(
        {
            "batch_size": opts.batch_size,
            "batch_sizes": list(lm.batch_sizes.values()) if hasattr(lm, "batch_sizes") else [],
            "device": device,
            "use_cache": None,
            "limit": opts.limit,
            "bootstrap_iters": opts.bootstrap_iters,
            "gen_kwargs": dict(opts.gen_kwargs) if opts.gen_kwargs else None,
            "random_seed": opts.seed,
            "numpy_seed": opts.seed,
            "torch_seed": opts.seed,
            "fewshot_seed": opts.seed,
        }
    )
    return config


# Marks keyword arguments the caller did not pass (None is a meaningful limit).
_UNSET: Any = object()


def _options(opts: EvalOptions | None, **legacy: Any) -> EvalOptions:
    """`options`, with the keyword arguments a caller actually passed laid over it."""
    given = {k: v for k, v in legacy.items() if v is not _UNSET}
    if opts is None:
        return EvalOptions(**given)
    if given:
        return replace(opts, **given)
    return opts


# --------------------------------------------------------------------------------------- evaluate
def evaluate(
    model_or_path: Any,
    tokenizer_path: str | os.PathLike | None,
    tasks: Sequence[TaskSpec | Mapping[str, Any] | str],
    include_path: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    limit: int | float | None = _UNSET,
    num_fewshot: int | None = _UNSET,
    batch_size: int | str = _UNSET,
    device: str = "cpu",
    seed: int = _UNSET,
    *,
    log_samples: bool = _UNSET,
    show_progress: bool = _UNSET,
    options: EvalOptions | None = None,
    with_environment: bool = False,
    trust_remote_code: bool = _UNSET,
) -> EvalResult:
    """Run lm-eval ``tasks`` on a model instance (e.g. from ``build_model``) or a model folder.

    Settings come from ``options`` (an EvalOptions); the keyword arguments of the same names override
    it. ``limit`` takes the FIRST ``limit`` documents of each task (so smaller budgets are prefixes of
    larger ones). Task names, data files, metrics and filters are checked before the model runs;
    problems raise a one-line EvaluationError. Deterministic for a fixed seed. ``with_environment``
    adds lm-eval's environment fields (collected once per process) to ``raw``.
    """
    opts = _options(
        options,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        seed=seed,
        log_samples=log_samples,
        show_progress=show_progress,
        trust_remote_code=trust_remote_code,
    )
    specs = [TaskSpec.coerce(t) for t in tasks]
    if not specs:
        raise EvaluationError("no tasks to evaluate", fix="list at least one task")
    with _quiet(opts.show_progress), _torch_threads(opts.threads):
        tm = resolve_tasks(specs, include_path)
        if opts.backend == "vllm":
            model, lm = model_or_path, _vllm_lm(model_or_path, tokenizer_path, opts)
        else:
            model, tok = _model(model_or_path, tokenizer_path, device, opts.trust_remote_code)
            lm = _lm(model, tok, opts, device)
        names = list(dict.fromkeys(s.task for s in specs))
        loaded = _load_tasks(tm, names, opts)
        out = _run(lm, loaded, opts, names, limit=opts.limit, log_samples=opts.log_samples)
        raw: dict[str, Any] = dict(out)
        raw["config"] = _model_config(lm, opts, model, device)
        if with_environment:
            from lm_eval.loggers.utils import add_tokenizer_info

            raw.update(environment_info())
            add_tokenizer_info(raw, lm)

    results: dict[str, Any] = raw.get("results", {})
    scores: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for s in specs:
        task_res = results.get(s.task)
        if task_res is None:
            raise EvaluationError(
                f"lm-eval gave no results for task {s.task}",
                fix="a tag has no aggregate score: list its tasks instead",
            )
        value, err = pick_metric(task_res, s)
        if value is None:
            raise EvaluationError(
                f"task {s.task} did not report metric {s.metric!r}",
                fix=f"it reports: {', '.join(_reported(task_res))}",
            )
        scores[s.task] = value
        if err is not None:
            stderr[s.task] = err
    return EvalResult(scores=scores, raw=raw, stderr=stderr)


# ---------------------------------------------------------------------------------- per example
def per_example_ok(opts: EvalOptions, is_group: bool) -> bool:
    """Whether a score can be assembled from separately evaluated examples and equal a whole run.

    Few-shot contexts are drawn from one sampler per task in document order, so with few-shot
    examples a document's prompt depends on which documents came before it; groups aggregate over
    members; bootstrap stderr needs a whole run.
    """
    return not is_group and not opts.num_fewshot and opts.bootstrap_iters == 0


def task_sizes(names: Sequence[str], include_path: Any, options: EvalOptions) -> dict[str, int]:
    """Documents in each task's evaluation split (what `limit` takes its first N from)."""
    with _quiet(options.show_progress):
        tm = task_manager(include_path, list(names))
        loaded = _load_tasks(tm, list(dict.fromkeys(names)), options)
    # A group has no split of its own; callers fall back to the limit for it.
    return {n: len(loaded["tasks"][n].eval_docs) for n in names if n in loaded["tasks"]}


def example_count(n_docs: int, limit: int | float | None) -> int:
    """How many leading documents lm-eval takes for ``limit`` (its get_sample_size rule)."""
    if limit is None:
        return n_docs
    return min(n_docs, int(math.ceil(n_docs * limit)) if limit < 1 else int(limit))


def _plain(value: Any) -> Any:
    """A per-example metric value as JSON-safe Python (numpy scalars and tuples unwrapped)."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class ExampleScores:
    """score_examples' answer: scores, the number of examples each covers, and the per-example
    metric values it computed now (task -> {doc_id: value}) for the caller to keep."""

    scores: dict[str, float]
    counts: dict[str, int]
    new_items: dict[str, dict[int, Any]]


def score_examples(
    model_or_path: Any,
    tokenizer_path: str | os.PathLike | None,
    specs: Sequence[TaskSpec],
    include_path: Any,
    known: Mapping[str, Mapping[int, Any]],
    options: EvalOptions,
    device: str = "cpu",
) -> ExampleScores:
    """Scores over the first ``options.limit`` examples of each task, from per-example metric values.

    ``known[task]`` holds values already computed (doc id -> value of the spec's metric and filter);
    only the others are evaluated, with lm-eval's ``samples`` selection. The score is the task's own
    aggregation over the values in document order, so it equals a whole run's. Callers must check
    ``per_example_ok`` first.
    """
    opts = options
    with _quiet(opts.show_progress), _torch_threads(opts.threads):
        tm = resolve_tasks(list(specs), include_path)
        names = list(dict.fromkeys(s.task for s in specs))
        loaded = _load_tasks(tm, names, opts)
        tasks = loaded["tasks"]
        counts = {n: example_count(len(tasks[n].eval_docs), opts.limit) for n in names}
        need = {n: [i for i in range(counts[n]) if i not in known.get(n, {})] for n in names}
        new_items: dict[str, dict[int, Any]] = {n: {} for n in names}
        todo = [n for n in names if need[n]]
        if todo:
            model, tok = _model(model_or_path, tokenizer_path, device, opts.trust_remote_code)
            lm = _lm(model, tok, opts, device)
            subset = {"tasks": {n: tasks[n] for n in todo}, "groups": {}, "group_map": {}}
            out = _run(lm, subset, opts, todo, samples={n: need[n] for n in todo}, log_samples=True)
            for s in specs:
                if s.task not in todo:
                    continue
                rows = out.get("samples", {}).get(s.task, [])
                filters = sorted({r["filter"] for r in rows})
                filt = s.filter or (filters[0] if len(filters) == 1 else None)
                if filt is None:
                    raise EvaluationError(
                        f"task {s.task} reports {s.metric} under filters {', '.join(filters)}",
                        fix=f"choose one: metric: {s.metric},{filters[0]}",
                    )
                for r in rows:
                    if r["filter"] == filt and s.metric in r:
                        new_items[s.task][int(r["doc_id"])] = _plain(r[s.metric])

    scores: dict[str, float] = {}
    for s in specs:
        have = {**known.get(s.task, {}), **new_items[s.task]}
        missing = [i for i in range(counts[s.task]) if i not in have]
        if missing:
            raise EvaluationError(
                f"lm-eval gave no {s.metric} for {len(missing)} examples of {s.task}",
                fix="check the task's metric_list and filter_list",
            )
        aggregate = tasks[s.task].aggregation().get(s.metric)
        if aggregate is None:
            raise EvaluationError(f"task {s.task} has no aggregation for {s.metric}")
        scores[s.task] = float(aggregate([have[i] for i in range(counts[s.task])]))
    return ExampleScores(scores=scores, counts=counts, new_items=new_items)
