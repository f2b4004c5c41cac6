"""The fsspec store: two "machines" (stores with their own local folders) share one URL, and the
command line takes a URL as --cache-dir."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from graphmerge.cli import main
from graphmerge.store import store_url
from graphmerge.store.remote import FsspecStore


def test_a_url_survives_pathlib_and_names_the_store():
    assert store_url(Path("s3://bucket/prefix")) == "s3://bucket/prefix"
    assert store_url("memory://x/y") == "memory://x/y"
    assert store_url(Path("file:///tmp/c")) == "file:///tmp/c"
    assert store_url(Path("/tmp/c")) is None and store_url("relative/dir") is None


def test_two_machines_share_entries_and_tokenizer_folders(tmp_path):
    url = f"memory://{tmp_path.name}/cache"
    a = FsspecStore(url, local=tmp_path / "a")
    b = FsspecStore(url, local=tmp_path / "b")
    a.write_blob("k", torch.arange(6.0))
    a.put_record("results", "score", 0.25)
    calls = []

    def fill(path: Path) -> None:
        calls.append(path)
        path.mkdir()
        (path / "tokenizer_config.json").write_text('{"model_max_length": 8}')

    made = a.folder("tokenizers", "tok", fill)
    assert torch.equal(b.read_blob("k"), torch.arange(6.0)) and b.get_record("results", "score") == 0.25
    fetched = b.folder("tokenizers", "tok", fill)
    assert len(calls) == 1 and fetched != made  # downloaded into b's own folder, not rebuilt
    assert fetched.joinpath("tokenizer_config.json").read_text() == '{"model_max_length": 8}'
    assert b.verify().corrupted == ()


GRAPH = """nodes:
  base: {{op: load, path: {base}}}
  a: {{op: load, path: {a}}}
  merged: {{op: merge, method: linear, models: {{base: {{weight: 0.5}}, a: {{weight: 0.5}}}}}}
  save: {{op: save, input: merged, path: {out}}}
"""


def test_a_run_with_a_url_cache_dir_is_cached_on_the_second_run(tmp_path, tiny_llamas, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH.format(out=tmp_path / "out", **tiny_llamas))
    url = f"file://{tmp_path}/remote-cache"
    args = ["run", str(graph), "--cache-dir", url, "--device", "cpu", "--no-progress", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["tasks"]["executed"] > 0 and list((tmp_path / "remote-cache" / "blobs").glob("*/*.safetensors"))
    (tmp_path / "out" / "graphmerge.json").unlink()
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["tasks"]["executed"] == 0 and second["tasks"]["cached"] == first["tasks"]["executed"]
    assert main(["cache", "verify", "--cache-dir", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == first["tasks"]["executed"]
