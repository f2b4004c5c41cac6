"""`save` under pressure: 50 concurrent writers of one path, a kill between the rename and the
cleanup, fsync before and after the rename, and 0644 outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import TINY_TIES_GRAPH as GRAPH
from helpers import saved_tensors

from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# Each child is forked from a fresh interpreter that has imported graphmerge but computed nothing
# (no OpenMP pool to break), and runs the real CLI with its own stderr file.
_WRITERS = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, sys
    from graphmerge.cli import main
    import graphmerge.nodes.builtin  # noqa: F401  (imported before forking, once)

    graph, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    densities = sys.argv[4].split(",")

    def child(i, barrier):
        err = os.open(os.path.join(root, f"err{i}.txt"), os.O_WRONLY | os.O_CREAT)
        os.dup2(err, 2)
        os.dup2(err, 1)
        barrier.wait()
        density = densities[i % len(densities)]
        code = main(["run", graph, "--set", f"density={density}", "--set", f"out={root}/out",
                     "--cache-dir", f"{root}/cache{i}", "--no-progress"])
        sys.stderr.flush()
        os._exit(code)

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=child, args=(i, barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print(json.dumps([p.exitcode for p in procs]))
    """
)


def _run_writers(tmp_path: Path, n: int, densities: str) -> list[int]:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _WRITERS, str(graph), str(tmp_path), str(n), densities],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fifty_concurrent_saves_of_one_model(tmp_path):
    codes = _run_writers(tmp_path, 50, "0.5")
    errors = {i: (tmp_path / f"err{i}.txt").read_text() for i in range(50)}
    assert codes == [0] * 50, {i: e for i, e in errors.items() if codes[i]}
    for text in errors.values():
        assert "error" not in text and "Traceback" not in text, text
    wrote = [i for i, e in errors.items() if "save: wrote" in e]
    others = [i for i, e in errors.items() if "another run wrote" in e or "is up to date" in e]
    assert len(wrote) >= 1 and len(wrote) + len(others) == 50
    assert _hidden(tmp_path) == []  # no temp, old or lock entries beside the output
    run_graph(text=GRAPH, overrides={"out": str(tmp_path / "ref")}, cache_dir=tmp_path / "refcache")
    ref, got = saved_tensors(tmp_path / "ref"), saved_tensors(tmp_path / "out")
    assert ref.keys() == got.keys() and all(torch.equal(ref[n], got[n]) for n in ref)


@pytest.mark.slow
def test_concurrent_saves_of_different_models_leave_one_whole_output(tmp_path):
    codes = _run_writers(tmp_path, 12, "0.3,0.7")
    assert codes == [0] * 12
    assert _hidden(tmp_path) == []
    got = saved_tensors(tmp_path / "out")
    matches = []
    for density in ("0.3", "0.7"):
        ref_out = tmp_path / f"ref{density}"
        run_graph(
            text=GRAPH, overrides={"out": str(ref_out), "density": float(density)}, cache_dir=tmp_path / "rc"
        )
        ref = saved_tensors(ref_out)
        matches.append(all(torch.equal(ref[n], got[n]) for n in ref))
    assert sum(matches) == 1  # exactly one writer's model, never a mixture
    stamp = json.loads((tmp_path / "out" / "graphmerge.json").read_text())
    assert f"density: {('0.3', '0.7')[matches.index(True)]}" in (tmp_path / "out" / "graph.yaml").read_text()
    assert stamp["model_key"]


_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import graphmerge.io.save as save
    from graphmerge.runner import run_graph

    real = save.shutil.rmtree

    def rmtree(path, *a, **k):
        if save._OLD_MARK in str(path):  # the new output is in place; the old one is not deleted yet
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *a, **k)

    save.shutil.rmtree = rmtree
    run_graph(text=sys.argv[1], overrides={"out": sys.argv[2], "density": 0.7}, cache_dir=sys.argv[3])
    """
)


def test_kill_between_rename_and_cleanup_then_rerun_leaves_nothing(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    run_graph(text=GRAPH, overrides={"out": str(out)}, cache_dir=cache)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, GRAPH, str(out), str(cache)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = _hidden(tmp_path)
    assert any(".graphmerge-old-" in n for n in left), left  # the kill really hit that moment
    assert "density: 0.7" in (out / "graph.yaml").read_text()  # the new output is in place

    # The rerun finds the output up to date, and still removes what the killed run left.
    result = run_graph(text=GRAPH, overrides={"out": str(out), "density": 0.7}, cache_dir=cache)
    assert result.stats.outputs == []
    assert _hidden(tmp_path) == []


def test_kill_between_the_two_renames_restores_the_old_output(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    run_graph(text=GRAPH, overrides={"out": str(out)}, cache_dir=cache)
    before = saved_tensors(out)
    out.rename(tmp_path / ".out.graphmerge-old-999999-deadbeef")  # what a kill mid-swap leaves
    run_graph(text=GRAPH, overrides={"out": str(out)}, cache_dir=cache)  # restores it, then it is current
    assert _hidden(tmp_path) == []
    after = saved_tensors(out)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_save_fsyncs_files_and_folder_before_and_after_the_rename(tmp_path, monkeypatch):
    import graphmerge.io.save as save

    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, Path.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(self, target):
        events.append(("rename", f"{self} -> {target}"))
        return real_rename(self, target)

    monkeypatch.setattr(save.os, "fsync", fsync)
    monkeypatch.setattr(Path, "rename", rename)
    out = tmp_path / "out"
    run_graph(text=GRAPH, overrides={"out": str(out)}, cache_dir=tmp_path / "cache")
    swap = next(i for i, (kind, what) in enumerate(events) if kind == "rename" and what.endswith(f"-> {out}"))
    before = {Path(p).name for kind, p in events[:swap] if kind == "fsync"}
    assert {p.name for p in out.iterdir()} <= before  # every file's data reached the disk first
    assert any(".graphmerge-tmp-" in p for kind, p in events[:swap] if kind == "fsync")  # the folder too
    assert ("fsync", str(tmp_path)) in events[swap:]  # and the rename itself afterwards


def test_outputs_and_cache_blobs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out, cache = tmp_path / "out", tmp_path / "cache"
        run_graph(text=GRAPH, overrides={"out": str(out)}, cache_dir=cache)
    finally:
        os.umask(old)
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)
    for p in out.iterdir():
        assert oct(p.stat().st_mode & 0o777) == oct(0o644), p
    blobs = [p for p in (cache / "blobs").rglob("*") if p.is_file()]
    assert blobs and all(p.stat().st_mode & 0o777 == 0o644 for p in blobs)
