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

from graphmerge.errors import GraphmergeError, ModelError, storage_error
from graphmerge.executor import RunContext
from graphmerge.hashing import digest
from graphmerge.io.folder import ModelFolder
from graphmerge.io.save import check_output_folder, parse_size, write_hf_model
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


def _refuse_remote_code(config: Mapping, folder: Path) -> None:
    """A config whose architecture only the folder's own Python code (`auto_map`) defines: graphmerge
    never runs code from a model folder, and a merge of it could be neither evaluated nor loaded
    without that code. Architectures transformers knows load as usual; their auto_map is ignored."""
    if not config.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING:
        return
    modules = sorted({str(v).split(".")[0] + ".py" for v in dict(config["auto_map"]).values()})
    raise ModelError(
        f"model_type {model_type!r} is defined only by the folder's own code (auto_map: {', '.join(modules)}), "
        "which graphmerge never runs",
        where=str(folder / "config.json"),
        fix="use a model whose architecture transformers supports, or convert the checkpoint to one",
    )


@node("load", version="1", params=LoadParams)
def load_node(ctx: RunContext, params: LoadParams, inputs: Mapping) -> Model:
    """A model folder; tensors are read lazily, one at a time, when something needs them."""
    folder = open_folder(params.path)
    _refuse_remote_code(folder.config, folder.path)
    # Checking plans but never reads tensor bytes: the path stands in for the content digest.
    digests = {} if ctx.checking else folder.tensor_digests(memo=ctx.cache.digests)
    tasks = {}
    for name in folder.tensor_names:
        info = folder.info(name)
        tasks[name] = make_task(
            "read",
            identity=digests.get(name) or ("unread", str(folder.path), name),
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


def save_check(ctx: RunContext, params: SaveParams, inputs: Mapping) -> dict:
    """The output folder can be written and is none of the graph's source model folders."""
    model: Model = inputs[params.input]
    out = Path(params.path).absolute()
    parse_size(params.max_shard_size)
    for name, spec in ctx.graph.nodes.items():
        if spec.op == "load":
            source = Path(spec.params.path).absolute()
            if out == source or source.is_relative_to(out):
                raise ModelError(
                    f"the output path {out} would replace the model that node '{name}' loads",
                    fix="save to another folder",
                )
    check_output_folder(out)
    return {"path": str(out), "model_key": model.key, "written": False}


@node("save", version="1", params=SaveParams, inputs=["input"], effectful=True, check=save_check)
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
        for i, value in ctx.executor.stream([model.tensors[n] for n in names], desc=f"save {out.name}"):
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
    try:
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
    except GraphmergeError:
        raise
    except Exception as exc:  # safetensors reports a full disk as its own error type
        kept = (
            "the previous output (if any) is unchanged, the partial copy was removed, and the cache is intact"
        )
        err = storage_error(exc, out, "the output model", kept)
        if err is None:
            raise
        raise err from exc
    ctx.stats.outputs.append(str(out))
    ctx.log(f"save: wrote {out}")
    return {"path": str(out), "model_key": model.key, "written": True}
