"""Bad cache states: broken index databases, files where folders belong. A broken index is either
repaired (exit 0) or a one-line error naming the cache (exit 2); blobs are never lost either way."""

from __future__ import annotations

from pathlib import Path

from case import LINEAR_MERGE, Case, tiny_models, write
from legacy_cache import to_legacy_layout

GRAPH = LINEAR_MERGE.replace("OTHER", "add")
# What a repair may touch: the index databases and the output a repaired run writes; never a blob.
REPAIRABLE = (".graphmerge/index*", ".graphmerge/results*", ".graphmerge/digests*", "out/*")


def _cache(root: Path) -> Path:
    import torch

    from graphmerge.cache import Cache

    cache = Cache(root / ".graphmerge")
    for i in range(3):
        cache.put_tensor(f"{i:02d}" + "ab" * 15, torch.arange(8.0) + i)
    cache.put_result("r" * 32, {"score": 0.5})
    cache.close()
    to_legacy_layout(root / ".graphmerge")  # the databases these cases break exist only in old caches
    return root / ".graphmerge"


def _broken(db: str, how: str, *command: str):
    def build(root: Path) -> list[str]:
        cache = _cache(root)
        tiny_models(root)
        write(root, "g.yaml", GRAPH)
        path = cache / db / "cache.db"
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2] if how == "truncate" else b"\x13" * len(raw))
        return list(command)

    return build


def _replace_with_file(rel: str, *command: str):
    def build(root: Path) -> list[str]:
        import shutil

        cache = _cache(root)
        tiny_models(root)
        write(root, "g.yaml", GRAPH)
        shutil.rmtree(cache / rel)
        write(cache, rel, "not a folder\n")
        return list(command)

    return build


def _names_the_cache(root: Path, err: str) -> None:
    # Repaired (exit 0) or not (exit 2): an error must say which cache it is about.
    assert "error:" not in err or str(root / ".graphmerge") in err, err


def _case(name: str, build, *mentions: str, exit_code=(0, 2), may_change=REPAIRABLE) -> Case:
    return Case(
        name, build, exit_code=exit_code, mentions=mentions, may_change=may_change, check=_names_the_cache
    )


VERIFY = ("cache", "verify")
RUN = ("run", "g.yaml", "--no-progress")
CASES = [
    _case("index_truncated_verify", _broken("index", "truncate", *VERIFY)),
    _case("index_truncated_run", _broken("index", "truncate", *RUN)),
    _case("index_garbage_stats", _broken("index", "garbage", "cache", "stats")),
    _case("index_garbage_gc", _broken("index", "garbage", "cache", "gc")),
    _case("results_garbage_run", _broken("results", "garbage", *RUN)),
    _case("digests_truncated_run", _broken("digests", "truncate", *RUN)),
    _case("blobs_is_a_file_run", _replace_with_file("blobs", *RUN), "blobs", exit_code=2),
    _case("index_is_a_file_verify", _replace_with_file("index", *VERIFY), "index"),
]
