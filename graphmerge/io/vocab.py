"""Vocabulary alignment for merging models whose tokenizers differ.

The *anchor* model (the `source` model, or `base` for source "base"/"union") keeps its token ids exactly,
so its embedding rows stay in place; in a union, tokens the anchor lacks are appended after its highest
id, model by model in the order given, each model's tokens in its own id order (deterministic for a given
graph). Every model gets an index vector out_id -> its own id (-1: token absent), and `remap_rows` builds
any model's embedding or LM head matrix in the output vocabulary with index_select/index_copy only.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from graphmerge.errors import ModelError
from graphmerge.io.remote_code import untrusted_error
from graphmerge.lazy import torch

__all__ = [
    "VocabAlignment",
    "build_vocab_alignment",
    "remap_rows",
    "tokenizer_vocab",
    "write_aligned_tokenizer",
    "FILL_POLICIES",
]

FILL_POLICIES = ("only", "base", "mean", "zero")
# Tokenizer files that stay valid when only tokenizer.json is rewritten. Slow-tokenizer files
# (vocab.json, merges.txt, tokenizer.model) are dropped for a union: they would contradict tokenizer.json.
_SIDE_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True, eq=False)
class VocabAlignment:
    """The output vocabulary and, per model, where each output token lives in that model."""

    models: tuple[str, ...]
    base: str
    source: str  # as requested: "union", "base" or a model name
    anchor: str  # the model whose ids are kept unchanged
    vocab: Mapping[str, int]  # output token -> output id
    size: int  # output rows: max id + 1 rounded up to pad_to_multiple (slots may be token-less)
    index: torch.Tensor  # int64 (len(models), size): out id -> model id, -1 where the model lacks it
    new_tokens: tuple[str, ...]  # tokens the anchor lacks, in output-id order

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise ModelError(f"model {model!r} is not part of this vocabulary alignment") from None

    def index_for(self, model: str) -> torch.Tensor:
        return self.index[self.model_index(model)]


def build_vocab_alignment(
    vocabs: Mapping[str, Mapping[str, int]],
    source: str = "union",
    base: str | None = None,
    pad_to_multiple: int = 1,
) -> VocabAlignment:
    names = tuple(vocabs)
    if not names:
        raise ModelError("vocabulary alignment needs at least one model")
    base = names[0] if base is None else base
    if base not in vocabs:
        raise ModelError(
            f"base {base!r} is not one of the aligned models", fix=f"use one of {', '.join(names)}"
        )
    if source not in ("union", "base") and source not in vocabs:
        raise ModelError(
            f"unknown tokenizer source {source!r}", fix=f"use union, base or one of {', '.join(names)}"
        )
    if not isinstance(pad_to_multiple, int) or pad_to_multiple < 1:
        raise ModelError(f"pad_to_multiple must be a positive integer, got {pad_to_multiple!r}")
    anchor = base if source in ("union", "base") else source

    out: dict[str, int] = dict(vocabs[anchor])
    ids = list(out.values())
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ModelError(f"tokenizer vocabulary of {anchor!r} has negative or duplicate token ids")
    next_id = max(ids) + 1 if ids else 0
    new: list[str] = []
    if source == "union":
        for m in names:
            if m == anchor:
                continue
            for tok, _ in sorted(vocabs[m].items(), key=lambda kv: (kv[1], kv[0])):
                if tok not in out:
                    out[tok] = next_id
                    next_id += 1
                    new.append(tok)
    size = -(-next_id // pad_to_multiple) * pad_to_multiple

    index = torch.full((len(names), size), -1, dtype=torch.int64)
    for k, m in enumerate(names):
        # One dict pass per model to build the map; the heavy row copying in remap_rows is vectorised.
        pairs = [(out[t], i) for t, i in vocabs[m].items() if t in out]
        if pairs:
            o, i = torch.tensor(pairs, dtype=torch.int64).unbind(1)
            index[k, o] = i
    return VocabAlignment(names, base, source, anchor, out, size, index, tuple(new))


def remap_rows(
    rows_by_model: Sequence[torch.Tensor],
    alignment: VocabAlignment,
    target: int,
    fill: str = "only",
) -> torch.Tensor:
    """Model `target`'s vocab-indexed tensor (embedding, LM head, head bias) in the output vocabulary.

    A token the target has keeps the target's row. A missing token is filled by `fill`:
      "only": the row of the only model that has it; if several have it, the base's row if the base has
              it, else the mean of those that have it;
      "base": the base's row if the base has it, else the mean of those that have it (coincides with
              "only": the mean of a single row is that row);
      "mean": the mean of the rows of all models that have it;
      "zero": zeros.
    Slots no model has a token for (gaps, padding) are zero, except that the anchor keeps its own rows
    there (so padded embedding rows of the anchor survive unchanged). Model ids beyond a model's row
    count (tokenizer larger than the embedding) count as absent. Means are computed in float32.
    """
    if fill not in FILL_POLICIES:
        raise ModelError(f"unknown fill policy {fill!r}", fix=f"use one of {', '.join(FILL_POLICIES)}")
    k_models = len(alignment.models)
    if len(rows_by_model) != k_models:
        raise ModelError(f"expected {k_models} row tensors (one per aligned model), got {len(rows_by_model)}")
    if not 0 <= target < k_models:
        raise ModelError(f"target model index {target} out of range 0..{k_models - 1}")
    tail = rows_by_model[target].shape[1:]
    for m, r in zip(alignment.models, rows_by_model):
        if r.shape[1:] != tail:
            raise ModelError(
                f"rows of {m!r} have shape {list(r.shape)}, expected [*, {', '.join(map(str, tail))}]"
            )
    index = alignment.index
    has = torch.stack([(index[k] >= 0) & (index[k] < rows_by_model[k].shape[0]) for k in range(k_models)])
    rows_t = rows_by_model[target]
    out_dtype = rows_t.dtype

    own = has[target]
    out = rows_t.index_select(0, torch.where(own, index[target], 0)) if rows_t.shape[0] else None
    if out is None:
        out = torch.zeros((alignment.size, *tail), dtype=out_dtype)
    missing = (~own).nonzero().squeeze(1)
    if missing.numel() == 0:
        return out

    h = has[:, missing]  # (K, M): which models have each missing token
    count = h.sum(0)
    fill_rows = torch.zeros((missing.numel(), *tail), dtype=torch.float32)

    def gather(k: int, sel: torch.Tensor) -> torch.Tensor:
        # Rows of model k for the missing positions selected by boolean `sel` (which k must have).
        return rows_by_model[k].index_select(0, index[k, missing[sel]]).float()

    if fill != "zero":
        # Mean over models that have the token (for one holder this is that holder's row).
        for k in range(k_models):
            sel = h[k]
            if sel.any():
                fill_rows[sel] += gather(k, sel)
        nz = count > 0
        fill_rows[nz] /= count[nz].to(torch.float32).view(-1, *([1] * len(tail)))
        if fill in ("only", "base"):
            b = alignment.model_index(alignment.base)
            sel = h[b] & (count > 1)
            if sel.any():
                fill_rows[sel] = gather(b, sel)

    empty = count == 0
    if alignment.models[target] == alignment.anchor and empty.any():
        keep = empty & (missing < rows_t.shape[0])
        if keep.any():
            fill_rows[keep] = rows_t.index_select(0, missing[keep]).float()
    out.index_copy_(0, missing, fill_rows.to(out_dtype))
    return out


def tokenizer_vocab(tokenizer_dir: Path | str, trust_remote_code: bool = False) -> dict[str, int]:
    """token -> id of a tokenizer folder, added tokens included (from tokenizer.json when present,
    which runs no code; else transformers, running the folder's own code only if trusted)."""
    d = Path(tokenizer_dir)
    tj = d / "tokenizer.json"
    try:
        if tj.is_file():
            from tokenizers import Tokenizer

            return dict(Tokenizer.from_file(str(tj)).get_vocab(with_added_tokens=True))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(
            str(d), local_files_only=True, trust_remote_code=trust_remote_code
        )
        return dict(tok.get_vocab())
    except Exception as e:
        if "trust_remote_code" in str(e):
            raise untrusted_error(d, "tokenizer code") from None
        raise ModelError(
            f"cannot load tokenizer ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            where=str(d),
            fix="the folder needs tokenizer.json or a tokenizer transformers can load",
        ) from e


def _read_tokenizer_json(d: Path) -> dict:
    p = d / "tokenizer.json"
    if not p.is_file():
        raise ModelError(
            "a vocabulary union needs tokenizer.json (fast tokenizer)",
            where=str(d),
            fix="save the tokenizer with a fast tokenizer, or use source: base",
        )
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelError(f"tokenizer.json is not valid JSON ({e})", where=str(p)) from e


def _merge_pair(m: str | list) -> tuple[str, str]:
    # tokenizers < 0.20 stores merges as "a b", newer versions as ["a", "b"].
    if isinstance(m, str):
        a, b = m.split(" ", 1)
        return a, b
    return m[0], m[1]


def write_aligned_tokenizer(
    alignment: VocabAlignment,
    tokenizer_dirs: Mapping[str, Path | str],
    out_dir: Path | str,
    *,
    append_merges: bool = True,
) -> Path:
    """Write a fast HF tokenizer for the output vocabulary into `out_dir`; returns `out_dir`.

    Without new tokens (source is a model, or the union adds nothing) the anchor's tokenizer files are
    copied unchanged. For a union, the anchor's tokenizer.json is extended *in its model vocabulary*
    (not as added tokens): added tokens are matched on raw text before pre-tokenization, so a byte-level
    token like "Ġhello" added that way would match the literal characters "Ġhello" and would split words
    everywhere it occurs. Extending the vocabulary keeps the anchor's tokenization; with `append_merges`
    the other BPE tokenizers' merges that build the new tokens are appended *after* the anchor's merges
    (lowest priority, only when pre-tokenizer and normalizer are identical), so the anchor's merges always
    win and the extra merges only join what the anchor leaves unmerged, making new tokens reachable.
    Tokens that are added/special tokens in their own tokenizer (e.g. chat markers) stay added tokens.
    Every token's id is put in the model vocabulary explicitly, and the result is reloaded and checked
    to map every output token to its output id.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = {m: Path(tokenizer_dirs[m]) for m in alignment.models if m in tokenizer_dirs}
    if alignment.anchor not in dirs:
        raise ModelError(f"no tokenizer folder given for {alignment.anchor!r}")
    anchor_dir = dirs[alignment.anchor]
    if not alignment.new_tokens:
        from graphmerge.io.folder import tokenizer_files

        for f in tokenizer_files(anchor_dir):
            shutil.copy2(f, out / f.name)
        return out

    tj = _read_tokenizer_json(anchor_dir)
    model = tj.get("model") or {}
    if model.get("type") not in ("BPE", "WordPiece", "WordLevel") or not isinstance(model.get("vocab"), dict):
        raise ModelError(
            f"cannot extend a {model.get('type')} tokenizer with new tokens",
            where=str(anchor_dir),
            fix="vocabulary union supports BPE, WordPiece and WordLevel tokenizers; use source: base",
        )
    vocab: dict[str, int] = model["vocab"]
    added: list[dict] = tj.setdefault("added_tokens", [])
    # Make the anchor's added tokens explicit too: ids of added tokens *not* in the model vocabulary are
    # re-assigned from the vocabulary size at load time, which the new tokens would shift.
    for a in added:
        vocab.setdefault(a["content"], a["id"])
    new_set = set(alignment.new_tokens)
    for t in alignment.new_tokens:
        vocab[t] = alignment.vocab[t]

    others = [m for m in alignment.models if m != alignment.anchor and m in dirs]
    other_json = {m: _read_tokenizer_json(dirs[m]) for m in others}
    added_contents = {a["content"] for a in added}
    new_added: list[dict] = []
    for m in others:
        for a in other_json[m].get("added_tokens", []):
            c = a["content"]
            if c in new_set and c not in added_contents:
                entry = copy.deepcopy(a)
                entry["id"] = alignment.vocab[c]
                added.append(entry)
                new_added.append(entry)
                added_contents.add(c)

    if append_merges and model.get("type") == "BPE" and not model.get("continuing_subword_prefix"):
        merges = model.get("merges", [])
        as_str = bool(merges) and isinstance(merges[0], str)
        seen = {_merge_pair(x) for x in merges}
        for m in others:
            oj = other_json[m]
            om = oj.get("model") or {}
            compatible = (
                om.get("type") == "BPE"
                and oj.get("pre_tokenizer") == tj.get("pre_tokenizer")
                and oj.get("normalizer") == tj.get("normalizer")
                and not om.get("continuing_subword_prefix")
            )
            if not compatible:
                continue
            for x in om.get("merges", []):
                a, b = _merge_pair(x)
                if (a, b) in seen or a not in vocab or b not in vocab or (a + b) not in vocab:
                    continue
                seen.add((a, b))
                merges.append(f"{a} {b}" if as_str else [a, b])
        model["merges"] = merges

    text = json.dumps(tj, ensure_ascii=False)
    _check_ids(text, alignment, anchor_dir)
    (out / "tokenizer.json").write_text(text, encoding="utf-8")
    for name in _SIDE_FILES:
        src = anchor_dir / name
        if not src.is_file():
            continue
        if name == "tokenizer_config.json" and new_added:
            cfg = json.loads(src.read_text(encoding="utf-8"))
            dec = cfg.get("added_tokens_decoder")
            if isinstance(dec, dict):
                for e in new_added:
                    dec[str(e["id"])] = {
                        k: e[k]
                        for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
                        if k in e
                    }
            (out / name).write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            shutil.copy2(src, out / name)
    return out


def _check_ids(tokenizer_json: str, alignment: VocabAlignment, where: Path) -> None:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(tokenizer_json)
    except Exception as e:
        raise ModelError(f"the aligned tokenizer does not load ({e})", where=str(where)) from e
    got = tok.get_vocab(with_added_tokens=True)
    bad = [t for t, i in alignment.vocab.items() if got.get(t) != i]
    if bad:
        raise ModelError(
            f"the aligned tokenizer maps {len(bad)} tokens to unexpected ids (first: {bad[0]!r})",
            where=str(where),
        )
