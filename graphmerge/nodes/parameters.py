"""Per-tensor parameter values: scalars, gradients over depth, and name filters.

A parameter value in a graph is one of
  0.5                                   the same everywhere
  [0.0, 1.0]                            a gradient: piecewise-linear over the layers (first layer
                                        takes the first value, last layer the last); embeddings
                                        sit at position 0, the final norm and head at position 1
  [{filter: "*self_attn*", value: 0.3}, {value: 0.5}]
                                        the first entry whose filter matches the tensor name wins;
                                        an entry without a filter is the default. A filter is a
                                        glob when it has * ? or [, a regex when written /like this/,
                                        otherwise a substring (as in mergekit).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from graphmerge.errors import MergeError
from graphmerge.gradients import interpolate, is_gradient

ParamValue = Any


@lru_cache(maxsize=4096)
def _matcher(pattern: str):
    if len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/"):
        rx = re.compile(pattern[1:-1])
        return lambda name: rx.search(name) is not None
    if any(c in pattern for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name, pattern)
    return lambda name: pattern in name


def filter_matches(pattern: str, name: str) -> bool:
    return _matcher(pattern)(name)


def resolve_value(value: ParamValue, name: str, position: float, where: str) -> Any:
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            for entry in value:
                pattern = entry.get("filter")
                if pattern is None or filter_matches(str(pattern), name):
                    if "value" not in entry:
                        raise MergeError(
                            "filter entry without `value`", where=where, fix="write {filter: ..., value: ...}"
                        )
                    return resolve_value(entry["value"], name, position, where)
            return None
        if is_gradient(value):
            return interpolate([float(v) for v in value], position)
        raise MergeError(
            f"parameter list {value!r} is neither a gradient of numbers nor a list of {{filter, value}}",
            where=where,
        )
    return value


def resolve_params(
    values: Mapping[str, ParamValue], name: str, position: float, where: str
) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        resolved = resolve_value(value, name, position, f"{where}.{key}")
        if resolved is not None:
            out[key] = resolved
    return out


def depth_position(layer: int | None, num_layers: int, role: str, head_position: float = 1.0) -> float:
    """Where a tensor sits on the 0..1 depth axis used by gradients."""
    if layer is not None:
        return layer / (num_layers - 1) if num_layers > 1 else 0.0
    return 0.0 if role == "embed" else head_position
