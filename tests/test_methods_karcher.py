import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-5)


def test_two_orthogonal_scaled_by_mean_norm():
    # direction 45 degrees, scale (2 + 4) / 2 = 3
    close(call("karcher", [[2.0, 0.0], [0.0, 4.0]]), [2.1213203, 2.1213203])


def test_intrinsic_mean_differs_from_extrinsic():
    # angles 0, 0, 90 deg: Karcher (intrinsic) mean is 30 deg, the normalized average would be 26.57 deg
    close(call("karcher", [[1.0, 0.0], [0.0, 1.0]], [1.0, 0.0]), [0.8660254, 0.5])


def test_single_and_zero():
    close(call("karcher", [[3.0, -1.0]]), [3.0, -1.0])
    close(call("karcher", [[0.0, 0.0], [0.0, 0.0]]), [0.0, 0.0])
    # a zero model still counts in the mean norm: direction of [2,0], scale (2 + 0) / 2
    close(call("karcher", [[2.0, 0.0], [0.0, 0.0]]), [1.0, 0.0])


def test_shape_mismatch():
    with pytest.raises(MergeError, match="shape"):
        call("karcher", [[1.0], [1.0, 2.0]])
