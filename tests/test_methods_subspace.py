"""TSV-M, Iso-C, Iso-CTS and WUDI against reference implementations written here the way the papers'
code writes them (buffers of size min(m, n), explicit loops, the loss on the m x m side), plus
invariances: one model, identical models, permuted inputs."""

import itertools

import pytest
import torch
from method_helpers import call_method as call

from graphmerge.errors import MergeError


def _svd(a):
    return torch.linalg.svd(a, full_matrices=False)


def ref_tsv(base, models, k=None, lam=1.0):
    """TSV-M as in the paper's compute_and_sum_svd_mem_reduction."""
    tvs = [m - base for m in models]
    if base.dim() != 2:
        return base + lam * sum(tvs) / len(tvs)
    sv_reduction = k if k else 1 / len(tvs)
    for i, vec in enumerate(tvs):
        u, s, v = _svd(vec)
        if i == 0:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        r = int(s.shape[0] * sv_reduction)
        sum_u[:, i * r : (i + 1) * r] = u[:, :r]
        sum_s[i * r : (i + 1) * r] = s[:r]
        sum_v[i * r : (i + 1) * r, :] = v[:r, :]
    u_u, _, v_u = _svd(sum_u)
    u_v, _, v_v = _svd(sum_v)
    return base + lam * torch.linalg.multi_dot((u_u, v_u, torch.diag(sum_s), u_v, v_v))


def ref_iso_c(base, models, lam=1.0):
    tvs = [m - base for m in models]
    new = sum(tvs) / len(tvs)
    if base.dim() == 2:
        new = new * len(tvs)
        u, s, v = _svd(new)
        new = torch.linalg.multi_dot((u, torch.diag(torch.ones_like(s) * s.mean()), v))
    return base + lam * new


def ref_iso_cts(base, models, fraction=0.8, lam=1.0):
    tvs = [m - base for m in models]
    if base.dim() != 2:
        return base + lam * sum(tvs) / len(tvs)
    shape = base.shape
    common = int(min(shape) * fraction)
    common = min(shape) - round((min(shape) - common) / len(tvs)) * len(tvs)
    u, s, v = _svd(sum(tvs))
    cu, cs, cv = u[:, :common], s[:common], v[:common, :]
    per = int((min(shape) - common) / len(tvs))
    for i, w in enumerate(tvs):
        u_ts, s_ts, v_ts = _svd(w - cu @ cu.T @ w)
        if i == 0:
            bu, bs, bv = torch.zeros_like(u_ts), torch.zeros_like(s_ts), torch.zeros_like(v_ts)
        bu[:, i * per : (i + 1) * per] = u_ts[:, :per]
        bs[i * per : (i + 1) * per] = s_ts[:per]
        bv[i * per : (i + 1) * per, :] = v_ts[:per, :]
    n = len(tvs) * per
    bu[:, n : n + common], bs[n : n + common], bv[n : n + common, :] = cu, cs, cv
    uu, _, vu = _svd(bu)
    uv, _, vv = _svd(bv)
    bs = torch.ones_like(bs) * bs.mean()
    return base + lam * torch.linalg.multi_dot((uu @ vu, torch.diag(bs), uv @ vv))


def ref_wudi(base, models, steps=300, lr=1e-5, lam=1.0):
    """get_redundant_task_vector of the WUDI code: Adam on the m x m interference products."""
    vectors = torch.stack([m - base for m in models])
    merging = torch.nn.Parameter(vectors.sum(dim=0).clone())
    opt = torch.optim.Adam([merging], lr=lr, weight_decay=0)
    l2 = torch.square(torch.norm(vectors.reshape(vectors.shape[0], -1), p=2, dim=-1))
    for _ in range(steps):
        disturbing = merging.unsqueeze(0) - vectors
        inner = torch.matmul(disturbing, vectors.transpose(1, 2))
        loss = torch.sum(torch.square(inner) / l2.unsqueeze(-1).unsqueeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return base + lam * merging.detach()


def world(shape=(12, 8), n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.1 * torch.randn(shape, generator=g) for _ in range(n)]


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b.to(a.dtype), atol=tol, rtol=tol)


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (9, 9)])
@pytest.mark.parametrize("n", [2, 3])
def test_tsv_matches_reference(shape, n):
    base, models = world(shape, n)
    close(call("tsv_m", models, base), ref_tsv(base, models))
    close(call("tsv_m", models, base, params={"lambda": 0.7}), ref_tsv(base, models, lam=0.7))
    close(call("tsv_m", models, base, params={"k": 0.25}), ref_tsv(base, models, k=0.25))


@pytest.mark.parametrize("shape", [(12, 8), (8, 12)])
def test_iso_c_and_cts_match_reference(shape):
    base, models = world(shape, 3)
    close(call("iso_c", models, base, params={"lambda": 1.3}), ref_iso_c(base, models, lam=1.3))
    for fraction in (0.8, 0.5, 0.25):
        out = call("iso_cts", models, base, params={"common_fraction": fraction})
        close(out, ref_iso_cts(base, models, fraction=fraction))


def test_iso_cts_rank_split_never_goes_negative():
    from graphmerge.methods.iso import split_rank

    assert split_rank(8, 3, 0.0) == (2, 2)  # round(8/3)*3 = 9 > 8 would leave common = -1
    assert split_rank(8, 3, 0.8) == (5, 1)
    assert split_rank(64, 3, 0.8) == (52, 4)


def test_iso_cts_full_common_space_is_iso_c():
    base, models = world((10, 10), 3)
    close(call("iso_cts", models, base, params={"common_fraction": 1.0}), call("iso_c", models, base))


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])  # both sides of the narrower-Gram choice
def test_wudi_matches_reference(shape):
    base, models = world(shape, 3)
    params = {"steps": 50, "lr": 1e-3}
    close(call("wudi", models, base, params=params), ref_wudi(base, models, 50, 1e-3), tol=1e-4)


def test_wudi_lowers_the_interference_loss():
    base, models = world((10, 6), 3)
    tvs = torch.stack([m - base for m in models])

    def loss(merged):
        inner = (merged - base - tvs) @ tvs.transpose(1, 2)
        return float((inner.square().sum((1, 2)) / tvs.square().sum((1, 2))).sum())

    before = loss(call("wudi", models, base, params={"steps": 0}))
    after = loss(call("wudi", models, base, params={"steps": 300, "lr": 1e-3}))
    assert after < 0.5 * before


@pytest.mark.parametrize("method", ["tsv_m", "iso_c", "iso_cts", "wudi"])
def test_non_matrix_tensors_take_the_mean_task_vector(method):
    base = torch.tensor([1.0, 2.0, 3.0])
    models = [base + torch.tensor([0.3, 0.0, -0.3]), base + torch.tensor([0.1, 0.2, 0.3])]
    close(call(method, models, base, params={"lambda": 2.0}), base + 2.0 * torch.tensor([0.2, 0.1, 0.0]))


@pytest.mark.parametrize("method", ["tsv_m", "wudi"])
def test_one_model_gives_that_model(method):
    base, models = world((12, 8), 1)
    close(call(method, models, base), models[0])


def test_iso_of_one_model_flattens_its_spectrum():
    """Iso-C does not return a single model: it keeps its singular vectors, flattens the spectrum."""
    base, (m,) = world((12, 8), 1)
    u, s, vh = _svd(m - base)
    expected = base + s.mean() * (u @ vh)
    close(call("iso_c", [m], base), expected)
    close(call("iso_cts", [m], base), expected)


def test_wudi_two_identical_models_converge_to_that_model():
    base, (m,) = world((12, 8), 1)
    out = call("wudi", [m, m], base, params={"steps": 3000, "lr": 1e-3})
    close(out, m, tol=2e-3)


@pytest.mark.parametrize("method", ["tsv_m", "iso_c", "iso_cts", "wudi"])
def test_permuted_inputs_give_the_same_result(method):
    base, models = world((12, 8), 3)
    params = {"steps": 30, "lr": 1e-3} if method == "wudi" else {}
    first = call(method, models, base, params=params)
    for perm in itertools.permutations(models):
        close(call(method, list(perm), base, params=params), first, tol=1e-5)


@pytest.mark.parametrize("method", ["tsv_m", "iso_c", "iso_cts", "wudi"])
def test_need_a_base(method):
    with pytest.raises(MergeError, match="needs a base"):
        call(method, [torch.ones(2, 2)], None)


def test_bad_parameters_are_one_line_errors():
    base, models = world((4, 4), 2)
    with pytest.raises(MergeError, match="`k`"):
        call("tsv_m", models, base, params={"k": 1.5})
    with pytest.raises(MergeError, match="whole number"):
        call("wudi", models, base, params={"steps": 2.5})
