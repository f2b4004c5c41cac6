"""`align_tokenizer`: bring models with different vocabularies onto one output vocabulary.

Embedding and head rows are remapped before any merge runs, so every merge method works
unchanged on the aligned models (outputs `NODE.MODEL`, one per input model)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from graphmerge.errors import ModelError
from graphmerge.hashing import digest
from graphmerge.io.layout import config_with_vocab
from graphmerge.io.vocab import (
    VocabAlignment,
    build_vocab_alignment,
    remap_rows,
    tokenizer_vocab,
    write_aligned_tokenizer,
)
from graphmerge.lazy import torch
from graphmerge.nodes.token_rows import TokenRow, override_rows
from graphmerge.params import NodeParams
from graphmerge.plan import Model, make_task
from graphmerge.registry import node, tensor_op

# Alignments used by planned tasks, by content key. Planning and execution happen in the same
# process (trials on Dask workers plan there too), so a process-level table is enough.
_ALIGNMENTS: dict[str, VocabAlignment] = {}


@tensor_op("align_rows", version="1")
def align_rows(*rows: torch.Tensor, alignment: str, target: int, fill: str) -> torch.Tensor:
    return remap_rows([r.to("cpu") for r in rows], _ALIGNMENTS[alignment], target, fill)


class AlignParams(NodeParams):
    models: list[str] = Field(min_length=1, description="models to align (outputs are NODE.MODEL)")
    base: str | None = Field(None, description="base model (default: the first)")
    source: str = Field("union", description="output vocabulary: union | base | a model name")
    fill: Literal["only", "base", "mean", "zero"] = Field(
        "only",
        description="rows for tokens a model lacks: only holder, else base, else mean (only) | base | mean | zero",
    )
    pad_to_multiple: int = Field(1, ge=1, description="pad the vocabulary size to a multiple of this")
    tokens: dict[str, TokenRow] = Field(
        default_factory=dict,
        description="per-token rows: TOKEN: {source: MODEL|zero, token|token_id, force} (mergekit's tokens)",
    )

    @model_validator(mode="after")
    def _names(self) -> AlignParams:
        if self.base is not None and self.base not in self.models:
            raise ValueError(f"base '{self.base}' must be one of models")
        if self.source not in ("union", "base") and self.source not in self.models:
            raise ValueError(f"source '{self.source}' must be union, base or one of models")
        return self


def _tokenizer_dir(cache, key: str, alignment: VocabAlignment, dirs: Mapping[str, Path]) -> Path:
    """The aligned tokenizer's folder in the cache, with the anchor's generation_config.json beside it
    (save copies the generation config from the tokenizer folder: bos/eos ids keep the anchor's ids)."""
    gen = dirs[alignment.anchor] / "generation_config.json"
    gen_bytes = gen.read_bytes() if gen.is_file() else b""

    def fill(tok: Path) -> None:
        write_aligned_tokenizer(alignment, dirs, tok)
        if gen_bytes:
            (tok / "generation_config.json").write_bytes(gen_bytes)

    return cache.folder("tokenizers", digest(key, gen_bytes.decode("utf-8", "replace")), fill)


@node("align_tokenizer", version="1", params=AlignParams, inputs=["models"], outputs=("*",))
def align_tokenizer_node(ctx, params: AlignParams, inputs: Mapping[str, Model]) -> dict[str, Model]:
    """Remap embedding and head rows of models with different tokenizers to one vocabulary."""
    models = {ref: inputs[ref] for ref in params.models}
    dirs: dict[str, Path] = {}
    for ref, model in models.items():
        if model.tokenizer_dir is None:
            raise ModelError(
                f"model '{ref}' has no tokenizer files", fix="align_tokenizer needs each model's tokenizer"
            )
        dirs[ref] = Path(model.tokenizer_dir)
    base = params.base or params.models[0]
    vocabs = {ref: tokenizer_vocab(d, ctx.trust_remote_code) for ref, d in dirs.items()}
    alignment = build_vocab_alignment(
        vocabs,
        source=params.source,
        base=base,
        pad_to_multiple=params.pad_to_multiple,
    )
    key = digest(
        "vocab-alignment",
        list(alignment.models),
        alignment.anchor,
        alignment.base,  # fill policies "only"/"base" take rows from the base
        alignment.size,
        [m.tokenizer_key for m in models.values()],
        params.source,
    )
    _ALIGNMENTS[key] = alignment
    tok_dir = _tokenizer_dir(ctx.cache, key, alignment, dirs)

    layouts = {ref: m.layout for ref, m in models.items()}

    def vocab_task(ref: str, role_name: str):
        """The task holding `ref`'s rows for a vocab tensor of the reference naming."""
        model, layout = models[ref], layouts[ref]
        if role_name in model.tensors:
            return model.tensors[role_name]
        if layout.tie_word_embeddings or not layout.lm_head:
            return model.tensors[layout.token_embedding]  # a tied head is the embedding
        raise ModelError(f"model '{ref}' has no tensor {role_name}")

    # When some models store an LM head and others tie it to the embedding, the tied ones get an
    # explicit head (their embedding rows, aligned like any head) so the aligned models can be merged.
    stored_heads = [
        h for r in models for h in layouts[r].lm_head if h.endswith(".weight") and h in models[r].tensors
    ]

    def head_task(ref: str):
        """`ref`'s LM head rows: its stored head, or its embedding when tied."""
        lo = layouts[ref]
        stored = [h for h in lo.lm_head if h.endswith(".weight") and h in models[ref].tensors]
        return models[ref].tensors[stored[0] if stored else lo.token_embedding]

    out: dict[str, Model] = {}
    for k, (ref, model) in enumerate(models.items()):
        layout = layouts[ref]
        tensors = dict(model.tensors)
        config = config_with_vocab(dict(model.config), alignment.size)
        plan = [
            (
                name,
                [
                    vocab_task(
                        o, name if name in models[o].tensors else _role_equivalent(layouts, ref, o, name)
                    )
                    for o in models
                ],
            )
            for name in layout.vocab_tensors
        ]
        if stored_heads and not any(h.endswith(".weight") for h in layout.lm_head):
            plan.append((stored_heads[0], [head_task(o) for o in models]))
            config["tie_word_embeddings"] = False
        for name, inputs_rows in plan:
            own = name if name in model.tensors else layout.token_embedding
            shape = (alignment.size, *(model.tensors[own].shape or (0, 0))[1:])
            tensors[name] = make_task(
                "align_rows",
                inputs_rows,
                shape=shape,
                dtype=model.tensors[own].dtype,
                alignment=key,
                target=k,
                fill=params.fill,
            )
            if params.tokens:
                tensors[name] = override_rows(
                    tensors[name],
                    ref,
                    params.tokens,
                    alignment,
                    vocabs,
                    lambda o, name=name, ref=ref: vocab_task(
                        o, name if name in models[o].tensors else _role_equivalent(layouts, ref, o, name)
                    ),
                )
        out[ref] = Model(
            config=config,
            tensors=tensors,
            tokenizer_dir=tok_dir,
            tokenizer_key=key,
            provenance=(*model.provenance, f"align_tokenizer({params.source}, fill={params.fill})"),
            code_dir=model.code_dir,
        )
    return out


def _role_equivalent(layouts, ref: str, other: str, name: str) -> str:
    """The name in `other` of the tensor playing `name`'s role in `ref` (embedding or head)."""
    src, dst = layouts[ref], layouts[other]
    if name == src.token_embedding:
        return dst.token_embedding
    if name in src.lm_head:
        return dst.lm_head[0] if dst.lm_head else dst.token_embedding
    raise ModelError(f"tensor {name} of '{ref}' has no counterpart in '{other}'")
