"""Tensor ops: the per-tensor computations a plan's tasks name, and their registry.

Below the plan layer on purpose: a `TensorTask` carries its `TensorOp`, so computing a key or
running a task never consults a registry; only `make_task("name", ...)` looks the name up, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graphmerge.registration import Registry

if TYPE_CHECKING:
    import torch

TensorFn = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class TensorOp:
    """A per-tensor computation: `fn(*input_tensors, **params) -> tensor`.

    `version` enters every cache key the op produces: bump it when the numbers change.
    `cached=False` ops (reads of source files, cheap views) are recomputed instead of stored."""

    name: str
    version: str
    fn: TensorFn = field(compare=False)
    cached: bool = True


# Ops are declared in the node modules that plan them, so they load with the node catalogue.
TENSOR_OPS: Registry[TensorOp] = Registry(
    "tensor op",
    group="graphmerge.nodes",
    builtin="graphmerge.nodes.builtin",
    fix="register it with @graphmerge.tensor_op",
)


def tensor_op(name: str, *, version: str, cached: bool = True) -> Callable[[TensorFn], TensorFn]:
    """Register `fn` as tensor op `name`; the function itself is returned unchanged."""

    def register(fn: TensorFn) -> TensorFn:
        TENSOR_OPS.add(name, TensorOp(name=name, version=version, fn=fn, cached=cached), fn)
        return fn

    return register


def get_tensor_op(name: str) -> TensorOp:
    return TENSOR_OPS.get(name)
