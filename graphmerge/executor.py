"""The executor: runs tensor tasks on demand (cache first), then the node graph on top of it."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import networkx as nx
from tqdm import tqdm

from graphmerge.cache import Cache, CacheMiss
from graphmerge.errors import GraphmergeError
from graphmerge.hashing import DeferredIdentity, digest
from graphmerge.lazy import torch
from graphmerge.plan import Model, TensorTask
from graphmerge.spec import GraphSpec, NodeSpec


@dataclass
class RunStats:
    tasks_total: int = 0
    tasks_executed: int = 0
    tasks_cached: int = 0
    tensors_read: int = 0
    evaluations_run: int = 0
    evaluations_cached: int = 0
    examples_evaluated: int = 0  # lm-eval examples actually run (per-example cache misses)
    nodes_cached: int = 0
    statistics_computed: int = 0  # calibration statistics (Gram matrices, Fisher diagonals)
    statistics_cached: int = 0
    tensor_seconds: float = 0.0  # inside the executor (reads, compute, cache traffic), not consumers
    outputs: list[str] = field(default_factory=list)
    op_seconds: dict[str, float] = field(default_factory=dict)  # node op -> seconds, tensor work included

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def snapshot(self) -> RunStats:
        return RunStats(
            **{k: (type(v)(v) if isinstance(v, (list, dict)) else v) for k, v in asdict(self).items()}
        )

    def since(self, before: RunStats) -> dict[str, int | float]:
        now, then = asdict(self), asdict(before)
        return {k: now[k] - then[k] for k in now if isinstance(now[k], (int, float))}


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


DEFAULT_IN_FLIGHT = 512 << 20


@dataclass(frozen=True)
class ExecutorSettings:
    """`in_flight`: bytes of prefetched inputs and of finished tensors waiting for their cache write
    that may be held at once (at least one tensor always proceeds). `pipelined=False` runs reads,
    compute and writes one after another in the calling thread (the reference the pipeline is
    tested against)."""

    in_flight: int = DEFAULT_IN_FLIGHT
    pipelined: bool = True


class _Budget:
    """Bytes in flight between the reader, the compute loop and the writer."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    def try_take(self, n: int) -> bool:
        with self._cond:
            if self.used and self.used + n > self.limit:
                return False
            self._take(n)
            return True

    def take_when(self, n: int, ready: Callable[[], bool]) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.limit or ready())
            self._take(n)

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def give(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class _CacheWriter:
    """One background thread that writes finished tensors to the cache (device-to-host copy,
    serialisation, file write), so the compute loop never waits on the disk unless the in-flight
    budget is full."""

    def __init__(self, cache: Cache, budget: _Budget):
        self.cache = cache
        self.budget = budget
        self.pending = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="graphmerge-cache-writer", daemon=True)
        self._thread.start()

    def put(self, key: str, value: torch.Tensor) -> None:
        self._raise()
        size = _nbytes(value)
        self.budget.take_when(size, lambda: self.pending == 0)
        with self.budget._cond:
            self.pending += 1
        self._queue.put((key, value, size))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            key, value, size = item
            try:
                if self.error is None:
                    self.cache.put_tensor(key, value)
            except BaseException as exc:  # re-raised in the compute thread
                self.error = exc
            finally:
                del value
                with self.budget._cond:
                    self.pending -= 1
                self.budget.give(size)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err


_DONE = object()


def run_ahead(items: Iterator[Any], size_of: Callable[[Any], int], limit: int) -> Iterator[Any]:
    """Yield what `items` yields, produced by a background thread that stays at most `limit`
    bytes (and at least one item) ahead. Errors surface in the consumer; a consumer that stops
    early stops the producer, which closes `items` in its own thread."""
    budget = _Budget(limit)
    handoff: queue.Queue = queue.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                size = size_of(item)
                budget.take_when(size, lambda: stop.is_set() or budget.used == 0)
                if stop.is_set():
                    break
                handoff.put((item, size))
        except BaseException as exc:  # re-raised in the consumer
            handoff.put((exc, -1))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            handoff.put((_DONE, 0))

    worker = threading.Thread(target=produce, name="graphmerge-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, size = handoff.get()
            if item is _DONE:
                return
            if size < 0:
                raise item
            budget.give(size)
            yield item
    finally:
        stop.set()
        budget.give(0)  # wake a producer waiting for room
        worker.join()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _planned_nbytes(task: TensorTask) -> int:
    if task.shape is None:
        return 0
    size = torch.empty((), dtype=getattr(torch, task.dtype or "float32", torch.float32)).element_size()
    return torch.Size(task.shape).numel() * size


class TensorExecutor:
    """Computes tensor tasks. Cached results are fetched instead of recomputed; every value is
    dropped after its last consumer has used it, so peak memory is a few tensors, not models.

    Pipelined (the default): a reader thread loads source tensors and cache hits ahead of the
    compute loop (and, on a GPU, copies them to the device on a side stream), and a writer thread
    writes finished tensors to the cache, both bounded by the in-flight byte budget. The compute
    itself runs the same ops in the same order as the sequential path, so results are identical."""

    def __init__(
        self,
        cache: Cache,
        device: torch.device,
        stats: RunStats,
        progress: bool = True,
        settings: ExecutorSettings | None = None,
        compute: bool = True,
    ):
        self.cache = cache
        self.device = device
        self.stats = stats
        self.progress = progress
        self.settings = settings or ExecutorSettings()
        self.peak_in_flight = 0
        self._copy_stream = None
        self.compute = compute  # False while checking a graph: nothing may compute a tensor

    def _plan(self, roots: Sequence[TensorTask]) -> tuple[list[TensorTask], set[str], set[str]]:
        """Tasks in execution order (a depth-first post-order from each root in turn, so one
        tensor's inputs are loaded together), the local keys that are cache hits, and the local keys
        of cached tasks whose key was not known yet (a source below is still to be read: whether
        they are hits is asked once their inputs have been read)."""
        graph = nx.DiGraph()
        hits: set[str] = set()
        late: set[str] = set()
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            task = stack.pop()
            key = task.local_key
            if key in seen:
                continue
            seen.add(key)
            graph.add_node(key, task=task)
            if task.cached:
                if not task.key_known():
                    late.add(key)
                elif self.cache.has_tensor(task.key):
                    hits.add(key)
                    continue
            for i, inp in enumerate(task.inputs):
                graph.add_edge(key, inp.local_key, order=i)
                stack.append(inp)
        order: list[TensorTask] = []
        done: set[str] = set()
        for root in roots:
            if root.local_key in done:
                continue
            for key in nx.dfs_postorder_nodes(graph, source=root.local_key):
                if key not in done:
                    done.add(key)
                    order.append(graph.nodes[key]["task"])
        return order, hits, late

    def _compute(self, task: TensorTask, inputs: list[torch.Tensor]) -> torch.Tensor:
        op = task.op
        args = [t.to(self.device) if t.device != self.device else t for t in inputs]
        with torch.no_grad():
            value = op.fn(*args, **dict(task.params))
        if op.cached:
            self.stats.tasks_executed += 1
        else:
            self.stats.tensors_read += 1
        identity = task.identity
        if isinstance(identity, DeferredIdentity) and not identity.known:
            identity.observe(value)  # the read that loads a source tensor also gives its digest
        return value

    def _late_hit(self, task: TensorTask) -> torch.Tensor | None:
        """A cached task whose key became known only as its sources were read: its stored value, if
        any (the sources were read either way; only the compute is saved)."""
        if not self.cache.has_tensor(task.key):
            return None
        try:
            value = self.cache.get_tensor(task.key)
        except CacheMiss:
            return None
        self.stats.tasks_cached += 1
        return value if value.device == self.device else value.to(self.device)

    def _run_op(self, task: TensorTask, inputs: list[torch.Tensor]) -> torch.Tensor:
        value = self._compute(task, inputs)
        if task.cached:
            self.cache.put_tensor(task.key, value)
        return value

    def _compute_uncached(self, task: TensorTask) -> torch.Tensor:
        """Fallback when a blob that looked present turns out missing or corrupt on read."""
        if task.cached:
            try:
                return self.cache.get_tensor(task.key)
            except CacheMiss:
                pass
        return self._run_op(task, [self._compute_uncached(t) for t in task.inputs])

    def _load(self, task: TensorTask, hit: bool) -> tuple[torch.Tensor, Any]:
        """A source read or a cache hit, moved to the device; with the CUDA event to wait on."""
        if hit:
            try:
                value = self.cache.get_tensor(task.key)
                self.stats.tasks_cached += 1
            except CacheMiss:
                value = self._compute_uncached(task)
        else:
            value = self._compute(task, [])
        if self.device.type != "cuda" or value.device == self.device:
            return value, None
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            moved = value.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._copy_stream)
        return moved, event

    def _arrived(self, value: torch.Tensor, event: Any) -> torch.Tensor:
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            value.record_stream(current)  # allocated on the copy stream, used and freed on this one
        return value

    def stream(
        self, roots: Sequence[TensorTask], desc: str = "tensors"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (index, value) for each root, in root order, computing only what is not cached."""
        if not self.compute:
            raise RuntimeError("a node's check computed tensors; checks must only plan")
        order, hits, late = self._plan(roots)
        remaining: dict[str, int] = {}
        for task in order:
            if task.local_key not in hits:
                for inp in task.inputs:
                    remaining[inp.local_key] = remaining.get(inp.local_key, 0) + 1
        root_positions: dict[str, list[int]] = {}
        for i, root in enumerate(roots):
            root_positions.setdefault(root.local_key, []).append(i)
            remaining[root.local_key] = remaining.get(root.local_key, 0) + 1
        self.stats.tasks_total += len(order)
        # Loaded rather than computed: cache hits and tasks with no inputs that are not cached
        # (source reads). They are what the reader fetches ahead.
        loads = [t for t in order if t.local_key in hits or (not t.inputs and not t.cached)]
        pipelined = self.settings.pipelined
        budget = _Budget(self.settings.in_flight)
        reader = ThreadPoolExecutor(1, thread_name_prefix="graphmerge-reader") if pipelined else None
        writer = _CacheWriter(self.cache, budget) if pipelined else None
        fetched: dict[str, tuple[Future, int]] = {}
        cursor = 0

        def prefetch() -> None:
            nonlocal cursor
            while cursor < len(loads) and reader is not None:
                task = loads[cursor]
                size = _planned_nbytes(task)
                if not budget.try_take(size):
                    return
                hit = task.local_key in hits
                fetched[task.local_key] = (reader.submit(self._load, task, hit), size)
                cursor += 1

        values: dict[str, torch.Tensor] = {}
        show = self.progress and len(order) > 20 and sys.stderr.isatty()
        bar = tqdm(total=len(order), desc=desc, unit="task", disable=not show, leave=False)
        busy = time.perf_counter()
        try:
            with self.cache.pinned(t.key for t in order if t.local_key in hits):
                for task in order:
                    key = task.local_key
                    prefetch()
                    if key in fetched:
                        future, size = fetched.pop(key)
                        value = self._arrived(*future.result())
                        budget.give(size)
                    elif key in hits or (not task.inputs and not task.cached):
                        value = self._arrived(*self._load(task, key in hits))
                    else:
                        value = self._late_hit(task) if key in late else None
                        if value is None:
                            value = self._compute(task, [values[t.local_key] for t in task.inputs])
                            if task.cached:
                                if writer is not None:
                                    writer.put(task.key, value)
                                else:
                                    self.cache.put_tensor(task.key, value)
                        for inp in task.inputs:
                            remaining[inp.local_key] -= 1
                            if remaining[inp.local_key] == 0:
                                values.pop(inp.local_key, None)
                    values[key] = value
                    bar.update(1)
                    for i in root_positions.get(key, ()):
                        self.stats.tensor_seconds += time.perf_counter() - busy
                        yield i, value
                        busy = time.perf_counter()
                        remaining[key] -= 1
                    if remaining.get(key, 0) == 0:
                        values.pop(key, None)
                if writer is not None:
                    writer.close()
                    writer = None
        finally:
            self.stats.tensor_seconds += time.perf_counter() - busy
            bar.close()
            for future, _ in fetched.values():
                future.cancel()
            if reader is not None:
                reader.shutdown(wait=True)
            if writer is not None:
                writer.close()
            self.peak_in_flight = max(self.peak_in_flight, budget.peak)

    def stream_ahead(
        self, roots: Sequence[TensorTask], desc: str = "tensors"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """`stream`, computed in a background thread up to the in-flight budget ahead of the
        consumer, so a consumer that writes (the output shards of `save`) overlaps the compute."""
        if not self.settings.pipelined:
            yield from self.stream(roots, desc)
            return
        yield from run_ahead(self.stream(roots, desc), lambda item: _nbytes(item[1]), self.settings.in_flight)

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
    node_name: str = ""  # the node being run
    trust_remote_code: bool = False  # may transformers import code found in model folders
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
    return replace(ctx, executor=executor, stats=executor.stats, checking=True)


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
        started = time.perf_counter()
        try:
            fn = nt.check if ctx.checking and nt.check is not None else nt.fn
            result = fn(ctx, spec.params, inputs)
        except GraphmergeError as exc:
            if not (exc.where or "").startswith(str(graph.file or "<graph>")):
                exc.where = graph.where(name) + (f": {exc.where}" if exc.where else "")
                exc.args = (exc.one_line(),)
            raise
        finally:
            ctx.stats.op_seconds[spec.op] = (
                ctx.stats.op_seconds.get(spec.op, 0.0) + time.perf_counter() - started
            )
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
