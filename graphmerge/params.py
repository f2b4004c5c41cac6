"""Base class for node parameters: frozen (hashable, compared by value) and strict about keys; and the
one translation of pydantic's errors into the words of a graph file."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict, ValidationError


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def pydantic_problems(
    exc: ValidationError, model: type[BaseModel], *, noun: str = "parameter"
) -> list[tuple[str, str]]:
    """The one pydantic -> graph-file translation: (dotted key, problem) per error, in words a user of
    the graph file reads (`noun` names what the keys are: node parameters, settings keys)."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) if loc else "?"
        kind = err["type"]
        if kind == "missing":
            out.append((key, f"missing required {noun}"))
        elif kind == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1) if loc else []
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(model.model_fields)}"
            out.append((key, f"unknown {noun}{hint}"))
        else:
            out.append((key, f"{err['msg']} (got {err.get('input')!r})"))
    return out
