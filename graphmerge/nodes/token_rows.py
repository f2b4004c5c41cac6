"""Per-token embedding overrides for `align_tokenizer` (mergekit's `tokenizer.tokens`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import Field, model_validator

from graphmerge.errors import ModelError
from graphmerge.io.vocab import VocabAlignment
from graphmerge.lazy import torch
from graphmerge.params import NodeParams
from graphmerge.plan import TensorTask, make_task
from graphmerge.registry import tensor_op


class TokenRow(NodeParams):
    source: str = Field(description="model whose row is used, or `zero`")
    token: str | None = Field(
        None, description="that model's row of this token instead (default: the same token)"
    )
    token_id: int | None = Field(None, ge=0, description="or of this id in that model's vocabulary")
    force: bool = Field(False, description="also replace the row in models that have the token")

    @model_validator(mode="after")
    def _one_token(self) -> TokenRow:
        if self.token is not None and self.token_id is not None:
            raise ValueError("give `token` or `token_id`, not both")
        return self


@tensor_op("token_rows", version="1")
def token_rows(aligned: torch.Tensor, *sources: torch.Tensor, rows: tuple) -> torch.Tensor:
    out = aligned.clone()
    for out_id, source, src_id in rows:
        out[out_id] = 0 if source < 0 else sources[source][src_id].to(out.device, out.dtype)
    return out


def override_rows(
    aligned: TensorTask,
    ref: str,
    tokens: Mapping[str, TokenRow],
    alignment: VocabAlignment,
    vocabs: Mapping[str, Mapping[str, int]],
    source_rows: Callable[[str], TensorTask],
) -> TensorTask:
    """`aligned` (model `ref`'s vocab tensor in the output vocabulary) with the configured rows
    replaced, where `ref` lacks the token or the entry says `force`. `source_rows(model)` is that
    model's original (unaligned) tensor of the same role."""
    own = alignment.index_for(ref)
    inputs: list[TensorTask] = []
    position: dict[str, int] = {}
    rows = []
    for token, spec in tokens.items():
        out_id = alignment.vocab.get(token)
        if out_id is None:
            raise ModelError(
                f"tokens: '{token}' is not in the output vocabulary",
                fix="add it to a model's tokenizer or choose another tokenizer source",
            )
        if not spec.force and int(own[out_id]) >= 0:
            continue
        if spec.source == "zero":
            rows.append((out_id, -1, 0))
            continue
        if spec.source not in vocabs:
            raise ModelError(f"tokens: '{token}': source '{spec.source}' is not one of the aligned models")
        src_id = spec.token_id
        if src_id is None:
            name = spec.token if spec.token is not None else token
            src_id = vocabs[spec.source].get(name)
            if src_id is None:
                raise ModelError(
                    f"tokens: model '{spec.source}' has no token '{name}'", fix="name a token it has"
                )
        if spec.source not in position:
            position[spec.source] = len(inputs)
            inputs.append(source_rows(spec.source))
        src_task = inputs[position[spec.source]]
        if src_task.shape is not None and src_id >= src_task.shape[0]:
            raise ModelError(f"tokens: '{token}': id {src_id} is beyond model '{spec.source}''s rows")
        rows.append((out_id, position[spec.source], int(src_id)))
    if not rows:
        return aligned
    return make_task(
        "token_rows", [aligned, *inputs], shape=aligned.shape, dtype=aligned.dtype, rows=tuple(rows)
    )
