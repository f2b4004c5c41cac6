"""Registry of node types, filled by the `graphmerge.node` decorator (graphmerge/registration.py).

Built-ins and plugins both come from the `graphmerge.nodes` entry-point group (built-ins: the
`graphmerge.nodes.builtin` catalogue); plugins also from `--plugin FILE_OR_MODULE`. Tensor ops live
one layer down, in graphmerge/tensor_ops.py, and are re-exported here for plugins written against it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from graphmerge.errors import GraphmergeError
from graphmerge.registration import Registry
from graphmerge.tensor_ops import TensorFn, TensorOp, get_tensor_op, tensor_op

__all__ = [
    "NodeType",
    "TensorFn",
    "TensorOp",
    "all_node_types",
    "get_node_type",
    "get_tensor_op",
    "load_plugin",
    "node",
    "suggest_node_type",
    "tensor_op",
]


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


NODE_TYPES: Registry[NodeType] = Registry(
    "node type", group="graphmerge.nodes", builtin="graphmerge.nodes.builtin", fix="run `graphmerge nodes`"
)


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
        entry = NodeType(
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
        NODE_TYPES.add(name, entry, fn)
        return fn

    return register


def load_plugin(spec: str) -> None:
    """Import a plugin given as a path to a .py file or a module name; its decorators register."""
    NODE_TYPES.load()
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
    return NODE_TYPES.find(name)


def suggest_node_type(name: str) -> str | None:
    return NODE_TYPES.suggest(name)


def all_node_types() -> dict[str, NodeType]:
    return NODE_TYPES.all()
