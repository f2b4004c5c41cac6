"""lm-eval glue: HF models from in-memory tensors, task lookup and validation, scores.

The names below are loaded on first use (PEP 562): the model and runner modules import torch, and task
lookups (all `validate` needs) must not pay for it."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "build_model": "model",
    "drop_resident_model": "model",
    "resident_model": "model",
    "EvalOptions": "runner",
    "EvalResult": "runner",
    "ExampleScores": "runner",
    "environment_info": "runner",
    "evaluate": "runner",
    "load_tokenizer": "runner",
    "per_example_ok": "runner",
    "score_examples": "runner",
    "TaskSpec": "tasks",
    "task_config_hash": "tasks",
    "task_data_files": "tasks",
    "task_filters": "tasks",
    "task_manager": "tasks",
    "task_metrics": "tasks",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
