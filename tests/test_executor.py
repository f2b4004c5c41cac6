"""graphmerge/executor.py's TensorExecutor on its own: the order tasks run in, cache hits that cut the plan,
values freed after their last use, and disk eviction under a tight cache budget (streams' hits kept)."""

from __future__ import annotations

import weakref

import pytest
import torch

from graphmerge.cache import Cache, CacheSettings
from graphmerge.executor import ExecutorSettings, RunStats, TensorExecutor
from graphmerge.plan import TensorTask, make_task
from graphmerge.tensor_ops import TensorOp

N = 256  # elements per tensor


class Ops:
    """Tensor ops that log each call (op name, task label) and keep weak references to what they return."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.produced: list[weakref.ref] = []
        self.live_at_call: list[int] = []
        self.source = TensorOp("test_exec_source", "1", self._source, cached=False)
        self.add = TensorOp("test_exec_add", "1", self._add)
        self.double = TensorOp("test_exec_double", "1", self._double, cached=False)

    def _record(self, label: str, value: torch.Tensor) -> torch.Tensor:
        self.live_at_call.append(sum(r() is not None for r in self.produced))
        self.calls.append(label)
        self.produced.append(weakref.ref(value))
        return value

    def _source(self, *, seed: int) -> torch.Tensor:
        return self._record(f"source{seed}", torch.arange(N, dtype=torch.float32) + seed)

    def _add(self, x: torch.Tensor, y: torch.Tensor, *, label: str) -> torch.Tensor:
        return self._record(label, x + y)

    def _double(self, x: torch.Tensor, *, label: str) -> torch.Tensor:
        return self._record(label, 2 * x)

    def src(self, seed: int) -> TensorTask:
        return make_task(self.source, seed=seed, shape=(N,), dtype="float32")

    def expected_source(self, seed: int) -> torch.Tensor:
        return torch.arange(N, dtype=torch.float32) + seed


def _executor(cache: Cache, *, pipelined: bool = False, in_flight: int = 512 << 20) -> TensorExecutor:
    settings = ExecutorSettings(in_flight=in_flight, pipelined=pipelined)
    return TensorExecutor(cache, torch.device("cpu"), RunStats(), progress=False, settings=settings)


def _cache(root, **settings) -> Cache:
    return Cache(root, CacheSettings(**{"memory": 0, **settings}))


def test_tasks_run_inputs_first_depth_first_from_each_root_and_shared_work_once(tmp_path):
    ops = Ops()
    a, b, c = ops.src(1), ops.src(2), ops.src(3)
    r1 = make_task(ops.add, [a, b], label="r1")
    r2 = make_task(ops.add, [b, c], label="r2")
    top = make_task(ops.add, [r1, r2], label="top")
    executor = _executor(_cache(tmp_path))
    got = dict(executor.stream([r1, top]))
    assert ops.calls == ["source1", "source2", "r1", "source3", "r2", "top"]
    assert torch.equal(got[0], ops.expected_source(1) + ops.expected_source(2))
    assert torch.equal(got[1], ops.expected_source(1) + 2 * ops.expected_source(2) + ops.expected_source(3))
    assert executor.stats.tasks_executed == 3 and executor.stats.tensors_read == 3
    assert executor.stats.tasks_total == 6


def test_cache_hits_are_read_and_their_inputs_are_not_planned(tmp_path):
    ops = Ops()
    a, b, c = ops.src(1), ops.src(2), ops.src(3)
    r1 = make_task(ops.add, [a, b], label="r1")
    top = make_task(ops.add, [r1, c], label="top")
    cache = _cache(tmp_path)
    first = dict(_executor(cache).stream([top]))[0]
    ops.calls.clear()

    again = _executor(cache)
    assert torch.equal(dict(again.stream([top]))[0], first)
    assert ops.calls == [] and again.stats.tasks_cached == 1 and again.stats.tasks_total == 1

    # a new consumer of the cached r1 reads it and computes only itself (no source is read for r1)
    other = make_task(ops.add, [r1, c], label="other")
    third = _executor(cache)
    assert torch.equal(dict(third.stream([make_task(ops.double, [other], label="double")]))[0], 2 * first)
    assert ops.calls == ["source3", "other", "double"] and third.stats.tasks_cached == 1


@pytest.mark.parametrize("pipelined", [False, True])
def test_each_value_is_freed_after_its_last_use(tmp_path, pipelined):
    """A model's worth of tensors streams through a few live values, not one per tensor."""
    ops = Ops()
    shared = ops.src(0)
    roots = [
        make_task(ops.double, [make_task(ops.add, [ops.src(i + 1), shared], label=f"sum{i}")], label=f"out{i}")
        for i in range(24)
    ]
    # the pipelined reader and writer may hold two tensors' bytes between them
    executor = _executor(_cache(tmp_path, max_size=0), pipelined=pipelined, in_flight=2 * N * 4)
    for i, value in executor.stream(roots):
        assert torch.equal(value, 2 * (ops.expected_source(i + 1) + ops.expected_source(0)))
        del value
    assert len(ops.calls) == 1 + 24 * 3
    # live: the shared source (until its last consumer), the current chain, and what is in flight;
    # never the 24 finished outputs
    assert max(ops.live_at_call) <= (3 if not pipelined else 8), ops.live_at_call
    assert sum(r() is not None for r in ops.produced) == 0


def _blob_bytes(tmp_path) -> int:
    ops = Ops()
    probe = _cache(tmp_path / "probe")
    dict(_executor(probe).stream([make_task(ops.add, [ops.src(0), ops.src(0)], label="probe")]))
    return probe.disk_bytes()


def test_a_tight_disk_budget_evicts_least_recently_used_blobs_and_results_stay_right(tmp_path):
    blob = _blob_bytes(tmp_path)
    ops = Ops()
    roots = [make_task(ops.add, [ops.src(i), ops.src(100)], label=f"r{i}") for i in range(6)]
    cache = _cache(tmp_path / "c", max_size=2 * blob + blob // 2)  # room for two blobs
    first = dict(_executor(cache).stream(roots))
    assert cache.evictions == 4 and cache.disk_bytes() <= 2 * blob + blob // 2
    assert [cache.has_tensor(r.key) for r in roots] == [False] * 4 + [True] * 2

    # the two hits are pinned, but with nothing else to evict they go too: results stay right
    again = _executor(cache)
    assert all(torch.equal(v, first[i]) for i, v in again.stream(roots))
    assert again.stats.tasks_executed + again.stats.tasks_cached == 6 and again.stats.tasks_executed >= 4
    assert cache.disk_bytes() <= 2 * blob + blob // 2


def test_hits_a_stream_is_about_to_read_are_evicted_last(tmp_path):
    blob = _blob_bytes(tmp_path)
    ops = Ops()
    old, idle, new = (make_task(ops.add, [ops.src(i), ops.src(i)], label=f"t{i}") for i in range(3))
    root = tmp_path / "c"
    budget = 2 * blob + blob // 2
    dict(_executor(_cache(root, max_size=budget)).stream([old]))  # least recently used ...
    dict(_executor(_cache(root, max_size=budget)).stream([idle]))  # ... then this one
    ops.calls.clear()

    cache = _cache(root, max_size=budget)
    executor = _executor(cache)
    got = dict(executor.stream([new, old]))  # writing `new` needs room; `old` is read after it
    assert torch.equal(got[1], 2 * ops.expected_source(0))
    assert ops.calls == ["source2", "t2"]  # `old` came from the cache, not recomputed
    assert executor.stats.tasks_cached == 1 and cache.evictions == 1
    assert cache.has_tensor(old.key) and cache.has_tensor(new.key) and not cache.has_tensor(idle.key)
