"""Gradients over depth in a graph's parameter values: a list of numbers is piecewise-linear over the
0..1 depth axis (first layer: the first value, last layer: the last). Below the graph files, so that
the merge and slice nodes and the mergekit converter read a gradient the same way."""

from __future__ import annotations

from typing import Any


def is_gradient(value: Any) -> bool:
    """A non-empty list of numbers (booleans are not numbers here)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def interpolate(points: list[float], position: float) -> float:
    if len(points) == 1:
        return float(points[0])
    x = min(max(position, 0.0), 1.0) * (len(points) - 1)
    lo = int(x)
    if lo >= len(points) - 1:
        return float(points[-1])
    frac = x - lo
    return float(points[lo]) * (1 - frac) + float(points[lo + 1]) * frac


def at_position(value: Any, position: float) -> Any:
    """`value` with every gradient replaced by its value at `position`; filters are kept. Used
    where the position comes from elsewhere than the tensor's own layer (mergekit slices)."""
    if isinstance(value, list) and value:
        if all(isinstance(v, dict) for v in value):
            return [{**e, "value": at_position(e["value"], position)} if "value" in e else e for e in value]
        if is_gradient(value):
            return interpolate([float(v) for v in value], position)
    return value
