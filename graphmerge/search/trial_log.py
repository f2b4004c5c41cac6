"""Append-only JSONL trial log: the search's own source of truth for resuming.

SMAC's output directory is disposable (we always run it with overwrite=True in a temp dir); this log is not.
Each line is written with a single write + flush + fsync, so a SIGKILL loses at most the trial being evaluated
(its line is never started) or leaves one torn last line, which `open` truncates away.

Line 1 is a header with the search fingerprint (space, settings that shape SMAC's trajectory, initial configs)
and the versions of the libraries that decide SMAC's proposals. A log whose fingerprint differs belongs to
another search: opening it is an error rather than a silent restart, so nobody loses paid-for evaluations by
editing a setting. A log written with other library versions is used (its trials are still valid results) with
a warning that the replay may diverge.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from graphmerge.errors import SpecError

from .records import TrialRecord
from .space import config_key

log = logging.getLogger("graphmerge.search")

LOG_NAME = "trial_log.jsonl"
# Fingerprints of the same search as older versions wrote them, or a function that computes them only
# when a log's fingerprint is not the current one (they may need ConfigSpace).
Accepted = tuple[str, ...] | Callable[[], tuple[str, ...]]
FORMAT_VERSION = 1


def budget_key(budget: float | None) -> str:
    # repr keeps every bit of SMAC's float budget; JSON round-trips it exactly.
    return "none" if budget is None else repr(float(budget))


def trial_key(config: Mapping[str, Any], budget: float | None) -> tuple[str, str]:
    return config_key(config), budget_key(budget)


class TrialLog:
    """Open (or create) the log at `path` for a search with `fingerprint`."""

    def __init__(
        self,
        path: Path,
        fingerprint: str,
        header: Mapping[str, Any],
        *,
        also_accept: Accepted = (),
    ):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.also_accept = also_accept  # fingerprints of the same search written by older versions
        self.header = dict(header)
        self.entries: list[dict[str, Any]] = []
        self.libraries_then: dict[str, str] | None = None  # set when the log's library versions differ
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        if not self.path.exists() or self.path.stat().st_size == 0:
            line = {"type": "header", "version": FORMAT_VERSION, "fingerprint": fingerprint, **header}
            self._write_lines([line], mode="w")
            _fsync_dir(self.path.parent)

    # -- reading -------------------------------------------------------------------------------------------
    @classmethod
    def check(cls, path: Path, fingerprint: str, *, also_accept: Accepted = ()) -> None:
        """Raise the error opening the log at `path` would raise, without changing the file."""
        path = Path(path)
        if path.is_file() and path.stat().st_size > 0:
            reader = cls.__new__(cls)
            reader.path, reader.fingerprint, reader.entries = path, fingerprint, []
            # No header of its own: the library versions are compared when the search opens the log.
            reader.also_accept, reader.header, reader.libraries_then = also_accept, None, None
            raw = path.read_bytes()
            reader._read(raw[: raw.rfind(b"\n") + 1])

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        self._read(raw[:good_end])  # a log of another search is refused before anything is changed
        if good_end < len(raw):
            # A torn last line from a kill during write: it was never a finished trial, drop it.
            log.warning("%s: dropping an incomplete last line (interrupted write)", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    def _read(self, raw: bytes) -> None:
        if not raw:
            return  # killed while writing the header: nothing was logged, start afresh
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise SpecError(
                f"line {line} is not UTF-8 text", where=str(self.path), fix="repair or delete the log"
            ) from None
        header = self._parse(lines[0], 1)
        if header.get("type") != "header":
            raise SpecError(
                "the trial log has no header line", where=str(self.path), fix="delete it to start over"
            )
        found = header.get("fingerprint")
        if found != self.fingerprint and found not in (
            self.also_accept() if callable(self.also_accept) else self.also_accept
        ):
            raise SpecError(
                "the trial log belongs to a different search (search space, seed, facade, budgets, objectives "
                "or initial configs changed)",
                where=str(self.path),
                fix="restore the old settings to resume, or delete the log / use another state dir to start over",
            )
        then = header.get("libraries")
        now = then if self.header is None else self.header.get("libraries")
        if then != now:
            self.libraries_then = dict(then or {})
            log.warning(
                "%s was written with %s, this run uses %s: SMAC may propose other trials than the log holds; "
                "logged results are still reused and kept",
                self.path,
                _versions(then),
                _versions(now),
            )
        for i, line in enumerate(lines[1:], start=2):
            entry = self._parse(line, i)
            if entry.get("type") == "trial":
                self.entries.append(entry)

    def _parse(self, line: str, lineno: int) -> dict[str, Any]:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise SpecError(
                f"line {lineno} is not valid JSON ({e.msg})",
                where=str(self.path),
                fix="repair or delete the log",
            ) from None
        if not isinstance(data, dict):
            raise SpecError(f"line {lineno} is not a JSON object", where=str(self.path))
        return data

    def cache(self) -> dict[tuple[str, str], deque[dict[str, Any]]]:
        """Logged outcomes by (config, budget), oldest first (a config may legitimately repeat)."""
        out: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        for entry in self.entries:
            out.setdefault(trial_key(entry["config"], entry.get("budget")), deque()).append(entry)
        return out

    def records(self) -> Iterator[TrialRecord]:
        for entry in self.entries:
            yield TrialRecord.from_json(entry, replayed=True)

    # -- writing -------------------------------------------------------------------------------------------
    def append(self, record: TrialRecord) -> None:
        entry = {"type": "trial", **record.to_json()}
        self._write_lines([entry], mode="a")
        self.entries.append(entry)

    def _write_lines(self, items: list[Mapping[str, Any]], mode: str) -> None:
        data = "".join(json.dumps(item, sort_keys=True, default=str) + "\n" for item in items)
        with open(self.path, mode, encoding="utf-8") as f:
            f.write(data)  # one write per line: a crash leaves at most one torn line at the end
            f.flush()
            os.fsync(f.fileno())


def _versions(libraries: Mapping[str, str] | None) -> str:
    if not libraries:
        return "unrecorded library versions"
    return ", ".join(f"{k} {v}" for k, v in sorted(libraries.items()))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
