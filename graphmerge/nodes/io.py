"""`load` and `save`: the edges where models enter and leave the graph."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

import xxhash
from pydantic import Field

from graphmerge.errors import GraphmergeError, ModelError, storage_error
from graphmerge.executor import RunContext
from graphmerge.hashing import digest
from graphmerge.io.folder import ModelFolder
from graphmerge.io.remote_code import FLAG, code_files
from graphmerge.io.save import PlannedTensor, check_output_folder, parse_size, save_hf_model
from graphmerge.lazy import torch
from graphmerge.nodes.card import component_versions, model_card, resolved_graph_yaml
from graphmerge.nodes.merge import MERGE_NODE_OF
from graphmerge.nonfinite import all_finite, describe_nonfinite, warn_once
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


# Source folder -> the load node that named it, so a warning about a tensor can name the node.
_LOAD_NODES: dict[str, str] = {}


@tensor_op("read", version="1", cached=False)
def read_tensor(*, path: str, name: str) -> torch.Tensor:
    value = open_folder(path).read(name)
    if not all_finite(value):
        node_name = _LOAD_NODES.get(path, "?")
        warn_once(
            f"tensor {name} of model '{node_name}' ({path}) holds {describe_nonfinite(value)}; "
            "they pass into everything computed from it"
        )
    return value


def _tokenizer_key(files: list[Path]) -> str:
    h = xxhash.xxh3_128()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class LoadParams(NodeParams):
    path: str = Field(
        description="model folder (relative to the graph), hub id org/name[@revision] or hf://..., "
        "a PEFT LoRA adapter folder, or MODEL+ADAPTER",
        json_schema_extra={"local_or_hub": True},  # local parts are made absolute like paths
    )


def _model_source(path: str, graph_dir: Path, *, download: bool = True) -> tuple[Path, Path | None]:
    """(model folder, LoRA adapter folder or None) for a `load` path."""
    from graphmerge.io.hub import locate_model
    from graphmerge.io.lora import ADAPTER_CONFIG, is_adapter_folder

    whole = locate_model(path, graph_dir, download=download)
    if "+" in path and not whole.exists():
        model_ref, adapter_ref = path.rsplit("+", 1)
        return (
            locate_model(model_ref, graph_dir, download=download),
            locate_model(adapter_ref, graph_dir, download=download),
        )
    if is_adapter_folder(whole):
        base = json.loads((whole / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base:
            raise ModelError(
                f"adapter {whole} names no base model (base_model_name_or_path)",
                fix="load it as MODEL+ADAPTER",
            )
        return locate_model(base, graph_dir, download=download), whole
    return whole, None


def check_load_paths(graph) -> list[str]:
    """Every `load` path exists locally or, offline, in the hub cache (nothing is downloaded).
    Returns the load nodes whose hub models are not cached yet (`run` downloads them)."""
    from graphmerge.io.hub import NotCached

    pending = []
    for name, spec in graph.nodes.items():
        if spec.op != "load" or "${" in spec.params.path:
            continue
        try:
            for found in _model_source(spec.params.path, graph.dir, download=False):
                if found is not None and not found.exists():
                    raise ModelError(f"model folder {found} does not exist", fix="check the path")
        except NotCached:
            pending.append(name)  # `run` downloads it
        except ModelError as exc:
            raise ModelError(exc.what, where=graph.where(name, "path"), fix=exc.fix) from None
    return pending


@node("load", version="1", params=LoadParams)
def load_node(ctx: RunContext, params: LoadParams, inputs: Mapping) -> Model:
    """A model folder; tensors are read lazily, one at a time, when something needs them."""
    model_dir, adapter_dir = _model_source(params.path, ctx.graph.dir)
    model = _load_folder(ctx, model_dir)
    if adapter_dir is None:
        return model
    from graphmerge.io.lora import open_adapter
    from graphmerge.nodes.lora import with_adapter

    return with_adapter(model, open_adapter(adapter_dir))


def _load_folder(ctx: RunContext, path: Path) -> Model:
    folder = open_folder(path)
    _LOAD_NODES[str(folder.path)] = ctx.node_name
    # Checking plans but never reads tensor bytes: the path stands in for the content digest. A run
    # learns the digest of a file it has not hashed before from the read that loads each tensor.
    identities = {} if ctx.checking else ctx.cache.source_identities(folder)
    tasks = {}
    for name in folder.tensor_names:
        info = folder.info(name)
        tasks[name] = make_task(
            "read",
            identity=identities.get(name) or ("unread", str(folder.path), name),
            shape=tuple(info.shape),
            dtype=info.dtype_name,
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
        code_dir=folder.path if code_files(folder.path) else None,
    )


def _up_to_date(out: Path, stamp: Callable[[], str]) -> bool:
    """The folder was written from this very model and its weight files are all still there.
    `stamp` is asked only when the folder has a stamp to compare: computing it may have to hash
    source files that the run would otherwise read just once."""
    try:
        written = json.loads((out / STAMP_FILE).read_text()).get("stamp")
        if written is None or written != stamp():
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


_FLOATING = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}


def _save_plan(model: Model, dtype: str | None) -> list[PlannedTensor] | None:
    """The saved tensors' names, shapes and dtypes as planned (None when a task does not say), so
    that `save` writes each tensor as it arrives."""
    plan = []
    for name, task in model.tensors.items():
        if task.shape is None or task.dtype is None:
            return None
        saved = dtype if dtype and task.dtype in _FLOATING else task.dtype
        plan.append(PlannedTensor(name, tuple(task.shape), saved))
    return plan


def _save_stamp(params: SaveParams, model: Model, code: list[Path]) -> str:
    # The code files join the stamp only when copied, so outputs saved before they existed stay current.
    return digest(model.key, params.dtype, params.max_shard_size, *([_tokenizer_key(code)] if code else []))


def save_state(ctx: RunContext, params: SaveParams, inputs: Mapping) -> str:
    """The rule `save` skips a write by, for `viz`: "cached" when the output is up to date."""
    model: Model = inputs[params.input]
    stamp = lambda: _save_stamp(params, model, _code_to_copy(ctx, model))  # noqa: E731
    return "cached" if not ctx.cache.force and _up_to_date(Path(params.path), stamp) else "missing"


@node(
    "save",
    version="1",
    params=SaveParams,
    inputs=["input"],
    effectful=True,
    check=save_check,
    cache_state=save_state,
)
def save_node(ctx: RunContext, params: SaveParams, inputs: Mapping) -> dict:
    """Write an HF model folder that plain transformers loads."""
    model: Model = inputs[params.input]
    out = params.path
    code = _code_to_copy(ctx, model)
    # The stamp, the card and graphmerge.json name the model key: asked for after the tensors have
    # streamed, it costs nothing, since every source digest was learnt from the read that loaded it.
    stamp = lambda: _save_stamp(params, model, code)  # noqa: E731
    names = list(model.tensors)
    target = getattr(torch, params.dtype) if params.dtype else None
    plan = _save_plan(model, params.dtype)

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        done = 0
        try:
            # Computed ahead in a background thread: shard writes overlap the merge.
            for i, value in ctx.executor.stream_ahead(
                [model.tensors[n] for n in names], desc=f"save {out.name}"
            ):
                value = value.to("cpu")
                done = i + 1
                yield names[i], value.to(target) if target is not None else value
        except GraphmergeError as exc:
            # Roots are computed in order: the failing one is the first not yet yielded.
            if done < len(names):
                merged_by = MERGE_NODE_OF.get(model.tensors[names[done]].local_key)
                tensor = f"tensor {names[done]}" + (f" of merge node '{merged_by}'" if merged_by else "")
                exc.where = tensor + (f": {exc.where}" if exc.where else "")
                exc.args = (exc.one_line(),)
            raise

    config = dict(model.config)
    if params.dtype:
        config["torch_dtype"] = params.dtype
    graph_yaml = model.recipe(out) if model.recipe is not None else resolved_graph_yaml(ctx.graph)

    def extra() -> dict[str, str]:
        record = {
            "stamp": stamp(),
            "model_key": model.key,
            "recipe": list(model.provenance),
            "versions": component_versions(ctx.graph),
        }
        return {STAMP_FILE: json.dumps(record, indent=2), "graph.yaml": graph_yaml}
    try:
        outcome = save_hf_model(
            out,
            config,
            tensors(),
            tokenizer_from=model.tokenizer_dir,
            generation_config_from=model.tokenizer_dir,
            dtype=target,
            max_shard_size=parse_size(params.max_shard_size),
            model_card=lambda: model_card(ctx.graph, ctx.node_name, model, params.dtype),
            extra_files=extra,
            copy_files=code,
            skip_if=lambda path: not ctx.cache.force and _up_to_date(path, stamp),
            on_wait=lambda: ctx.log(f"save: waiting for another run writing {out}"),
            plan=plan,
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
    if outcome.written:
        ctx.stats.outputs.append(str(out))
        ctx.log(f"save: wrote {out}")
    elif outcome.waited:
        ctx.log(f"save: another run wrote {out} with this same model meanwhile; nothing to do")
    else:
        ctx.log(f"save: {out} is up to date")
    return {"path": str(out), "model_key": model.key, "written": outcome.written}


def _code_to_copy(ctx: RunContext, model: Model) -> list[Path]:
    """The custom modelling/tokenizer *.py files the saved folder needs; copied only with consent."""
    if model.code_dir is None:
        return []
    files = code_files(model.code_dir)
    if files and not ctx.trust_remote_code:
        warn_once(
            f"{model.code_dir} carries custom code ({', '.join(f.name for f in files)}); it is not "
            f"copied into the output without {FLAG}, so loading the output needs those files added"
        )
        return []
    return files
