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
    exit_code: int = 2
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
