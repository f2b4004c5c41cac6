"""A SearchSpace as a `ConfigSpace.ConfigurationSpace`: the one place ConfigSpace is imported, when a
search hands its space to SMAC (or reads a trial log written before spaces were graphmerge's own).

Parameters are added in the space's order, then each child's condition, then the forbidden clauses, with
the same classes and arguments the strategies passed ConfigSpace directly before: the same graph and seed
give SMAC the same space, hence the same trials.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import space as sp


def to_configspace(space: sp.SearchSpace) -> Any:
    from ConfigSpace import ConfigurationSpace

    cs = ConfigurationSpace(seed=space.seed)
    hps = {p.name: _hyperparameter(p) for p in space.params}
    cs.add(list(hps.values()))
    for child, condition in space.conditions.items():
        cs.add(_condition(hps[child], condition, hps))
    for forbidden in space.forbidden:
        cs.add(_forbidden(forbidden, hps))
    return cs


def _hyperparameter(p: sp.Param) -> Any:
    import ConfigSpace as C

    if isinstance(p, (sp.Float, sp.Integer)):
        cls = C.Float if isinstance(p, sp.Float) else C.Integer
        return cls(
            p.name, (p.low, p.high), log=p.log, **({} if p.default is None else {"default": p.default})
        )
    if isinstance(p, sp.Categorical):
        return C.Categorical(p.name, list(p.choices), **({} if p.default is None else {"default": p.default}))
    if isinstance(p, sp.Constant):
        return C.Constant(p.name, p.value)
    extra = {} if p.default is None else {"default_value": p.default}
    return C.OrdinalHyperparameter(p.name, list(p.choices), **extra)


def _condition(child: Any, condition: sp.Condition, hps: dict[str, Any]) -> Any:
    import ConfigSpace as C

    if isinstance(condition, sp.Equals):
        return C.EqualsCondition(child, hps[condition.param], condition.value)
    if isinstance(condition, sp.In):
        return C.InCondition(child, hps[condition.param], list(condition.values))
    parts = [_condition(child, c, hps) for c in condition.parts]
    return C.AndConjunction(*parts) if isinstance(condition, sp.AllOf) else C.OrConjunction(*parts)


def _forbidden(forbidden: sp.Forbidden, hps: dict[str, Any]) -> Any:
    import ConfigSpace as C

    if isinstance(forbidden, sp.AllOf):
        return C.ForbiddenAndConjunction(*(_forbidden(c, hps) for c in forbidden.parts))
    if isinstance(forbidden, sp.Equals):
        return C.ForbiddenEqualsClause(hps[forbidden.param], forbidden.value)
    return C.ForbiddenInClause(hps[forbidden.param], list(forbidden.values))


def legacy_space_fingerprint(configspace: Any) -> str:
    """The space part of the fingerprint trial logs carried while spaces were ConfigSpace objects (a hash
    of ConfigSpace's serialisation): such a log still resumes."""
    data = configspace.to_serialized_dict()
    data.pop("seed", None)
    data.pop("name", None)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
