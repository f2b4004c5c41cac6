"""Registries of node types and tensor ops, filled by decorators.

Built-ins are registered by importing `graphmerge.nodes.builtin` (one explicit list); plugins come
from the `graphmerge.nodes` entry-point group or from `--plugin FILE_OR_MODULE`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from graphmerge.errors import GraphmergeError

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


@dataclass(frozen=True)
class NodeType:
    """A graph node type.

    `fn(ctx, params, inputs) -> value` where `params` is an instance of `params_model` and
    `inputs` maps each referenced node (by reference string) to its value. `inputs_of(params)`
    lists the references a node uses, so the graph can be ordered before anything runs.
    `cached=True`: the node's (JSON-serialisable) result is stored under
    hash(op, version, params, keys of input values); nodes that return models are cached per
    tensor instead and keep `cached=False`."""

    name: str
    version: str
    fn: Callable[..., Any] = field(compare=False)
    params_model: type[BaseModel] = field(compare=False)
    inputs_of: Callable[[Any], list[str]] = field(compare=False)
    outputs: tuple[str, ...] = ()
    cached: bool = False
    effectful: bool = False  # writes outside the cache (save) or drives other graphs (optimize)
    doc: str = ""
    # For `viz`: "cached" | "partial" | "missing" without running the node, for nodes that cache
    # their own results (evaluate); None: judged from the node's output model or result key.
    cache_state: Callable[[Any, Any, dict[str, Any]], str] | None = field(default=None, compare=False)
    # Optional extras (graphmerge/extras.py) the node needs; `validate` reports a missing one.
    extras: tuple[str, ...] = ()
    # `check(ctx, params, inputs) -> stand-in value`: what `validate` (and `run`, before computing
    # anything) runs instead of `fn` for nodes that compute, evaluate or write. Nodes without one
    # that only plan (neither cached nor effectful) run `fn` itself, which is cheap.
    check: Callable[..., Any] | None = field(default=None, compare=False)
    # `summary(node_name, value) -> fields` the node's value adds to a run's summary (--json);
    # mappings under one field are merged across nodes (every evaluate node adds to `scores`).
    summary: Callable[[str, Any], Mapping[str, Any]] | None = field(default=None, compare=False)


_NODE_TYPES: dict[str, NodeType] = {}
_TENSOR_OPS: dict[str, TensorOp] = {}
_LOADED = False


def tensor_op(name: str, *, version: str, cached: bool = True) -> Callable[[TensorFn], TensorFn]:
    def register(fn: TensorFn) -> TensorFn:
        existing = _TENSOR_OPS.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"tensor op {name!r} is registered twice")
        _TENSOR_OPS[name] = TensorOp(name=name, version=version, fn=fn, cached=cached)
        return fn

    return register


def _fields_as_inputs(field_names: Sequence[str]) -> Callable[[Any], list[str]]:
    def inputs_of(params: Any) -> list[str]:
        refs: list[str] = []
        for name in field_names:
            value = getattr(params, name)
            if value is None:
                continue
            if isinstance(value, str):
                refs.append(value)
            elif isinstance(value, dict):
                refs.extend(value)
            else:
                refs.extend(value)
        return refs

    return inputs_of


def node(
    name: str,
    *,
    version: str,
    params: type[BaseModel],
    inputs: Sequence[str] | Callable[[Any], list[str]] = (),
    outputs: Sequence[str] = (),
    cached: bool = False,
    effectful: bool = False,
    cache_state: Callable[[Any, Any, dict[str, Any]], str] | None = None,
    extras: Sequence[str] = (),
    check: Callable[..., Any] | None = None,
    summary: Callable[[str, Any], Mapping[str, Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a node type. `inputs` names the parameter fields that hold node references
    (a string, a list of strings, or a mapping whose keys are references), or is a function
    returning the references of a params instance."""
    inputs_of = inputs if callable(inputs) else _fields_as_inputs(tuple(inputs))

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        existing = _NODE_TYPES.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"node type {name!r} is registered twice")
        _NODE_TYPES[name] = NodeType(
            name=name,
            version=version,
            fn=fn,
            params_model=params,
            inputs_of=inputs_of,
            outputs=tuple(outputs),
            cached=cached,
            effectful=effectful,
            doc=(fn.__doc__ or "").strip().split("\n")[0],
            cache_state=cache_state,
            extras=tuple(extras),
            check=check,
            summary=summary,
        )
        return fn

    return register


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    importlib.import_module("graphmerge.nodes.builtin")
    for ep in entry_points(group="graphmerge.nodes"):
        ep.load()


def load_plugin(spec: str) -> None:
    """Import a plugin given as a path to a .py file or a module name; its decorators register."""
    _ensure_loaded()
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise GraphmergeError(f"plugin file {spec} does not exist", fix="pass --plugin path/to/file.py")
        module_name = f"graphmerge_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:  # already loaded in this process: its decorators have run
            return
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except GraphmergeError:
            raise
        except Exception as exc:
            raise GraphmergeError(
                f"plugin {spec} failed to import: {type(exc).__name__}: {exc}",
                fix="run with --debug for the traceback",
            ) from exc
    else:
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            raise GraphmergeError(
                f"plugin module {spec!r} not found", fix="pass a .py file path or an importable module name"
            ) from exc


def get_node_type(name: str) -> NodeType | None:
    _ensure_loaded()
    return _NODE_TYPES.get(name)


def suggest_node_type(name: str) -> str | None:
    _ensure_loaded()
    close = difflib.get_close_matches(name, _NODE_TYPES, n=1)
    return close[0] if close else None


def all_node_types() -> dict[str, NodeType]:
    _ensure_loaded()
    return dict(sorted(_NODE_TYPES.items()))


def get_tensor_op(name: str) -> TensorOp:
    _ensure_loaded()
    try:
        return _TENSOR_OPS[name]
    except KeyError:
        raise GraphmergeError(
            f"unknown tensor op {name!r}", fix="register it with @graphmerge.tensor_op"
        ) from None
