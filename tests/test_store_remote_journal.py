"""The fsspec store's journal (store/remote_journal.py): its `verify` reports blobs that vanished behind
graphmerge's back as the disk store's does, on real fsspec file systems (`memory://` and `file://`),
and shared by two "machines" (stores with their own local folders on one URL)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from helpers import write_graph

from graphmerge.cli import main
from graphmerge.runner import run_graph
from graphmerge.store import DiskStore, Store
from graphmerge.store.remote import FsspecStore
from graphmerge.store.remote_journal import FLUSH_LINES, IDLE_S


def _url(protocol: str, tmp_path: Path) -> str:
    return f"memory://{tmp_path.name}/cache" if protocol == "memory" else f"file://{tmp_path}/remote"


def _remove_behind_its_back(store: Store, key: str) -> None:
    if isinstance(store, FsspecStore):
        store.fs.rm_file(store.blob_path(key))
    else:
        store.blob_path(key).unlink()


@pytest.fixture(params=["disk", "fsspec-memory", "fsspec-file"])
def store(request, tmp_path) -> Store:
    if request.param == "disk":
        made: Store = DiskStore(tmp_path / "cache")
    else:
        made = FsspecStore(_url(request.param.removeprefix("fsspec-"), tmp_path), local=tmp_path / "local")
    yield made
    made.close()


def test_verify_reports_a_vanished_blob_once_and_never_one_graphmerge_removed(store):
    for i in range(4):
        store.write_blob(f"k{i}", torch.full((8,), float(i)))
    store.delete_blob("k3")  # evicted by graphmerge: not missing
    _remove_behind_its_back(store, "k0")
    looked = store.verify(repair=False)
    assert looked.missing == ("k0",) and looked.corrupted == () and looked.checked["blobs"] == 2
    assert store.verify(repair=True).missing == ("k0",)
    assert store.verify().missing == ()  # repaired: the journal now says it is gone
    store.write_blob("k0", torch.zeros(8))  # recomputed later, and then tracked again
    _remove_behind_its_back(store, "k0")
    assert store.verify(repair=False).missing == ("k0",)


@pytest.mark.parametrize("protocol", ["memory", "file"])
def test_another_machine_sees_what_a_closed_process_wrote_vanish(tmp_path, protocol):
    url = _url(protocol, tmp_path)
    a = FsspecStore(url, local=tmp_path / "a")
    a.write_blob("written", torch.arange(4.0))
    a.write_blob("evicted", torch.arange(5.0))
    a.delete_blob("evicted")
    a.close()
    b = FsspecStore(url, local=tmp_path / "b")
    assert b.verify().missing == ()
    b.fs.rm_file(b.blob_path("written"))
    assert b.verify(repair=False).missing == ("written",)
    assert FsspecStore(url, local=tmp_path / "c").verify(repair=False).missing == ("written",)


def test_removals_are_journalled_at_once_and_writes_in_batches(tmp_path):
    url = _url("memory", tmp_path)
    a = FsspecStore(url, local=tmp_path / "a")
    b = FsspecStore(url, local=tmp_path / "b")
    a.write_blob("k", torch.ones(3))
    # Not flushed yet: another process cannot know it, so its loss is not reported (never wrongly)...
    assert a.journal.objects() == {}
    a.fs.rm_file(a.blob_path("k"))
    assert b.verify(repair=False).missing == ()
    assert a.verify(repair=False).missing == ("k",)  # ...while its own process counts its pending lines
    # A removal goes out at once, with what was pending, before the blob is removed.
    a.write_blob("gone", torch.ones(2))
    a.delete_blob("gone")
    assert len(a.journal.objects()) == 1 and b.verify(repair=False).missing == ("k",)
    for i in range(FLUSH_LINES):  # a full batch goes out without waiting for close
        a.write_blob(f"b{i}", torch.tensor([float(i)]))
    assert len(a.journal.objects()) == 2
    a.fs.rm_file(a.blob_path("b7"))
    assert b.verify(repair=False).missing == ("b7", "k")


def test_gc_folds_idle_journal_objects_and_forgets_only_vanished_blobs(tmp_path):
    url = _url("file", tmp_path)
    for machine in ("a", "b", "c"):
        s = FsspecStore(url, local=tmp_path / machine)
        s.write_blob(f"{machine}-kept", torch.ones(2))
        s.write_blob(f"{machine}-lost", torch.ones(3))
        s.close()
    journal = tmp_path / "remote" / "journal"
    old = time.time() - 2 * IDLE_S
    for path in journal.glob("*.log"):
        os.utime(path, (old, old))
    store = FsspecStore(url, local=tmp_path / "d")
    store.fs.rm_file(store.blob_path("c-lost"))
    store.write_blob("d-new", torch.ones(4))  # this process's journal is not idle: left alone
    store.journal.flush()
    assert store.verify(repair=False).missing == ("c-lost",)
    store.gc()
    names = sorted(p.name for p in journal.glob("*.log"))
    assert len(names) == 2 and sum(n.startswith("compact-") for n in names) == 1
    compact = next(journal.glob("compact-*.log")).read_text()
    assert {line.split()[2] for line in compact.splitlines()} == {
        "a-kept",
        "a-lost",
        "b-kept",
        "b-lost",
        "c-kept",
    }
    store.fs.rm_file(store.blob_path("a-kept"))
    store.fs.rm_file(store.blob_path("d-new"))
    assert store.verify(repair=False).missing == ("a-kept", "d-new")
    store.close()


def test_cache_verify_on_a_url_reports_missing_and_corrupted_blobs(tmp_path, tiny_llamas, capsys):
    url = f"file://{tmp_path}/remote-cache"
    out = tmp_path / "out"
    run_graph(write_graph(tmp_path, tiny_llamas, out), cache_dir=url, progress=False)
    blobs = sorted((tmp_path / "remote-cache" / "blobs").glob("*/*.safetensors"))
    blobs[0].unlink()
    data = bytearray(blobs[1].read_bytes())
    data[-1] ^= 0xFF
    blobs[1].write_bytes(bytes(data))
    assert main(["cache", "verify", "--cache-dir", url]) == 1
    assert "1 missing, 1 corrupted" in capsys.readouterr().out
    assert main(["cache", "verify", "--cache-dir", url, "--json"]) == 0  # repaired: both were let go
    assert json.loads(capsys.readouterr().out)["missing"] == []
