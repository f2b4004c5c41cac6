"""The `cache` commands on a real run: verify finds missing and corrupted blobs, stats and gc."""

from __future__ import annotations

import json

from helpers import n_tensors, saved_tensors, write_graph

from graphmerge.cli import main
from graphmerge.runner import run_graph


def test_deleted_and_corrupted_blobs_are_reported_and_recomputed(tmp_path, tiny_llamas, cache_dir, capsys):
    out = tmp_path / "out"
    graph = write_graph(tmp_path, tiny_llamas, out)
    run_graph(graph, cache_dir=cache_dir, progress=False)
    before = saved_tensors(out / "ab")
    blobs = sorted((cache_dir / "blobs").glob("*/*.safetensors"))
    blobs[0].unlink()
    data = bytearray(blobs[1].read_bytes())
    data[-1] ^= 0xFF
    blobs[1].write_bytes(bytes(data))

    assert main(["cache", "verify", "--cache-dir", str(cache_dir)]) == 1
    report = capsys.readouterr().out
    assert "1 missing, 1 corrupted" in report

    # Corrupt a third blob without telling verify: the run must notice on read and recompute.
    data = bytearray(blobs[2].read_bytes())
    data[-1] ^= 0xFF
    blobs[2].write_bytes(bytes(data))
    for stamp in out.glob("*/graphmerge.json"):
        stamp.unlink()
    rerun = run_graph(graph, cache_dir=cache_dir, progress=False)
    assert rerun.stats.tasks_executed == 3
    after = saved_tensors(out / "ab")
    assert all(before[n].equal(after[n]) for n in before)
    assert main(["cache", "verify", "--cache-dir", str(cache_dir)]) == 0


def test_cache_stats_and_gc(tmp_path, tiny_llamas, cache_dir, capsys):
    graph = write_graph(tmp_path, tiny_llamas, tmp_path / "out")
    run_graph(graph, cache_dir=cache_dir, progress=False)
    stray = cache_dir / "blobs" / "00" / ".half-written.tmp"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x" * 10)
    assert main(["cache", "stats", "--cache-dir", str(cache_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tensors"] == 2 * n_tensors(tiny_llamas["base"])
    assert main(["cache", "gc", "--cache-dir", str(cache_dir), "--json"]) == 0
    gc = json.loads(capsys.readouterr().out)
    assert gc["stray_files_removed"] == 1 and not stray.exists()
    assert main(["cache", "gc", "--cache-dir", str(cache_dir), "--max-size", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors_evicted"] == stats["tensors"]
