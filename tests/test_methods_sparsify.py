import pytest
import torch

from graphmerge.methods import sparsify as sp


def _ref_mask(x, k):
    ref = torch.zeros(x.numel(), dtype=torch.bool)
    ref[torch.topk(x.reshape(-1), k).indices] = True
    return ref.view(x.shape)


def test_top_k_matches_topk_on_large_tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 600, generator=g).abs()
    for k in (1, 17, 42_000, 210_000, 419_999):
        assert torch.equal(sp.top_k_mask(x, k), _ref_mask(x, k))
        assert sp.kth_largest(x.reshape(-1), k) == torch.topk(x.reshape(-1), k).values[-1]


def test_top_k_on_sorted_input():
    x = torch.arange(300_000, dtype=torch.float32).flip(0)  # sorted input
    assert torch.equal(sp.top_k_mask(x, 1234), _ref_mask(x, 1234))


def test_top_k_ties_prefer_lower_index_and_count_is_exact():
    x = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0, 3.0])
    assert sp.top_k_mask(x, 3).tolist() == [False, True, True, True, False, False]
    big = torch.zeros(400_000)
    big[::7] = 1.0
    m = sp.top_k_mask(big, 100_000)
    assert int(m.sum()) == 100_000 and bool(m[::7].all())


def test_magnitude_mask_edges():
    x = torch.tensor([0.5, -3.0, 2.0, -1.0])
    assert sp.magnitude_mask(x, 1.0) is None
    assert sp.magnitude_mask(x, 0.0).tolist() == [False] * 4
    assert sp.magnitude_mask(x, 0.5).tolist() == [False, True, True, False]
    assert sp.magnitude_mask(x, 0.1).tolist() == [False, True, False, False]  # at least one


def test_outlier_mask_nested_selection():
    x = torch.arange(1.0, 21.0)
    keep = sp.outlier_mask(x, 0.5, 0.1)  # target 10, drop top 2 and bottom 8
    assert keep.nonzero().squeeze(1).tolist() == list(range(8, 18))


def test_rescale_norms():
    m = torch.tensor([0.0, -2.0, 3.0, 0.0])
    full = torch.tensor([1.0, -2.0, 3.0, -0.5])
    torch.testing.assert_close(sp.rescale(m.clone(), sp.tensor_norm(full, "l1"), "l1", 0.5), m * 1.3)
    torch.testing.assert_close(sp.rescale(m.clone(), sp.tensor_norm(full, "linf"), "linf", 0.5), m)
    torch.testing.assert_close(sp.rescale(m.clone(), None, "inverse", 0.5), m * 2)
    # all dropped: nothing to rescale
    torch.testing.assert_close(
        sp.rescale(torch.zeros(4), sp.tensor_norm(full, "l2"), "l2", 0.5), torch.zeros(4)
    )


@pytest.mark.parametrize("dist", ["normal", "bf16_differences", "many_ties", "zeros_and_ones", "signed"])
def test_radix_kth_largest_is_exact(dist):
    from graphmerge.methods.sparsify import kth_largest

    g = torch.Generator().manual_seed(0)
    n = 200_003
    if dist == "normal":
        x = torch.randn(n, generator=g).abs()
    elif dist == "bf16_differences":
        x = (
            torch.randn(n, generator=g).bfloat16().float() - torch.randn(n, generator=g).bfloat16().float()
        ).abs()
    elif dist == "many_ties":
        x = torch.randint(0, 7, (n,), generator=g).float() * 0.25
    elif dist == "zeros_and_ones":
        x = (torch.rand(n, generator=g) > 0.9).float()
    else:  # not magnitudes: the general path
        x = torch.randn(n, generator=g)
    for k in (1, 2, n // 10, n // 2, n - 1, n):
        assert kth_largest(x, k) == torch.kthvalue(x, n - k + 1).values, k


@pytest.mark.parametrize("dist", ["magnitudes", "signed", "many_ties", "zeros_and_ones", "bf16", "float64"])
def test_device_selection_path_gives_the_cpu_masks(dist):
    """The accelerator path (histograms + running tie count, no host reads) is run here on CPU
    tensors and must give exactly the CPU path's masks, tie rule included."""
    g = torch.Generator().manual_seed(1)
    for n in (5, 777, 131_075):
        x = torch.randn(n, generator=g)
        if dist == "magnitudes":
            x = x.abs()
        elif dist == "many_ties":
            x = torch.randint(0, 4, (n,), generator=g).float() * 0.5
        elif dist == "zeros_and_ones":
            x = (torch.rand(n, generator=g) > 0.9).float()
        elif dist == "bf16":
            x = x.abs().bfloat16()
        elif dist == "float64":
            x = x.abs().double()
        for k in sorted({1, 2, n // 7, n // 2, n - 1} - {0}):
            expected = sp.top_k_mask(x, k)
            got = sp.top_k_mask_on_device(x, k)
            assert int(got.sum()) == k
            assert torch.equal(got, expected), (n, k)
