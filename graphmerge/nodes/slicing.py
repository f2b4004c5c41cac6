"""`slice` and `prune`: new layer stacks from layer ranges of one or more models.

Only renaming happens here: a copied layer's tensors are the very same tasks as in the source
(no tensor is recomputed or stored twice); merged slices and scaled layers add tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from graphmerge.errors import ModelError
from graphmerge.gradients import at_position
from graphmerge.io.layout import _PER_LAYER_LIST_KEYS, config_with_layers, scale_branch_output
from graphmerge.lazy import torch
from graphmerge.nodes.merge import MergeParams, describe, plan_merge
from graphmerge.params import NodeParams
from graphmerge.plan import Model, TensorTask, make_task
from graphmerge.registry import node, tensor_op


@tensor_op("fold_scale", version="1")
def fold_scale(x: torch.Tensor, *, scale: float, offset: float) -> torch.Tensor:
    # See graphmerge.io.layout.fold_layer_scale for what a layer scale means and why this is exact.
    return scale_branch_output(x, scale, offset)


class SliceEntry(NodeParams):
    model: str | None = Field(None, description="copy layers from this model")
    merge: MergeParams | None = Field(None, description="or merge these layers of several models")
    layers: tuple[int, int] = Field(description="[start, end): source layer range, end exclusive")
    scale: float = Field(
        1.0, description="multiplies each layer's residual-branch outputs (folded into weights)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> SliceEntry:
        if (self.model is None) == (self.merge is None):
            raise ValueError("a slice takes exactly one of `model` or `merge`")
        if self.layers[0] >= self.layers[1] or self.layers[0] < 0:
            raise ValueError(
                f"layers {list(self.layers)} is empty or negative (write [start, end) with start < end)"
            )
        return self

    def refs(self) -> list[str]:
        return [self.model] if self.model else self.merge.refs()  # type: ignore[union-attr]


class SliceParams(NodeParams):
    slices: list[SliceEntry] = Field(min_length=1, description="output layers, in order")
    embed_from: str | None = Field(
        None, description="model giving embeddings, final norm and head (default: the first slice's model)"
    )
    head_from: str | None = Field(
        None,
        description="model giving the final norm and LM head (default: embed_from's); "
        "`last` = the last slice's model, as mergekit",
    )
    gradients: Literal["model", "slice"] = Field(
        "model",
        description="gradient positions in merged slices: over the source model's depth, or over "
        "each slice's own layers (mergekit)",
    )

    def refs(self) -> list[str]:
        refs = [self.embed_from] if self.embed_from else []
        if self.head_from not in (None, "last"):
            refs.append(self.head_from)
        for s in self.slices:
            refs += s.refs()
        return list(dict.fromkeys(refs))

    def input_refs(self) -> list[str]:
        """Models plus the statistics nodes merged slices read."""
        stats = [s.merge.statistics for s in self.slices if s.merge and s.merge.statistics]
        return list(dict.fromkeys(self.refs() + stats))


def _scaled(task: TensorTask, name: str, model: Model, scale: float) -> TensorTask:
    layout = model.layout
    if scale == 1.0 or not layout.is_residual_output(name):
        return task
    offset = layout.norm_offset if layout.post_branch_norms else 0.0
    return make_task(
        "fold_scale", [task], shape=task.shape, dtype=task.dtype, scale=float(scale), offset=float(offset)
    )


def stack_layers(
    reference: Model,
    layers: list[tuple[Model, int, Mapping[str, TensorTask]]],
    provenance: str,
    history: tuple[str, ...] | None = None,
) -> Model:
    """A model with `reference`'s non-layer tensors and the given layers, in order. Each layer is
    (source model, source layer index, source tensor name -> task). `history` is the provenance of
    everything the result came from (default: the reference's)."""
    ref_layout = reference.layout
    if not layers:
        raise ModelError("the result would have no layers", fix="keep at least one layer")
    out: dict[str, TensorTask] = {}
    placed = False
    for name, task in reference.tensors.items():
        if ref_layout.layer_of(name) is None:
            out[name] = task
            continue
        if placed:
            continue
        placed = True
        for new_index, (source, _src_index, tensors) in enumerate(layers):
            src_layout = source.layout
            for src_name, src_task in tensors.items():
                new_name = f"{ref_layout.layer_prefix}{new_index}.{src_layout.layer_suffix(src_name)}"
                if new_name in out:
                    raise ModelError(f"tensor {new_name} would be written twice")
                out[new_name] = src_task
    # Per-layer config lists (Gemma2/Qwen2 `layer_types`) follow each layer from its own source model:
    # indexing the reference's list with another model's layer index would be wrong or out of range.
    # Where a source lacks the list, config_with_layers continues the reference's pattern periodically.
    config = config_with_layers(dict(reference.config), len(layers))
    for key in _PER_LAYER_LIST_KEYS:
        if isinstance(config.get(key), list):
            entries = []
            for src, i, _ in layers:
                v = src.config.get(key)
                if not (isinstance(v, (list, tuple)) and len(v) == src.layout.num_layers):
                    break
                entries.append(v[i])
            else:
                config[key] = entries
    return Model(
        config=config,
        tensors=out,
        tokenizer_dir=reference.tokenizer_dir,
        tokenizer_key=reference.tokenizer_key,
        provenance=(*(reference.provenance if history is None else history), provenance),
        code_dir=reference.code_dir,
    )


def _with_head(model: Model, head: Model) -> Model:
    """`model` with the final norm and LM head tensors of `head` (mergekit's slice stacks)."""
    layout = model.layout
    tensors = dict(model.tensors)
    for name in model.tensors:
        if layout.layer_of(name) is None and layout.role(name) in ("final_norm", "lm_head"):
            if name not in head.tensors:
                raise ModelError(f"tensor {name} is missing from the model giving the head")
            tensors[name] = head.tensors[name]
    return model.with_tensors(tensors)


def _spec_at(spec: MergeParams, position: float) -> MergeParams:
    models = {
        ref: {k: at_position(v, position) for k, v in (vals or {}).items()}
        for ref, vals in spec.models.items()
    }
    params = {k: at_position(v, position) for k, v in spec.params.items()}
    return spec.model_copy(update={"models": models, "params": params})


def _check_scale(model: Model, ref: str, layer: int, scale: float) -> None:
    if scale != 1.0 and not model.layout.residual_output_projections(layer):
        # Silently ignoring the scale would produce a model that differs from what was asked for.
        raise ModelError(
            f"cannot apply scale {scale:g} to layer {layer} of model '{ref}': no residual-branch output "
            f"projection recognised (model_type {model.layout.architecture})",
            fix="use scale 1.0 for this architecture",
        )


def _check_range(model: Model, ref: str, layers: tuple[int, int]) -> None:
    n = model.layout.num_layers
    if layers[1] > n:
        raise ModelError(
            f"layer range [{layers[0]}, {layers[1]}) is out of bounds for model '{ref}' with {n} layers",
            fix=f"use layers within [0, {n})",
        )


@node("slice", version="1", params=SliceParams, inputs=lambda p: p.input_refs())
def slice_node(ctx, params: SliceParams, inputs: Mapping[str, Model]) -> Model:
    """Stack layer ranges of one or more models (mergekit `slices`), with optional per-layer scales."""
    first = params.slices[0]
    reference = inputs[params.embed_from or first.refs()[0]]
    layers: list[tuple[Model, int, dict[str, TensorTask]]] = []
    described = []
    for k, entry in enumerate(params.slices):
        if entry.model is not None:
            source = inputs[entry.model]
            _check_range(source, entry.model, entry.layers)
            for i in range(*entry.layers):
                _check_scale(source, entry.model, i, entry.scale)
                names = source.layout.layer_tensors(i)
                layers.append(
                    (source, i, {n: _scaled(source.tensors[n], n, source, entry.scale) for n in names})
                )
            described.append(
                f"{entry.model}[{entry.layers[0]}:{entry.layers[1]}]"
                + (f"*{entry.scale:g}" if entry.scale != 1 else "")
            )
        else:
            spec = entry.merge
            assert spec is not None
            refs = spec.refs()
            for ref in refs:
                _check_range(inputs[ref], ref, entry.layers)
            source = inputs[refs[0]]
            start, end = entry.layers
            for i in range(start, end):
                _check_scale(source, refs[0], i, entry.scale)
                names = list(source.layout.layer_tensors(i))
                if params.gradients == "slice":
                    # mergekit: t runs 0..1 over the slice's own layers (t = 1 for a one-layer slice).
                    spec = _spec_at(entry.merge, (i - start) / (end - start - 1) if end - start > 1 else 1.0)
                merged = plan_merge(spec, inputs, graph_seed=ctx.seed, where=f"slices[{k}]", names=names)
                layers.append((source, i, {n: _scaled(t, n, source, entry.scale) for n, t in merged.items()}))
            described.append(f"{describe(spec)}[{entry.layers[0]}:{entry.layers[1]}]")
    history = tuple(dict.fromkeys(p for ref in params.refs() for p in inputs[ref].provenance))
    if params.head_from is not None:
        head = inputs[params.slices[-1].refs()[0] if params.head_from == "last" else params.head_from]
        reference = _with_head(reference, head)
    return stack_layers(reference, layers, f"slice({', '.join(described)})", history)


class PruneParams(NodeParams):
    input: str = Field(description="the model to prune")
    remove: list[int] | None = Field(None, description="layer indices to remove")
    keep: list[int] | None = Field(None, description="or: layer indices to keep (in this order)")

    @model_validator(mode="after")
    def _one_list(self) -> PruneParams:
        if (self.remove is None) == (self.keep is None):
            raise ValueError("give exactly one of `remove` or `keep`")
        return self


@node("prune", version="1", params=PruneParams, inputs=["input"])
def prune_node(ctx, params: PruneParams, inputs: Mapping[str, Any]) -> Model:
    """Remove (or keep only) the given layers; the rest are renumbered and the config updated."""
    model: Model = inputs[params.input]
    n = model.layout.num_layers
    listed = params.remove if params.remove is not None else params.keep
    bad = [i for i in listed or [] if not 0 <= i < n]
    if bad:
        raise ModelError(
            f"layer indices {bad} are out of range for a model with {n} layers", fix=f"use 0..{n - 1}"
        )
    keep = (
        [i for i in range(n) if i not in set(params.remove)]
        if params.remove is not None
        else list(params.keep or [])
    )
    if not keep:
        raise ModelError(f"pruning would remove all {n} layers", fix="keep at least one layer")
    layers = [(model, i, {name: model.tensors[name] for name in model.layout.layer_tensors(i)}) for i in keep]
    removed = [i for i in range(n) if i not in keep]
    return stack_layers(model, layers, f"prune(remove={removed})")
