"""The plan layer: lazy per-tensor tasks and the lazy models built from them.

Model-level nodes never touch tensor data: they return a `Model` whose tensors are `TensorTask`s.
A task's key is hash(op, op version, canonical params, keys of its inputs), so two recipes that
agree on one tensor share that tensor's task, and a merged model's identity (its Merkle root)
is known before anything is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from graphmerge.hashing import DeferredIdentity, canonical, digest
from graphmerge.tensor_ops import TensorOp, get_tensor_op


def _freeze(params: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(params))


@dataclass(frozen=True, eq=False)
class TensorTask:
    """One tensor computed by a tensor op from other tasks' tensors. The task holds the op itself,
    so its key and its execution need no registry.

    `identity` replaces `params` in the key when params carry things that are not part of the
    result's identity (the path a source tensor is read from: the bytes' digest identifies it)."""

    op: TensorOp
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[TensorTask, ...] = ()
    identity: Any = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None  # e.g. "bfloat16"; known at plan time so outputs can keep it

    def _own_identity(self, local: bool) -> Any:
        """What stands for this task's own part in its key: the identity (a deferred one resolved,
        or its local stand-in), else the canonical params."""
        ident = self.identity
        if isinstance(ident, DeferredIdentity):
            return ident.local if local else ident.resolve()
        return canonical(self.params) if ident is None else ident

    @cached_property
    def key(self) -> str:
        """The content key the cache knows the result by. A deferred source identity below is
        resolved (read) if no value has been observed for it yet."""
        return digest(self.op.name, self.op.version, self._own_identity(False), [t.key for t in self.inputs])

    @cached_property
    def deferred(self) -> bool:
        """Some identity at or below this task is a DeferredIdentity (its key may need a read)."""
        return isinstance(self.identity, DeferredIdentity) or any(t.deferred for t in self.inputs)

    @cached_property
    def local_key(self) -> str:
        """Names this computation within the process without reading anything: the key itself unless
        the task is deferred, then a digest over the deferred identities' local stand-ins. Fixed for
        the task's lifetime, so bookkeeping by it stays consistent while identities resolve."""
        if not self.deferred:
            return self.key
        parts = [t.local_key for t in self.inputs]
        return digest("local", self.op.name, self.op.version, self._own_identity(True), parts)

    def key_known(self) -> bool:
        """Whether `key` is computable without reading any data now."""
        if "key" in self.__dict__ or not self.deferred:
            return True
        if isinstance(self.identity, DeferredIdentity):
            return self.identity.known
        return all(t.key_known() for t in self.inputs)

    @property
    def cached(self) -> bool:
        return self.op.cached

    def __hash__(self) -> int:
        return hash(self.local_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorTask) and other.local_key == self.local_key

    def __repr__(self) -> str:
        return f"TensorTask({self.op.name}, local_key={self.local_key[:10]})"


def make_task(
    op: str | TensorOp,
    inputs: Iterable[TensorTask] = (),
    *,
    identity: Any = None,
    shape: tuple[int, ...] | None = None,
    dtype: str | None = None,
    **params: Any,
) -> TensorTask:
    """A task of `op` (a TensorOp, or the name of a registered one) on `inputs` with `params`."""
    return TensorTask(
        op=get_tensor_op(op) if isinstance(op, str) else op,
        params=_freeze(params),
        inputs=tuple(inputs),
        identity=identity,
        shape=shape,
        dtype=dtype,
    )


@dataclass(frozen=True, eq=False)
class Model:
    """A lazy model: its config, its tensors as tasks (in output order), where its tokenizer
    comes from, and a provenance list for the model card."""

    config: Mapping[str, Any]
    tensors: Mapping[str, TensorTask]
    tokenizer_dir: Path | None = None
    tokenizer_key: str = ""
    provenance: tuple[str, ...] = ()
    source_dir: Path | None = None  # the folder this model was loaded from, when unchanged
    code_dir: Path | None = None  # the folder holding the model's custom code (auto_map), if any
    # The standalone graph that rebuilds this model, rendered for a folder (relative paths); set by a search
    # for its best model, so that a saved copy carries its recipe rather than the search graph.
    recipe: Callable[[Path], str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    @cached_property
    def key(self) -> str:
        """Merkle root: hash of the config, the tokenizer's content and every (name, tensor key)."""
        return digest(
            "model",
            canonical(dict(self.config)),
            self.tokenizer_key,
            [[n, t.key] for n, t in self.tensors.items()],
        )

    @cached_property
    def layout(self):  # -> graphmerge.io.layout.ModelLayout (imported lazily: io depends on transformers)
        from graphmerge.io.layout import detect_layout

        return detect_layout(dict(self.config), list(self.tensors))

    def names(self) -> list[str]:
        return list(self.tensors)

    def with_tensors(self, tensors: Mapping[str, TensorTask], **changes: Any) -> Model:
        changes.setdefault("source_dir", None)
        changes.setdefault("recipe", None)
        return replace(self, tensors=tensors, **changes)

    def map_tensors(
        self, op: str | TensorOp, *, names: Callable[[str], bool] | None = None, **params: Any
    ) -> Model:
        """Apply a one-input tensor op to every tensor (or those `names` selects)."""
        if isinstance(op, str):
            op = get_tensor_op(op)
        out = {
            n: (
                make_task(op, [t], shape=t.shape, dtype=t.dtype, **params) if names is None or names(n) else t
            )
            for n, t in self.tensors.items()
        }
        return self.with_tensors(out, provenance=(*self.provenance, op.name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)
