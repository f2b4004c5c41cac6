"""Inputs arrive in bf16/fp16/fp32; the caller upcasts to float32, merges and casts to the output dtype."""

import pytest
import torch
from method_helpers import call_method as call

from graphmerge.methods import all_methods

PARAMS = {
    "slerp": ({}, {"t": 0.3}),
    "nearswap": ({}, {"t": 0.01}),
    "della": ({"weight": 1.0, "density": 0.5}, {}),
    "della_linear": ({"weight": 1.0, "density": 0.5}, {}),
}


def _inputs(name, dtypes):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(8, 16, generator=g)
    models = [base + 0.1 * torch.randn(8, 16, generator=g) for _ in range(3)]
    m = all_methods()[name]
    n = min(m.max_models or 3, 3)
    if name == "slerp":
        n = 1
    models = [x.to(d) for x, d in zip(models[:n], dtypes[1:])]
    use_base = m.base != "none"
    return models, base.to(dtypes[0]) if use_base else None


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_mixed_dtypes_match_float32(name):
    mp, gp = PARAMS.get(name, ({"weight": 0.7, "density": 0.6}, {}))
    m = all_methods()[name]
    mp = {k: v for k, v in mp.items() if k in m.model_params}
    models, base = _inputs(name, [torch.bfloat16, torch.float16, torch.bfloat16, torch.float32])
    mps = [dict(mp) for _ in models]
    out = call(name, models, base, mps, gp, dtype=torch.bfloat16, seed=5)
    assert out.dtype == torch.bfloat16 and out.shape == (8, 16)
    # same numbers as merging the (exactly representable) upcast inputs in float32
    ref = call(name, [x.float() for x in models], base.float() if base is not None else None, mps, gp, seed=5)
    assert torch.equal(out, ref.to(torch.bfloat16))
    assert torch.isfinite(ref).all()
