"""RegMean against least squares on the stacked regression problem and against the paper code's
shrink-then-invert formula; Fisher merging against its weighted-average formula; invariances."""

import itertools

import pytest
import torch
from method_helpers import call_exact as call

from graphmerge.errors import MergeError


def regression_world(n_models=3, n_tokens=40, d_in=6, d_out=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n_tokens, d_in, generator=g, dtype=torch.float64) for _ in range(n_models)]
    ws = [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in range(n_models)]
    grams = [x.T @ x / n_tokens for x in xs]
    return xs, ws, grams


def test_regmean_alpha_1_is_least_squares_on_the_stacked_problem():
    xs, ws, grams = regression_world()
    # min_W sum_i ||X_i W^T - X_i W_i^T||^2: one least-squares problem over all models' inputs.
    stacked_x = torch.cat(xs)
    stacked_y = torch.cat([x @ w.T for x, w in zip(xs, ws)])
    expected = torch.linalg.lstsq(stacked_x, stacked_y).solution.T
    out = call("regmean", ws, grams, params={"alpha": 1.0})
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("alpha", [0.9, 0.5, 0.0])
def test_regmean_matches_the_reference_formula(alpha):
    xs, ws, grams = regression_world(seed=1)

    def reduce_non_diagonal(g, ratio):  # FusionBench / RegMean code
        return g * (ratio + torch.diag(torch.ones(g.shape[0], dtype=g.dtype) - ratio))

    shrunk = [reduce_non_diagonal(g, alpha) for g in grams]
    expected = torch.matmul(torch.inverse(sum(shrunk)), sum(g @ w.T for g, w in zip(shrunk, ws))).T
    torch.testing.assert_close(call("regmean", ws, grams, params={"alpha": alpha}), expected)


def test_regmean_invariances():
    xs, ws, grams = regression_world()
    torch.testing.assert_close(call("regmean", ws[:1], grams[:1]), ws[0])
    torch.testing.assert_close(call("regmean", [ws[0], ws[0]], [grams[0], grams[1]]), ws[0])
    first = call("regmean", ws, grams)
    for perm in itertools.permutations(range(3)):
        out = call("regmean", [ws[i] for i in perm], [grams[i] for i in perm])
        torch.testing.assert_close(out, first)


def test_regmean_fallback_for_tensors_without_gram():
    norms = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])]
    torch.testing.assert_close(call("regmean", norms, [None, None]), torch.tensor([2.0, 3.0]))
    base = torch.tensor([0.0, 0.5])
    out = call("regmean", norms, [None, None], base=base, params={"fallback": "base"})
    torch.testing.assert_close(out, base)


def test_regmean_singular_gram_uses_least_squares():
    # An input feature that is never active: the Gram sum is singular; the answer stays finite.
    xs, ws, _ = regression_world(n_models=2)
    for x in xs:
        x[:, 0] = 0
    grams = [x.T @ x / len(x) for x in xs]
    stacked_y = torch.cat([x @ w.T for x, w in zip(xs, ws)])
    # The minimum-norm least-squares answer, by the pseudo-inverse (an SVD, not the method's solver).
    best = (torch.linalg.pinv(torch.cat(xs)) @ stacked_y).T
    assert best.norm() > 1
    # Many calls: LAPACK's default rank-revealing driver answered zeros in most calls here.
    for _ in range(50):
        out = call("regmean", ws, grams, params={"alpha": 1.0})
        torch.testing.assert_close(out, best, atol=1e-9, rtol=1e-9)


def test_regmean_rejects_a_gram_of_the_wrong_size():
    _, ws, grams = regression_world()
    with pytest.raises(MergeError, match="Gram matrix"):
        call("regmean", ws, [grams[0], grams[1], torch.eye(3, dtype=torch.float64)])


def test_fisher_is_the_fisher_weighted_average():
    g = torch.Generator().manual_seed(0)
    thetas = [torch.randn(5, 3, generator=g) for _ in range(3)]
    fishers = [torch.rand(5, 3, generator=g) for _ in range(3)]
    fishers[1][0, 0] = 0.0
    weights = [1.0, 2.0, 0.5]
    floor = 1e-3
    num = sum(w * torch.maximum(f, torch.tensor(floor)) * t for w, f, t in zip(weights, fishers, thetas))
    den = sum(w * torch.maximum(f, torch.tensor(floor)) for w, f in zip(weights, fishers))
    out = call(
        "fisher",
        thetas,
        fishers,
        model_params=[{"weight": w} for w in weights],
        params={"fisher_floor": floor},
    )
    torch.testing.assert_close(out, num / den)


def test_fisher_invariances_and_floor():
    g = torch.Generator().manual_seed(1)
    theta, other = torch.randn(4, generator=g), torch.randn(4, generator=g)
    f, f2 = torch.rand(4, generator=g), torch.rand(4, generator=g)
    torch.testing.assert_close(call("fisher", [theta], [f]), theta)
    torch.testing.assert_close(call("fisher", [theta, theta], [f, f2]), theta)
    a = call("fisher", [theta, other], [f, f2])
    torch.testing.assert_close(call("fisher", [other, theta], [f2, f]), a)
    # No information anywhere: the floor makes it the plain mean.
    zero = torch.zeros(4)
    torch.testing.assert_close(call("fisher", [theta, other], [zero, zero]), (theta + other) / 2)
    with pytest.raises(MergeError, match="fisher_floor"):
        call("fisher", [theta, other], [zero, zero], params={"fisher_floor": 0.0})
