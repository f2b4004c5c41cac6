"""A run's context built from a graph: its cache (over a folder, a URL or a given store), device,
stats and tensor executor. Below the nodes, so that what runs a graph's nodes away from the runner
(a search's Dask worker) builds its context the same way `run` does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from graphmerge.cache import Cache, CacheSettings, default_cache_dir
from graphmerge.executor import ExecutorSettings, RunContext, RunStats, TensorExecutor, resolve_device
from graphmerge.spec import GraphSpec
from graphmerge.store import Store


def make_context(
    graph: GraphSpec,
    *,
    cache_dir: Path | str | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    trust_remote_code: bool = False,
    force: bool = False,
    cache_max_size: int | str | None = None,
    executor: ExecutorSettings | None = None,
    checking: bool = False,
    store: Store | None = None,
) -> RunContext:
    """`cache_max_size` (e.g. from --cache-max-size) overrides the graph's `cache: max_size`.
    `checking` (validate): no device is resolved, since nothing will be computed, and resolving one
    would import torch (validate must start in well under a second). `store`: where the cache keeps
    its entries instead of `cache_dir` (e.g. a `MemoryStore`)."""
    where = f"{graph.file or '<graph>'}: cache"
    settings = CacheSettings.from_mapping(graph.cache, where=where).with_max_size(cache_max_size)
    dev = None if checking else resolve_device(device)
    cache = Cache(None if store else cache_dir or default_cache_dir(), settings, force=force, store=store)
    stats = RunStats()
    ctx = RunContext(
        cache=cache,
        device=dev,
        stats=stats,
        executor=TensorExecutor(cache, dev, stats, progress=progress, settings=executor),
        graph=graph,
        progress=progress,
        trust_remote_code=trust_remote_code or graph.trust_remote_code,
    )
    if log is not None:
        ctx.log = log
    return ctx
