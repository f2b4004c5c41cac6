"""What to score and how: lm-eval tasks and settings. One definition shared by the `evaluate` node and a
search's objectives and `evaluation:` settings (graphmerge/optimize), light to import (no torch, no lm-eval)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from graphmerge.errors import EvaluationError
from graphmerge.params import NodeParams


class TaskEntry(NodeParams):
    task: str = Field(description="lm-eval task name")
    metric: str | None = Field(
        None, description="metric to report, NAME or NAME,FILTER (default: the task's first metric)"
    )
    weight: float = Field(1.0, ge=0, description="weight in the combined score")


def _parse_gen_kwargs(text: str) -> dict[str, Any]:
    """lm-eval's command-line form 'temperature=0,max_gen_toks=64' as a dict (values typed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise ValueError(
                f"gen_kwargs part {part!r} is not NAME=VALUE (e.g. 'temperature=0,max_gen_toks=64')"
            )
        out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def vllm_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is None


def _checked(check, value: Any) -> Any:
    """Run an EvaluationError check inside a pydantic validator, which reports ValueErrors."""
    try:
        check(value)
    except EvaluationError as e:
        raise ValueError(e.one_line()) from None
    return value


class EvaluationOptions(NodeParams):
    """lm-eval's `simple_evaluate` settings, shared by `evaluate` nodes and a search's `evaluation:`."""

    limit: int | float | None = Field(
        None, description="the first N examples of each task, or a fraction in (0, 1) of it (None: all)"
    )
    num_fewshot: int = Field(0, ge=0)
    batch_size: int | str = Field(32, description="examples per batch, `auto` or `auto:N` (lm-eval's search)")
    max_batch_size: int | None = Field(None, ge=1, description="upper bound for batch_size: auto")
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="dtype the model runs in")
    bootstrap_iters: int = Field(0, ge=0, description="bootstrap iterations for stderr (0: no stderr)")
    apply_chat_template: bool | str = Field(False, description="true, or the name of a chat template")
    fewshot_as_multiturn: bool = Field(False, description="few-shot examples as chat turns")
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | None = Field(
        None, description="generation settings for generate_until tasks (dict or 'k=v,k=v')"
    )
    log_samples: bool = Field(False, description="keep per-example samples in the lm-eval results JSON")
    threads: int | Literal["auto"] = Field(
        "auto", description="torch CPU threads while evaluating (auto: 1 below 50M parameters)"
    )
    backend: Literal["hf", "vllm"] = Field("hf", description="hf (transformers) or vllm (the [vllm] extra)")

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: Any) -> Any:
        from graphmerge.evaluation.option_checks import check_limit

        if isinstance(value, float) and value.is_integer() and value >= 1:
            value = int(value)  # 25.0 and 25 are one setting (and one cache key)
        return _checked(check_limit, value)

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        from graphmerge.evaluation.option_checks import check_batch_size

        return _checked(check_batch_size, value)

    @field_validator("gen_kwargs", mode="before")
    @classmethod
    def _gen_kwargs(cls, value: Any) -> Any:
        return _parse_gen_kwargs(value) if isinstance(value, str) else value

    @field_validator("threads")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("threads must be >= 1 or 'auto'")
        return value

    @field_validator("fewshot_as_multiturn")
    @classmethod
    def _multiturn(cls, value: bool, info) -> bool:
        if value and not info.data.get("apply_chat_template"):
            raise ValueError("fewshot_as_multiturn needs apply_chat_template: true")
        return value

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value == "vllm" and vllm_missing():
            raise ValueError(
                "backend vllm needs vLLM, which is not installed: pip install 'graphmerge[vllm]' "
                "(a CUDA machine), or use backend: hf"
            )
        return value

    def key_options(self) -> dict[str, Any]:
        """Settings beyond (limit, num_fewshot, seed, dtype) that change scores, when not default
        (so keys made before they existed stay valid)."""
        defaults = {
            "backend": "hf",
            "bootstrap_iters": 0,
            "apply_chat_template": False,
            "fewshot_as_multiturn": False,
            "system_instruction": None,
            "gen_kwargs": None,
        }
        return {k: getattr(self, k) for k, d in defaults.items() if getattr(self, k) != d}

    def torch_threads(self, config: Mapping[str, Any]) -> int:
        """Threads for evaluating a model of this config. Small models lose to thread overhead (a
        tiny-model search ran 3x slower with default threads than with one); big ones use the cores."""
        if self.threads != "auto":
            return int(self.threads)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        params = approx_parameters(config)
        if params < 50e6:
            return 1
        return min(cores, 4) if params < 1e9 else cores

    def eval_options(self, *, threads: int | None = None):
        """These settings as the evaluation layer's EvalOptions (threads resolved by the caller)."""
        from graphmerge.evaluation.runner import EvalOptions

        return EvalOptions(
            backend=self.backend,
            limit=self.limit,
            num_fewshot=self.num_fewshot,
            batch_size=self.batch_size,
            max_batch_size=self.max_batch_size,
            seed=self.seed,
            bootstrap_iters=self.bootstrap_iters,
            apply_chat_template=self.apply_chat_template,
            fewshot_as_multiturn=self.fewshot_as_multiturn,
            system_instruction=self.system_instruction,
            gen_kwargs=self.gen_kwargs,
            log_samples=self.log_samples,
            threads=threads,
        )


def approx_parameters(config: Mapping[str, Any]) -> float:
    """Parameter count of a decoder from its config (embeddings + 12·h² per layer), for choosing threads."""
    h = float(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0)
    layers = float(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    vocab = float(config.get("vocab_size") or 0)
    inter = float(config.get("intermediate_size") or 4 * h)
    return layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h


class EvaluationRequest(EvaluationOptions):
    """Tasks and settings: everything an evaluation of one model needs besides the model."""

    tasks: list[TaskEntry] = Field(min_length=1, description="tasks and the metric to report for each")
    include_path: list[Path] = Field(
        default_factory=list, description="folders of task YAMLs (relative to the graph)"
    )

    @field_validator("tasks", mode="before")
    @classmethod
    def _strings_are_tasks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"task": v} if isinstance(v, str) else v for v in value]
        return value

    @classmethod
    def of(
        cls, options: EvaluationOptions, tasks: list[TaskEntry], include_path: list[Path], **changes: Any
    ) -> EvaluationRequest:
        """`options` (any EvaluationOptions subclass: only its lm-eval settings are taken) for `tasks`."""
        settings = options.model_dump(include=set(EvaluationOptions.model_fields))
        return cls.model_validate({**settings, **changes, "tasks": tasks, "include_path": list(include_path)})
