"""The `merge` node: one merge method applied tensor by tensor across models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from graphmerge.errors import MergeError, ModelError
from graphmerge.hashing import digest
from graphmerge.lazy import torch
from graphmerge.methods import MergeInputs, MethodParams, get_method
from graphmerge.methods.registry import MergeMethod
from graphmerge.nodes.parameters import ParamValue, depth_position, resolve_params, resolve_value
from graphmerge.nonfinite import all_finite, describe_nonfinite
from graphmerge.params import NodeParams
from graphmerge.plan import Model, TensorTask, make_task
from graphmerge.registry import node, tensor_op

DType = Literal["float32", "bfloat16", "float16"]

# Merge task key -> the merge node that planned it, so an error raised while computing the tensor
# (non-finite output) can name the node; planning and execution share the process, as in align_rows.
MERGE_NODE_OF: dict[str, str] = {}


class MergeParams(NodeParams):
    method: str = Field(description="merge method name (graphmerge nodes lists them)")
    base: str | None = Field(None, description="base model node (task vectors are taken against it)")
    models: dict[str, dict[str, Any] | None] = Field(description="model node -> per-model parameters")
    params: dict[str, Any] = Field(default_factory=dict, description="global method parameters")
    dtype: DType | None = Field(None, description="output dtype (default: the base's or first model's)")
    seed: int | None = Field(None, description="seed for stochastic methods (default: the graph's seed)")
    allow_nonfinite: bool = Field(
        False, description="keep NaN/Inf the method produces from finite inputs (default: an error)"
    )
    head_position: float = Field(
        1.0, ge=0.0, le=1.0, description="gradient position of the final norm and LM head (mergekit: 0)"
    )
    statistics: str | None = Field(
        None, description="statistics node (kind gram for regmean, fisher for fisher) of the models"
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        try:
            get_method(value)
        except MergeError as exc:
            raise ValueError(exc.one_line()) from None
        return value

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: dict) -> dict:
        if not value:
            raise ValueError("at least one model is needed")
        return value

    @model_validator(mode="after")
    def _known_params(self) -> MergeParams:
        method = get_method(self.method)
        for ref, values in self.models.items():
            if ref == self.base:
                continue  # checked below: at most the `weight` a method's base_weight stands for
            for key in values or {}:
                if key not in method.model_params:
                    known = ", ".join(method.model_params) or "none"
                    raise ValueError(
                        f"models.{ref}: method {self.method} has no per-model parameter '{key}' (known: {known})"
                    )
        for key in self.params:
            if key not in method.global_params:
                known = ", ".join(method.global_params) or "none"
                raise ValueError(
                    f"params: method {self.method} has no global parameter '{key}' (known: {known})"
                )
        if method.statistics and self.statistics is None:
            raise ValueError(
                f"method {self.method} needs `statistics:` (a statistics node with kind: {method.statistics})"
            )
        if method.base == "required" and self.base is None:
            raise ValueError(f"method {self.method} needs a `base` model")
        if method.base == "none" and self.base is not None:
            raise ValueError(f"method {self.method} takes no `base`; list every model under `models`")
        base_entry = self.models.get(self.base) if self.base else None
        if base_entry and not (method.base_weight and set(base_entry) == {"weight"}):
            raise ValueError(
                f"models.{self.base}: the base takes no per-model parameters for {self.method} "
                "(list it under `base:` only)"
            )
        if base_entry and method.base_weight in self.params:
            raise ValueError(
                f"models.{self.base}.weight and params.{method.base_weight} both weigh the base of "
                f"{self.method}: keep one"
            )
        n = len([r for r in self.models if r != self.base])
        if n < method.min_models or (method.max_models is not None and n > method.max_models):
            most = method.max_models if method.max_models is not None else "any number of"
            raise ValueError(
                f"method {self.method} takes {method.min_models} to {most} models besides the base, got {n}"
            )
        return self

    def refs(self) -> list[str]:
        refs = [self.base] if self.base else []
        return refs + [r for r in self.models if r != self.base]

    def input_refs(self) -> list[str]:
        """The models and the statistics node: everything the node reads."""
        return self.refs() + ([self.statistics] if self.statistics else [])


@tensor_op("merge", version="1")
def merge_tensor(
    *tensors: torch.Tensor,
    method: str,
    method_version: str,
    model_params: tuple[MethodParams, ...],
    params: MethodParams,
    has_base: bool,
    seed: int,
    out_dtype: str,
    allow_nonfinite: bool = False,
    statistics: int = 0,
) -> torch.Tensor:
    m = get_method(method)
    # Inputs: [base], models, then one statistic per model when the tensor has them.
    stats = [t.to(torch.float32) for t in tensors[len(tensors) - statistics :]] if statistics else []
    as_float = [t.to(torch.float32) for t in tensors[: len(tensors) - statistics]]
    base = as_float[0] if has_base else None
    models = as_float[1:] if has_base else as_float
    generator = None
    if m.stochastic:
        generator = torch.Generator(device=models[0].device)
        generator.manual_seed(seed)
    out = m(MergeInputs(models, base, model_params, params, generator, stats))
    out = out.to(getattr(torch, out_dtype))
    # Checked after the cast: a finite float32 result can still overflow a float16 output.
    if not allow_nonfinite and not all_finite(out) and all(all_finite(t) for t in as_float):
        raise MergeError(
            f"merge method {method} produced {describe_nonfinite(out)} ({out_dtype}) from finite inputs "
            f"(parameters {params.model_dump()}, per model {[p.model_dump() for p in model_params]})",
            fix="check the method's parameters and dtype, or set `allow_nonfinite: true` on the merge node",
        )
    return out


def tensor_params(
    method: MergeMethod,
    models: Mapping[str, Mapping[str, ParamValue]],
    params: Mapping[str, ParamValue],
    *,
    tensor: str,
    position: float,
    base: Mapping[str, ParamValue] | None = None,
    where: str | None = None,
) -> tuple[tuple[MethodParams, ...], MethodParams]:
    """The one resolution of a merge's parameters for one tensor: filters and gradients picked for
    the tensor's name and depth, the base's own `weight` where the method declares one, then the
    method's declared types, defaults and ranges. `models`: per-model values by model name."""
    per_model = [
        (ref, resolve_params(values, tensor, position, f"models.{ref}")) for ref, values in models.items()
    ]
    global_values = resolve_params(params, tensor, position, "params")
    if base and method.base_weight:
        global_values[method.base_weight] = resolve_value(base["weight"], tensor, position, "base weight")
    return method.resolve(per_model, global_values, where=where)


def plan_merge(
    spec: MergeParams,
    models: Mapping[str, Model],
    *,
    graph_seed: int,
    where: str,
    names: list[str] | None = None,
) -> dict[str, TensorTask]:
    """Tasks that merge each tensor named in `names` (default: all of the reference model's)."""
    method: MergeMethod = get_method(spec.method)
    base_ref = spec.base
    model_refs = [r for r in spec.models if r != base_ref]
    reference = models[base_ref] if base_ref else models[model_refs[0]]
    layout = reference.layout
    seed = spec.seed if spec.seed is not None else graph_seed
    stats = []
    if spec.statistics is not None and method.statistics:  # others ignore it (one search template)
        stats = _statistics_of(spec, models, model_refs, method, where)
    out: dict[str, TensorTask] = {}
    for name in names if names is not None else list(reference.tensors):
        where_t = f"{where}: tensor {name}"
        inputs: list[TensorTask] = []
        for ref in ([base_ref] if base_ref else []) + model_refs:
            task = models[ref].tensors.get(name)
            if task is None:
                raise ModelError(
                    f"tensor {name} is missing from model '{ref}'",
                    where=where,
                    fix="merge models of the same architecture, or align their tokenizers first",
                )
            inputs.append(task)
        shapes = {ref: t.shape for ref, t in zip(([base_ref] if base_ref else []) + model_refs, inputs)}
        if len({s for s in shapes.values() if s is not None}) > 1:
            listed = ", ".join(f"{r}: {list(s) if s else '?'}" for r, s in shapes.items())
            raise ModelError(
                f"tensor {name} has different shapes across models ({listed})",
                where=where,
                fix="use align_tokenizer for vocabulary differences; other shapes cannot be merged",
            )
        layer = layout.layer_of(name)
        position = depth_position(
            layer,
            layout.num_layers,
            "embed" if layout.role(name) == "embedding" else "other",
            spec.head_position,
        )
        per_model, global_params = tensor_params(
            method,
            {ref: spec.models[ref] or {} for ref in model_refs},
            spec.params,
            tensor=name,
            position=position,
            base=spec.models.get(base_ref) if base_ref else None,
            where=where_t,
        )
        dtype = spec.dtype or inputs[0].dtype or "float32"
        # A tensor gets statistics only when every model has one (RegMean: linear weights only).
        tensor_stats = [s.get(name) for s in stats]
        with_stats = {"statistics": len(stats)} if stats and all(tensor_stats) else {}
        out[name] = make_task(
            "merge",
            inputs + (tensor_stats if with_stats else []),
            shape=inputs[0].shape,
            dtype=dtype,
            method=method.name,
            method_version=method.version,
            model_params=per_model,
            params=global_params,
            has_base=base_ref is not None,
            seed=int(digest(seed, name)[:8], 16) if method.stochastic else 0,
            out_dtype=dtype,
            # Only when set, so the default leaves every existing cache key unchanged.
            **({"allow_nonfinite": True} if spec.allow_nonfinite else {}),
            **with_stats,
        )
    return out


def _statistics_of(
    spec: MergeParams, values: Mapping[str, Any], model_refs: list[str], method: MergeMethod, where: str
) -> list[Mapping[str, TensorTask]]:
    """Per model (in `models` order), its statistics by tensor name."""
    from graphmerge.nodes.statistics import Statistics

    value = values[spec.statistics]  # type: ignore[index]
    if not isinstance(value, Statistics):
        raise MergeError(
            f"`statistics: {spec.statistics}` is not a statistics node", where=where, fix="use op: statistics"
        )
    if value.kind != method.statistics:
        raise MergeError(
            f"{method.name} needs statistics of kind {method.statistics}, node '{spec.statistics}' "
            f"computes {value.kind}",
            where=where,
            fix=f"set kind: {method.statistics} on the statistics node",
        )
    return [value.for_model(values[ref], ref, where) for ref in model_refs]


def describe(spec: MergeParams) -> str:
    return f"{spec.method}({', '.join(spec.refs())})"


@node("merge", version="1", params=MergeParams, inputs=lambda p: p.input_refs())
def merge_node(ctx, params: MergeParams, inputs: Mapping[str, Model]) -> Model:
    """Merge models tensor by tensor with a registered merge method."""
    tasks = plan_merge(params, inputs, graph_seed=ctx.seed, where=f"merge {params.method}")
    MERGE_NODE_OF.update((t.local_key, ctx.node_name) for t in tasks.values())
    reference = inputs[params.refs()[0]]
    provenance = tuple(dict.fromkeys(p for ref in params.refs() for p in inputs[ref].provenance))
    return reference.with_tensors(tasks, provenance=(*provenance, describe(params)))
