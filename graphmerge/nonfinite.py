"""NaN/Inf detection cheap enough to run on every source tensor and every merge output.

A sum propagates any NaN or Inf, and is one fast reduction with no tensor-sized temporary (an
elementwise `isfinite` costs ~30x more); only a non-finite sum (or an overflowing one, which is
told apart by the exact count) pays for the elementwise pass.
"""

from __future__ import annotations

import sys

from graphmerge.lazy import torch

__all__ = ["all_finite", "describe_nonfinite", "warn_once"]

_WARNED: set[str] = set()


def all_finite(t: torch.Tensor) -> bool:
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def describe_nonfinite(t: torch.Tensor) -> str:
    """E.g. "3 NaN and 1 Inf of 1024 values" (for messages; the slow exact count)."""
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} Inf"] * bool(inf)
    return f"{' and '.join(parts)} of {t.numel()} values"


def warn_once(message: str) -> None:
    """Print a `warning:` line to stderr, once per process for the same message."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr)
