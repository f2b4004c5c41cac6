"""graphmerge: declarative, cached, resumable graphs for merging and searching language models.

The public names below are imported on first use (PEP 562), so `import graphmerge` and the CLI's
start-up do not pay for torch and the registries until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "GraphmergeError": "graphmerge.errors",
    "MergeInputs": "graphmerge.methods.registry",
    "MethodParams": "graphmerge.methods.params",
    "Model": "graphmerge.plan",
    "NodeParams": "graphmerge.params",
    "ParamSpec": "graphmerge.methods.params",
    "TensorTask": "graphmerge.plan",
    "make_task": "graphmerge.plan",
    "merge_method": "graphmerge.methods.registry",
    "node": "graphmerge.registry",
    "param": "graphmerge.methods.params",
    "tensor_op": "graphmerge.registry",
}

__all__ = [
    "GraphmergeError",
    "MergeInputs",
    "MethodParams",
    "Model",
    "NodeParams",
    "ParamSpec",
    "TensorTask",
    "make_task",
    "merge_method",
    "node",
    "param",
    "tensor_op",
]

if TYPE_CHECKING:
    from graphmerge.errors import GraphmergeError
    from graphmerge.methods.params import MethodParams, ParamSpec, param
    from graphmerge.methods.registry import MergeInputs, merge_method
    from graphmerge.params import NodeParams
    from graphmerge.plan import Model, TensorTask, make_task
    from graphmerge.registry import node, tensor_op


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'graphmerge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
