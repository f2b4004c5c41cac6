"""The cheap NaN/Inf test against torch.isfinite, including sums that overflow."""

from __future__ import annotations

import pytest
import torch

from graphmerge.nonfinite import all_finite, describe_nonfinite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_finite_agrees_with_isfinite(dtype):
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        t = (torch.randn(257, 33, generator=g) * 10 ** (trial % 5)).to(dtype)
        if trial % 4 == 1:
            t.view(-1)[trial] = float("nan")
        elif trial % 4 == 2:
            t.view(-1)[-trial] = float("-inf") if trial % 8 == 2 else float("inf")
        assert all_finite(t) == bool(torch.isfinite(t).all()), (trial, dtype)


def test_a_sum_that_overflows_is_not_mistaken_for_inf():
    big = torch.full((1000,), 3.0e38)  # finite values whose sum overflows float32
    assert all_finite(big)
    assert all_finite(torch.full((100_000,), 60000.0, dtype=torch.float16))  # float16 sums too
    assert not all_finite(torch.cat([big, torch.tensor([float("inf")])]))
    # inf + (-inf) sums to NaN, still caught
    assert not all_finite(torch.tensor([float("inf"), float("-inf"), 1.0]))


def test_integer_and_empty_tensors_are_finite():
    assert all_finite(torch.arange(10)) and all_finite(torch.empty(0))


def test_describe_counts():
    t = torch.tensor([float("nan"), 1.0, float("inf"), float("-inf")])
    assert describe_nonfinite(t) == "1 NaN and 2 Inf of 4 values"
