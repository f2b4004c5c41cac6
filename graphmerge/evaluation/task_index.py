"""The tasks of include_path folders, indexed without importing lm-eval.

Importing lm-eval takes seconds, and `validate` only needs the task YAMLs of the graph's include paths:
their names, metrics, filters and data files. This index walks the folders and reads each YAML with the
rules of lm-eval's own index (lm_eval/tasks/_index.py and _yaml_loader.py: sorted `**/*.yaml`, `include:`
merged with local keys winning, `!function` kept as the string 'YAML_DIR/module.func', unreadable files
skipped, the first of two equal names in one folder kept, a later folder overriding an earlier one), so an
entry here equals lm-eval's entry for the same name and task hashes do not depend on which index gave it.
Names not found here (lm-eval's built-in tasks) are left to lm-eval's index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

_IGNORE_DIRS = {"__pycache__", ".ipynb_checkpoints"}


@dataclass
class Entry:
    """One name of the index, shaped like lm-eval's `Entry` (kind: task, py_task, group or tag)."""

    name: str
    kind: str
    yaml_path: Path | None
    cfg: dict[str, Any] | None = None
    tags: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class IncludePathIndex:
    """The include paths' tasks, groups and tags by name (the part of lm-eval's TaskManager that
    task lookups use)."""

    task_index: dict[str, Entry]

    @property
    def all_tasks(self) -> list[str]:
        return sorted(self.task_index)

    @property
    def all_groups(self) -> list[str]:
        return sorted(n for n, e in self.task_index.items() if e.kind == "group")

    @property
    def all_tags(self) -> list[str]:
        return sorted(n for n, e in self.task_index.items() if e.kind == "tag")


def _loader(base_dir: Path) -> type:
    import yaml

    base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.FullLoader

    class Loader(base):  # type: ignore[misc, valid-type]
        pass

    def function(loader: Any, node: Any) -> str:
        return str(base_dir.expanduser() / loader.construct_scalar(node))

    yaml.add_constructor("!function", function, Loader=Loader)
    return Loader


def load_task_yaml(path: Path, _seen: set[Path] | None = None) -> dict[str, Any]:
    """A task YAML with its includes merged and !function entries as strings. Like lm-eval, a file met
    twice while loading one YAML (a cycle, or two includes sharing a base) makes the YAML unreadable."""
    import yaml

    path = Path(path).expanduser().resolve()
    _seen = set() if _seen is None else _seen
    if path in _seen:
        raise ValueError(f"include cycle at {path}")
    _seen.add(path)
    with path.open("rb") as fh:
        cfg = yaml.load(fh, Loader=_loader(path.parent))  # noqa: S506 (a safe loader plus !function)
    if not isinstance(cfg, dict):
        raise ValueError(f"expected a YAML mapping in {path}")
    if "include" not in cfg:
        return cfg
    includes = cfg.pop("include")
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        inc_cfg = load_task_yaml(inc_path, _seen)
        inc_cfg.pop("task_list", None)
        merged.update(inc_cfg)
    merged.update(cfg)
    return merged


def _yaml_files(root: Path) -> Iterator[Path]:
    files = (p for p in root.glob("**/*.yaml") if not any(part in _IGNORE_DIRS for part in p.parts))
    yield from sorted(files, key=lambda p: p.as_posix())


def _names(value: Any) -> set[str]:
    if value is None:
        return set()
    return {value} if isinstance(value, str) else set(value)


def _add(cfg: dict[str, Any], path: Path, index: dict[str, Entry]) -> None:
    if "class" in cfg:
        kind, key = "py_task", "task"
    elif "group" in cfg:
        kind, key = "group", "group"
    elif "task" in cfg:
        kind, key = "task", "task"
    else:
        return
    name = cfg[key]
    if name in index:
        return
    index[name] = Entry(name=name, kind=kind, yaml_path=path, cfg=cfg, tags=_names(cfg.get("tag")))
    if kind != "group":
        for tag in _names(cfg.get("tag")):
            index.setdefault(tag, Entry(name=tag, kind="tag", yaml_path=None)).tags.add(name)


@lru_cache(maxsize=16)
def include_path_index(paths: tuple[str, ...], signature: tuple) -> IncludePathIndex:
    """The index of `paths` (resolved folders); `signature` names the files' state, so that an edited
    YAML gives a fresh index."""
    index: dict[str, Entry] = {}
    for root in paths:
        own: dict[str, Entry] = {}
        for path in _yaml_files(Path(root)):
            try:
                _add(load_task_yaml(path), path, own)
            except Exception:  # lm-eval skips a YAML it cannot read; so does this index
                continue
        index.update(own)
    return IncludePathIndex(index)
