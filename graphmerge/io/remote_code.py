"""Custom Python code shipped inside model folders (`auto_map` in config.json / tokenizer_config.json).

transformers imports such code when it builds the model or tokenizer class, so a downloaded folder
can run anything. graphmerge never lets it unasked: every transformers call passes `trust_remote_code`
explicitly (never None, which would prompt on a terminal), and a folder that needs its code without
the user's consent is a one-line error naming the folder and the flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from graphmerge.errors import ModelError

__all__ = ["FLAG", "code_files", "code_warnings", "custom_code_modules", "untrusted_error"]

FLAG = "--trust-remote-code"
Part = Literal["model", "tokenizer"]
_CONFIG_FILE: dict[str, str] = {"model": "config.json", "tokenizer": "tokenizer_config.json"}


def _auto_map(folder: Path, part: Part) -> dict:
    try:
        data = json.loads((folder / _CONFIG_FILE[part]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    value = data.get("auto_map") if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def custom_code_modules(folder: Path | str, part: Part) -> list[str]:
    """Module names (e.g. `tokenization_foo`) that `auto_map` of the folder's `part` refers to.
    A reference to another repository (`org/repo--module.Class`) counts as code too."""
    refs: list[str] = []
    for value in _auto_map(Path(folder), part).values():
        for ref in value if isinstance(value, list) else [value]:
            if isinstance(ref, str) and "." in ref:
                refs.append(ref.rsplit(".", 1)[0])
    return list(dict.fromkeys(refs))


def code_files(folder: Path | str) -> list[Path]:
    """The folder's own `*.py` files that its model or tokenizer `auto_map` names (copied on save)."""
    d = Path(folder)
    mods = custom_code_modules(d, "model") + custom_code_modules(d, "tokenizer")
    files = [d / f"{m}.py" for m in dict.fromkeys(mods) if "--" not in m and "/" not in m]
    return [f for f in files if f.is_file()]


def untrusted_error(folder: Path | str | None, what: str) -> ModelError:
    holder = f"model folder {folder}" if folder is not None else "the model's source folder"
    return ModelError(
        f"{holder} carries custom {what}, which graphmerge does not run without consent",
        fix=f"pass {FLAG} or set `trust_remote_code: true` in the graph, only if you trust that code",
    )


def code_warnings(folders: dict[str, Path], trusted: bool) -> list[str]:
    """For `validate`: one line per loaded folder (node name -> path) that carries its own code."""
    if trusted:
        return []
    lines = []
    for node, folder in folders.items():
        files = code_files(folder)
        if files:
            lines.append(
                f"node '{node}': {folder} carries custom code ({', '.join(f.name for f in files)}); "
                f"evaluating it needs {FLAG}, and save copies the code only with it"
            )
    return lines
