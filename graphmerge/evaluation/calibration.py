"""Calibration documents for data-dependent merge methods (RegMean, Fisher): lm-eval task documents
(prompt + target, as the model would see a solved example) or a JSONL / plain text file, tokenized
and cut to a token budget. The token ids are the data's identity: their digest keys the statistics."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

from graphmerge.errors import EvaluationError
from graphmerge.hashing import digest


def task_documents(names: Sequence[str], include_path: Sequence[str], limit: int | None) -> Iterator[str]:
    """Each task's evaluation documents (the first `limit`) rendered as text + delimiter + target."""
    from lm_eval.tasks import get_task_dict

    from graphmerge.evaluation.tasks import quiet_lm_eval, task_manager

    quiet_lm_eval()
    tasks = get_task_dict(list(names), task_manager(include_path, names))
    for name in names:
        task = tasks.get(name)
        if task is None or not hasattr(task, "eval_docs"):
            raise _not_a_task(name)
        delimiter = getattr(task.config, "target_delimiter", " ")
        for doc in islice(task.eval_docs, limit):
            text, target = task.doc_to_text(doc), task.doc_to_target(doc)
            if isinstance(target, int) and not isinstance(target, bool):
                choices = task.doc_to_choice(doc) if task.config.doc_to_choice is not None else None
                target = choices[target] if choices else target
            if isinstance(target, list):
                target = target[0] if target else ""
            yield f"{text}{delimiter}{target}"


def check_tasks(names: Sequence[str], include_path: Sequence[str]) -> None:
    """What `task_documents` rejects in a task name, found from the include paths' own index (lm-eval is
    imported only for a name they do not define), so that checking a graph stays light."""
    from graphmerge.evaluation.tasks import is_group_or_tag

    for name in names:
        if is_group_or_tag(name, include_path):
            raise _not_a_task(name)


def _not_a_task(name: str) -> EvaluationError:
    return EvaluationError(f"calibration task {name!r} is a group, not a task", fix="list its tasks instead")


def file_documents(path: Path, text_field: str) -> Iterator[str]:
    """A `.jsonl` file (one document per line, in `text_field`) or a text file (documents separated
    by blank lines)."""
    if not path.is_file():
        raise EvaluationError(
            f"calibration file {path} does not exist", fix="give `calibration.file` an existing file"
        )
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"invalid JSON ({exc.msg})", where=f"{path}:{n}") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise EvaluationError(
                    f"line has no string field {text_field!r}",
                    where=f"{path}:{n}",
                    fix="set `calibration.text_field` to the field holding the text",
                )
            yield row[text_field]
        return
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        if block.strip():
            yield block.strip()


def tokenize(documents: Iterator[str], tokenizer, *, max_tokens: int, max_length: int) -> list[list[int]]:
    """Token ids of each document, each cut to `max_length`, until `max_tokens` in all."""
    out: list[list[int]] = []
    total = 0
    for doc in documents:
        ids = list(tokenizer(doc)["input_ids"])[:max_length]
        ids = ids[: max_tokens - total]
        if len(ids) >= 2:
            out.append(ids)
            total += len(ids)
        if total >= max_tokens:
            break
    if not out:
        raise EvaluationError(
            "the calibration data has no document of two or more tokens", fix="check calibration:"
        )
    return out


def data_digest(sequences: Sequence[Sequence[int]]) -> str:
    return digest("calibration", [list(s) for s in sequences])
