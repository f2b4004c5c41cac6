"""Canonical encoding and hashing of parameters, so equal recipes get equal cache keys."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from enum import Enum
from pathlib import PurePath
from typing import Any


def canonical(obj: Any) -> Any:
    """A JSON-compatible form in which equal values are equal: tuples become lists, keys sorted
    at dump time, floats that are integral stay floats (1.0 != 1 as a parameter type is not a
    recipe change we want to hide, but -0.0 and 0.0 are the same weight)."""
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return repr(obj)
        return 0.0 if obj == 0 else obj
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Enum):
        return canonical(obj.value)
    if hasattr(obj, "model_dump"):
        return canonical(obj.model_dump(mode="json"))
    raise TypeError(f"cannot canonicalise {type(obj).__name__} for hashing")


def canonical_json(obj: Any) -> str:
    return json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(*parts: Any) -> str:
    """Hex key of the canonical encoding of `parts` (blake2b-128: collisions are not a concern)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(canonical_json(list(parts)).encode())
    return h.hexdigest()


class DeferredIdentity:
    """An identity that is known only once data has been read: a source tensor's content digest.

    Keys built on it are resolved as late as possible, so the read that computes a tensor also gives
    its digest (a source is read once, not hashed first and read again). `local` stands in for the
    identity inside one process (for instance the file's path, size, mtime and the tensor's name)."""

    local: Any

    @property
    def known(self) -> bool:
        """Whether `resolve()` answers without reading anything."""
        raise NotImplementedError

    def resolve(self) -> str:
        """The identity, computed (reading the data) if no value has been observed yet."""
        raise NotImplementedError

    def observe(self, value: Any) -> None:
        """Learn the identity from the value just read."""
        raise NotImplementedError
