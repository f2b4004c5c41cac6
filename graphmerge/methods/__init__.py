"""Merge methods: pure tensor functions, registered by name."""

from graphmerge.methods.registry import MergeMethod, ParamSpec, all_methods, get_method, merge_method

__all__ = ["MergeMethod", "ParamSpec", "all_methods", "get_method", "merge_method"]
