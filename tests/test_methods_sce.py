import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=1e-6)


def test_energy_weights_and_sign_erase():
    # energies 8/3 and 1 -> weights 8/11, 3/11; elected signs +,-,+
    # e0: (8/11*2 + 3/11*1) / 1 = 19/11; e1: only a agrees -> -2; e2: only b agrees -> 1
    close(call("sce", [[2.0, -2.0, 0.0], [1.0, 1.0, 1.0]], [0.0, 0.0, 0.0]), [1.7272727, -2.0, 1.0])


def test_select_topk_by_variance():
    # variances 1, 0, 4, .25 -> 3 nonzero, k = int(3 * .5) = 1 -> only element 2 survives
    # energies 1, 1 -> weights .5, .5; sign of 2 + -2 = 0 counts as +, so only model 0 agrees
    out = call(
        "sce",
        [[1.0, 0.0, 2.0, 0.0], [3.0, 0.0, -2.0, 1.0]],
        [0.0, 0.0, 0.0, 0.0],
        params={"select_topk": 0.5},
    )
    close(out, [0.0, 0.0, 2.0, 0.0])


def test_zero_task_vectors_and_single_model():
    close(call("sce", [[1.0, 2.0], [1.0, 2.0]], [1.0, 2.0]), [1.0, 2.0])
    close(call("sce", [[3.0, -1.0]], [1.0, 1.0]), [3.0, -1.0])
    close(call("sce", [[3.0, -1.0]], [1.0, 1.0], params={"select_topk": 0.0}), [1.0, 1.0])


def test_bad_select_topk():
    with pytest.raises(MergeError, match="select_topk"):
        call("sce", [[1.0]], [0.0], params={"select_topk": 1.5})
