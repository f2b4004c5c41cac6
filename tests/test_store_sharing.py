"""Several real processes share one cache folder with no locks: none is ever served a corrupt
blob, a process killed with SIGKILL in the middle of a write leaves at most a temp file (never a
torn blob), and `verify` is clean afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from graphmerge.cache import Cache
from graphmerge.cli import main

HERE = Path(__file__).parent
WORKER = HERE / "store_sharing_worker.py"


def _env() -> dict[str, str]:
    root = str(HERE.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), "OMP_NUM_THREADS": "1"}


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_processes_sharing_a_cache_are_never_served_a_corrupt_blob(tmp_path, capsys):
    root = tmp_path / "shared"
    workers = [_spawn("mix", str(root), str(seed), "150") for seed in range(4)]
    results = [w.communicate(timeout=300) for w in workers]
    for w, (_, err) in zip(workers, results, strict=True):
        assert w.returncode == 0, err
    assert sum(int(out.split()[-1]) for out, _ in results) > 0  # reads did hit shared blobs
    assert main(["cache", "verify", "--cache-dir", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["corrupted"] == [] and report["corrupted_other"] == [] and report["missing"] == []


@pytest.mark.slow
def test_a_process_killed_mid_write_leaves_no_torn_blob(tmp_path, capsys):
    root = tmp_path / "shared"
    writer = _spawn("big", str(root))
    assert writer.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 120
    while not list(root.glob("blobs/*/.*.tmp")):  # a write under way
        assert time.monotonic() < deadline and writer.poll() is None
        time.sleep(0.001)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()

    strays = list(root.glob("blobs/*/.*.tmp"))
    assert strays, "the kill was meant to land mid-write"
    cache = Cache(root, log=lambda _m: None)
    whole = list(cache.tensor_keys())
    expected = torch.randn(4 << 20, generator=torch.Generator().manual_seed(99))
    assert all(torch.equal(cache.get_tensor(k), expected) for k in whole)  # every stored blob is whole
    assert not {s.name.split(".")[1] for s in strays} & set(whole)  # the interrupted key was never stored
    cache.close()
    assert main(["cache", "verify", "--cache-dir", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == len(whole) and report["corrupted"] == [] and report["missing"] == []
    assert main(["cache", "gc", "--cache-dir", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stray_files_removed"] == len(strays)
    assert not list(root.glob("blobs/*/.*.tmp"))
