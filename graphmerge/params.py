"""Base class for node parameters: frozen (hashable, compared by value) and strict about keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
