import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError

STOCHASTIC = ["dare_linear", "dare_ties", "della", "della_linear"]
FAMILY = ["task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties", *STOCHASTIC]


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=1e-6)


BASE = [1.0, 1.0, 1.0]
TA_MODELS = [[2.0, 0.0, 1.0], [1.0, 3.0, 1.0]]  # task vectors [1,-1,0], [0,2,0]
TA_W = [{"weight": 0.5}, {"weight": 1.0}]


def test_task_arithmetic():
    close(call("task_arithmetic", TA_MODELS, BASE, TA_W), [1.5, 2.5, 1.0])
    close(call("task_arithmetic", TA_MODELS, BASE, TA_W, {"lambda": 2}), [2.0, 4.0, 1.0])
    close(call("task_arithmetic", TA_MODELS, BASE, TA_W, {"normalize": True}), [1.3333333, 2.0, 1.0])


# TIES: tvs a=[1,-2,3,-.5], b=[-2,1,1.5,.2]; density .5 keeps a->[0,-2,3,0], b->[-2,0,1.5,0]
TIES_A, TIES_B, ZERO4 = [1.0, -2.0, 3.0, -0.5], [-2.0, 1.0, 1.5, 0.2], [0.0] * 4


def test_ties_trim_elect_disjoint_mean():
    out = call("ties", [TIES_A, TIES_B], ZERO4, [{"weight": 1, "density": 0.5}] * 2)
    close(out, [-2.0, -2.0, 2.25, 0.0])


def test_ties_weighted_divisor():
    # weighted a=[0,-4,6,0], b=[-2,0,1.5,0]: e1 -4/2, e2 7.5/3 (mergekit divides by agreeing weights)
    mp = [{"weight": 2, "density": 0.5}, {"weight": 1, "density": 0.5}]
    close(call("ties", [TIES_A, TIES_B], ZERO4, mp), [-2.0, -2.0, 2.5, 0.0])
    # TIES paper: mean over the agreeing models, unweighted count
    close(call("ties", [TIES_A, TIES_B], ZERO4, mp, {"normalize_by": "count"}), [-2.0, -4.0, 3.75, 0.0])
    close(call("ties", [TIES_A, TIES_B], ZERO4, mp, {"normalize": False}), [-2.0, -4.0, 7.5, 0.0])


def test_consensus_sum_vs_count():
    models, mp = [[5.0], [-1.0], [-1.0]], [{"weight": 1}] * 3
    close(call("ties", models, [0.0], mp), [5.0])  # sum 3 > 0 elects +
    close(call("ties", models, [0.0], mp, {"consensus_method": "count"}), [-1.0])  # 2 votes for -
    close(call("ties", models, [0.0], mp, {"consensus_method": "none", "normalize": False}), [3.0])
    # sign tie (sum exactly 0) elects +
    close(call("ties", [[1.0], [-1.0]], [0.0], [{"weight": 1}] * 2), [1.0])


def test_ties_density_edges():
    mp0 = [{"weight": 1, "density": 0.0}] * 2
    close(call("ties", [TIES_A, TIES_B], ZERO4, mp0), ZERO4)
    # density 1: consensus only; signs of a+b = [-,-,+,-]
    out = call("ties", [TIES_A, TIES_B], ZERO4, [{"weight": 1}] * 2)
    close(out, [-2.0, -2.0, 2.25, -0.5])
    # a tiny density still keeps one element (mergekit: k >= 1)
    close(call("ties", [TIES_A], ZERO4, [{"weight": 1, "density": 0.01}]), [0.0, 0.0, 3.0, 0.0])


def test_ties_rescale_l1():
    # keep [0,-2,3,0]: L1 5 -> 6.5, scale 1.3
    out = call("ties", [TIES_A], ZERO4, [{"weight": 1, "density": 0.5}], {"rescale": True})
    close(out, [0.0, -2.6, 3.9, 0.0])


def test_breadcrumbs_drops_small_and_outliers():
    tv = [float(i) * (-1) ** i for i in range(1, 11)]  # |tv| = 1..10
    mp = [{"weight": 1, "density": 0.5, "gamma": 0.1}]
    # target 5, top 1 -> keep |5..9|
    close(call("breadcrumbs", [tv], [0.0] * 10, mp), [0, 0, 0, 0, -5, 6, -7, 8, -9, 0])
    # density .9 + gamma .2 > 1: keep 9, so only the largest goes
    mp = [{"weight": 1, "density": 0.9, "gamma": 0.2}]
    close(call("breadcrumbs", [tv], [0.0] * 10, mp), [-1, 2, -3, 4, -5, 6, -7, 8, -9, 0])
    # density 1 ignores gamma (mergekit)
    close(call("breadcrumbs", [tv], [0.0] * 10, [{"weight": 1, "gamma": 0.3}]), tv)


def test_breadcrumbs_ties():
    tv_a = [float(i) for i in range(1, 11)]
    tv_b = [-2.0 * i for i in range(1, 11)]
    mp = [{"weight": 1, "density": 0.5, "gamma": 0.1}] * 2
    out = call("breadcrumbs_ties", [tv_a, tv_b], [0.0] * 10, mp)
    # a keeps 5..9, b keeps -10..-18; sign sum is negative wherever b survives, so a is erased there
    close(out, [0, 0, 0, 0, -10, -12, -14, -16, -18, 0])


@pytest.mark.parametrize("name", FAMILY)
def test_zero_task_vectors_return_base(name):
    b = torch.tensor([[0.5, -1.0], [2.0, 3.0]])
    mp = [{"weight": 1, "density": 0.5}] * 2
    torch.testing.assert_close(call(name, [b, b], b, mp), b)


@pytest.mark.parametrize("name", FAMILY)
def test_density_one_is_task_arithmetic_with_consensus(name):
    out = call(
        name, TA_MODELS, BASE, TA_W, {"normalize": False, "consensus_method": "none", "rescale": False}
    )
    close(out, [1.5, 2.5, 1.0])


@pytest.mark.parametrize("name", FAMILY)
def test_single_model(name):
    out = call(name, [[3.0, -1.0]], [1.0, 1.0], [{"weight": 1}])
    close(out, [3.0, -1.0])


@pytest.mark.parametrize("name", FAMILY)
def test_parameter_errors(name):
    with pytest.raises(MergeError, match="needs a base"):
        call(name, [[1.0]], None, [{"weight": 1}])
    with pytest.raises(MergeError, match=r"`density` of model 0 = 1.5 is outside \[0, 1\]"):
        call(name, [[1.0]], [0.0], [{"weight": 1, "density": 1.5}])
    with pytest.raises(MergeError, match="`weight` of model 0 is required"):
        call(name, [[1.0]], [0.0], [{}])
    with pytest.raises(MergeError, match="model 0 has shape 2x2 but base has shape 4"):
        call(name, [torch.zeros(2, 2)], torch.zeros(4), [{"weight": 1}])
    with pytest.raises(MergeError, match="consensus_method"):
        call(name, [[1.0]], [0.0], [{"weight": 1}], {"consensus_method": "majority"})


def test_della_epsilon_window():
    with pytest.raises(MergeError, match=r"density 0.9 \+/- epsilon 0.15 must stay inside \(0, 1\)"):
        call("della", [[1.0, 2.0]], [0.0, 0.0], [{"weight": 1, "density": 0.9}])


# ---- stochastic members -----------------------------------------------------------------------------


def _rand_inputs():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(64, 32, generator=g)
    return [base + torch.randn(64, 32, generator=g) for _ in range(2)], base


@pytest.mark.parametrize("name", STOCHASTIC)
def test_seed_reproducible(name):
    models, base = _rand_inputs()
    mp = [{"weight": 1, "density": 0.5}] * 2
    a = call(name, models, base, mp, seed=1)
    assert torch.equal(a, call(name, models, base, mp, seed=1))
    assert not torch.equal(a, call(name, models, base, mp, seed=2))


def test_dare_outputs_are_dropped_or_rescaled():
    # tv [2, 4], p = .5. inverse (paper): each element is 0 or tv/p.
    for seed in range(20):
        out = call(
            "dare_linear",
            [[2.0, 4.0]],
            [0.0, 0.0],
            [{"weight": 1, "density": 0.5}],
            {"rescale_norm": "inverse"},
            seed=seed,
        )
        assert out[0].item() in (0.0, 4.0) and out[1].item() in (0.0, 8.0)
        # mergekit's l1 rescale: kept entries scaled so the L1 norm stays 6
        out = call("dare_linear", [[2.0, 4.0]], [0.0, 0.0], [{"weight": 1, "density": 0.5}], seed=seed)
        assert out.tolist() in ([6.0, 0.0], [0.0, 6.0], [2.0, 4.0], [0.0, 0.0])
    out = call(
        "dare_linear", [[2.0, 4.0]], [0.0, 0.0], [{"weight": 1, "density": 0.5}], {"rescale": False}, seed=3
    )
    assert out[0].item() in (0.0, 2.0) and out[1].item() in (0.0, 4.0)


@pytest.mark.parametrize("norm", ["inverse", "l1"])
def test_dare_expectation(norm):
    tv = torch.linspace(-1, 1, 256)
    outs = [
        call(
            "dare_linear",
            [tv],
            torch.zeros(256),
            [{"weight": 1, "density": 0.3}],
            {"rescale_norm": norm},
            seed=s,
        )
        for s in range(400)
    ]
    mean = torch.stack(outs).mean(0)
    # per-element std of the mean: |tv| * sqrt((1-p)/p) / sqrt(400) <= 0.077
    assert (mean - tv).abs().max() < 0.3
    assert (mean - tv).abs().mean() < 0.08


def test_della_keep_probabilities_and_inverse_rescale():
    from graphmerge.methods.sparsify import della_probabilities

    tv = torch.tensor([0.1, -0.4, 0.2])
    # ranks by magnitude 0, 2, 1 -> probs .5 -/+ .1 along the rank
    torch.testing.assert_close(della_probabilities(tv, 0.5, 0.1), torch.tensor([0.4, 0.6, 0.5]))
    for seed in range(10):
        out = call(
            "della_linear",
            [tv],
            torch.zeros(3),
            [{"weight": 1, "density": 0.5, "epsilon": 0.1}],
            {"rescale_norm": "inverse"},
            seed=seed,
        )
        for v, allowed in zip(out.tolist(), (0.25, -0.6666667, 0.4)):
            assert v == 0.0 or v == pytest.approx(allowed, rel=1e-6)


def test_della_rows_rank_separately():
    from graphmerge.methods.sparsify import della_probabilities

    tv = torch.tensor([[1.0, 2.0], [20.0, 10.0]])
    torch.testing.assert_close(della_probabilities(tv, 0.5, 0.2), torch.tensor([[0.3, 0.7], [0.7, 0.3]]))
