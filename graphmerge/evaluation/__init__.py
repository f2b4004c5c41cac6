"""lm-eval glue: HF models from in-memory tensors, task lookup and validation, scores."""

from graphmerge.evaluation.model import build_model
from graphmerge.evaluation.runner import EvalResult, evaluate, load_tokenizer
from graphmerge.evaluation.tasks import (
    TaskSpec,
    task_config_hash,
    task_data_files,
    task_manager,
    task_metrics,
)

__all__ = [
    "EvalResult",
    "TaskSpec",
    "build_model",
    "evaluate",
    "load_tokenizer",
    "task_config_hash",
    "task_data_files",
    "task_manager",
    "task_metrics",
]
