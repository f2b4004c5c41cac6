"""Task lookup for lm-eval: memoised TaskManagers, validation with one-line errors, config hashes."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from graphmerge.errors import EvaluationError
from graphmerge.evaluation.task_index import include_path_index

__all__ = [
    "TaskSpec",
    "task_manager",
    "resolve_tasks",
    "check_tasks",
    "is_group_or_tag",
    "task_metrics",
    "task_data_files",
    "task_filters",
    "task_config_hash",
    "quiet_lm_eval",
]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class TaskSpec:
    """One scored task: the lm-eval task name, which metric (and which of its filters) to read, and its
    weight in a combined score. ``metric`` may be written lm-eval's way, ``NAME,FILTER``."""

    task: str
    metric: str = "acc"
    weight: float = 1.0
    filter: str | None = None

    def __post_init__(self) -> None:
        if "," in self.metric:
            name, _, filt = self.metric.partition(",")
            if not name.strip() or not filt.strip():
                raise EvaluationError(
                    f"metric {self.metric!r} is not NAME,FILTER",
                    where=self.task,
                    fix="e.g. exact_match,strict-match",
                )
            if self.filter is not None and self.filter != filt.strip():
                raise EvaluationError(
                    f"metric {self.metric!r} and filter {self.filter!r} disagree", where=self.task
                )
            object.__setattr__(self, "metric", name.strip())
            object.__setattr__(self, "filter", filt.strip())

    @property
    def label(self) -> str:
        """The metric as lm-eval keys it (``NAME,FILTER``), or just the name when no filter was chosen."""
        return f"{self.metric},{self.filter}" if self.filter else self.metric

    @classmethod
    def coerce(cls, value: TaskSpec | dict[str, Any] | str) -> TaskSpec:
        if isinstance(value, TaskSpec):
            return value
        if isinstance(value, str):
            return cls(task=value)
        if isinstance(value, dict) and "task" in value:
            extra = set(value) - {"task", "metric", "weight", "filter"}
            if extra:
                raise EvaluationError(
                    f"unknown task entry keys {sorted(extra)}",
                    where=str(value["task"]),
                    fix="use task, metric, weight, filter",
                )
            return cls(
                task=str(value["task"]),
                metric=str(value.get("metric", "acc")),
                weight=float(value.get("weight", 1.0)),
                filter=value.get("filter"),
            )
        raise EvaluationError(
            f"cannot read task entry {value!r}", fix="use {task: NAME, metric: M, weight: W}"
        )


# ------------------------------------------------------------------------------------------ logging
class _DropNoise(logging.Filter):
    NOISE = (
        "Custom kwargs can be passed",
        "`pretrained` model kwarg is not of type",
        "Overwriting default num_fewshot",
        "Passed an already-initialized model",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self.NOISE)


_FILTER = _DropNoise()


def quiet_lm_eval(level: int = logging.WARNING) -> None:
    """lm-eval logs every step at INFO; keep its warnings (minus known harmless ones) and errors.
    Idempotent; call again after importing more lm-eval modules (it scans their loggers)."""
    for name in ["lm-eval", "lm_eval", *list(logging.root.manager.loggerDict)]:
        if name.startswith(("lm_eval", "lm-eval")):
            lg = logging.getLogger(name)
            if lg.level == logging.NOTSET or lg.level < level:
                lg.setLevel(level)
            if _FILTER not in lg.filters:
                lg.addFilter(_FILTER)


# ------------------------------------------------------------------------------------- task managers
def _key(include_path: PathLike | Iterable[PathLike] | None) -> tuple[str, ...]:
    if include_path is None:
        return ()
    if isinstance(include_path, (str, os.PathLike)):
        include_path = [include_path]
    out = []
    for p in include_path:
        path = Path(p).expanduser().resolve()
        if not path.exists():
            raise EvaluationError(
                f"include_path {p} does not exist", fix="point include_path at a folder of task YAMLs"
            )
        out.append(str(path))
    return tuple(out)


def _signature(paths: tuple[str, ...]) -> tuple:
    """(file, mtime, size) of every YAML/Python file under the include paths, so that an edited task
    gets a fresh TaskManager (lm-eval keeps the parsed YAML in its index)."""
    sig = []
    for root in paths:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
            for f in sorted(filenames):
                if f.endswith((".yaml", ".yml", ".py")):
                    st = os.stat(os.path.join(dirpath, f))
                    sig.append((dirpath, f, st.st_mtime_ns, st.st_size))
    return tuple(sig)


def _manager(paths: tuple[str, ...], defaults: bool):
    return _manager_cached(paths, defaults, _signature(paths))


@lru_cache(maxsize=16)
def _manager_cached(paths: tuple[str, ...], defaults: bool, signature: tuple):
    quiet_lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths) or None, include_defaults=defaults)


def task_manager(include_path: PathLike | Iterable[PathLike] | None, names: Sequence[str] = ()):
    """A memoised TaskManager that knows every name in ``names``.

    The include paths alone are indexed first (fast); lm-eval's built-in tasks are indexed only when
    a name is not found there. Unknown names raise EvaluationError with close matches.
    """
    paths = _key(include_path)
    if paths:
        tm = _manager(paths, False)
        if all(n in tm.task_index for n in names):
            return tm
    tm = _manager(paths, True)
    for n in names:
        if n not in tm.task_index:
            close = difflib.get_close_matches(n, tm.all_tasks, n=3, cutoff=0.6)
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else "check include_path and the task YAML's `task:` name"
            )
            where = f"include_path {', '.join(paths)}" if paths else None
            raise EvaluationError(f"unknown task {n!r}", where=where, fix=hint)
    return tm


def _entry(name: str, include_path):
    """(the index that knows `name`, its entry): the include paths' own YAML index when they define the
    name (no lm-eval import), lm-eval's TaskManager otherwise."""
    paths = _key(include_path)
    if paths:
        local = include_path_index(paths, _signature(paths))
        if name in local.task_index:
            return local, local.task_index[name]
    tm = task_manager(include_path, [name])
    return tm, tm.task_index[name]


def is_group_or_tag(name: str, include_path: PathLike | Iterable[PathLike] | None) -> bool:
    kind = _kind(_entry(name, include_path)[1])
    return "group" in kind or "tag" in kind


def _yaml_config(entry) -> dict[str, Any]:
    """The task's YAML config with includes merged and !function left as 'DIR/module.func' strings:
    the index entry's own copy (TaskManager.task_index), so no private lm-eval loader is needed."""
    return copy.deepcopy(dict(entry.cfg or {}))


def _kind(entry) -> str:
    return str(getattr(entry.kind, "name", entry.kind)).lower()


def _members(tm, entry) -> list[str]:
    """Sub-task names of a group or tag (empty for a plain task)."""
    kind = _kind(entry)
    if "tag" in kind:
        return sorted(n for n, e in tm.task_index.items() if entry.name in (e.tags or ()))
    if "group" in kind:
        cfg = _yaml_config(entry)
        tasks = cfg.get("task", [])
        names = []
        for t in tasks if isinstance(tasks, list) else [tasks]:
            names.append(t if isinstance(t, str) else t.get("task") or t.get("group"))
        return [n for n in names if isinstance(n, str) and n in tm.task_index]
    return []


# ----------------------------------------------------------------------------------------- data files
def _strings(value: Any) -> Iterator[str]:
    """Every string in a nested structure of dicts, lists and tuples."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _data_file_refs(cfg: dict[str, Any]) -> list[str]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    return list(_strings(files))


def task_data_files(task: str, include_path: PathLike | Iterable[PathLike] | None) -> list[Path]:
    """Local data files of a task (``dataset_kwargs.data_files``, resolved against the YAML's folder,
    then the working directory; or a local ``dataset_path``). Raises EvaluationError for a missing one."""
    tm, entry = _entry(task, include_path)
    cfg = _yaml_config(entry)
    ydir = Path(entry.yaml_path).parent if entry.yaml_path else Path.cwd()
    found: list[Path] = []
    for ref in _data_file_refs(cfg):
        p = Path(ref).expanduser()
        candidates = [p] if p.is_absolute() else [ydir / p, Path.cwd() / p]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None and any(ch in ref for ch in "*?["):  # a glob
            hits = sorted(h for c in candidates for h in c.parent.glob(c.name))
            if hits:
                found += hits
                continue
        if hit is None:
            raise EvaluationError(
                f"data file {ref} not found (looked in {ydir} and {Path.cwd()})",
                where=f"task {task} ({entry.yaml_path})",
                fix="restore the file or fix dataset_kwargs.data_files in the task YAML",
            )
        found.append(hit.resolve())
    dp = cfg.get("dataset_path")
    if isinstance(dp, str) and not found:
        for c in (ydir / dp, Path.cwd() / dp):
            if c.is_file():
                found.append(c.resolve())
                break
            if c.is_dir():
                found += sorted(f.resolve() for f in c.rglob("*") if f.is_file())
                break
    return found


# ------------------------------------------------------------------------------------------- metrics
_DEFAULT_METRICS = {
    "generate_until": ["exact_match"],
    "multiple_choice": ["acc", "acc_norm"],
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
}


def task_metrics(task: str, include_path: PathLike | Iterable[PathLike] | None) -> list[str]:
    """Metric names a task reports (from its YAML; lm-eval's defaults for its output_type otherwise).
    For a group or tag: the union over its members (a group's own aggregate metrics first)."""
    tm, entry = _entry(task, include_path)
    cfg = _yaml_config(entry)
    members = _members(tm, entry)
    if members:
        names = [m["metric"] for m in cfg.get("aggregate_metric_list", []) if isinstance(m, dict)]
        for m in members:
            names += [n for n in task_metrics(m, include_path) if n not in names]
        return names
    metric_list = cfg.get("metric_list")
    if metric_list:
        return [m["metric"] if isinstance(m, dict) else str(m) for m in metric_list]
    return list(_DEFAULT_METRICS.get(cfg.get("output_type", "generate_until"), []))


def task_filters(task: str, include_path: PathLike | Iterable[PathLike] | None) -> list[str]:
    """Names of a task's filters (its YAML's ``filter_list``; lm-eval's ``none`` when it has none).
    For a group or tag: the filters its members share."""
    tm, entry = _entry(task, include_path)
    members = _members(tm, entry)
    if members:
        shared: list[str] | None = None
        for m in members:
            names = task_filters(m, include_path)
            shared = names if shared is None else [n for n in shared if n in names]
        return shared or []
    flist = _yaml_config(entry).get("filter_list")
    names = [f.get("name") for f in flist if isinstance(f, dict)] if isinstance(flist, list) else []
    return [n for n in names if isinstance(n, str)] or ["none"]


def _check_filter(spec: TaskSpec, include_path, where: str | None) -> None:
    filters = task_filters(spec.task, include_path)
    if spec.filter is None and len(filters) > 1:
        raise EvaluationError(
            f"task {spec.task} reports {spec.metric} under {len(filters)} filters ({', '.join(filters)})",
            where=where,
            fix=f"choose one: metric: {spec.metric},{filters[0]}",
        )
    if spec.filter is not None and filters and spec.filter not in filters:
        raise EvaluationError(
            f"task {spec.task} has no filter {spec.filter!r}",
            where=where,
            fix=f"its filters: {', '.join(filters)}",
        )


def resolve_tasks(specs: Sequence[TaskSpec], include_path) -> Any:
    """Validate names, data files and metrics up front (before any model work); return the manager."""
    check_tasks(specs, include_path)
    return task_manager(include_path, list(dict.fromkeys(s.task for s in specs)))


def check_tasks(specs: Sequence[TaskSpec], include_path) -> None:
    """Validate names, data files, metrics and filters; lm-eval is imported only for names that the
    include paths do not define."""
    for s in specs:
        tm, entry = _entry(s.task, include_path)
        leaves = _members(tm, entry) or [s.task]
        if "tag" in _kind(entry):
            raise EvaluationError(
                f"{s.task} is a tag of {len(leaves)} tasks and has no score of its own",
                fix=f"list its tasks instead: {', '.join(leaves[:6])}" + (" ..." if len(leaves) > 6 else ""),
            )
        for leaf in leaves:
            task_data_files(leaf, include_path)
        produced = task_metrics(s.task, include_path)
        if s.metric not in produced:
            raise EvaluationError(
                f"task {s.task} does not report metric {s.metric!r}",
                where=str(entry.yaml_path) if entry.yaml_path else None,
                fix=f"it reports: {', '.join(produced) or 'nothing'}",
            )
        _check_filter(s, include_path, str(entry.yaml_path) if entry.yaml_path else None)


# ---------------------------------------------------------------------------------------------- hash
@lru_cache(maxsize=4096)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest(path: Path) -> str:
    st = path.stat()
    return _file_digest(str(path), st.st_mtime_ns, st.st_size)


def _function_modules(cfg: Any, ydir: Path) -> list[Path]:
    """Python files referenced by !function entries ('DIR/module.func' strings after load_yaml)."""
    out: list[Path] = []

    for v in _strings(cfg):
        if v.startswith(str(ydir)):
            p = Path(v.rpartition(".")[0] + ".py")
            if p.is_file():
                out.append(p)
    return sorted(set(out))


def task_config_hash(task_name: str, include_path: PathLike | Iterable[PathLike] | None) -> str:
    """A stable hex digest of a task's resolved YAML config, the Python modules its !function entries
    name, and its local data files' contents (for a group or tag, of all its members). Moving the
    task folder keeps the hash; editing the YAML, the module or the data changes it."""
    tm, entry = _entry(task_name, include_path)
    h = hashlib.sha256()
    members = _members(tm, entry)
    ydir = Path(entry.yaml_path).parent.resolve() if entry.yaml_path else None
    cfg = _yaml_config(entry)
    text = json.dumps(cfg, sort_keys=True, default=str)
    if ydir is not None:
        text = text.replace(str(ydir), "<task_dir>")
    h.update(f"{task_name}\0{_kind(entry)}\0{text}\0".encode())
    if ydir is not None:
        for mod in _function_modules(cfg, ydir):
            h.update(f"module {mod.relative_to(ydir) if mod.is_relative_to(ydir) else mod.name}\0".encode())
            h.update(_digest(mod).encode())
    if members:
        for m in members:
            h.update(f"member {m} {task_config_hash(m, include_path)}\0".encode())
    else:
        for f in task_data_files(task_name, include_path):
            rel = f.relative_to(ydir) if ydir is not None and f.is_relative_to(ydir) else Path(f.name)
            h.update(f"data {rel}\0{_digest(f)}\0".encode())
    return h.hexdigest()[:32]
