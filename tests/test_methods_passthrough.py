import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def test_copies_and_scales():
    x = torch.tensor([1.0, 2.0])
    out = call("passthrough", [x])
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()  # a copy: callers may write into it
    torch.testing.assert_close(call("passthrough", [x], None, [{"scale": 3}]), torch.tensor([3.0, 6.0]))


def test_exactly_one_model():
    with pytest.raises(MergeError, match="passthrough needs 1 model, got 2"):
        call("passthrough", [[1.0], [2.0]])
