"""Small checks shared by the built-in merge methods (parameters are checked where they are
resolved, graphmerge.methods.params).

Every check raises MergeError with one line naming the method, so a bad graph fails before any
long computation and the user sees what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def generator_for(t: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    """Stochastic methods must be reproducible for caching: without a caller-seeded generator, use a
    fixed seed rather than the global RNG."""
    if generator is not None:
        return generator
    g = torch.Generator(device=t.device)
    g.manual_seed(0)
    return g
