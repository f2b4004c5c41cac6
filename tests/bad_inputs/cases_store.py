"""Damaged or old cache stores (graphmerge/store). Each kind of entry checks itself: damage is
repaired or reported, never served; an old SQLite cache is migrated; leftovers of a killed writer
are removed by `gc`. None of these is a user error."""

from __future__ import annotations

import json
from pathlib import Path

from case import LINEAR_MERGE, Case, tiny_models, write
from legacy_cache import to_legacy_layout

GRAPH = LINEAR_MERGE.replace("OTHER", "add")
RUN = ["run", "g.yaml", "--no-progress"]


def _cache(root: Path) -> Path:
    """A cache with a few blobs, a result, a memoised digest and a tokenizer folder."""
    import torch

    from graphmerge.cache import Cache

    cache = Cache(root / ".graphmerge")
    for i in range(3):
        cache.put_tensor(f"{i:02d}" + "cd" * 15, torch.arange(8.0) + i)
    cache.put_result("r" * 32, {"score": 0.5})
    cache.digests[("/models/x.safetensors", 1, 2)] = {"w": "0" * 32}

    def fill(path: Path) -> None:
        path.mkdir()
        (path / "tokenizer_config.json").write_text("{}\n")

    cache.folder("tokenizers", "t" * 32, fill)
    cache.close()
    tiny_models(root)
    write(root, "g.yaml", GRAPH)
    return root / ".graphmerge"


def _results_is_a_file(root: Path) -> list[str]:
    import shutil

    cache = _cache(root)
    shutil.rmtree(cache / "results")
    write(cache, "results", "not a folder\n")
    return RUN


def _saved(root: Path, err: str) -> None:
    assert (root / "out" / "model.safetensors").is_file(), err


def _old_cache(root: Path) -> list[str]:
    to_legacy_layout(_cache(root))
    return ["cache", "verify", "--json"]


def _migrated(root: Path, err: str) -> None:
    cache = root / ".graphmerge"
    assert not (cache / "index").exists() and not (cache / "results" / "cache.db").exists()
    from graphmerge.cache import Cache

    reopened = Cache(cache)
    assert reopened.get_result("r" * 32) == {"score": 0.5}, "a result was lost in the migration"
    assert len(list(reopened.tensor_keys())) == 3
    reopened.close()


def _tokenizer_edited(root: Path) -> list[str]:
    cache = _cache(root)
    (cache / "tokenizers" / ("t" * 32) / "tokenizer_config.json").write_text('{"edited": true}\n')
    return ["cache", "verify"]


def _tokenizer_dropped(root: Path, err: str) -> None:
    assert not (root / ".graphmerge" / "tokenizers" / ("t" * 32)).exists()


def _torn_records(root: Path) -> list[str]:
    cache = _cache(root)
    for rec in cache.glob("*/*/*.rec"):
        rec.write_bytes(rec.read_bytes()[:-7])
    return RUN


def _killed_writer(root: Path) -> list[str]:
    cache = _cache(root)
    blob = next(cache.glob("blobs/*/*.safetensors"))
    write(blob.parent, f".{blob.name}.x1y2z3.tmp", blob.read_bytes()[:40])  # what a SIGKILL leaves
    write(cache / "journal", "killed-host-1.log", f"{1.0:.6f} + {blob.stem}\n12.5 + tor")
    return ["cache", "gc", "--json"]


def _no_temp_left(root: Path, err: str) -> None:
    assert not list((root / ".graphmerge").glob("blobs/*/.*.tmp"))


def _journal_torn(root: Path) -> list[str]:
    cache = _cache(root)
    with open(next((cache / "journal").glob("*.log")), "a") as fh:
        fh.write("1764.5 + 00cdcd")  # a torn last line: no newline, key cut short
    return ["cache", "verify", "--json"]


def _verify_clean(root: Path, err: str) -> None:
    from graphmerge.cache import Cache

    cache = Cache(root / ".graphmerge")
    report = cache.verify(repair=False)
    cache.close()
    assert report.ok and report.kinds["tokenizers"] == 1, json.dumps(report.kinds)


def _unknown_protocol(root: Path) -> list[str]:
    _cache(root)
    return [*RUN, "--cache-dir", "nosuchfs://bucket/cache"]


CASES = [
    Case(
        "store_results_folder_is_a_file_run",
        _results_is_a_file,
        exit_code=0,
        mentions=("warning:", "results", "not a folder"),
        may_change=(".graphmerge/**", "out/**"),
        check=_saved,
    ),
    Case("store_old_sqlite_cache_is_migrated", _old_cache, exit_code=0, check=_migrated),
    Case("store_tokenizer_folder_edited_verify", _tokenizer_edited, exit_code=1, check=_tokenizer_dropped),
    Case(
        "store_torn_records_run",
        _torn_records,
        exit_code=0,
        may_change=(".graphmerge/**", "out/**"),
        check=_saved,
    ),
    Case("store_killed_writer_gc", _killed_writer, exit_code=0, check=_no_temp_left),
    Case("store_torn_journal_verify", _journal_torn, exit_code=0, check=_verify_clean),
    Case(
        "store_unknown_url_protocol_run",
        _unknown_protocol,
        mentions=("--cache-dir", "nosuchfs", "fsspec URL"),
    ),
]
