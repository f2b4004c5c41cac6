"""custom_dataset for the tiny-deep lm-eval tasks: the tiny tasks' loader (../tiny/tiny_data.py), with
`data_files` relative to THIS folder, so the tasks work from any working directory."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tiny_data", HERE.parent / "tiny" / "tiny_data.py")
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


def load(data_files: Any = None, **kwargs: Any):
    if isinstance(data_files, dict):
        data_files = {k: str(HERE / v) for k, v in data_files.items()}
    return _tiny.load(data_files=data_files, **kwargs)
