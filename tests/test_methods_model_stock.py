import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=1e-6)


def test_cosine_rule():
    # offsets [1,0], [1,1]: cos = 1/sqrt2, t = 2cos/(1+cos) = 0.8284271; average offset [1, .5]
    close(call("model_stock", [[2.0, 1.0], [2.0, 2.0]], [1.0, 1.0]), [1.8284271, 1.4142136])


def test_orthogonal_offsets_keep_base():
    close(call("model_stock", [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]), [0.0, 0.0])


def test_filter_wise():
    models = [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]]
    out = call("model_stock", models, [[0.0, 0.0], [0.0, 0.0]], params={"filter_wise": True})
    close(out, [[0.0, 0.0], [0.8284271, 0.4142136]])


def test_zero_task_vectors_and_singularity():
    b = torch.tensor([1.0, 2.0])
    close(call("model_stock", [b, b], b), [1.0, 2.0])
    # opposite offsets: cos = -1, 1 + (N-1)cos = 0 -> base
    close(call("model_stock", [[2.0, 2.0], [0.0, 2.0]], b), [1.0, 2.0])


def test_needs_base_and_two_models():
    with pytest.raises(MergeError, match="needs a base"):
        call("model_stock", [[1.0], [2.0]])
    with pytest.raises(MergeError, match="2 to any models besides the base, got 1"):
        call("model_stock", [[1.0]], [0.0])
