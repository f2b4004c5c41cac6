"""`graphmerge convert`: a mergekit config file -> a graph file (written atomically)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import yaml

from graphmerge.convert.mergekit import convert_mergekit, is_mergekit_config
from graphmerge.errors import SpecError


def convert_file(config: Path, output: Path | None, out: str | None) -> str:
    if not config.is_file():
        raise SpecError(f"config file {config} not found", fix="check the path")
    try:
        data = yaml.safe_load(config.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}",
            where=f"{config}" + (f":{mark.line + 1}" if mark else ""),
        ) from None
    if not is_mergekit_config(data):
        raise SpecError("not a mergekit config (no `merge_method:` key)", where=str(config))
    graph_dir = (output.parent if output else Path.cwd()).absolute()
    conv = convert_mergekit(data, where=str(config), graph_dir=graph_dir, out=out or f"out/{config.stem}")
    for warning in conv.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = conv.to_yaml(config.name)
    if output is None:
        sys.stdout.write(text)
        return text
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {output}", file=sys.stderr)
    return text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
