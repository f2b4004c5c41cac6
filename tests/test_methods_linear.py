import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=1e-6)


def test_weighted_average_normalized():
    # (1*[1,2] + 3*[3,6]) / 4 = [2.5, 5]
    close(call("linear", [[1.0, 2.0], [3.0, 6.0]], None, [{"weight": 1}, {"weight": 3}]), [2.5, 5.0])


def test_not_normalized():
    out = call(
        "linear", [[1.0, 2.0], [3.0, 6.0]], None, [{"weight": 0.5}, {"weight": 0.5}], {"normalize": False}
    )
    close(out, [2.0, 4.0])


def test_base_participates_with_base_weight():
    # (2*[4,4] + [1,2] + [3,6]) / 4 = [3, 4]
    out = call(
        "linear", [[1.0, 2.0], [3.0, 6.0]], [4.0, 4.0], [{"weight": 1}, {"weight": 1}], {"base_weight": 2}
    )
    close(out, [3.0, 4.0])


def test_base_ignored_by_default():
    close(call("linear", [[1.0, 2.0]], [9.0, 9.0], [{"weight": 2}]), [1.0, 2.0])


def test_single_model_and_zero_weight_sum():
    close(call("linear", [[1.0, -2.0]], None, [{"weight": 0.3}]), [1.0, -2.0])
    with pytest.raises(MergeError, match="sum to 0"):
        call("linear", [[1.0], [2.0]], None, [{"weight": 1}, {"weight": -1}])


def test_missing_weight_and_shape_mismatch():
    with pytest.raises(MergeError, match="`weight` of model 0 is required"):
        call("linear", [[1.0]], None, [{}])
    with pytest.raises(MergeError, match="model 1 has shape 3 but model 0 has shape 2"):
        call("linear", [[1.0, 2.0], [1.0, 2.0, 3.0]], None, [{"weight": 1}, {"weight": 1}])
