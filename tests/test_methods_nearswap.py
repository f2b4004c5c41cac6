import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def test_hand_computed():
    # |diff| = .05, .2, 1 ; w = min(1, .1/|diff|) = 1, .5, .1 -> [.05, .1, -.1]
    out = call("nearswap", [[0.05, 0.2, -1.0]], [0.0, 0.0, 0.0], params={"t": 0.1})
    torch.testing.assert_close(out, torch.tensor([0.05, 0.1, -0.1]))


def test_identical_models_and_t_zero():
    x = torch.tensor([1.0, -3.0])
    torch.testing.assert_close(call("nearswap", [x], x, params={"t": 0.5}), x)
    torch.testing.assert_close(
        call("nearswap", [[5.0, 5.0]], [1.0, 2.0], params={"t": 0.0}), torch.tensor([1.0, 2.0])
    )


def test_errors():
    with pytest.raises(MergeError, match="needs a base"):
        call("nearswap", [[1.0]], None, params={"t": 0.1})
    with pytest.raises(MergeError, match="`t`"):
        call("nearswap", [[1.0]], [0.0])
    with pytest.raises(MergeError, match="1 model besides the base, got 2"):
        call("nearswap", [[1.0], [2.0]], [0.0], params={"t": 0.1})
