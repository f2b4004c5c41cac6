"""graphmerge/plan.py: what enters a tensor task's key and a model's key, and what does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphmerge.errors import GraphmergeError
from graphmerge.plan import Model, TensorTask, make_task
from graphmerge.tensor_ops import TensorOp

REPO = Path(__file__).resolve().parent.parent


def _identity(x):
    return x


def _negate(x):
    return -x


SOURCE = TensorOp("test_plan_source", version="1", fn=_identity, cached=False)
SCALE = TensorOp("test_plan_scale", version="1", fn=_identity)


def _source(name: str) -> TensorTask:
    return make_task(SOURCE, identity=("file digest", name), path=f"/models/{name}.safetensors")


def test_a_key_changes_with_the_ops_name_version_params_and_inputs():
    a, b = _source("a"), _source("b")
    reference = make_task(SCALE, [a, b], factor=0.5)
    variants = {
        "op name": make_task(TensorOp("test_plan_other", version="1", fn=_identity), [a, b], factor=0.5),
        "op version": make_task(TensorOp(SCALE.name, version="2", fn=_identity), [a, b], factor=0.5),
        "param value": make_task(SCALE, [a, b], factor=0.25),
        "param type": make_task(SCALE, [a, b], factor="0.5"),
        "extra param": make_task(SCALE, [a, b], factor=0.5, bias=0.0),
        "input": make_task(SCALE, [a, _source("c")], factor=0.5),
        "input order": make_task(SCALE, [b, a], factor=0.5),
        "input count": make_task(SCALE, [a], factor=0.5),
    }
    keys = {name: task.key for name, task in variants.items()}
    assert reference.key not in keys.values()
    assert len(set(keys.values())) == len(keys), keys


def test_a_key_ignores_param_order_plan_time_metadata_and_the_ops_function():
    a = _source("a")
    reference = make_task(SCALE, [a], factor=0.5, bias=1.0, shape=(4, 4), dtype="bfloat16")
    same = [
        make_task(SCALE, [a], bias=1.0, factor=0.5),  # keyword order
        make_task(SCALE, [a], factor=0.5, bias=1.0, shape=(2, 8), dtype="float32"),  # shape, dtype
        make_task(TensorOp(SCALE.name, SCALE.version, fn=_negate), [a], factor=0.5, bias=1.0),  # fn
        make_task(TensorOp(SCALE.name, SCALE.version, fn=_identity, cached=False), [a], factor=0.5, bias=1.0),
        make_task(SCALE, [_source("a")], factor=0.5, bias=1.0),  # an equal input built again
    ]
    assert {t.key for t in same} == {reference.key}
    assert make_task(SCALE, [a], shift=-0.0).key == make_task(SCALE, [a], shift=0.0).key
    # equal keys are equal tasks: a set of a recipe's tasks holds each computation once
    assert len({reference, *same}) == 1


def test_identity_replaces_params_in_the_key():
    """A source read is identified by its bytes' digest, not by the path it happens to be read from."""
    here = make_task(SOURCE, identity=("digest", "abc"), path="/a/model.safetensors", name="w")
    moved = make_task(SOURCE, identity=("digest", "abc"), path="/b/copy.safetensors", name="w")
    changed = make_task(SOURCE, identity=("digest", "abd"), path="/a/model.safetensors", name="w")
    assert here.key == moved.key != changed.key
    without = make_task(SOURCE, path="/a/model.safetensors", name="w")
    assert without.key != make_task(SOURCE, path="/b/copy.safetensors", name="w").key


def test_a_key_is_a_merkle_hash_so_a_change_deep_down_reaches_the_root():
    leaf = _source("a")
    mid = make_task(SCALE, [leaf], factor=2.0)
    root = make_task(SCALE, [mid], factor=3.0)
    changed_leaf = make_task(SCALE, [make_task(SCALE, [_source("a2")], factor=2.0)], factor=3.0)
    assert root.key != changed_leaf.key
    # and the root does not depend on how the chain was built, only on what it computes
    assert root.key == make_task(SCALE, [make_task(SCALE, [_source("a")], factor=2.0)], factor=3.0).key


def _model(**changes) -> Model:
    fields = {
        "config": {"model_type": "llama", "num_hidden_layers": 1},
        "tensors": {"w1": _source("a"), "w2": make_task(SCALE, [_source("b")], factor=1.0)},
        "tokenizer_key": "tok-1",
    }
    return Model(**{**fields, **changes})


def test_a_models_key_covers_config_tokenizer_names_and_tensor_keys_not_provenance_or_paths():
    reference = _model()
    different = {
        "config": _model(config={"model_type": "llama", "num_hidden_layers": 2}),
        "tokenizer": _model(tokenizer_key="tok-2"),
        "tensor name": _model(tensors={"w1": _source("a"), "w3": reference.tensors["w2"]}),
        "tensor order": _model(tensors={"w2": reference.tensors["w2"], "w1": _source("a")}),
        "tensor": _model(tensors={"w1": _source("a"), "w2": _source("b")}),
    }
    assert all(m.key != reference.key for m in different.values())
    same = [
        _model(provenance=("load(a)", "merge")),
        _model(source_dir=Path("/models/a"), tokenizer_dir=Path("/models/a")),
        _model(code_dir=Path("/models/code"), recipe=lambda folder: "nodes: {}"),
        _model(config={"num_hidden_layers": 1, "model_type": "llama"}),
    ]
    assert {m.key for m in same} == {reference.key}


def test_map_tensors_plans_an_op_on_the_chosen_tensors_and_records_it():
    model = _model(provenance=("load(a)",))
    mapped = model.map_tensors(SCALE, names=lambda n: n == "w2", factor=-1.0)
    assert mapped.tensors["w1"] is model.tensors["w1"]
    assert mapped.tensors["w2"].op is SCALE and mapped.tensors["w2"].inputs == (model.tensors["w2"],)
    assert mapped.provenance == ("load(a)", SCALE.name)
    assert mapped.source_dir is None and mapped.key != model.key


def test_a_task_named_by_string_carries_the_registered_op():
    task = make_task("merge", [], method="linear")
    assert isinstance(task.op, TensorOp) and task.op.name == "merge"
    with pytest.raises(GraphmergeError, match=r"unknown tensor op 'mergee'.*did you mean 'merge'"):
        make_task("mergee")


def test_planning_and_keying_loads_no_node_or_method_catalogue():
    """The plan layer stands alone: a task carries its op, so keys load no registry at all."""
    probe = (
        "import sys\n"
        "from graphmerge.plan import Model, make_task\n"
        "from graphmerge.tensor_ops import TensorOp\n"
        "op = TensorOp('neg', version='1', fn=lambda x: -x)\n"
        "m = Model(config={}, tensors={'w': make_task(op, [make_task(op, x=1)])})\n"
        "assert len(m.key) == 32\n"
        "print(sorted(n for n in sys.modules if n.startswith(('graphmerge.nodes', 'graphmerge.methods',"
        " 'graphmerge.registry', 'graphmerge.strategies'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
