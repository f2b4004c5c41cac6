"""arcee_fusion against a numpy transcription of its definition."""

import numpy as np
import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def _oracle(model: np.ndarray, base: np.ndarray) -> np.ndarray:
    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p, q = softmax(model) + 1e-8, softmax(base) + 1e-8
    scores = np.abs(model - base) * (p * np.log(p / q)).sum(axis=-1, keepdims=True)
    s = np.sort(scores.ravel())
    q1, med, q3 = (s[int(f * (s.size - 1))] for f in (0.25, 0.5, 0.75))
    return scores >= med + 1.5 * (q3 - q1)


@pytest.mark.parametrize("shape", [(7,), (16, 9), (3, 5, 11)])
def test_matches_the_definition(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    base = torch.randn(shape, generator=gen)
    model = base + torch.randn(shape, generator=gen) ** 3 * 0.3
    out = call("arcee_fusion", [model], base)
    keep = torch.from_numpy(_oracle(model.double().numpy(), base.double().numpy()))  # float64 oracle
    torch.testing.assert_close(out, torch.where(keep, model, base), rtol=0, atol=1e-6)
    assert 0 < int(keep.sum()) < model.numel()  # a real selection, neither all nor nothing


def test_identical_models_give_the_base_and_errors():
    x = torch.tensor([[1.0, -2.0, 3.0]])
    torch.testing.assert_close(call("arcee_fusion", [x], x), x)
    with pytest.raises(MergeError, match="needs a base"):
        call("arcee_fusion", [[1.0]], None)
    with pytest.raises(MergeError, match="1 model besides the base, got 2"):
        call("arcee_fusion", [[1.0], [2.0]], [0.0])
