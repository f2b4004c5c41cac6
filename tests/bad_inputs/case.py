"""One bad-input case: how to build it, what the CLI must answer, and what must not change.

Each `cases_*.py` module in this folder defines `CASES: list[Case]`; `tests/test_bad_inputs.py`
collects them all and runs each in a fresh subprocess of `python -m graphmerge.cli`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    # Creates whatever the case needs under the given (empty) folder and returns the CLI arguments
    # (everything after `graphmerge`). It runs with that folder as the working directory.
    build: Callable[[Path], list[str]]
    # The exit status, or the statuses that are all acceptable (e.g. 2 = a clear error, 0 = repaired).
    exit_code: int | tuple[int, ...] = 2
    # Substrings the error output must contain, e.g. the file, node or key it names.
    mentions: tuple[str, ...] = ()
    # Files under the folder that the command may create or change (glob patterns, relative);
    # every other file that existed before the command must be byte-identical afterwards.
    may_change: tuple[str, ...] = (".graphmerge/**",)
    # Extra environment for the subprocess.
    env: dict[str, str] = field(default_factory=dict)
    # Optional check after the run: raises AssertionError on failure (e.g. "no marker file").
    check: Callable[[Path, str], None] | None = None
    # Where the error may be more than one line (e.g. `validate` listing several problems).
    one_line: bool = True
    # Marked slow (still run in CI): e.g. an unknown task name makes lm-eval index all its built-in tasks.
    slow: bool = False


# -- helpers the case modules share ------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent.parent
TINY = REPO / "models" / "tiny"
TASKS = REPO / "graphs" / "tasks" / "tiny"


def write(root: Path, rel: str, data: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def copy_model(root: Path, name: str, source: str = "base") -> Path:
    """A copy of one bundled tiny model (3 MB) under root/name."""
    import shutil

    return Path(shutil.copytree(TINY / source, root / name))


def tiny_models(root: Path, *names: str) -> None:
    """Copies of bundled tiny models, each under its own name (default: base and add)."""
    for name in names or ("base", "add"):
        copy_model(root, name, name)


# A linear merge of the tiny base with the model at OTHER, saved to out/.
LINEAR_MERGE = """\
nodes:
  base: {op: load, path: base}
  OTHER: {op: load, path: OTHER}
  merged: {op: merge, method: linear, models: {base: {weight: 0.5}, OTHER: {weight: 0.5}}}
  save: {op: save, input: merged, path: out}
"""


# TIES of the tiny add model onto base, density DENSITY, saved to OUT.
TIES_MERGE = """\
nodes:
  base: {op: load, path: base}
  add: {op: load, path: add}
  merged:
    op: merge
    method: ties
    base: base
    models:
      add: {weight: 1.0, density: DENSITY}
  save: {op: save, input: merged, path: OUT}
"""


def tiny_models_and_output(root: Path) -> None:
    """base and add, and out/: a model folder standing in for the output of an earlier run."""
    tiny_models(root)
    copy_model(root, "out", "reverse")


def copy_tasks(root: Path, name: str = "tasks") -> Path:
    import shutil

    return Path(shutil.copytree(TASKS, root / name))


def graph_case(text: str, *args: str, command: str = "validate", setup: Callable[[Path], None] | None = None):
    """A build function: runs `setup(root)`, writes g.yaml, returns `COMMAND g.yaml ARGS`."""

    def build(root: Path) -> list[str]:
        if setup is not None:
            setup(root)
        write(root, "g.yaml", text)
        return [command, "g.yaml", *args]

    return build


def no_file(rel: str) -> Callable[[Path, str], None]:
    """A check that a file was not created (e.g. by code a malicious input tried to run)."""

    def check(root: Path, err: str) -> None:
        assert not (root / rel).exists(), f"{rel} was created"

    return check
