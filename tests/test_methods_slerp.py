import math

import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError

R = math.sqrt(0.5)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=1e-5)


# ---- slerp -----------------------------------------------------------------------------------------


def test_slerp_quarter_circle():
    # base [1,0] is t=0; 90 degrees apart: t=.5 -> 45 deg, t=1/3 -> 30 deg
    close(call("slerp", [[0.0, 1.0]], [1.0, 0.0], params={"t": 0.5}), [R, R])
    close(call("slerp", [[0.0, 1.0]], [1.0, 0.0], params={"t": 1 / 3}), [0.8660254, 0.5])
    close(call("slerp", [[0.0, 1.0]], [1.0, 0.0], params={"t": 0.0}), [1.0, 0.0])
    close(call("slerp", [[0.0, 1.0]], [1.0, 0.0], params={"t": 1.0}), [0.0, 1.0])


def test_slerp_interpolates_unnormalized_inputs():
    # coefficients sin(pi/4)/sin(pi/2) apply to the raw vectors [2,0] and [0,4]
    close(call("slerp", [[0.0, 4.0]], [2.0, 0.0], params={"t": 0.5}), [1.4142136, 2.8284271])


def test_slerp_parallel_falls_back_to_lerp():
    close(call("slerp", [[2.0, 4.0]], [1.0, 2.0], params={"t": 0.25}), [1.25, 2.5])
    close(call("slerp", [[-1.0, -2.0]], [1.0, 2.0], params={"t": 0.5}), [0.0, 0.0])


def test_slerp_without_base_uses_first_model_as_t0():
    close(call("slerp", [[1.0, 0.0], [0.0, 1.0]], params={"t": 1 / 3}), [0.8660254, 0.5])


def test_slerp_zero_vector():
    # zero vector: cos = 0 -> theta = 90 deg, result = sin(pi/4) * [0, 2]
    close(call("slerp", [[0.0, 2.0]], [0.0, 0.0], params={"t": 0.5}), [0.0, 1.4142136])


def test_slerp_model_count_and_t():
    with pytest.raises(MergeError, match="exactly 2 models"):
        call("slerp", [[1.0], [2.0]], [0.0], params={"t": 0.5})
    with pytest.raises(MergeError, match="exactly 2 models"):
        call("slerp", [[1.0]], None, params={"t": 0.5})
    with pytest.raises(MergeError, match="`t`"):
        call("slerp", [[1.0]], [0.0])
    with pytest.raises(MergeError, match="shape 3 but base has shape 2"):
        call("slerp", [[1.0, 2.0, 3.0]], [0.0, 1.0], params={"t": 0.5})


# ---- nuslerp ---------------------------------------------------------------------------------------


def test_nuslerp_weights_give_t():
    close(call("nuslerp", [[1.0, 0.0], [0.0, 1.0]], None, [{"weight": 1}, {"weight": 1}]), [R, R])
    # t = 2/3 -> 60 degrees
    close(call("nuslerp", [[1.0, 0.0], [0.0, 1.0]], None, [{"weight": 1}, {"weight": 2}]), [0.5, 0.8660254])
    # weights summing to 0 -> t = 0.5
    close(call("nuslerp", [[1.0, 0.0], [0.0, 1.0]], None, [{"weight": 1}, {"weight": -1}]), [R, R])


def test_nuslerp_task_vectors_with_base():
    out = call("nuslerp", [[2.0, 1.0], [1.0, 2.0]], [1.0, 1.0], [{"weight": 1}, {"weight": 1}])
    close(out, [1 + R, 1 + R])


def test_nuslerp_rows_and_row_wise():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    mp = [{"weight": 1}, {"weight": 1}]
    # per row: row 0 parallel -> lerp [1.5, 0]; row 1 orthogonal -> sin(pi/4) * ([0,1] + [3,0])
    rows = call("nuslerp", [a, b], None, mp, {"nuslerp_flatten": False})
    close(rows, [[1.5, 0.0], [3 * R, R]])
    cols = call("nuslerp", [a.T, b.T], None, mp, {"nuslerp_flatten": False, "nuslerp_row_wise": True})
    close(cols, [[1.5, 3 * R], [0.0, R]])


def test_nuslerp_needs_two_models():
    with pytest.raises(MergeError, match="2 models besides the base, got 3"):
        call("nuslerp", [[1.0], [2.0], [3.0]], None, [{"weight": 1}] * 3)


# ---- multislerp ------------------------------------------------------------------------------------


def test_multislerp_hand_computed():
    close(call("multislerp", [[1.0, 0.0], [0.0, 1.0]], None, [{"weight": 1}, {"weight": 1}]), [R, R])
    # unit mean of .75*[1,0] + .25*[0,1] is [3, 1]/sqrt(10); times the weighted norm 2
    out = call("multislerp", [[2.0, 0.0], [0.0, 2.0]], None, [{"weight": 3}, {"weight": 1}])
    close(out, [1.8973666, 0.6324555])
    out = call("multislerp", [[3.0, 1.0], [1.0, 3.0]], [1.0, 1.0], [{"weight": 3}, {"weight": 1}])
    close(out, [2.8973666, 1.6324555])


def test_multislerp_single_and_antipodal():
    close(call("multislerp", [[3.0, 4.0]], [1.0, 1.0], [{"weight": 2}]), [3.0, 4.0])
    close(call("multislerp", [[1.0, 0.0], [-1.0, 0.0]], None, [{"weight": 1}, {"weight": 1}]), [0.0, 0.0])
    with pytest.raises(MergeError, match="cancel out"):
        call(
            "multislerp",
            [[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]],
            None,
            [{"weight": 1}, {"weight": 2}, {"weight": 1}],
        )
