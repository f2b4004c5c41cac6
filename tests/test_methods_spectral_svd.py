"""The subspace methods' SVD: an input on which LAPACK's float32 SVD does not converge is redone in
float64 (a search met such a tensor in Iso-CTS's polar step and stopped with an internal error)."""

from __future__ import annotations

import torch

from graphmerge.methods import _spectral


def test_converging_input_gets_exactly_the_float32_result():
    a = torch.randn(12, 7, generator=torch.Generator().manual_seed(0))
    u, s, vh = _spectral.svd(a)
    ru, rs, rvh = torch.linalg.svd(a, full_matrices=False)
    assert torch.equal(u, ru) and torch.equal(s, rs) and torch.equal(vh, rvh)


def test_non_convergence_is_redone_in_float64(monkeypatch):
    # LAPACK's failure cannot be provoked portably, so the float32 call is made to raise the error it
    # raises (torch.linalg.LinAlgError); the float64 call is the real one.
    real = torch.linalg.svd

    def failing_in_float32(a, *args, **kwargs):
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", failing_in_float32)
    a = torch.randn(9, 5, generator=torch.Generator().manual_seed(1))
    u, s, vh = _spectral.svd(a)
    assert u.dtype == s.dtype == vh.dtype == torch.float32
    assert torch.allclose(u @ torch.diag(s) @ vh, a, atol=1e-5)  # still a factorisation of the input
    eu, es, evh = real(a.double(), full_matrices=False)
    assert torch.equal(s, es.float()) and torch.equal(u, eu.float()) and torch.equal(vh, evh.float())
    polar = _spectral.polar(a)
    assert torch.allclose(polar.T @ polar, torch.eye(5), atol=1e-5)  # orthonormal columns
