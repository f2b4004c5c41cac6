"""Sources are read once per run: a source tensor's content digest comes from the read that loads it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_llama
from helpers import TIES, saved_tensors

from graphmerge.cache import Cache
from graphmerge.io.folder import ModelFolder, file_key
from graphmerge.runner import run_graph


def _bytes_read() -> int:
    # Every byte this process has read through read(2)/pread(2), page cache or not.
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")


@pytest.fixture(scope="module")
def triple(tmp_path_factory) -> dict[str, Path]:
    """Three ~14 MB Llamas: large enough that config and header reads are noise next to the weights."""
    root = tmp_path_factory.mktemp("triple")
    return {
        n: make_llama(root / n, seed, hidden=256, vocab=4096) for seed, n in enumerate(["base", "a", "b"])
    }


def _weights(models: dict[str, Path]) -> int:
    return sum(f.stat().st_size for d in models.values() for f in d.glob("*.safetensors"))


def _copy(models: dict[str, Path], dest: Path) -> dict[str, Path]:
    return {n: Path(shutil.copytree(d, dest / n)) for n, d in models.items()}


def _run(tmp_path: Path, models: dict[str, Path], out: Path, cache: Path, **kw):
    graph = tmp_path / "ties.yaml"
    graph.write_text(TIES.format(out=out, **models))
    before = _bytes_read()
    result = run_graph(graph, cache_dir=cache, device="cpu", progress=False, **kw)
    return result, _bytes_read() - before


def test_a_first_run_reads_each_source_once_and_keys_equal_hashed_ones(tmp_path, triple):
    _run(
        tmp_path, _copy(triple, tmp_path / "warm"), tmp_path / "warm_out", tmp_path / "warm_cache"
    )  # imports
    models = _copy(triple, tmp_path / "m")
    weights = _weights(models)

    first, read = _run(tmp_path, models, tmp_path / "out", tmp_path / "cache")
    assert first.stats.tasks_executed > 0
    # The old digest pass read every file, then the merge read it again: 2x the weights.
    assert weights <= read < 1.25 * weights, (read, weights)
    # Every file's digests were learnt from those reads and memoised, whole.
    cache = Cache(tmp_path / "cache")
    for d in models.values():
        folder = ModelFolder.open(d)
        for f in folder.files:
            assert cache.digests.get(file_key(f)) == folder.tensor_digests()  # equal to hashing the file
    cache.close()

    # The keys equal those of a cache whose memo came from hashing the files first.
    hashed = Cache(tmp_path / "hashed")
    for d in models.values():
        ModelFolder.open(d).tensor_digests(memo=hashed.digests)
    hashed.close()
    _run(tmp_path, models, tmp_path / "out_hashed", tmp_path / "hashed")
    stamp = json.loads((tmp_path / "out" / "graphmerge.json").read_text())
    assert stamp == json.loads((tmp_path / "out_hashed" / "graphmerge.json").read_text())
    a, b = saved_tensors(tmp_path / "out"), saved_tensors(tmp_path / "out_hashed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {p.name for p in (tmp_path / "cache" / "blobs").glob("*/*")} == {
        p.name for p in (tmp_path / "hashed" / "blobs").glob("*/*")
    }

    # A second run finds the output up to date without reading a tensor.
    second, read = _run(tmp_path, models, tmp_path / "out", tmp_path / "cache")
    assert second.stats.tensors_read == 0 and read < 0.02 * weights


def test_a_touched_source_is_read_once_and_its_merges_come_from_the_cache(tmp_path, triple):
    models = _copy(triple, tmp_path / "m")
    first, _ = _run(tmp_path, models, tmp_path / "out", tmp_path / "cache")
    weights_a = next(models["a"].glob("*.safetensors"))
    st = weights_a.stat()
    os.utime(weights_a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, new mtime

    again, read = _run(tmp_path, models, tmp_path / "out2", tmp_path / "cache")
    # Only the tensors that depend on the touched file are planned without a key; once their sources
    # are read, every merged tensor is found in the cache: nothing is merged again.
    assert again.stats.tasks_executed == 0 and again.stats.tasks_cached > 0
    # Each late tensor's three sources, read once, and its merged value from the cache.
    assert read < 4.25 * weights_a.stat().st_size
    a, b = saved_tensors(tmp_path / "out"), saved_tensors(tmp_path / "out2")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_copies_at_other_paths_share_the_cache(tmp_path, triple):
    _run(tmp_path, _copy(triple, tmp_path / "m1"), tmp_path / "out1", tmp_path / "cache")
    other = _copy(triple, tmp_path / "m2")  # what another machine's copy of the models looks like
    again, _ = _run(tmp_path, other, tmp_path / "out2", tmp_path / "cache")
    assert again.stats.tasks_executed == 0 and again.stats.tasks_cached > 0


def test_what_a_run_read_of_a_file_is_memoised_at_its_end(tmp_path, triple):
    models = _copy(triple, tmp_path / "m")
    graph = tmp_path / "slice.yaml"
    graph.write_text(
        f"""
nodes:
  a: {{op: load, path: {models["a"]}}}
  one: {{op: slice, embed_from: a, slices: [{{model: a, layers: [0, 1]}}]}}
  out: {{op: save, input: one, path: {tmp_path / "one"}}}
"""
    )
    run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    folder = ModelFolder.open(models["a"])
    cache = Cache(tmp_path / "cache")
    record = cache.digests.get(file_key(folder.files[0]))
    cache.close()
    layer1 = [n for n in folder.tensor_names if ".layers.1." in n]
    assert layer1 and not set(layer1) & set(record)  # never read, never hashed
    assert set(record) == set(folder.tensor_names) - set(layer1)
    hashed = folder.tensor_digests()
    assert all(record[n] == hashed[n] for n in record)
    # A later run needing the whole file hashes only what the record lacks.
    full = folder.tensor_digests(memo={file_key(folder.files[0]): record})
    assert full == hashed
