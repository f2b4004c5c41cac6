"""Architecture-agnostic view of a decoder-only model's tensors: embeddings, layers, final norm, LM head.

Layout is inferred from tensor *names* plus config.json only (no shapes, no model classes), so it works
for folders, in-memory tensor dicts and architectures transformers does not know. Known naming schemes
(Llama/Mistral/Qwen2/Qwen3/Gemma/Gemma2/Phi-3 `model.layers.N.`, GPT-2 `transformer.h.N.`, ...) are
matched first; otherwise any `<prefix>.<N>.` block list whose indices are exactly 0..L-1, with L the
config's layer count, is accepted.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from graphmerge.errors import ModelError
from graphmerge.lazy import torch

__all__ = [
    "ModelLayout",
    "detect_layout",
    "config_with_layers",
    "config_with_vocab",
    "fold_layer_scale",
    "layer_count_key",
    "vocab_key",
]

# Config keys for the layer count and vocab size, first match wins.
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_VOCAB_KEYS = ("vocab_size", "n_vocab", "padded_vocab_size")
# Top-level config lists with one entry per layer; they must follow the layers when slicing.
_PER_LAYER_LIST_KEYS = ("layer_types", "no_rope_layers")

# Known layer-block prefixes, tried before the generic search (order: most specific first).
_KNOWN_PREFIXES = (
    "model.language_model.layers.",
    "model.decoder.layers.",
    "model.layers.",
    "transformer.h.",
    "transformer.blocks.",
    "transformer.layers.",
    "gpt_neox.layers.",
    "layers.",
    "h.",
)

_TOKEN_EMBED_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "embed_in.weight",
    "tok_embeddings.weight",
    "shared.weight",
)
_HEAD_NAMES = ("lm_head.weight", "lm_head.bias", "embed_out.weight", "output.weight")
_FINAL_NORM_RE = re.compile(
    r"(^|\.)(norm|ln_f|final_layernorm|final_layer_norm|final_norm|norm_f)\.(weight|bias)$"
)

# Suffixes (inside one layer) of the tensors whose output is added to the residual stream.
_RESIDUAL_OUT_RE = re.compile(
    r"^("
    r"self_attn\.o_proj|mlp\.down_proj"  # Llama, Mistral, Qwen2/3, Gemma, Phi-3
    r"|attn\.c_proj|mlp\.c_proj"  # GPT-2, GPT-BigCode
    r"|attn\.o_proj|attn\.out_proj|self_attn\.out_proj|mlp\.fc2|fc2"  # GPT-J/Phi-1/2/OPT style
    r"|attention\.dense|self_attention\.dense|mlp\.dense_4h_to_h"  # GPT-NeoX, Falcon, Bloom
    r"|attention\.wo|feed_forward\.w2"  # Meta Llama checkpoints
    r"|block_sparse_moe\.experts\.\d+\.w2"  # Mixtral experts
    r"|mlp\.experts\.\d+\.down_proj|mlp\.shared_expert\.down_proj"  # Qwen MoE
    r")\.(weight|bias)$"
)
# Post-branch norms (Gemma2/3, OLMo2): the branch output is norm(f(x)), so RMSNorm's scale invariance
# makes scaling o_proj/down_proj a no-op; the scale must go into the norm weight instead.
_POST_NORM_RE = re.compile(r"^(post_attention_layernorm|post_feedforward_layernorm)\.weight$")


def layer_count_key(config: dict) -> str:
    for k in _LAYER_KEYS:
        if isinstance(config.get(k), int):
            return k
    raise ModelError(
        "config.json has no layer count",
        fix=f"expected one of {', '.join(_LAYER_KEYS)}",
    )


def vocab_key(config: dict) -> str:
    for k in _VOCAB_KEYS:
        if isinstance(config.get(k), int):
            return k
    raise ModelError("config.json has no vocabulary size", fix=f"expected one of {', '.join(_VOCAB_KEYS)}")


@dataclass(frozen=True, eq=False)
class ModelLayout:
    """Roles of a model's tensors. All names are the model's own tensor names."""

    architecture: str  # config model_type (or "unknown")
    layer_prefix: str  # e.g. "model.layers." ; layer tensors are f"{layer_prefix}{i}.{suffix}"
    num_layers: int
    layer_count_key: str  # "num_hidden_layers", "n_layer", ...
    vocab_key: str  # "vocab_size", ...
    token_embedding: str  # the vocab-sized input embedding (row i = token i)
    embeddings: tuple[str, ...]  # token embedding plus position/other embeddings (GPT-2 wpe)
    final_norms: tuple[str, ...]
    lm_head: tuple[str, ...]  # empty when the head is tied and not stored
    tie_word_embeddings: bool
    other: tuple[str, ...]  # non-layer tensors with no recognised role (kept as-is)
    tensor_names: tuple[str, ...]
    # Residual-branch output tensors are the model's norms after each branch (Gemma2/3, OLMo2).
    post_branch_norms: bool = False
    # RMSNorm weight offset: Gemma computes x * (1 + w), so w=0 is identity.
    norm_offset: float = 0.0
    _by_layer: dict = field(default_factory=dict, repr=False)
    _re: re.Pattern = field(default=None, repr=False)  # type: ignore[assignment]

    def layer_of(self, name: str) -> int | None:
        m = self._re.match(name)
        return int(m.group(1)) if m else None

    def layer_suffix(self, name: str) -> str:
        """`self_attn.o_proj.weight` for `model.layers.3.self_attn.o_proj.weight`."""
        m = self._re.match(name)
        if not m:
            raise ModelError(f"tensor {name!r} is not a per-layer tensor", where=self.layer_prefix)
        return m.group(2)

    def renamed(self, name: str, new_layer: int) -> str:
        """The same tensor in layer `new_layer` (used when slicing / stacking layers)."""
        return f"{self.layer_prefix}{new_layer}.{self.layer_suffix(name)}"

    def layer_tensors(self, i: int) -> tuple[str, ...]:
        if not 0 <= i < self.num_layers:
            raise ModelError(f"layer {i} out of range", fix=f"the model has layers 0..{self.num_layers - 1}")
        return self._by_layer.get(i, ())

    @property
    def non_layer_tensors(self) -> tuple[str, ...]:
        return tuple(n for n in self.tensor_names if self.layer_of(n) is None)

    def role(self, name: str) -> str:
        """One of "layer", "embedding", "final_norm", "lm_head", "other"."""
        if self.layer_of(name) is not None:
            return "layer"
        if name in self.embeddings:
            return "embedding"
        if name in self.final_norms:
            return "final_norm"
        if name in self.lm_head:
            return "lm_head"
        return "other"

    def is_residual_output(self, name: str) -> bool:
        if self.layer_of(name) is None:
            return False
        suffix = self.layer_suffix(name)
        pattern = _POST_NORM_RE if self.post_branch_norms else _RESIDUAL_OUT_RE
        return bool(pattern.match(suffix))

    def residual_output_projections(self, i: int) -> tuple[str, ...]:
        """Tensors producing layer i's residual-branch outputs (o_proj/down_proj + biases, GPT-2 c_proj;
        the post-branch norms for Gemma2/3 and OLMo2)."""
        return tuple(n for n in self.layer_tensors(i) if self.is_residual_output(n))

    @property
    def vocab_tensors(self) -> tuple[str, ...]:
        """Tensors whose first dimension is the vocabulary (token embedding and stored LM head)."""
        return (
            self.token_embedding,
            *(h for h in self.lm_head if h.endswith(".weight") or h.endswith(".bias")),
        )


def _find_prefix(names: Iterable[str], n_layers: int) -> str | None:
    indices: dict[str, set[int]] = {}
    first_num = re.compile(r"^(.*?\.)?(\d+)\.")
    for name in names:
        m = first_num.match(name)
        if m:
            indices.setdefault(m.group(1) or "", set()).add(int(m.group(2)))
    want = set(range(n_layers))
    for p in _KNOWN_PREFIXES:
        if indices.get(p) == want:
            return p
    candidates = sorted((p for p, idx in indices.items() if idx == want), key=len)
    return candidates[0] if candidates else None


def detect_layout(config: dict, tensor_names: Iterable[str]) -> ModelLayout:
    names = tuple(tensor_names)
    model_type = str(config.get("model_type") or "unknown")
    lkey = layer_count_key(config)
    vkey = vocab_key(config)
    n = config[lkey]
    prefix = _find_prefix(names, n)
    if prefix is None:
        found = sorted({m.group(1) for nm in names if (m := re.match(r"^(.*?\.)\d+\.", nm))})
        raise ModelError(
            f"cannot understand the model layout: no `<prefix>.<N>.` block list with exactly {lkey}={n} layers",
            where=f"model_type {model_type}",
            fix=f"numbered blocks found under: {', '.join(found) or 'none'}",
        )
    layer_re = re.compile(rf"^{re.escape(prefix)}(\d+)\.(.+)$")
    by_layer: dict[int, list[str]] = {}
    non_layer: list[str] = []
    for nm in names:
        m = layer_re.match(nm)
        if m:
            by_layer.setdefault(int(m.group(1)), []).append(nm)
        else:
            non_layer.append(nm)

    token_embedding = next((nm for s in _TOKEN_EMBED_SUFFIXES for nm in non_layer if nm.endswith(s)), None)
    if token_embedding is None:
        token_embedding = next((nm for nm in non_layer if "embed" in nm and nm.endswith(".weight")), None)
    if token_embedding is None:
        raise ModelError(
            "cannot understand the model layout: no token embedding tensor",
            where=f"model_type {model_type}",
            fix=f"expected a name ending in one of {', '.join(_TOKEN_EMBED_SUFFIXES)}",
        )
    embeddings = [token_embedding] + [
        nm
        for nm in non_layer
        if nm != token_embedding and ("embed" in nm or nm.endswith(("wpe.weight", "wte.weight")))
    ]
    head = tuple(nm for nm in non_layer if nm in _HEAD_NAMES)
    norms = tuple(nm for nm in non_layer if _FINAL_NORM_RE.search(nm) and nm not in embeddings)
    classified = set(embeddings) | set(head) | set(norms)
    other = tuple(nm for nm in non_layer if nm not in classified)
    # A model without a stored head is tied whatever the config says. Without the key, the default
    # depends on the model class (True for GPT-2/Gemma, False for Llama), so trust the tensors instead.
    tie_cfg = config.get("tie_word_embeddings")
    tied = (bool(tie_cfg) if tie_cfg is not None else False) or not head

    post_norms = any(nm.endswith(".post_feedforward_layernorm.weight") for nm in names)
    layout = ModelLayout(
        architecture=model_type,
        layer_prefix=prefix,
        num_layers=n,
        layer_count_key=lkey,
        vocab_key=vkey,
        token_embedding=token_embedding,
        embeddings=tuple(embeddings),
        final_norms=norms,
        lm_head=head,
        tie_word_embeddings=tied,
        other=other,
        tensor_names=names,
        post_branch_norms=post_norms,
        norm_offset=1.0 if model_type.startswith("gemma") else 0.0,
        _by_layer={i: tuple(v) for i, v in by_layer.items()},
        _re=layer_re,
    )
    return layout


def config_with_layers(config: dict, n: int, layer_sources: list[int] | None = None) -> dict:
    """A copy of `config` describing `n` layers.

    Per-layer lists (e.g. `layer_types`: Gemma2's alternating sliding/full attention) must follow the
    layers: output layer j takes entry `layer_sources[j]` of the source list when given, else the
    pattern is continued periodically (entry j % len), which is right for alternating patterns.
    """
    out = copy.deepcopy(config)
    old = config[layer_count_key(config)]
    for k in _LAYER_KEYS:
        if isinstance(out.get(k), int):
            out[k] = n
    if layer_sources is not None and len(layer_sources) != n:
        raise ModelError(f"layer_sources has {len(layer_sources)} entries for {n} layers")
    for k in _PER_LAYER_LIST_KEYS:
        v = out.get(k)
        if isinstance(v, list) and len(v) == old and v:
            src = layer_sources if layer_sources is not None else [j % len(v) for j in range(n)]
            out[k] = [v[s] for s in src]
    # Qwen2-style "first K layers use full attention" counts must not exceed the new depth.
    if isinstance(out.get("max_window_layers"), int) and out["max_window_layers"] > n:
        out["max_window_layers"] = n
    return out


def config_with_vocab(config: dict, v: int) -> dict:
    """A copy of `config` with the vocabulary size set to `v`."""
    out = copy.deepcopy(config)
    out[vocab_key(config)] = int(v)
    return out


def fold_layer_scale(name: str, tensor: torch.Tensor, scale: float, layout: ModelLayout) -> torch.Tensor:
    """Fold a per-layer residual-branch scale into `tensor` (returned unchanged if it is not affected).

    Meaning of "scale s for layer i": layer i computes
        h  = x + s * attn(x)
        h' = h + s * mlp(h)
    i.e. the output of each residual branch is multiplied by s before it is added to the residual stream;
    the residual stream itself (x, h) is *not* scaled, and the branch inputs are unchanged.

    Exact folding: a branch output is W·z + b of its output projection (o_proj/down_proj, GPT-2 c_proj),
    so s·(W·z + b) = (s·W)·z + (s·b): weights and biases of those projections are multiplied by s. GPT-2's
    Conv1D stores W transposed, which does not matter for a scalar. In post-norm-branch models (Gemma2/3,
    OLMo2) the branch output is RMSNorm(f(z)) = n(f(z))·(o + w) with o the norm offset (1 for Gemma,
    0 otherwise); RMSNorm is scale-invariant, so the scale goes into the post-branch norm weight instead:
    w' = s·(o + w) − o. Arithmetic is done in float32 and cast back to the tensor's dtype.
    """
    if scale == 1.0:
        return tensor
    if not layout.is_residual_output(name):
        layer = layout.layer_of(name)
        if layer is not None and not layout.residual_output_projections(layer):
            # Silently ignoring the scale would produce a model that differs from what was asked for.
            raise ModelError(
                f"cannot apply a layer scale: no residual output projection recognised in layer {layer}",
                where=f"model_type {layout.architecture}",
                fix="use scale 1.0 for this architecture",
            )
        return tensor
    return scale_branch_output(tensor, scale, layout.norm_offset if layout.post_branch_norms else 0.0)


def scale_branch_output(tensor: torch.Tensor, scale: float, offset: float = 0.0) -> torch.Tensor:
    """The folded tensor (see fold_layer_scale): s*w for output projections (offset 0), s*(o + w) - o
    for post-branch norm weights with offset o. Computed in float32, returned in the tensor's dtype."""
    return (tensor.float() * scale + (scale - 1.0) * offset).to(tensor.dtype)
