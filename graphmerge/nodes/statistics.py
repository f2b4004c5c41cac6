"""The `statistics` node: per-model calibration statistics for RegMean (`kind: gram`) and Fisher
merging (`kind: fisher`), cached content-addressed per tensor under (model key, data digest, kind).

The node runs the models only for statistics the cache does not hold, so a second merge or a search
trial computes none; its value maps each model key to lazy `statistic` tensor tasks that the merge
node feeds to the method next to the weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from graphmerge.errors import GraphmergeError
from graphmerge.executor import RunContext
from graphmerge.hashing import digest
from graphmerge.lazy import torch
from graphmerge.params import NodeParams
from graphmerge.plan import Model, TensorTask, make_task
from graphmerge.registry import node, tensor_op

STATISTICS_VERSION = "1"


class CalibrationSpec(NodeParams):
    tasks: list[str] = Field(default_factory=list, description="lm-eval tasks whose documents are used")
    include_path: list[Path] = Field(default_factory=list, description="folders of task YAMLs")
    limit: int | None = Field(None, ge=1, description="documents per task")
    file: Path | None = Field(None, description="or a .jsonl file (field text_field) or a text file")
    text_field: str = Field("text", description="the JSONL field holding each document")
    max_tokens: int = Field(8192, ge=2, description="calibration tokens in all")
    max_length: int = Field(512, ge=2, description="tokens per document (longer ones are cut)")

    @model_validator(mode="after")
    def _one_source(self) -> CalibrationSpec:
        if bool(self.tasks) == (self.file is not None):
            raise ValueError("give calibration `tasks:` (lm-eval) or `file:`, not both and not neither")
        return self


class StatisticsParams(NodeParams):
    kind: Literal["gram", "fisher"] = Field(description="gram (RegMean) | fisher (Fisher merging)")
    models: list[str] = Field(min_length=1, description="model nodes to compute statistics for")
    calibration: CalibrationSpec
    batch_size: int = Field(8, ge=1, description="documents per forward pass (gram)")
    layers_per_pass: int | None = Field(
        None, ge=1, description="decoder layers whose statistics are held in memory at once (None: all)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype the model runs in (statistics accumulate in float32)"
    )


@dataclass(frozen=True)
class Statistics:
    """Model key -> tensor name -> the task of its statistic (a weight's Gram matrix or Fisher)."""

    kind: str
    tasks: Mapping[str, Mapping[str, TensorTask]]

    @property
    def cache_key(self) -> str:
        return digest(
            "statistics", self.kind, {k: {n: t.key for n, t in v.items()} for k, v in self.tasks.items()}
        )

    def for_model(self, model: Model, ref: str, where: str) -> Mapping[str, TensorTask]:
        found = self.tasks.get(model.key)
        if found is None:
            raise GraphmergeError(
                f"the statistics node has no statistics for model '{ref}'",
                where=where,
                fix=f"list '{ref}' under the statistics node's `models:`",
            )
        return found


@tensor_op("statistic", version=STATISTICS_VERSION)
def statistic(*, name: str) -> torch.Tensor:
    # The statistics node stores every statistic before any merge asks for it.
    raise GraphmergeError(
        f"statistic {name} is missing from the cache", fix="run the graph again to recompute it"
    )


def _resolve(path: Path, graph_dir: Path) -> Path:
    return path if path.is_absolute() else graph_dir / path


def _include_path(ctx: RunContext, spec: CalibrationSpec) -> list[str]:
    return [str(_resolve(p, ctx.graph.dir)) for p in spec.include_path]


def _sequences(ctx: RunContext, spec: CalibrationSpec, tokenizer_dir: Path) -> list[list[int]]:
    from graphmerge.evaluation import load_tokenizer
    from graphmerge.evaluation.calibration import file_documents, task_documents, tokenize

    if spec.file is not None:
        docs = file_documents(_resolve(spec.file, ctx.graph.dir), spec.text_field)
    else:
        docs = task_documents(spec.tasks, _include_path(ctx, spec), spec.limit)
    return tokenize(
        docs, load_tokenizer(tokenizer_dir), max_tokens=spec.max_tokens, max_length=spec.max_length
    )


def _check_calibration(ctx: RunContext, spec: CalibrationSpec) -> None:
    """What `_sequences` would reject in the data, found without a tokenizer (so that `validate` stays
    light): the file and its lines, or each task name."""
    from graphmerge.evaluation.calibration import check_tasks, file_documents

    if spec.file is not None:
        for _ in file_documents(_resolve(spec.file, ctx.graph.dir), spec.text_field):
            pass
    else:
        check_tasks(spec.tasks, _include_path(ctx, spec))


def _compute(ctx: RunContext, params: StatisticsParams, model: Model, seqs, sink) -> dict[str, str] | None:
    from graphmerge.evaluation import build_model
    from graphmerge.evaluation.statistics import fisher_diagonals, gram_matrices

    tensors = ctx.executor.materialize(model, desc="statistics")
    hf = build_model(dict(model.config), tensors, dtype=params.dtype, device=ctx.device)
    del tensors
    if params.kind == "gram":
        return gram_matrices(
            hf, seqs, batch_size=params.batch_size, layers_per_pass=params.layers_per_pass, sink=sink
        )
    fisher_diagonals(hf, seqs, layers_per_pass=params.layers_per_pass, sink=sink)
    return None


def model_statistics(
    ctx: RunContext, params: StatisticsParams, ref: str, model: Model
) -> dict[str, TensorTask]:
    """Weight name -> its statistic's task, computing (and storing) the statistics the cache lacks."""
    if model.tokenizer_dir is None:
        raise GraphmergeError(
            f"model '{ref}' has no tokenizer to read the calibration data with",
            fix="load model folders that include tokenizer files",
        )
    if ctx.checking:
        # Nothing is computed or looked up while checking (the node checked the data once): the data
        # need not be tokenized.
        seqs, data = [], "unchecked"
    else:
        seqs = _sequences(ctx, params.calibration, model.tokenizer_dir)
        data = digest("data", [list(s) for s in seqs])

    def task(name: str) -> TensorTask:
        return make_task(
            "statistic",
            identity=[params.kind, model.key, data, params.dtype, name],
            dtype="float32",
            name=name,
        )

    # Which modules share one input (q/k/v) is learnt by the first computation and cached as a result.
    sharing = ctx.cache.get_result(digest("gram-sharing", STATISTICS_VERSION, model.key))
    if params.kind == "gram":
        complete, needed = sharing is not None, sorted(set((sharing or {}).values()))
    else:
        complete, needed = True, list(model.tensors)
    if complete and all(ctx.cache.has_tensor(task(n).key) for n in needed):
        ctx.stats.statistics_cached += len(needed)
    elif ctx.checking:
        # `validate` (and `run`'s check pass) plans but never computes: without the learnt sharing,
        # every weight stands for its own module's statistic.
        if params.kind == "gram":
            sharing = {n.removesuffix(".weight"): n.removesuffix(".weight") for n in model.tensors}
    else:

        def sink(name: str, value: torch.Tensor) -> None:
            ctx.cache.put_tensor(task(name).key, value, always=True)
            ctx.stats.statistics_computed += 1

        ctx.log(f"statistics: {params.kind} of '{ref}' on {sum(map(len, seqs))} calibration tokens")
        found = _compute(ctx, params, model, seqs, sink)
        if params.kind == "gram":
            assert found is not None
            sharing = found
            ctx.cache.put_result(digest("gram-sharing", STATISTICS_VERSION, model.key), sharing)
    if params.kind == "gram":
        assert sharing is not None
        return {f"{m}.weight": task(owner) for m, owner in sharing.items() if f"{m}.weight" in model.tensors}
    return {n: task(n) for n in model.tensors}


@node("statistics", version=STATISTICS_VERSION, params=StatisticsParams, inputs=["models"])
def statistics_node(ctx: RunContext, params: StatisticsParams, inputs: Mapping[str, Model]) -> Statistics:
    """Gram matrices of linear inputs or Fisher diagonals of each model on calibration data (cached)."""
    if ctx.checking:
        _check_calibration(ctx, params.calibration)
    tasks = {inputs[ref].key: model_statistics(ctx, params, ref, inputs[ref]) for ref in params.models}
    return Statistics(kind=params.kind, tasks=tasks)
