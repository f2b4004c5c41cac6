"""The executor: runs tensor tasks on demand (cache first), then the node graph on top of it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import networkx as nx
import torch
from tqdm import tqdm

from graphmerge.cache import Cache, CacheMiss
from graphmerge.errors import GraphmergeError
from graphmerge.hashing import digest
from graphmerge.plan import Model, TensorTask
from graphmerge.registry import get_tensor_op
from graphmerge.spec import GraphSpec, NodeSpec


@dataclass
class RunStats:
    tasks_total: int = 0
    tasks_executed: int = 0
    tasks_cached: int = 0
    tensors_read: int = 0
    evaluations_run: int = 0
    evaluations_cached: int = 0
    nodes_cached: int = 0
    outputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def snapshot(self) -> RunStats:
        return RunStats(**{k: (list(v) if isinstance(v, list) else v) for k, v in asdict(self).items()})

    def since(self, before: RunStats) -> dict[str, int]:
        now, then = asdict(self), asdict(before)
        return {k: now[k] - then[k] for k in now if isinstance(now[k], int)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise GraphmergeError(
            f"--device {name!r} is not a device", fix="use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GraphmergeError(
                f"--device {name} was asked for but no CUDA device is available",
                fix="use --device cpu or auto",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GraphmergeError(
                f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices",
                fix=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}",
            )
    elif device.type not in ("cpu", "meta") and not _backend_available(device.type):
        raise GraphmergeError(
            f"--device {name}: no {device.type} device is available", fix="use --device cpu or auto"
        )
    return device


def _backend_available(kind: str) -> bool:
    backend = getattr(torch, kind, None) or getattr(torch.backends, kind, None)
    is_available = getattr(backend, "is_available", None)
    return bool(is_available and is_available())


class TensorExecutor:
    """Computes tensor tasks. Cached results are fetched instead of recomputed; every value is
    dropped after its last consumer has used it, so peak memory is a few tensors, not models."""

    def __init__(
        self, cache: Cache, device: torch.device, stats: RunStats, progress: bool = True, compute: bool = True
    ):
        self.cache = cache
        self.device = device
        self.stats = stats
        self.progress = progress
        self.compute = compute  # False while checking a graph: nothing may compute a tensor

    def _plan(self, roots: Sequence[TensorTask]) -> tuple[list[TensorTask], set[str]]:
        """Tasks in execution order (a depth-first post-order from each root in turn, so one
        tensor's inputs are loaded together) and the keys that are cache hits."""
        graph = nx.DiGraph()
        hits: set[str] = set()
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            task = stack.pop()
            if task.key in seen:
                continue
            seen.add(task.key)
            graph.add_node(task.key, task=task)
            if task.cached and self.cache.has_tensor(task.key):
                hits.add(task.key)
                continue
            for i, inp in enumerate(task.inputs):
                graph.add_edge(task.key, inp.key, order=i)
                stack.append(inp)
        order: list[TensorTask] = []
        done: set[str] = set()
        for root in roots:
            if root.key in done:
                continue
            for key in nx.dfs_postorder_nodes(graph, source=root.key):
                if key not in done:
                    done.add(key)
                    order.append(graph.nodes[key]["task"])
        return order, hits

    def _run_op(self, task: TensorTask, inputs: list[torch.Tensor]) -> torch.Tensor:
        op = get_tensor_op(task.op)
        args = [t.to(self.device) if t.device != self.device else t for t in inputs]
        with torch.no_grad():
            value = op.fn(*args, **dict(task.params))
        if op.cached:
            self.cache.put_tensor(task.key, value)
            self.stats.tasks_executed += 1
        else:
            self.stats.tensors_read += 1
        return value

    def _compute_uncached(self, task: TensorTask) -> torch.Tensor:
        """Fallback when a blob that looked present turns out missing or corrupt on read."""
        if task.cached:
            try:
                return self.cache.get_tensor(task.key)
            except CacheMiss:
                pass
        return self._run_op(task, [self._compute_uncached(t) for t in task.inputs])

    def stream(
        self, roots: Sequence[TensorTask], desc: str = "tensors"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (index, value) for each root, in root order, computing only what is not cached."""
        if not self.compute:
            raise RuntimeError("a node's check computed tensors; checks must only plan")
        order, hits = self._plan(roots)
        remaining: dict[str, int] = {}
        for task in order:
            if task.key not in hits:
                for inp in task.inputs:
                    remaining[inp.key] = remaining.get(inp.key, 0) + 1
        root_positions: dict[str, list[int]] = {}
        for i, root in enumerate(roots):
            root_positions.setdefault(root.key, []).append(i)
            remaining[root.key] = remaining.get(root.key, 0) + 1
        self.stats.tasks_total += len(order)
        values: dict[str, torch.Tensor] = {}
        show = self.progress and len(order) > 20 and sys.stderr.isatty()
        bar = tqdm(total=len(order), desc=desc, unit="task", disable=not show, leave=False)
        try:
            for task in order:
                if task.key in hits:
                    try:
                        value = self.cache.get_tensor(task.key)
                        self.stats.tasks_cached += 1
                    except CacheMiss:
                        value = self._compute_uncached(task)
                else:
                    value = self._run_op(task, [values[t.key] for t in task.inputs])
                    for inp in task.inputs:
                        remaining[inp.key] -= 1
                        if remaining[inp.key] == 0:
                            values.pop(inp.key, None)
                values[task.key] = value
                bar.update(1)
                for i in root_positions.get(task.key, ()):
                    yield i, value
                    remaining[task.key] -= 1
                if remaining.get(task.key, 0) == 0:
                    values.pop(task.key, None)
        finally:
            bar.close()

    def materialize(self, model: Model, desc: str = "tensors") -> dict[str, torch.Tensor]:
        names = list(model.tensors)
        out: dict[str, torch.Tensor] = {}
        for i, value in self.stream([model.tensors[n] for n in names], desc=desc):
            out[names[i]] = value
        return out


@dataclass
class RunContext:
    """What a node function may use besides its params and inputs."""

    cache: Cache
    device: torch.device
    stats: RunStats
    executor: TensorExecutor
    graph: GraphSpec
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))
    extras: dict[str, Any] = field(default_factory=dict)  # summary fields set by nodes (search results)
    node_name: str = ""  # the node being run
    checking: bool = False  # validating: nodes run their `check`, nothing is computed or written

    @property
    def seed(self) -> int:
        return self.graph.seed


def value_key(value: Any) -> str:
    if isinstance(value, Model):
        return value.key
    if hasattr(value, "cache_key"):
        return value.cache_key
    return digest(value)


def node_cache_key(spec: NodeSpec, inputs: Mapping[str, Any]) -> str:
    nt = spec.node_type
    return digest(
        "node",
        nt.name,
        nt.version,
        spec.params.model_dump(mode="json"),
        {ref: value_key(v) for ref, v in inputs.items()},
    )


class Unchecked:
    """Stand-in for the value of a node that checking cannot know (a custom cached node's result).
    Nodes downstream of it are checked by the spec only."""

    def __repr__(self) -> str:
        return "<unchecked>"


UNCHECKED = Unchecked()


def checking_context(ctx: RunContext) -> RunContext:
    """The same run's context, set up to check: its executor refuses to compute tensors."""
    executor = TensorExecutor(ctx.cache, ctx.device, RunStats(), progress=False, compute=False)
    return replace(ctx, executor=executor, stats=executor.stats, checking=True, extras={})


def check_nodes(
    ctx: RunContext, graph: GraphSpec, initial: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every check `run` makes without computing a tensor: the one code path that `validate` and
    `run` (before it computes anything) share. Returns node name -> value or stand-in."""
    return run_nodes(ctx if ctx.checking else checking_context(ctx), graph, initial)


def run_nodes(ctx: RunContext, graph: GraphSpec, initial: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run every node in topological order. Returns node name -> value (a dict of outputs for
    nodes with several). `initial` supplies values for names defined outside this graph (used by
    trial subgraphs, which reference the enclosing graph's nodes)."""
    values: dict[str, Any] = dict(initial or {})
    enclosing = ctx.node_name  # trial subgraphs run inside a node: restore its name afterwards
    try:
        _run_in_order(ctx, graph, values)
    finally:
        ctx.node_name = enclosing
    return values


def _run_in_order(ctx: RunContext, graph: GraphSpec, values: dict[str, Any]) -> None:
    for name in graph.order:
        spec = graph.nodes[name]
        inputs = {ref: lookup_ref(values, ref) for ref in spec.inputs}
        nt = spec.node_type
        if ctx.checking and not _checkable(nt, inputs):
            values[name] = _known_result(ctx, spec, inputs)
            continue
        if nt.cached and not ctx.checking:
            key = node_cache_key(spec, inputs)
            cached = ctx.cache.get_result(key)
            if cached is not None:
                ctx.stats.nodes_cached += 1
                values[name] = cached
                continue
        ctx.node_name = name
        try:
            fn = nt.check if ctx.checking and nt.check is not None else nt.fn
            result = fn(ctx, spec.params, inputs)
        except GraphmergeError as exc:
            if not (exc.where or "").startswith(str(graph.file or "<graph>")):
                exc.where = graph.where(name) + (f": {exc.where}" if exc.where else "")
                exc.args = (exc.one_line(),)
            raise
        if nt.cached and not ctx.checking:
            ctx.cache.put_result(key, result)
        values[name] = result


def _known_result(ctx: RunContext, spec: NodeSpec, inputs: Mapping[str, Any]) -> Any:
    """While checking: a cached node's stored result when there is one, else the stand-in."""
    if not spec.node_type.cached or any(v is UNCHECKED for v in inputs.values()):
        return UNCHECKED
    found = ctx.cache.get_result(node_cache_key(spec, inputs))
    return UNCHECKED if found is None else found


def _checkable(nt: Any, inputs: Mapping[str, Any]) -> bool:
    if any(v is UNCHECKED for v in inputs.values()):
        return False
    return nt.check is not None or not (nt.cached or nt.effectful)


def lookup_ref(values: Mapping[str, Any], ref: str) -> Any:
    """The value a reference names: `node`, or `node.output` of a node with several outputs."""
    name, _, output = ref.partition(".")
    value = values[name]
    if value is UNCHECKED:
        return UNCHECKED
    if output:
        return value[output]
    return value
