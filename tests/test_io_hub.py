"""Hub references in `load`: org/name, org/name@revision, hf://..., resolved through a real
huggingface_hub cache layout (models--org--name/{blobs,refs,snapshots}) built here; no network."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graphmerge.errors import ModelError
from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"


def add_to_hub_cache(
    hub: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)
) -> Path:
    """Put `folder`'s files into a hub cache the way huggingface_hub stores a download."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap


@pytest.fixture()
def hub(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    add_to_hub_cache(home / "hub", "org/tiny", TINY / "base", "a" * 40)
    add_to_hub_cache(home / "hub", "org/tiny", TINY / "add", "b" * 40, refs=("v2",))
    return home / "hub"


def test_layout_is_what_huggingface_hub_reads(hub):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hub)
    assert [r.repo_id for r in info.repos] == ["org/tiny"] and not info.warnings
    revs = {rev.commit_hash: rev.refs for rev in next(iter(info.repos)).revisions}
    assert revs == {"a" * 40: frozenset({"main"}), "b" * 40: frozenset({"v2"})}


@pytest.mark.parametrize(
    "ref, source",
    [
        ("org/tiny", "base"),
        ("hf://org/tiny", "base"),
        ("org/tiny@v2", "add"),
        (f"hf://org/tiny@{'b' * 40}", "add"),
    ],
)
def test_load_resolves_hub_references_offline(tmp_path, hub, ref, source):
    graph = tmp_path / "g.yaml"
    graph.write_text(f"nodes:\n  m: {{op: load, path: '{ref}'}}\n  s: {{op: save, input: m, path: out}}\n")
    run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    ours, want = (
        load_file(tmp_path / "out" / "model.safetensors"),
        load_file(TINY / source / "model.safetensors"),
    )
    assert set(ours) == set(want) and all(torch.equal(ours[k], want[k]) for k in want)


def test_local_folder_wins_over_a_hub_id_of_the_same_name(tmp_path, hub):
    (tmp_path / "org").mkdir()
    os.symlink(TINY / "reverse", tmp_path / "org" / "tiny")
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n  m: {op: load, path: org/tiny}\n  s: {op: save, input: m, path: out}\n")
    run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    want = load_file(TINY / "reverse" / "model.safetensors")
    assert torch.equal(
        load_file(tmp_path / "out" / "model.safetensors")["lm_head.weight"], want["lm_head.weight"]
    )


def test_missing_hub_model_offline_says_what_to_set(tmp_path, hub):
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n  m: {op: load, path: org/other}\n  s: {op: save, input: m, path: out}\n")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE") as err:
        run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    assert "org/other" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelError, match="org/tiny@v3"):
        run_graph(graph, text=graph.read_text().replace("org/other", "org/tiny@v3"), cache_dir=tmp_path / "c")


def _cli(args, cwd, **env):
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *args], cwd=cwd, env=full, capture_output=True, text=True
    )


def test_unreachable_hub_uses_the_cache_or_fails_in_one_line(tmp_path, hub):
    """Online mode with a hub that refuses connections: cached models still load; others fail
    with one line naming what to set."""
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}
    (tmp_path / "ok.yaml").write_text(
        "nodes:\n  m: {op: load, path: org/tiny}\n  s: {op: save, input: m, path: out}\n"
    )
    done = _cli(["run", "ok.yaml", "--cache-dir", "c", "--no-progress"], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    (tmp_path / "bad.yaml").write_text(
        "nodes:\n  m: {op: load, path: org/absent}\n  s: {op: save, input: m, path: o2}\n"
    )
    failed = _cli(["run", "bad.yaml", "--cache-dir", "c", "--no-progress"], tmp_path, **env)
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, failed.stderr
    assert "org/absent" in lines[0] and "unreachable" in lines[0] and "HF_HOME" in lines[0]
    assert not (tmp_path / "o2").exists()


def test_validate_checks_the_cache_without_downloading(tmp_path, hub):
    (tmp_path / "g.yaml").write_text(
        "nodes:\n  m: {op: load, path: org/tiny@v2}\n  n: {op: load, path: org/absent}\n"
    )
    offline = _cli(["validate", "g.yaml"], tmp_path)
    assert offline.returncode == 2 and "org/absent" in offline.stderr and "'n'" in offline.stderr
    online = _cli(["validate", "g.yaml"], tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert online.returncode == 0, online.stderr  # `run` would download it; validate does not try


def test_snapshot_patterns_select_only_what_a_merge_reads():
    from huggingface_hub.utils import filter_repo_objects

    from graphmerge.io.hub import COMMON_FILES, PICKLED, SAFETENSORS

    wanted = {
        "config.json",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    }
    files = [*wanted, "pytorch_model.bin", "original/consolidated.00.pth", "onnx/model.onnx", "README.md"]
    files += ["original/params.json"]
    got = set(filter_repo_objects(files, allow_patterns=COMMON_FILES + SAFETENSORS, ignore_patterns=["*/*"]))
    assert got == wanted
    assert "pytorch_model.bin" in set(filter_repo_objects(files, allow_patterns=COMMON_FILES + PICKLED))


FETCHER = '''
import requests
from huggingface_hub.errors import OfflineModeIsEnabled
from graphmerge import NodeParams, node


class P(NodeParams):
    kind: str


@node("fetch_dataset", version="1", params=P)
def fetch(ctx, params, inputs):
    """Stands in for lm-eval loading a dataset from the hub."""
    if params.kind == "offline":
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/datasets/x: offline mode is enabled.")
    raise requests.ConnectionError("Max retries exceeded with url: /api/datasets/x")
'''


@pytest.mark.parametrize("kind, says", [("offline", "unset HF_HUB_OFFLINE"), ("network", "HF_HUB_OFFLINE=1")])
def test_unreachable_data_is_one_error_line_saying_what_to_set(tmp_path, kind, says):
    (tmp_path / "plugin.py").write_text(FETCHER)
    (tmp_path / "g.yaml").write_text(f"nodes:\n  d: {{op: fetch_dataset, kind: {kind}}}\n")
    done = _cli(["run", "g.yaml", "--plugin", "plugin.py", "--no-progress", "--cache-dir", "c"], tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert says in lines[0] and "Traceback" not in done.stderr
