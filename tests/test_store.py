"""Store behaviour, the same tests for each backend: blobs, records and folders round-trip, check
themselves (damage is a miss, never bad data), `verify` and `gc` cover every kind, and the cache's
policy (budget, LRU-by-use, pinning) works the same over either store. A real merge runs against the
in-memory store to prove the seam."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from helpers import saved_tensors as tensors_of

from graphmerge.cache import Cache, CacheSettings
from graphmerge.store import CacheMiss, DiskStore, MemoryStore, Store

MB = 1 << 20


def _t(seed: int, n: int = 16 * 1024) -> torch.Tensor:  # 64 KiB of float32
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _fsspec_store(protocol: str, tmp_path: Path) -> Store:
    from graphmerge.store.remote import FsspecStore

    where = f"memory://{tmp_path.name}" if protocol == "memory" else f"file://{tmp_path}/remote"
    return FsspecStore(where, local=tmp_path / "local")


@pytest.fixture(params=["disk", "memory", "fsspec-memory", "fsspec-file"])
def store(request, tmp_path) -> Store:
    if request.param.startswith("fsspec-"):
        made = _fsspec_store(request.param.removeprefix("fsspec-"), tmp_path)
    else:
        made = DiskStore(tmp_path / "cache") if request.param == "disk" else MemoryStore()
    yield made
    made.close()


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def _damage_blob(store: Store, key: str) -> None:
    if isinstance(store, MemoryStore):
        store.corrupt_blob(key)
    elif hasattr(store, "fs"):
        store.fs.pipe_file(store.blob_path(key), _flip_last_byte(store.fs.cat_file(store.blob_path(key))))
    else:
        path = store.blob_path(key)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))


def _damage_record(store: Store, kind: str, key) -> None:
    from graphmerge.store.entries import record_name

    name = record_name(key)
    if isinstance(store, MemoryStore):
        store._records[kind][name] = _flip_last_byte(store._records[kind][name])
    elif hasattr(store, "fs"):
        path = store._record_path(kind, key)
        store.fs.pipe_file(path, _flip_last_byte(store.fs.cat_file(path)))
    else:
        path = store.root / kind / name[:2] / f"{name}.rec"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))


def test_it_is_a_store(store):
    assert isinstance(store, Store)


def test_blobs_round_trip_and_a_damaged_one_is_a_miss_and_removed(store):
    store.write_blob("k1", _t(1))
    store.write_blob("k2", _t(2).bfloat16())
    assert store.has_blob("k1") and not store.has_blob("nope")
    assert torch.equal(store.read_blob("k1"), _t(1))
    assert torch.equal(store.read_blob("k2"), _t(2).bfloat16())
    _damage_blob(store, "k1")
    with pytest.raises(CacheMiss):
        store.read_blob("k1")
    assert not store.has_blob("k1")
    with pytest.raises(CacheMiss):
        store.read_blob("nope")
    assert {e.key for e in store.blobs()} == {"k2"}


def test_last_use_is_what_blobs_report(store):
    store.write_blob("a", _t(0))
    store.touch_blobs({"a": 1_000_000.0})
    (entry,) = store.blobs()
    assert entry.key == "a" and entry.used == pytest.approx(1_000_000.0)


def test_records_round_trip_by_kind_and_a_damaged_one_is_a_miss(store):
    store.put_record("results", "score", {"acc": 0.5})
    store.put_record("digests", ("/m/model.safetensors", 10, 20), {"w": "ab"})
    assert store.get_record("results", "score") == {"acc": 0.5}
    assert store.get_record("digests", ("/m/model.safetensors", 10, 20)) == {"w": "ab"}
    assert store.get_record("digests", "score") is None  # kinds do not mix
    store.put_record("results", "score", {"acc": 0.75})  # overwritten whole
    assert store.get_record("results", "score") == {"acc": 0.75}
    assert dict(store.records("results")) == {"score": {"acc": 0.75}}
    _damage_record(store, "results", "score")
    assert store.get_record("results", "score") is None


def test_folders_are_written_once_with_a_manifest_that_verify_checks(store):
    calls = []

    def fill(path: Path) -> None:
        calls.append(path)
        path.mkdir()
        (path / "tokenizer.json").write_text('{"v": 1}')

    first = store.folder("tokenizers", "tok1", fill)
    again = store.folder("tokenizers", "tok1", fill)
    assert first == again and len(calls) == 1
    assert json.loads((first / "tokenizer.json").read_text()) == {"v": 1}
    assert store.verify().corrupted == ()
    (first / "tokenizer.json").write_text('{"v": 2}')  # edited behind graphmerge's back
    if hasattr(store, "fs"):  # and the shared copy, which other machines download
        store.fs.pipe_file(f"{store.location}/tokenizers/tok1/tokenizer.json", b'{"v": 2}')
    report = store.verify(repair=True)
    assert report.corrupted == (("tokenizers", "tok1"),) and report.checked["tokenizers"] == 1
    assert not first.exists()
    store.folder("tokenizers", "tok1", fill)  # rebuilt on the next use
    assert len(calls) == 2 and store.verify().corrupted == ()


def test_verify_covers_every_kind(store):
    store.write_blob("good", _t(0))
    store.write_blob("bad", _t(1))
    store.put_record("results", "r", 1.5)
    store.put_record("digests", ("f", 1, 2), {"t": "d"})

    def fill(p: Path) -> None:
        p.mkdir()
        (p / "vocab.txt").write_text("a\nb\n")

    store.folder("tokenizers", "t", fill)
    _damage_blob(store, "bad")
    _damage_record(store, "digests", ("f", 1, 2))
    report = store.verify(repair=True)
    assert report.checked == {"blobs": 2, "results": 1, "digests": 1, "tokenizers": 1}
    assert set(report.corrupted) == {("blobs", "bad"), ("digests", report.corrupted[-1][1])}
    clean = store.verify()
    assert clean.corrupted == () and clean.checked == {"blobs": 1, "results": 1, "digests": 0, "tokenizers": 1}


# The cache's policy over each store ---------------------------------------------------------------


def _cache(store: Store, **settings) -> Cache:
    return Cache(store=store, settings=CacheSettings(**settings), log=lambda _m: None)


def test_cache_budget_and_lru_by_use_over_either_store(store):
    one = _t(0).nbytes + 512
    cache = _cache(store, max_size=3 * one)
    for i in range(3):
        cache.put_tensor(f"k{i}", _t(i))
        time.sleep(0.01)
    cache.get_tensor("k0")  # written first, used last
    cache.put_tensor("k3", _t(3))
    assert {e.key for e in store.blobs()} == {"k0", "k2", "k3"}
    assert cache.evictions == 1 and cache.disk_bytes() == sum(e.size for e in store.blobs())
    cache.close()


def test_eviction_while_in_use_spares_pinned_keys_and_a_reader_of_an_evicted_one_misses(store):
    one = _t(0).nbytes + 512
    cache = _cache(store, max_size=2 * one)
    cache.put_tensor("old", _t(0))
    cache.put_tensor("new", _t(1))
    with cache.pinned(["old"]):
        cache.put_tensor("third", _t(2))  # must evict one: the pinned key is spared
        assert cache.has_tensor("old") and not cache.has_tensor("new")
        other = _cache(store)  # another user of the same store empties it meanwhile
        other.gc(max_bytes=0)
        with pytest.raises(CacheMiss):
            cache.get_tensor("old")
    cache.close()


def test_results_digests_and_force_over_either_store(store):
    cache = _cache(store)
    cache.put_result("r", {"score": 1.0})
    cache.digests[("f", 1, 2)] = {"t": "d"}
    forced = Cache(store=store, force=True, log=lambda _m: None)
    assert forced.get_result("r") is None and forced.digests.get(("f", 1, 2)) is None
    forced.put_result("r", {"score": 2.0})
    assert forced.get_result("r") == {"score": 2.0} and cache.get_result("r") == {"score": 2.0}


LINEAR = """
nodes:
  base: {{op: load, path: {base}}}
  a: {{op: load, path: {a}}}
  merged: {{op: merge, method: ties, base: base, models: {{a: {{weight: 0.7, density: 0.5}}}}}}
  save: {{op: save, input: merged, path: {out}}}
"""


def test_a_real_merge_runs_against_the_memory_store_like_the_disk_store(tmp_path, tiny_llamas):
    from graphmerge.runner import run_graph

    graph = tmp_path / "g.yaml"
    graph.write_text(LINEAR.format(out=tmp_path / "disk_out", **tiny_llamas))
    run_graph(graph, cache_dir=tmp_path / "cache", progress=False, device="cpu")

    memory = MemoryStore()
    graph.write_text(LINEAR.format(out=tmp_path / "mem_out", **tiny_llamas))
    first = run_graph(graph, store=memory, progress=False, device="cpu")
    assert first.stats.tasks_executed > 0 and sum(1 for _ in memory.blobs()) == first.stats.tasks_executed
    assert memory.count_records("digests") > 0  # the source files' digests were memoised there
    disk, mem = tensors_of(tmp_path / "disk_out"), tensors_of(tmp_path / "mem_out")
    assert disk.keys() == mem.keys() and all(torch.equal(disk[k], mem[k]) for k in disk)

    (tmp_path / "mem_out" / "graphmerge.json").unlink()
    second = run_graph(graph, store=memory, progress=False, device="cpu")
    assert second.stats.tasks_executed == 0 and second.stats.tasks_cached == first.stats.tasks_executed
    assert not (tmp_path / "cache" / "index").exists()  # no database: blobs are their own index
