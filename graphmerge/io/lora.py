"""PEFT LoRA adapters: reading one as per-tensor deltas, and writing one from low-rank factors.

A LoRA target module M with factors A (r x in) and B (out x r) changes M.weight by
scale * B @ A, where scale = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), alpha and r
possibly overridden per module by alpha_pattern / rank_pattern. Embeddings store A (r x vocab) and
B (dim x r) and add (B @ A)^T. Tensors saved whole (modules_to_save, saved embedding layers)
replace the base's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from graphmerge.errors import ModelError
from graphmerge.lazy import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_FACTOR = re.compile(
    r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.weight$|^(?P<emodule>.+)\.(?P<ekind>lora_embedding_A|lora_embedding_B)$"
)


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


@dataclass(frozen=True)
class LoraDelta:
    """The change LoRA makes to one base tensor."""

    a: str  # tensor names in the adapter file
    b: str
    scale: float
    transpose: bool  # the delta is (B @ A)^T: embeddings, and fan_in_fan_out layers


@dataclass(frozen=True)
class Adapter:
    folder: Path
    file: Path
    file_digest: str
    base_model: str | None
    deltas: dict[str, LoraDelta] = field(default_factory=dict)  # base tensor name -> delta
    replaced: dict[str, str] = field(default_factory=dict)  # base tensor name -> adapter tensor name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # adapter tensor name -> shape


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    # peft matches a pattern against the end of the module name, at a dot boundary.
    for pattern, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return float(value)
    return float(default)


def open_adapter(folder: Path | str) -> Adapter:
    folder = Path(folder)
    where = str(folder)
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read {ADAPTER_CONFIG}: {exc}", where=where, fix="point at a PEFT LoRA adapter folder"
        ) from None
    if not isinstance(cfg, dict) or cfg.get("peft_type", "LORA") != "LORA":
        raise ModelError(
            f"adapter type {cfg.get('peft_type') if isinstance(cfg, dict) else '?'} is not supported",
            where=where,
            fix="only LoRA adapters (peft_type LORA) can be loaded",
        )
    for key in ("use_dora", "lora_bias"):
        if cfg.get(key):
            raise ModelError(
                f"adapter option {key} is not supported", where=where, fix="use a plain LoRA adapter"
            )
    if cfg.get("layer_replication"):
        raise ModelError("adapter option layer_replication is not supported", where=where)
    file = folder / ADAPTER_WEIGHTS
    if not file.is_file():
        raise ModelError(
            f"adapter folder has no {ADAPTER_WEIGHTS}",
            where=where,
            fix="save the adapter with safe_serialization=True (the default in peft)",
        )
    try:
        alpha = float(cfg["lora_alpha"])
        int(cfg["r"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{ADAPTER_CONFIG} lacks a numeric `r` or `lora_alpha`", where=where) from None
    rslora, fan_in_fan_out = bool(cfg.get("use_rslora")), bool(cfg.get("fan_in_fan_out"))
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as h:
            shapes = {k: tuple(h.get_slice(k).get_shape()) for k in h.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelError(f"cannot read {file.name}: {exc}", where=where, fix="re-save the adapter") from None
    factors: dict[str, dict[str, str]] = {}
    replaced: dict[str, str] = {}
    for name in shapes:
        local = name.removeprefix(_PREFIX)
        m = _FACTOR.match(local)
        if m:
            module = m["module"] or m["emodule"]
            kind = (m["kind"] or m["ekind"]).replace("embedding_", "")
            factors.setdefault(module, {})[kind] = name
            factors[module]["embedding"] = "1" if m["emodule"] else ""
        elif local.endswith(".weight") or local.endswith(".bias"):
            replaced[local.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")] = name
        else:
            raise ModelError(f"adapter tensor {name} is not a LoRA factor or a saved module", where=where)
    deltas = {}
    for module, f in factors.items():
        if "lora_A" not in f or "lora_B" not in f:
            raise ModelError(f"adapter module {module} lacks lora_A or lora_B", where=where)
        rank = shapes[f["lora_A"]][0]
        if shapes[f["lora_B"]][1] != rank:
            raise ModelError(f"adapter module {module}: lora_A and lora_B ranks differ", where=where)
        a = _pattern_value(cfg.get("alpha_pattern") or {}, module, alpha)
        scale = a / math.sqrt(rank) if rslora else a / rank
        embedding = bool(f["embedding"])
        deltas[f"{module}.weight"] = LoraDelta(f["lora_A"], f["lora_B"], scale, embedding or fan_in_fan_out)
    h = xxhash.xxh3_128()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    base = cfg.get("base_model_name_or_path")
    return Adapter(
        folder,
        file,
        h.hexdigest(),
        base if isinstance(base, str) and base else None,
        deltas,
        replaced,
        shapes,
    )


def read_adapter_tensor(file: str, name: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(file, framework="pt") as h:
        return h.get_tensor(name)


def apply_delta(
    base: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float, transpose: bool
) -> torch.Tensor:
    """base + scale * B @ A (transposed for embeddings), computed in float32, in the base's dtype."""
    delta = b.to(torch.float32) @ a.to(torch.float32)
    if transpose:
        delta = delta.T
    return (base.to(torch.float32) + scale * delta).to(base.dtype)


def low_rank(
    delta: torch.Tensor, rank: int | None, energy: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with B @ A the best approximation of `delta` of the given rank (truncated SVD), or of
    the smallest rank keeping `energy` of its squared Frobenius norm. B carries the singular values."""
    u, s, vh = torch.linalg.svd(delta.to(torch.float32), full_matrices=False)
    if rank is None:
        total = float((s * s).sum())
        if total == 0.0:
            k = 1
        else:
            cum = torch.cumsum(s * s, 0) / total
            k = int(torch.searchsorted(cum, torch.tensor(min(energy or 1.0, 1.0) - 1e-12)).item()) + 1
    else:
        k = rank
    k = max(1, min(k, s.numel()))
    return vh[:k].contiguous(), (u[:, :k] * s[:k]).contiguous()


def write_adapter(
    out: Path,
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    whole: dict[str, torch.Tensor],
    base_model: str | None,
    dtype: torch.dtype | None,
    extra_files: dict[str, str] | None = None,
) -> dict[str, int]:
    """Write a PEFT LoRA adapter folder atomically: `factors` maps module name -> (A, B) with
    scale 1 (alpha = rank per module), `whole` maps module name -> weight saved whole
    (peft's modules_to_save). Returns module -> rank."""
    import os
    import shutil
    import tempfile

    from safetensors.torch import save_file

    if out.exists() and not (out.is_dir() and ((out / ADAPTER_CONFIG).is_file() or not any(out.iterdir()))):
        raise ModelError(
            f"output path {out} exists and is not an adapter folder",
            fix="choose another output path or remove it yourself",
        )
    ranks = {m: int(a.shape[0]) for m, (a, _b) in factors.items()}
    r = max(ranks.values(), default=1)
    tensors: dict[str, torch.Tensor] = {}
    for module, (a, b) in factors.items():
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = a.to(dtype) if dtype else a
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = b.to(dtype) if dtype else b
    for module, w in whole.items():
        tensors[f"{_PREFIX}{module}.weight"] = w.to(dtype) if dtype else w
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": r,
        "rank_pattern": {m: k for m, k in ranks.items() if k != r},
        "alpha_pattern": {m: k for m, k in ranks.items() if k != r},
        "target_modules": sorted(factors),
        "modules_to_save": sorted(whole) or None,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "task_type": "CAUSAL_LM",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(tmp / ADAPTER_WEIGHTS),
            metadata={"format": "pt"},
        )
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~mask)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ranks
