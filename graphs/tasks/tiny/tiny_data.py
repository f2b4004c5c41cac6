"""Dataset loading and prompt helpers for the bundled tiny lm-eval tasks.

lm-eval hands `dataset_kwargs` to `custom_dataset`; `data_files` there are relative to THIS folder
(datasets.load_dataset would resolve them against the working directory), so the tasks work from
any working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _resolve(files: Any) -> Any:
    if isinstance(files, str):
        p = Path(files)
        return str(p if p.is_absolute() else HERE / p)
    if isinstance(files, (list, tuple)):
        return [_resolve(f) for f in files]
    if isinstance(files, dict):
        return {k: _resolve(v) for k, v in files.items()}
    raise TypeError(f"data_files must be a path, a list or a dict, got {type(files).__name__}")


def load(data_files: Any = None, **_: Any):
    """custom_dataset: a DatasetDict of local JSONL files (extra metadata kwargs are ignored)."""
    import datasets

    if data_files is None:
        raise ValueError("tiny tasks need dataset_kwargs.data_files")
    resolved = _resolve(data_files)
    for f in (
        [resolved]
        if isinstance(resolved, str)
        else (list(resolved.values()) if isinstance(resolved, dict) else resolved)
    ):
        for path in [f] if isinstance(f, str) else f:
            if not Path(path).is_file():
                raise FileNotFoundError(f"task data file not found: {path}")
    return datasets.load_dataset("json", data_files=resolved)


def choices_with_stop(doc: dict) -> list[str]:
    """Multiple-choice continuations end with the stop character, so that a prefix of the
    answer (e.g. "4" for "47") is not a free win."""
    return [c + "." for c in doc["choices"]]
