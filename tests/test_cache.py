"""The cache's tiers and rules: self-describing blobs, the disk budget and LRU-by-use eviction
(also while a run reads the cache), what is never evicted, the search persistence policy, and
recovery from a broken index."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from bad_inputs.legacy_cache import to_legacy_layout
from helpers import TIES as TIES_GRAPH
from helpers import saved_tensors as tensors_of
from safetensors import safe_open
from safetensors.torch import load_file

from graphmerge.cache import Cache, CacheMiss, CacheSettings
from graphmerge.cli import main
from graphmerge.errors import SpecError
from graphmerge.executor import ExecutorSettings, run_nodes
from graphmerge.tensorfile import BadTensorFile, read_tensor_file

MB = 1 << 20


def _t(seed: int, n: int = 64 * 1024) -> torch.Tensor:  # 256 KiB of float32
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _blob_bytes(cache: Cache) -> int:
    return sum(p.stat().st_size for p in cache.blob_dir.glob("*/*.safetensors"))


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 5).bfloat16(),
        torch.randn(7, 2, dtype=torch.float64),
        torch.tensor(2.5),
        torch.zeros(0, 4),
        torch.rand(9) > 0.5,
        torch.arange(10, dtype=torch.int64),
    ],
    ids=["bf16", "f64", "scalar", "empty", "bool", "i64"],
)
def test_blobs_are_plain_safetensors_with_their_digest(tmp_path, tensor):
    cache = Cache(tmp_path, CacheSettings(max_size=10 * MB))
    cache.put_tensor("ab" + "0" * 30, tensor)
    path = cache.blob_path("ab" + "0" * 30)
    # Any safetensors reader loads it; its header carries the digest of the data.
    assert torch.equal(load_file(path)["t"], tensor)
    with safe_open(str(path), framework="pt") as fh:
        assert len(fh.metadata()["xxh3_128"]) == 32
    got = cache.get_tensor("ab" + "0" * 30)
    assert got.dtype == tensor.dtype and torch.equal(got, tensor)
    assert got.untyped_storage().nbytes() == got.nbytes  # owns its memory: save need not copy it
    cache.close()


def test_flipped_byte_is_a_miss_and_the_entry_is_dropped(tmp_path):
    cache = Cache(tmp_path, CacheSettings(max_size=10 * MB))
    cache.put_tensor("k1", _t(0))
    path = cache.blob_path("k1")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BadTensorFile):
        read_tensor_file(path)
    with pytest.raises(CacheMiss):
        cache.get_tensor("k1")
    assert not cache.has_tensor("k1") and not path.exists()
    cache.close()


def test_eviction_is_by_last_use_not_by_write(tmp_path):
    one = _t(0).nbytes + 512
    cache = Cache(tmp_path, CacheSettings(max_size=3 * one))
    for i in range(3):
        cache.put_tensor(f"k{i}", _t(i))
        time.sleep(0.01)
    cache.get_tensor("k0")  # k0 was written first but used last
    cache.put_tensor("k3", _t(3))
    assert cache.has_tensor("k0") and not cache.has_tensor("k1")
    assert cache.has_tensor("k2") and cache.has_tensor("k3")
    assert cache.evictions == 1
    cache.close()
    # The use was recorded in the index: a new process (gc) evicts by it too.
    cache = Cache(tmp_path)
    cache.gc(max_bytes=2 * one)
    assert cache.has_tensor("k0") and cache.has_tensor("k3") and not cache.has_tensor("k2")
    cache.close()


def test_the_budget_is_never_exceeded_and_results_and_digests_are_never_evicted(tmp_path):
    budget = 1 * MB
    cache = Cache(tmp_path, CacheSettings(max_size=budget))
    cache.put_result("score", 0.75)
    cache.digests[("f", 1, 2)] = {"t": "d"}
    for i in range(20):
        cache.put_tensor(f"k{i:02d}", _t(i))
        assert _blob_bytes(cache) <= budget
        assert cache.disk_bytes() == _blob_bytes(cache)
    assert cache.evictions > 10
    assert cache.get_result("score") == 0.75 and cache.digests[("f", 1, 2)] == {"t": "d"}
    # Larger than the whole budget: kept off the disk rather than emptying the cache for it.
    cache.put_tensor("huge", _t(99, n=budget))
    assert not cache.on_disk("huge") and _blob_bytes(cache) <= budget
    cache.close()


def test_max_size_zero_writes_no_tensor(tmp_path):
    cache = Cache(tmp_path, CacheSettings(max_size=0))
    cache.put_tensor("k", _t(0))
    assert _blob_bytes(cache) == 0 and not cache.has_tensor("k")
    cache.close()


def test_pinned_tensors_are_evicted_last(tmp_path):
    one = _t(0).nbytes + 512
    cache = Cache(tmp_path, CacheSettings(max_size=2 * one))
    cache.put_tensor("old", _t(0))
    cache.put_tensor("new", _t(1))
    with cache.pinned(["old"]):
        cache.put_tensor("third", _t(2))
    assert cache.has_tensor("old") and not cache.has_tensor("new")
    cache.close()


def test_search_persist_reused_writes_a_tensor_when_a_second_trial_needs_it(tmp_path):
    cache = Cache(tmp_path, CacheSettings(max_size=10 * MB, search_persist="reused"))
    with cache.search_trial():
        cache.put_tensor("once", _t(0))
        cache.put_tensor("twice", _t(1))
    assert not cache.on_disk("once") and not cache.on_disk("twice")
    with cache.search_trial():
        assert torch.equal(cache.get_tensor("twice"), _t(1))  # from the memory tier
    assert cache.on_disk("twice") and not cache.on_disk("once")
    cache.close()
    everything = Cache(tmp_path / "all", CacheSettings(max_size=10 * MB, search_persist="all"))
    with everything.search_trial():
        everything.put_tensor("once", _t(0))
    assert everything.on_disk("once")
    everything.close()


def test_memory_tier_is_bounded_and_least_recently_used(tmp_path):
    one = _t(0).nbytes
    cache = Cache(tmp_path, CacheSettings(max_size=0, memory=2 * one))
    with cache.search_trial():
        cache.put_tensor("a", _t(0))
        cache.put_tensor("b", _t(1))
        cache.get_tensor("a")
        cache.put_tensor("c", _t(2))
    assert "a" in cache.memory and "c" in cache.memory and "b" not in cache.memory
    assert cache.memory.bytes == 2 * one
    cache.close()


def test_settings_from_the_graph_and_their_errors():
    s = CacheSettings.from_mapping({"max_size": "3MB", "memory": 0, "search_persist": "all"})
    assert (s.max_size, s.memory, s.search_persist) == (3_000_000, 0, "all")
    assert s.with_max_size("1KiB").max_size == 1024
    for bad in ({"max_size": "lots"}, {"search_persist": "best"}, {"maxsize": 1}):
        with pytest.raises(SpecError):
            CacheSettings.from_mapping(bad)


# A real run on the cache ---------------------------------------------------------------------

TIES = "cache: {{max_size: {budget}}}" + TIES_GRAPH


def _same(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_run_under_a_small_budget_evicts_while_running_and_gives_the_same_model(tmp_path, tiny_llamas):
    from graphmerge.runner import run_graph

    ref_graph = tmp_path / "ref.yaml"
    ref_graph.write_text(TIES.format(budget="1GB", out=tmp_path / "ref", **tiny_llamas))
    run_graph(ref_graph, cache_dir=tmp_path / "ref_cache", progress=False)
    reference = tensors_of(tmp_path / "ref")
    model_bytes = sum(t.nbytes for t in reference.values())

    budget = model_bytes // 3
    graph = tmp_path / "small.yaml"
    graph.write_text(TIES.format(budget=budget, out=tmp_path / "out", **tiny_llamas))
    cache_dir = tmp_path / "cache"
    first = run_graph(graph, cache_dir=cache_dir, progress=False)
    assert _same(tensors_of(tmp_path / "out"), reference)
    assert first.stats.tasks_executed > 0
    blobs = sum(p.stat().st_size for p in (cache_dir / "blobs").glob("*/*.safetensors"))
    assert 0 < blobs <= budget
    assert first.extras["cache"]["evictions"] > 0  # evicted while the run went on
    assert blobs <= first.extras["cache"]["peak_disk_bytes"] <= budget
    # The rerun finds some tensors, recomputes the evicted ones, and writes the same model.
    (tmp_path / "out" / "graphmerge.json").unlink()
    second = run_graph(graph, cache_dir=cache_dir, progress=False)
    assert second.stats.tasks_cached > 0 and second.stats.tasks_executed > 0
    assert _same(tensors_of(tmp_path / "out"), reference)
    assert main(["cache", "verify", "--cache-dir", str(cache_dir)]) == 0


@pytest.mark.parametrize("pipelined", [True, False])
def test_tensors_evicted_by_another_process_mid_stream_are_recomputed(tmp_path, tiny_llamas, pipelined):
    from graphmerge.runner import make_context, run_graph
    from graphmerge.spec import load_graph

    graph = tmp_path / "g.yaml"
    graph.write_text(TIES.format(budget="1GB", out=tmp_path / "out", **tiny_llamas))
    cache_dir = tmp_path / "cache"
    run_graph(graph, cache_dir=cache_dir, progress=False)
    reference = tensors_of(tmp_path / "out")

    spec = load_graph(graph)
    # in_flight=1: the reader fetches one tensor ahead, so the rest are read after the eviction
    settings = ExecutorSettings(in_flight=1, pipelined=pipelined)
    ctx = make_context(spec, cache_dir=cache_dir, device="cpu", progress=False, executor=settings)
    plan_only = ("base", "a", "b", "merged")
    merged = run_nodes(ctx, replace(spec, nodes={n: spec.nodes[n] for n in plan_only}, order=plan_only))[
        "merged"
    ]
    names = list(merged.tensors)
    stream = ctx.executor.stream([merged.tensors[n] for n in names])
    got = dict([next(stream)])  # planned: every tensor is a hit
    other = Cache(cache_dir)  # another process empties the disk tier meanwhile
    assert other.gc(max_bytes=0)["tensors_evicted"] > 0
    other.close()
    got.update(dict(stream))
    assert ctx.stats.tasks_executed > 0  # the evicted ones were recomputed
    ctx.cache.close()
    computed = {names[i]: v.to(reference[names[i]].dtype) for i, v in got.items()}
    assert _same(computed, reference)


# Broken indexes ------------------------------------------------------------------------------


def _truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: max(len(data) // 3, 100)])


def test_a_truncated_index_is_moved_aside_and_rebuilt_from_the_blobs(tmp_path, capsys):
    cache = Cache(tmp_path, CacheSettings(max_size=10 * MB))
    for i in range(200):
        cache.put_tensor(f"key{i:03d}", _t(i, n=256))
    cache.put_result("score", 0.5)
    cache.close()
    to_legacy_layout(tmp_path)  # an index database exists only in caches of older graphmerge
    _truncate(tmp_path / "index" / "cache.db")
    with pytest.raises(sqlite3.DatabaseError):
        with sqlite3.connect(tmp_path / "index" / "cache.db") as conn:
            conn.execute("PRAGMA quick_check").fetchall()
            conn.execute("SELECT count(*) FROM Cache").fetchall()

    messages: list[str] = []
    cache = Cache(tmp_path, log=messages.append)
    assert len(messages) == 1 and "rebuilt it from the blobs (200 tensors)" in messages[0]
    assert list(tmp_path.glob("index.broken-*"))
    assert all(torch.equal(cache.get_tensor(f"key{i:03d}"), _t(i, n=256)) for i in range(200))
    assert cache.get_result("score") == 0.5  # the results store was intact: untouched
    cache.close()

    # `cache verify` in a new process reports what the opening found; a second open is clean.
    to_legacy_layout(tmp_path)
    _truncate(tmp_path / "index" / "cache.db")
    assert main(["cache", "verify", "--cache-dir", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["checked"] == 200 and len(report["recovered"]) == 1
    assert "warning:" in captured.err and "index" in captured.err
    assert main(["cache", "verify", "--cache-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recovered"] == []


def test_a_broken_results_store_starts_empty_with_a_warning(tmp_path):
    cache = Cache(tmp_path)
    cache.put_result("score", 0.5)
    cache.close()
    to_legacy_layout(tmp_path)
    (tmp_path / "results" / "cache.db").write_bytes(b"not a database at all" * 10)
    messages: list[str] = []
    cache = Cache(tmp_path, log=messages.append)
    assert cache.get_result("score") is None
    assert "results" in messages[0] and "recomputed" in messages[0]
    cache.close()


def test_torn_blobs_are_left_out_of_a_rebuilt_index(tmp_path):
    cache = Cache(tmp_path, CacheSettings(max_size=10 * MB))
    cache.put_tensor("good", _t(0))
    cache.put_tensor("torn", _t(1))
    cache.close()
    torn = cache.blob_path("torn")
    torn.write_bytes(torn.read_bytes()[:-100])
    to_legacy_layout(tmp_path)
    os.remove(tmp_path / "index" / "cache.db")
    (tmp_path / "index" / "cache.db").write_bytes(b"\0" * 4096)
    cache = Cache(tmp_path, log=lambda _m: None)
    assert cache.has_tensor("good") and not cache.has_tensor("torn") and not torn.exists()
    cache.close()


def test_shards_written_from_tensor_memory_load_like_safetensors_own(tmp_path):
    from graphmerge.tensorfile import write_safetensors

    base = torch.randn(6, 8)
    tensors = {
        "b.bf16": torch.randn(5, 3).bfloat16(),
        "a.view": base[:, 2:5],  # a non-contiguous view
        "c.bool": torch.rand(4) > 0.5,
        "d.empty": torch.zeros(0, 2),
    }
    write_safetensors(tensors, tmp_path / "x.safetensors", {"format": "pt"})
    back = load_file(tmp_path / "x.safetensors")
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt"}
