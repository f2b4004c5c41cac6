"""pydantic -> SpecError: settings come from graph files, so errors must name the key like every other spec error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from graphmerge.errors import SpecError
from graphmerge.params import pydantic_problems

M = TypeVar("M", bound=BaseModel)


def parse_model(cls: type[M], data: Mapping[str, Any] | M | None, *, where: str) -> M:
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(f"expected a mapping, got {type(data).__name__}", where=where)
    try:
        return cls.model_validate(dict(data))
    except ValidationError as e:
        key, problem = pydantic_problems(e, cls, noun="key")[0]
        # The key joins the place, as a graph-file path (`smac.max_examples`), like node parameters.
        raise SpecError(problem, where=f"{where}.{key}" if where else key) from None
