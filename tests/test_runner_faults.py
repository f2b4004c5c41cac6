"""Fault injection: SIGKILL at seeded random moments of a merge, a save and a search. After every
kill `cache verify` finds nothing missing or corrupt, an existing output is either the old one or
the complete new one, and a rerun's outputs equal an uninterrupted run's, byte for byte. A full
disk is simulated with small tmpfs mounts (root only).

`pytest -s` prints the figures the README's Reliability section quotes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_llama
from test_nodes_optimize import SMALL, search_graph

pytestmark = pytest.mark.slow

POINTS = 10
SEED = 13
TINY = REPO / "models" / "tiny"


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("GRAPHMERGE_CACHE", None)
    return env


CLI = [sys.executable, "-m", "graphmerge.cli"]


def _cmd(graph: Path, cache: Path) -> list[str]:
    return [*CLI, "run", str(graph), "--cache-dir", str(cache), "--no-progress"]


def _run(graph: Path, cache: Path) -> None:
    proc = subprocess.run(_cmd(graph, cache), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr


def _watch(proc: subprocess.Popen, started, deadline: float) -> float | None:
    """Seconds until `started()` holds while `proc` runs (polled every 10 ms); None if it exits first."""
    t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < deadline:
        if started():
            return time.perf_counter() - t0
        time.sleep(0.01)
    return None


def _work_time(graph: Path, cache: Path, started) -> float:
    """An uninterrupted run: how long its work phase lasts, from `started()` to the end."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(_cmd(graph, cache), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    began = _watch(proc, started, 900)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0 and began is not None, err.decode()
    return time.perf_counter() - t0 - began


def _kill_during_work(graph: Path, cache: Path, started, delay: float) -> bool:
    """Start a run, wait until its work phase begins (`started()`, e.g. the first blob written),
    SIGKILL it `delay` seconds later; False if it finished first."""
    proc = subprocess.Popen(
        _cmd(graph, cache), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if _watch(proc, started, 900) is None:
            proc.wait()
            return False
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _verify(cache: Path) -> int:
    """Entries `cache verify` found missing or corrupt (0 for a cache that was never created)."""
    if not cache.exists():
        return 0
    proc = subprocess.run(
        [*CLI, "cache", "verify", "--cache-dir", str(cache), "--json"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return len(report["missing"]) + len(report["corrupted"])


def _files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _trials(out: Path) -> list:
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return [(r["config"], r["budget"], r["scores"]) for r in rows]


def _merge_graph(root: Path, models: dict[str, Path], out: Path) -> Path:
    body = {
        "nodes": {
            **{name: {"op": "load", "path": str(path)} for name, path in models.items()},
            "merged": {
                "op": "merge",
                "method": "ties",
                "base": "base",
                "models": {n: {"weight": 1.0, "density": 0.5} for n in models if n != "base"},
                "params": {"lambda": 1.0},
            },
            "save": {"op": "save", "input": "merged", "path": str(out), "max_shard_size": "20MB"},
        }
    }
    path = root / "merge.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def big_models(tmp_path_factory) -> dict[str, Path]:
    """Three ~50 MB Llamas: large enough that a kill lands in the middle of merging or writing."""
    root = tmp_path_factory.mktemp("big")
    dims = {"layers": 4, "hidden": 512, "vocab": 2048}
    return {name: make_llama(root / name, seed, **dims) for seed, name in enumerate(["base", "a", "b"])}


def _delays(work: float, salt: str) -> list[float]:
    """Seeded kill moments, uniform over the work phase of an uninterrupted run."""
    rng = random.Random(f"{SEED}-{salt}")
    return sorted(rng.uniform(0, work) for _ in range(POINTS))


def _report(name: str, killed: int, equal: int, corrupt: int, work: float) -> None:
    print(
        f"\nfault injection [{name}]: {POINTS} kill points over a {work:.1f} s work phase, {killed} killed "
        f"before finishing, {equal} reruns equal to the uninterrupted run, {corrupt} cache entries corrupt"
    )


def _has_blob(cache: Path):
    return lambda: any((cache / "blobs").glob("*/*.safetensors"))


def _writing(out: Path):
    return lambda: any(p.name.startswith(f".{out.name}.graphmerge-tmp-") for p in out.parent.iterdir())


def test_kill_during_merge(tmp_path, big_models):
    out = tmp_path / "out"
    graph = _merge_graph(tmp_path, big_models, out)
    work = _work_time(graph, tmp_path / "ref_cache", _has_blob(tmp_path / "ref_cache"))
    want = _files(out)
    killed = equal = corrupt = 0
    for i, delay in enumerate(_delays(work, "merge")):
        shutil.rmtree(out)
        cache = tmp_path / f"cache{i}"  # cold: the kill lands while merged tensors are computed
        killed += _kill_during_work(graph, cache, _has_blob(cache), delay)
        corrupt += _verify(cache)
        _run(graph, cache)
        equal += _files(out) == want
    _report("merge", killed, equal, corrupt, work)
    assert corrupt == 0 and equal == POINTS


def test_kill_during_save(tmp_path, big_models):
    out = tmp_path / "out"
    graph = _merge_graph(tmp_path, big_models, out)
    warm = tmp_path / "warm"
    _run(graph, warm)  # fills the cache; what is left for the runs below is the save
    want = _files(out)
    shutil.rmtree(out)
    shutil.copytree(warm, tmp_path / "timing")
    work = _work_time(graph, tmp_path / "timing", _writing(out))
    previous = tmp_path / "previous"
    make_llama(previous, 99, layers=4, hidden=512, vocab=2048)  # an earlier, different output
    old = _files(previous)
    killed = equal = corrupt = 0
    for i, delay in enumerate(_delays(work, "save")):
        shutil.rmtree(out)
        shutil.copytree(previous, out)
        cache = tmp_path / f"cache{i}"
        shutil.copytree(warm, cache)
        killed += _kill_during_work(graph, cache, _writing(out), delay)
        assert _files(out) in (old, want)  # the old output or the whole new one, never a mix
        corrupt += _verify(cache)
        _run(graph, cache)
        equal += _files(out) == want
        assert not _writing(out)()  # the rerun cleared what the killed writer left
        shutil.rmtree(cache)
    _report("save", killed, equal, corrupt, work)
    assert corrupt == 0 and equal == POINTS


def _search_graph(root: Path) -> Path:
    """A fresh folder `root` with a DIS search graph (multi-fidelity SMAC: reproducible from its seed)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    return search_graph(root, "dis", {"fix_layers": 1, "max_layers": 5}, SMALL)


def _logged(log: Path) -> list:
    """The finished trials a (possibly killed) search has logged, torn last line excluded."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").split("\n")[:-1]
    rows = [json.loads(line) for line in lines[1:]]
    return [(r["config"], r["budget"], r["scores"]) for r in rows if r.get("type") == "trial"]


def test_kill_during_search(tmp_path):
    # Every run in the same folder: the saved model's graph.yaml holds the graph's absolute paths.
    root = tmp_path / "p"
    log = root / "out" / "trial_log.jsonl"
    work = _work_time(_search_graph(root), root / "cache", log.exists)
    want_trials, want_model = _trials(root / "out"), _files(root / "out" / "best_model")
    killed = equal = corrupt = kept = 0
    for delay in _delays(work, "search"):
        graph = _search_graph(root)
        killed += _kill_during_work(graph, root / "cache", log.exists, delay)
        before = _logged(log)
        corrupt += _verify(root / "cache")
        _run(graph, root / "cache")
        trials = _trials(root / "out")
        assert len(trials) == SMALL["n_trials"]
        kept += trials[: len(before)] == before  # every finished trial is replayed as it was logged
        equal += trials == want_trials and _files(root / "out" / "best_model") == want_model
    _report("search", killed, equal, corrupt, work)
    print(
        f"fault injection [search]: {kept} of {POINTS} reruns replayed every trial finished before the kill"
    )
    # The trajectory does not depend on the process (search/determinism.py), so every resumed run
    # must equal the uninterrupted one, trial for trial and byte for byte in its best model.
    assert corrupt == 0
    assert equal == POINTS and kept == POINTS


# -- a full disk -------------------------------------------------------------------------------------
def _mount_tmpfs(path: Path, size: str, *options: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("simulating a full disk mounts a small tmpfs, which needs root")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
        capture_output=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False)


def _tiny_merge(root: Path, out: Path) -> Path:
    return _merge_graph(root, {n: TINY / n for n in ("base", "add", "reverse")}, out)


def _run_expecting_error(graph: Path, cache: Path) -> str:
    proc = subprocess.run(_cmd(graph, cache), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    print(f"\n{errors[0]}")
    return errors[0]


def test_full_disk_while_writing_the_output(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "4m")
    try:
        out = disk / "out"
        shutil.copytree(TINY / "reverse", out)  # the previous output, 3.2 MB of the 4 MB
        before = _files(out)
        cache = tmp_path / "cache"
        error = _run_expecting_error(_tiny_merge(tmp_path, out), cache)
        assert "no space left" in error and str(out) in error and "nothing was lost" in error, error
        assert _files(out) == before
        assert sorted(p.name for p in disk.iterdir()) == ["out"]  # no half-written copy left behind
        assert _verify(cache) == 0
    finally:
        _umount(disk)


def test_full_disk_while_writing_the_cache(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "512k")
    try:
        out = tmp_path / "out"
        cache = disk / "cache"
        graph = _tiny_merge(tmp_path, out)
        # The default budget (half the free space) never fills a disk: give one larger than it.
        graph.write_text("cache: {max_size: 100MB}\n" + graph.read_text())
        error = _run_expecting_error(graph, cache)
        assert str(cache) in error and ("no space left" in error or "disk is full" in error), error
        assert "nothing was lost" in error, error
        assert not out.exists()
        assert _verify(cache) == 0
    finally:
        _umount(disk)


def test_read_only_output_is_refused_before_merging(tmp_path):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "1m", "ro")
    try:
        cache = tmp_path / "cache"
        error = _run_expecting_error(_tiny_merge(tmp_path, disk / "out"), cache)
        assert str(disk) in error and "not writable" in error, error
        assert not (cache / "blobs").exists() or not any((cache / "blobs").rglob("*.safetensors"))
    finally:
        _umount(disk)
