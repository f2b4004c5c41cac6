"""Small validation and parameter helpers shared by the built-in merge methods.

Every check raises MergeError with one line naming the method, so a bad graph fails before any
long computation and the user sees which parameter to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphmerge.errors import MergeError
from graphmerge.lazy import torch


def shape_str(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def check_shapes(method: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> None:
    """All inputs must have one shape: methods combine tensors element by element."""
    ref = base if base is not None else (tensors[0] if tensors else None)
    if ref is None:
        return
    ref_name = "base" if base is not None else "model 0"
    for i, t in enumerate(tensors):
        if t.shape != ref.shape:
            raise MergeError(
                f"{method}: model {i} has shape {shape_str(t)} but {ref_name} has shape {shape_str(ref)}",
                fix="align the tokenizers or slice the models so the tensors match",
            )


def require_base(method: str, base: torch.Tensor | None) -> torch.Tensor:
    if base is None:
        raise MergeError(f"{method} needs a base model", fix="set `base:` on the merge node")
    return base


def require_count(method: str, n: int, *, at_least: int = 1, at_most: int | None = None, what: str) -> None:
    if n < at_least or (at_most is not None and n > at_most):
        want = str(at_least) if at_most == at_least else f"{at_least} to {at_most if at_most else 'any'}"
        raise MergeError(f"{method} needs {want} {what}, got {n}")


def number(
    method: str,
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    who: str = "",
) -> float:
    """A float parameter, range-checked (the caller fills defaults; ranges are re-checked here because
    per-layer gradients can produce values the spec-level check never saw)."""
    if value is None:
        raise MergeError(f"{method}: parameter `{name}`{who} is required")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MergeError(f"{method}: parameter `{name}`{who} must be a number, not {value!r}") from None
    if v != v:
        raise MergeError(f"{method}: parameter `{name}`{who} is NaN")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise MergeError(f"{method}: parameter `{name}`{who} = {v:g} is outside [{lo_s}, {hi_s}]")
    return v


def choice(method: str, name: str, value: Any, options: Sequence[str]) -> str:
    v = str(value)
    if v not in options:
        raise MergeError(f"{method}: parameter `{name}` = {value!r} must be one of {', '.join(options)}")
    return v


def flag(method: str, name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise MergeError(f"{method}: parameter `{name}` must be true or false, not {value!r}")


def per_model(
    method: str,
    name: str,
    model_params: Sequence[Mapping[str, Any]],
    *,
    lo: float | None = None,
    hi: float | None = None,
) -> list[float]:
    return [
        number(method, name, p.get(name), lo=lo, hi=hi, who=f" of model {i}")
        for i, p in enumerate(model_params)
    ]


def generator_for(t: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    """Stochastic methods must be reproducible for caching: without a caller-seeded generator, use a
    fixed seed rather than the global RNG."""
    if generator is not None:
        return generator
    g = torch.Generator(device=t.device)
    g.manual_seed(0)
    return g
