"""Checks of lm-eval options that `validate` runs: plain Python, so that checking a graph imports
neither torch nor lm-eval (the runner imports both)."""

from __future__ import annotations

from typing import Any

from graphmerge.errors import EvaluationError


def check_limit(limit: Any) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise EvaluationError(f"limit must be a number, got {limit!r}")
    if isinstance(limit, float) and not limit.is_integer() and not 0 < limit < 1:
        raise EvaluationError(
            f"limit {limit} is neither a count nor a fraction",
            fix="give a whole number of examples, or a fraction between 0 and 1",
        )
    if limit <= 0:
        raise EvaluationError(f"limit must be positive, got {limit!r}")


def check_batch_size(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    if isinstance(value, str) and (value == "auto" or (value.startswith("auto:") and value[5:].isdigit())):
        return
    raise EvaluationError(
        f"batch_size {value!r} is not a positive number, 'auto' or 'auto:N'",
        fix="e.g. batch_size: 32 or batch_size: auto",
    )
