"""Broken cache states and cache settings. A broken SQLite store of the cache (index, results,
digests) is not a user error: it is moved aside, the index is rebuilt from the self-describing
blobs, a warning names it, and the command goes on (exit 0). Bad cache *settings* are user errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from case import Case
from legacy_cache import to_legacy_layout

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"

GRAPH = f"""nodes:
  base: {{op: load, path: {TINY / "base"}}}
  add: {{op: load, path: {TINY / "add"}}}
  merged:
    op: merge
    method: ties
    base: base
    models:
      add: {{weight: 1.0, density: 0.5}}
  save: {{op: save, input: merged, path: out}}
"""


def _run_once(root: Path) -> Path:
    """A real run, so the cache holds blobs, an index, results and digests."""
    from graphmerge.runner import run_graph

    (root / "g.yaml").write_text(GRAPH)
    run_graph(root / "g.yaml", cache_dir=root / ".graphmerge", device="cpu", progress=False)
    to_legacy_layout(root / ".graphmerge")  # the databases these cases break exist only in old caches
    return root / ".graphmerge"


def _truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])


def _garbage(db: Path) -> None:
    db.write_bytes(b"this is not an SQLite database\n" * 64)


def _broken(store: str, damage: Callable[[Path], None], argv: list[str], rerun: bool = True):
    def build(root: Path) -> list[str]:
        cache = _run_once(root)
        if rerun:  # the output must be written again: the run then reads every cached tensor
            (root / "out" / "graphmerge.json").unlink()
        damage(cache / store / "cache.db")
        return argv

    return build


def _index_is_a_file(root: Path) -> list[str]:
    cache = _run_once(root)
    for p in (cache / "index").iterdir():
        p.unlink()
    (cache / "index").rmdir()
    (cache / "index").write_text("not a folder")
    (root / "out" / "graphmerge.json").unlink()
    return ["run", "g.yaml", "--device", "cpu", "--no-progress"]


def _rebuilt_from_blobs(root: Path, err: str) -> None:
    assert (root / "out" / "model.safetensors").is_file()
    assert list((root / ".graphmerge").glob("index.broken-*")), "the broken index was not kept aside"
    assert "0 tensor tasks executed" in err or "rebuilt it from the blobs" in err


def _graph_with_cache(setting: str):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(f"cache: {setting}\n" + GRAPH)
        return ["run", "g.yaml", "--device", "cpu", "--no-progress"]

    return build


RUN = ["run", "g.yaml", "--device", "cpu", "--no-progress"]

CASES = [
    Case(
        "cache_index_truncated_run",
        _broken("index", _truncate, RUN),
        exit_code=0,
        mentions=("warning:", "index", "rebuilt it from the blobs"),
        may_change=(".graphmerge/**", "out/**"),
        check=_rebuilt_from_blobs,
    ),
    Case(
        "cache_index_garbage_run",
        _broken("index", _garbage, RUN),
        exit_code=0,
        mentions=("warning:", "index", "rebuilt it from the blobs"),
        may_change=(".graphmerge/**", "out/**"),
        check=_rebuilt_from_blobs,
    ),
    Case(
        "cache_index_truncated_verify",
        _broken("index", _truncate, ["cache", "verify"], rerun=False),
        exit_code=0,
        mentions=("warning:", "index.broken-", "rebuilt it from the blobs"),
    ),
    Case(
        "cache_index_truncated_stats",
        _broken("index", _truncate, ["cache", "stats"], rerun=False),
        exit_code=0,
        mentions=("warning:", "index"),
    ),
    Case(
        "cache_index_is_a_file",
        _index_is_a_file,
        exit_code=0,
        mentions=("warning:", "index", "rebuilt it from the blobs"),
        may_change=(".graphmerge/**", "out/**"),
        check=_rebuilt_from_blobs,
    ),
    Case(
        "cache_results_truncated_run",
        _broken("results", _truncate, RUN),
        exit_code=0,
        mentions=("warning:", "results", "recomputed"),
        may_change=(".graphmerge/**", "out/**"),
    ),
    Case(
        "cache_digests_garbage_run",
        _broken("digests", _garbage, RUN),
        exit_code=0,
        mentions=("warning:", "digests", "re-hashed"),
        may_change=(".graphmerge/**", "out/**"),
    ),
    Case(
        "cache_setting_bad_size",
        _graph_with_cache("{max_size: lots}"),
        mentions=("g.yaml:1", "max_size", "lots"),
    ),
    Case(
        "cache_setting_unknown_key",
        _graph_with_cache("{maxsize: 1GB}"),
        mentions=("g.yaml:1", "maxsize", "max_size"),
    ),
    Case(
        "cache_setting_not_a_mapping",
        _graph_with_cache("[1GB]"),
        mentions=("g.yaml:1", "cache:"),
    ),
    Case(
        "cache_setting_bad_persist",
        _graph_with_cache("{search_persist: best}"),
        mentions=("g.yaml:1", "search_persist", "reused"),
    ),
    Case(
        "cache_max_size_flag_bad",
        lambda root: [*_graph_with_cache("{}")(root), "--cache-max-size", "5XB"],
        mentions=("--cache-max-size", "5XB"),
    ),
    Case(
        "in_flight_flag_bad",
        lambda root: [*_graph_with_cache("{}")(root), "--in-flight", "lots"],
        mentions=("--in-flight", "lots"),
    ),
]
