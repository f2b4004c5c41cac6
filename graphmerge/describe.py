"""Text for `graphmerge nodes`: every node type and merge method with its parameters."""

from __future__ import annotations

import types
import typing

from pydantic_core import PydanticUndefined

from graphmerge.methods import all_methods
from graphmerge.registry import all_node_types


def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation)


def describe_all() -> str:
    lines = ["Node types:"]
    for name, nt in all_node_types().items():
        flags = [f"v{nt.version}"]
        if nt.cached:
            flags.append("cached result")
        if nt.outputs:
            flags.append(f"outputs: {', '.join(nt.outputs)}")
        flags.extend(f"needs graphmerge[{extra}]" for extra in nt.extras)
        lines.append(f"  {name} ({'; '.join(flags)}) - {nt.doc}")
        for fname, info in nt.params_model.model_fields.items():
            default = (
                "required"
                if info.default is PydanticUndefined and info.default_factory is None
                else (f"default {info.default!r}" if info.default_factory is None else "default empty")
            )
            desc = f" - {info.description}" if info.description else ""
            lines.append(f"      {fname}: {_type_name(info.annotation)} ({default}){desc}")
    lines.append("")
    lines.append("Merge methods (op: merge, method: NAME):")
    for name, m in all_methods().items():
        base = {"required": "needs base", "optional": "base optional", "none": "no base"}[m.base]
        stats = f"; reads statistics: kind {m.statistics}" if m.statistics else ""
        lines.append(f"  {name} (v{m.version}; {base}{'; stochastic' if m.stochastic else ''}{stats}) - {m.doc}")
        if m.model_params:
            lines.append(
                "      per model: " + ", ".join(f"{k}={s.default!r}" for k, s in m.model_params.items())
            )
        if m.global_params:
            lines.append(
                "      global: " + ", ".join(f"{k}={s.default!r}" for k, s in m.global_params.items())
            )
    return "\n".join(lines)
