"""Merge methods: pure tensor functions, registered by name, with typed parameters."""

from graphmerge.methods.params import MethodParams, NoParams, ParamSpec, param
from graphmerge.methods.registry import MergeInputs, MergeMethod, all_methods, get_method, merge_method

__all__ = [
    "MergeInputs",
    "MergeMethod",
    "MethodParams",
    "NoParams",
    "ParamSpec",
    "all_methods",
    "get_method",
    "merge_method",
    "param",
]
