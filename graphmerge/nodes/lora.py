"""LoRA in graphs: a PEFT adapter as a lazy model (used by `load`), and `extract_lora`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from graphmerge.errors import ModelError
from graphmerge.hashing import digest
from graphmerge.io.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    Adapter,
    apply_delta,
    low_rank,
    read_adapter_tensor,
    write_adapter,
)
from graphmerge.lazy import torch
from graphmerge.nodes.parameters import filter_matches
from graphmerge.params import NodeParams
from graphmerge.plan import Model, TensorTask, make_task
from graphmerge.registry import node, tensor_op

STAMP_FILE = "graphmerge.json"


@tensor_op("read_adapter", version="1", cached=False)
def read_adapter(*, file: str, name: str) -> torch.Tensor:
    return read_adapter_tensor(file, name)


@tensor_op("lora", version="1")
def lora_tensor(
    base: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, scale: float, transpose: bool
) -> torch.Tensor:
    return apply_delta(base, a.to(base.device), b.to(base.device), scale, transpose)


def _adapter_task(adapter: Adapter, name: str) -> TensorTask:
    return make_task(
        "read_adapter",
        identity=(adapter.file_digest, name),
        shape=adapter.shapes[name],
        file=str(adapter.file),
        name=name,
    )


def with_adapter(model: Model, adapter: Adapter) -> Model:
    """`model` with the adapter's changes: one `lora` task per target tensor (cached like any merge
    result), whole replacements as reads of the adapter file; every other tensor untouched."""
    tensors = dict(model.tensors)
    where = str(adapter.folder)
    for name, adapter_name in adapter.replaced.items():
        if name not in tensors:
            raise ModelError(
                f"adapter replaces {name}, which the base model lacks",
                where=where,
                fix="check the base model",
            )
        if tuple(adapter.shapes[adapter_name]) != tuple(tensors[name].shape or ()):
            raise ModelError(
                f"adapter tensor {adapter_name} does not fit {name}", where=where, fix="check the base model"
            )
        tensors[name] = _adapter_task(adapter, adapter_name)
    for name, d in adapter.deltas.items():
        base = tensors.get(name)
        if base is None:
            raise ModelError(
                f"adapter targets {name}, which the base model lacks", where=where, fix="check the base model"
            )
        a_shape, b_shape = adapter.shapes[d.a], adapter.shapes[d.b]
        out_shape = (a_shape[1], b_shape[0]) if d.transpose else (b_shape[0], a_shape[1])
        if base.shape is not None and tuple(base.shape) != out_shape:
            raise ModelError(
                f"adapter delta for {name} has shape {list(out_shape)}, the base tensor {list(base.shape)}",
                where=where,
                fix="use the adapter with the base model it was trained on",
            )
        tensors[name] = make_task(
            "lora",
            [base, _adapter_task(adapter, d.a), _adapter_task(adapter, d.b)],
            shape=base.shape,
            dtype=base.dtype,
            scale=float(d.scale),
            transpose=d.transpose,
        )
    return model.with_tensors(tensors, provenance=(*model.provenance, f"lora({adapter.folder.name})"))


class ExtractLoraParams(NodeParams):
    model: str = Field(description="the model whose difference from `base` is extracted")
    base: str = Field(description="the base model the adapter applies to")
    path: Path = Field(description="output PEFT adapter folder (replaced atomically, only on success)")
    rank: int | None = Field(None, ge=1, description="rank of every module (or give `energy`)")
    energy: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="or: per module, the smallest rank keeping this fraction of ||model - base||^2",
    )
    targets: list[str] = Field(
        default_factory=list,
        description="filters of 2-D layer weights to factor (default: every 2-D layer weight that differs)",
    )
    modules_to_save: list[str] = Field(
        default_factory=list, description="modules saved whole, e.g. [lm_head, model.embed_tokens]"
    )
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(None, description="default: float32")

    @model_validator(mode="after")
    def _rank_or_energy(self) -> ExtractLoraParams:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of `rank` or `energy`")
        return self


def _up_to_date(out: Path, stamp: str) -> bool:
    """The folder was written from these very models and settings, and its files are still there."""
    try:
        same = json.loads((out / STAMP_FILE).read_text()).get("stamp") == stamp
    except (OSError, ValueError):
        return False
    return same and (out / ADAPTER_WEIGHTS).is_file() and (out / ADAPTER_CONFIG).is_file()


@node("extract_lora", version="1", params=ExtractLoraParams, inputs=["model", "base"], effectful=True)
def extract_lora_node(ctx, params: ExtractLoraParams, inputs: Mapping[str, Model]) -> dict:
    """Write a PEFT LoRA adapter approximating model - base by truncated SVD, per target weight."""
    model, base = inputs[params.model], inputs[params.base]
    stamp = digest(model.key, base.key, params.model_dump(mode="json", exclude={"path"}))
    if _up_to_date(params.path, stamp):
        ctx.log(f"extract_lora: {params.path} is up to date")
        return json.loads((params.path / STAMP_FILE).read_text())["result"]
    layout = model.layout
    whole_names = [f"{m}.weight" for m in params.modules_to_save]
    for name in whole_names:
        if name not in model.tensors:
            raise ModelError(f"modules_to_save: model has no tensor {name}", where=f"node '{ctx.node_name}'")
    candidates = []
    for name, task in model.tensors.items():
        if not name.endswith(".weight") or name in whole_names or layout.layer_of(name) is None:
            continue
        if task.shape is None or len(task.shape) != 2:
            continue
        if params.targets and not any(filter_matches(f, name) for f in params.targets):
            continue
        if name not in base.tensors or base.tensors[name].shape != task.shape:
            raise ModelError(
                f"tensor {name} is missing from the base or has another shape",
                where=f"node '{ctx.node_name}'",
            )
        if task.key != base.tensors[name].key:
            candidates.append(name)
    roots = [t for n in candidates for t in (model.tensors[n], base.tensors[n])]
    roots += [model.tensors[n] for n in whole_names]
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    whole: dict[str, torch.Tensor] = {}
    pending: dict[int, torch.Tensor] = {}
    for i, value in ctx.executor.stream(roots, desc=f"extract_lora {params.path.name}"):
        value = value.to("cpu")
        if i >= 2 * len(candidates):
            whole[whole_names[i - 2 * len(candidates)].removesuffix(".weight")] = value
            continue
        pending[i] = value
        j = i // 2
        if 2 * j in pending and 2 * j + 1 in pending:
            delta = pending.pop(2 * j).to(torch.float32) - pending.pop(2 * j + 1).to(torch.float32)
            if not bool(delta.any()):
                continue
            a, b = low_rank(delta, params.rank, params.energy)
            factors[candidates[j].removesuffix(".weight")] = (a, b)
    if not factors and not whole:
        raise ModelError(
            "the model does not differ from the base in any targeted weight",
            where=f"node '{ctx.node_name}'",
            fix="check `targets` and the two models",
        )
    others = [
        n
        for n, t in model.tensors.items()
        if n not in candidates and n not in whole_names and n in base.tensors and t.key != base.tensors[n].key
    ]
    if others:
        ctx.log(
            f"extract_lora: {len(others)} differing tensors are not in the adapter (e.g. {others[0]}); "
            "add them to modules_to_save or targets"
        )
    source = base.source_dir
    ranks = {m: int(a.shape[0]) for m, (a, _b) in factors.items()}
    result = {
        "path": str(params.path),
        "modules": len(ranks),
        "max_rank": max(ranks.values(), default=0),
        "skipped": others,
    }
    write_adapter(
        params.path,
        factors,
        whole,
        str(source) if source else None,
        getattr(torch, params.dtype) if params.dtype else None,
        extra_files={STAMP_FILE: json.dumps({"stamp": stamp, "result": result}, indent=2)},
    )
    ctx.stats.outputs.append(str(params.path))
    ctx.log(
        f"extract_lora: wrote {params.path} ({len(ranks)} modules, ranks {min(ranks.values(), default=0)}-{max(ranks.values(), default=0)})"
    )
    return result
