"""`load` and `save`: the edges where models enter and leave the graph."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import xxhash
from pydantic import Field

from graphmerge.executor import RunContext
from graphmerge.hashing import digest
from graphmerge.io.folder import ModelFolder
from graphmerge.io.save import parse_size, write_hf_model
from graphmerge.params import NodeParams
from graphmerge.plan import Model, make_task
from graphmerge.registry import node, tensor_op

STAMP_FILE = "graphmerge.json"


@lru_cache(maxsize=64)
def _open_folder(path: str, mtime_ns: int) -> ModelFolder:
    return ModelFolder.open(path)


def open_folder(path: Path | str) -> ModelFolder:
    # Keyed by the config's mtime as well, so a model rewritten in place is re-opened.
    p = Path(path)
    try:
        mtime = (p / "config.json").stat().st_mtime_ns
    except OSError:
        return ModelFolder.open(p)  # raises the user-facing error
    return _open_folder(str(p), mtime)


@tensor_op("read", version="1", cached=False)
def read_tensor(*, path: str, name: str) -> torch.Tensor:
    return open_folder(path).read(name)


def _tokenizer_key(files: list[Path]) -> str:
    h = xxhash.xxh3_128()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class LoadParams(NodeParams):
    path: Path = Field(description="Hugging Face model folder (config.json + safetensors or .bin)")


@node("load", version="1", params=LoadParams)
def load_node(ctx: RunContext, params: LoadParams, inputs: Mapping) -> Model:
    """A model folder; tensors are read lazily, one at a time, when something needs them."""
    folder = open_folder(params.path)
    digests = folder.tensor_digests(memo=ctx.cache.digests)
    tasks = {}
    for name in folder.tensor_names:
        info = folder.info(name)
        tasks[name] = make_task(
            "read",
            identity=digests[name],
            shape=tuple(info.shape),
            dtype=str(info.dtype).removeprefix("torch."),
            path=str(folder.path),
            name=name,
        )
    tok_files = folder.tokenizer_files()
    return Model(
        config=folder.config,
        tensors=tasks,
        tokenizer_dir=folder.path if tok_files else None,
        tokenizer_key=_tokenizer_key(tok_files),
        provenance=(f"load({folder.path.name})",),
        source_dir=folder.path,
    )


def _up_to_date(out: Path, stamp: str) -> bool:
    """The folder was written from this very model and its weight files are all still there."""
    try:
        if json.loads((out / STAMP_FILE).read_text()).get("stamp") != stamp:
            return False
        index = out / "model.safetensors.index.json"
        if index.is_file():
            shards = set(json.loads(index.read_text())["weight_map"].values())
            return all((out / shard).is_file() for shard in shards)
        return (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    except (OSError, ValueError, KeyError):
        return False


class SaveParams(NodeParams):
    input: str = Field(description="the model node to save")
    path: Path = Field(description="output folder (replaced atomically, only on success)")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="default: each tensor's own"
    )
    max_shard_size: str = Field("5GB", description="largest safetensors shard, e.g. 500MB, 5GB")


def model_card(model: Model, dtype: str | None) -> str:
    lines = [
        "---",
        "library_name: transformers",
        "tags: [merge, graphmerge]",
        "---",
        "# Merged model",
        "",
        "Produced by [graphmerge](https://pypi.org/project/graphmerge/) from the graph in `graph.yaml`.",
        "",
        "## Recipe",
        "",
    ]
    lines += [f"- `{step}`" for step in model.provenance]
    lines += [
        "",
        f"Model key (Merkle root of its tensors): `{model.key}`",
        f"dtype: {dtype or 'as sources'}",
        "",
    ]
    return "\n".join(lines)


@node("save", version="1", params=SaveParams, inputs=["input"], effectful=True)
def save_node(ctx: RunContext, params: SaveParams, inputs: Mapping) -> dict:
    """Write an HF model folder that plain transformers loads."""
    model: Model = inputs[params.input]
    out = params.path
    stamp = digest(model.key, params.dtype, params.max_shard_size)
    if _up_to_date(out, stamp):
        ctx.log(f"save: {out} is up to date")
        return {"path": str(out), "model_key": model.key, "written": False}
    names = list(model.tensors)
    target = getattr(torch, params.dtype) if params.dtype else None

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        # Computed ahead in a background thread: shard writes overlap the merge.
        for i, value in ctx.executor.stream_ahead([model.tensors[n] for n in names], desc=f"save {out.name}"):
            value = value.to("cpu")
            yield names[i], value.to(target) if target is not None else value

    config = dict(model.config)
    if params.dtype:
        config["torch_dtype"] = params.dtype
    extra = {
        STAMP_FILE: json.dumps(
            {"stamp": stamp, "model_key": model.key, "recipe": list(model.provenance)}, indent=2
        ),
        "graph.yaml": ctx.graph.text,
    }
    write_hf_model(
        out,
        config,
        tensors(),
        tokenizer_from=model.tokenizer_dir,
        generation_config_from=model.tokenizer_dir,
        dtype=target,
        max_shard_size=parse_size(params.max_shard_size),
        model_card=model_card(model, params.dtype),
        extra_files=extra,
    )
    ctx.stats.outputs.append(str(out))
    ctx.log(f"save: wrote {out}")
    return {"path": str(out), "model_key": model.key, "written": True}
