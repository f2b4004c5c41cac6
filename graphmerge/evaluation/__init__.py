"""lm-eval glue: HF models from in-memory tensors, task lookup and validation, scores."""

from graphmerge.evaluation.model import build_model, drop_resident_model, resident_model
from graphmerge.evaluation.runner import (
    EvalOptions,
    EvalResult,
    ExampleScores,
    environment_info,
    evaluate,
    load_tokenizer,
    per_example_ok,
    score_examples,
)
from graphmerge.evaluation.tasks import (
    TaskSpec,
    task_config_hash,
    task_data_files,
    task_filters,
    task_manager,
    task_metrics,
)

__all__ = [
    "EvalOptions",
    "EvalResult",
    "ExampleScores",
    "TaskSpec",
    "build_model",
    "drop_resident_model",
    "environment_info",
    "evaluate",
    "load_tokenizer",
    "per_example_ok",
    "resident_model",
    "score_examples",
    "task_config_hash",
    "task_data_files",
    "task_filters",
    "task_manager",
    "task_metrics",
]
