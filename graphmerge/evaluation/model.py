"""Build a Hugging Face causal LM from a config dict and in-memory tensors (no checkpoint written)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from graphmerge.errors import ModelError
from graphmerge.io.remote_code import untrusted_error

__all__ = ["build_model", "resident_model", "drop_resident_model"]


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ModelError(f"unknown dtype {dtype!r}", fix="use float32, bfloat16 or float16")
    return value


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def build_model(
    config: Mapping[str, Any] | Any,
    tensors: Mapping[str, torch.Tensor],
    dtype: torch.dtype | str | None = torch.float32,
    device: str | torch.device = "cpu",
    *,
    trust_remote_code: bool = False,
    code_dir: str | Path | None = None,
):
    """Construct ``AutoModelForCausalLM.from_config(config)`` and load ``tensors`` into it, strictly.

    ``config`` is a config.json dict (must hold ``model_type``) or a ``PretrainedConfig``. Tensor names
    are the checkpoint names (as in model.safetensors). A missing ``lm_head.weight`` is fine when
    the config ties the embeddings; any other missing or unexpected name raises ``ModelError``.
    The model comes back in eval mode, in ``dtype`` (None: the tensors' dtype) on ``device``.
    A ``model_type`` transformers does not know needs the custom code named by the config's
    ``auto_map``: it is imported from ``code_dir`` only with ``trust_remote_code``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if isinstance(config, PretrainedConfig):
        cfg = config
    else:
        cfg_dict = dict(config)
        model_type = cfg_dict.pop("model_type", None)
        if not model_type:
            raise ModelError(
                "config has no model_type", where="build_model", fix="pass the model's config.json"
            )
        if model_type not in CONFIG_MAPPING and cfg_dict.get("auto_map"):
            cfg = _custom_config(model_type, cfg_dict, trust_remote_code, code_dir)
        else:
            try:
                cfg = AutoConfig.for_model(model_type, **cfg_dict)
            except ValueError as e:
                raise ModelError(f"unknown model_type {model_type!r}: {e}", where="build_model") from None

    target = _dtype(dtype)
    if target is None:
        floats = [t.dtype for t in tensors.values() if t.is_floating_point()]
        target = floats[0] if floats else torch.float32

    # Parameters on the meta device (no memory, no random init); buffers (rotary tables) stay real.
    with _params_on_meta():
        model = AutoModelForCausalLM.from_config(cfg, dtype=target, trust_remote_code=trust_remote_code)

    expected = {n: p for n, p in model.named_parameters(remove_duplicate=False)}
    expected.update(dict(model.named_buffers()))
    tied = _tied_names(model)
    persistent = set(model.state_dict())
    given = set(tensors)
    missing = [n for n in expected if n not in given and n not in tied and n in persistent]
    unexpected = [n for n in given if n not in persistent]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
        raise ModelError(
            f"tensors do not match the {cfg.model_type} architecture: " + "; ".join(parts),
            where="build_model",
            fix="check that the tensors and config.json come from the same model",
        )
    for name, t in tensors.items():
        want = tuple(expected[name].shape)
        if tuple(t.shape) != want:
            raise ModelError(
                f"tensor {name} has shape {tuple(t.shape)}, the config expects {want}",
                where="build_model",
                fix="check hidden_size, vocab_size and the layer count in config.json",
            )

    state = {
        n: t.detach().to(dtype=target) if t.is_floating_point() else t.detach() for n, t in tensors.items()
    }
    model.load_state_dict(state, strict=False, assign=True)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise ModelError(f"no tensor for {_names(left)}", where="build_model")
    return model.to(device=device).eval()


def _custom_config(model_type: str, cfg_dict: dict, trust_remote_code: bool, code_dir):
    """The config class a folder's own code defines, filled from `cfg_dict`."""
    from transformers import AutoConfig

    if not trust_remote_code or code_dir is None:
        raise untrusted_error(code_dir, f"model code (model_type {model_type!r})")
    base = AutoConfig.from_pretrained(str(code_dir), trust_remote_code=True, local_files_only=True)
    cfg = type(base).from_dict(cfg_dict)
    cfg._name_or_path = str(code_dir)  # where from_config finds the modelling code
    return cfg


@contextmanager
def _params_on_meta():
    """Like accelerate.init_empty_weights(include_buffers=False): each parameter moves to the meta
    device as it is registered, so construction allocates (and initialises) nothing."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = torch.nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _tied_names(model) -> set[str]:
    """Parameter names that alias another parameter (e.g. lm_head.weight when embeddings are tied)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        else:
            seen[id(p)] = name
    if getattr(model.config, "tie_word_embeddings", False):
        out = model.get_output_embeddings()
        if out is not None:
            for name, mod in model.named_modules():
                if mod is out:
                    tied.add(f"{name}.weight")
    return tied


# One model per process stays built between evaluations (a search evaluates many trials of one
# architecture): its signature, and the model.
_RESIDENT: tuple[tuple, Any] | None = None


def _signature(config, tensors: Mapping[str, torch.Tensor], dtype, device) -> tuple:
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    shapes = tuple(sorted((n, tuple(t.shape)) for n, t in tensors.items()))
    return json.dumps(cfg, sort_keys=True, default=str), str(_dtype(dtype)), str(torch.device(device)), shapes


def resident_model(
    config: Mapping[str, Any] | Any,
    tensors: Mapping[str, torch.Tensor],
    dtype: torch.dtype | str | None = torch.float32,
    device: str | torch.device = "cpu",
    *,
    trust_remote_code: bool = False,
    code_dir: str | Path | None = None,
):
    """Like ``build_model``, but the model instance stays resident: a later call with the same config,
    tensor names and shapes, dtype and device copies ``tensors`` into its parameters in place
    (``copy_``, casting to the model's dtype as ``build_model`` does) instead of constructing a new
    model. Tied aliases (``lm_head.weight`` under tied embeddings) are skipped, so the embedding
    wins as it does after ``tie_weights``. Another architecture replaces the resident model."""
    global _RESIDENT
    if dtype is None:
        return build_model(
            config, tensors, dtype, device, trust_remote_code=trust_remote_code, code_dir=code_dir
        )
    sig = (*_signature(config, tensors, dtype, device), trust_remote_code, str(code_dir))
    if _RESIDENT is not None and _RESIDENT[0] == sig:
        model = _RESIDENT[1]
        params = model.state_dict(keep_vars=True)
        tied = _tied_names(model)
        with torch.no_grad():
            for name, t in tensors.items():
                if name not in tied:
                    params[name].copy_(t)
        return model.eval()
    _RESIDENT = None  # free the old model before building the new one
    # build_model adopts the given tensors as parameters (assign=True, no copy); a resident model is
    # written into later, so it must own its memory, not alias the caller's (cached, source) tensors.
    owned = {n: t.detach().clone() for n, t in tensors.items()}
    model = build_model(config, owned, dtype, device, trust_remote_code=trust_remote_code, code_dir=code_dir)
    del owned
    _RESIDENT = (sig, model)
    return model


def drop_resident_model() -> None:
    """Forget the resident model (frees its memory)."""
    global _RESIDENT
    _RESIDENT = None
