"""graphmerge: declarative, cached, resumable graphs for merging and searching language models."""

from graphmerge.errors import GraphmergeError
from graphmerge.methods.registry import ParamSpec, merge_method
from graphmerge.params import NodeParams
from graphmerge.plan import Model, TensorTask, make_task
from graphmerge.registry import node, tensor_op

__version__ = "0.1.0"

__all__ = [
    "GraphmergeError",
    "Model",
    "NodeParams",
    "ParamSpec",
    "TensorTask",
    "make_task",
    "merge_method",
    "node",
    "tensor_op",
]
