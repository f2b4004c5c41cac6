"""The bad-input corpus: every case gives a clear error (exit status, the place named, no
traceback) and leaves every file that existed before the command untouched."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "bad_inputs"
sys.path.insert(0, str(HERE))

from case import Case  # noqa: E402


def _load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(HERE.glob("cases_*.py")):
        spec = importlib.util.spec_from_file_location(f"bad_inputs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.extend(module.CASES)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


CASES = _load_cases()


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        argv = case.build(work)
    finally:
        os.chdir(old_cwd)
    before = _snapshot(work)
    env = {**os.environ, "GRAPHMERGE_CACHE": str(work / ".graphmerge"), **case.env}
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *argv],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    err = proc.stderr
    assert proc.returncode == case.exit_code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    if case.exit_code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors, err
        if case.one_line:
            assert len(errors) == 1, err
    for needle in case.mentions:
        assert needle in err, f"{needle!r} not in:\n{err}"
    after = _snapshot(work)
    for rel, digest in before.items():
        if any(fnmatch(rel, pat) for pat in case.may_change):
            continue
        assert after.get(rel) == digest, f"{rel} changed or vanished"
    if case.check is not None:
        case.check(work, err)
