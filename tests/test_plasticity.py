"""Plasticity rules against their equations; the fused SGD path against the dense gradient."""

import pytest
import torch
from torch import nn

from neurolearn.plasticity import ContrastiveHebbian, Delta, apply_updates


def test_delta_equation():
    x, e = torch.rand(5, 3), torch.randn(5, 2)
    g = Delta.update(x, e)
    ref = sum(torch.outer(e[b], x[b]) for b in range(5))
    assert torch.allclose(g, ref, atol=1e-6)
    assert torch.allclose(Delta.factors(x, e).bias, e.sum(0))


def test_delta_shape_errors():
    with pytest.raises(ValueError, match="same batch"):
        Delta.update(torch.rand(3, 2), torch.rand(4, 2))


def test_contrastive_hebbian_equation():
    b, beta = 4, 0.3
    pa, qa, pb, qb = torch.rand(b, 3), torch.rand(b, 2), torch.rand(b, 3), torch.rand(b, 2)
    g = ContrastiveHebbian.update(pa, qa, pb, qb, beta)
    ref = -(qa.T @ pa - qb.T @ pb) / (beta * b)
    assert torch.allclose(g, ref, atol=1e-6)
    # a shared pre activity (clamped input) takes the cheaper difference form, same result
    up = ContrastiveHebbian.factors(pa, qa, pa, qb, 1 / (beta * b))
    assert up.post.shape[0] == b
    assert torch.allclose(up.dense(), -(qa.T @ pa - qb.T @ pa) / (beta * b), atol=1e-6)


def test_fused_sgd_equals_dense_gradient_step():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    up = Delta.factors(torch.rand(4, 3), torch.randn(4, 2))
    apply_updates(torch.optim.SGD(a.parameters(), lr=0.1), [a], [up])
    opt = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.5)  # not plain: goes through .grad
    apply_updates(opt, [b], [up])
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and torch.allclose(a.bias, b.bias, atol=1e-6)


def test_apply_updates_names_missing_parameter():
    a = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="optimizer"):
        apply_updates(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), [a], [Delta.factors(torch.rand(1, 3), torch.rand(1, 2))])


def test_contrastive_hebbian_rejects_zero_beta():
    x, y = torch.rand(2, 3), torch.rand(2, 4)
    with pytest.raises(ValueError, match="beta must be a non-zero number"):
        ContrastiveHebbian.update(x, y, x, y, 0)
    assert ContrastiveHebbian.update(x, y, x, y, 0.5).shape == (4, 3)


def test_rows_as_csr_is_the_transpose():
    from neurolearn.plasticity.base import rows_as_csr

    torch.manual_seed(0)
    A = torch.randn(12, 30) * (torch.rand(12, 30) < 0.1)
    A[:, 5] = 0  # an output cell with no error in the block: an empty row of A^T
    assert torch.equal(rows_as_csr(A).to_dense(), A.T)
    assert torch.equal(rows_as_csr(torch.zeros(4, 3)).to_dense(), torch.zeros(3, 4))


@pytest.mark.parametrize("density,sparse", [(0.02, True), (0.5, False)])
def test_deferred_flush_sparse_and_dense_writes(monkeypatch, density, sparse):
    """``W <- W_0 - lr E^T X``: through a sparse E^T when few post factors are nonzero, a dense GEMM
    otherwise; both equal the equation."""
    import neurolearn.plasticity.base as base
    from neurolearn.plasticity.base import DeferredLayer, LowRankUpdate

    calls = []
    real = base.rows_as_csr
    monkeypatch.setattr(base, "rows_as_csr", lambda A: calls.append(1) or real(A))
    torch.manual_seed(1)
    layer = nn.Linear(50, 400)
    W0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    X = torch.rand(64, 50)
    E = torch.randn(64, 400) * (torch.rand(64, 400) < density)
    d = DeferredLayer(layer, 0.1, X)
    for r in range(0, 64, 16):
        d.drive(X[r:r + 16])
        d.add(LowRankUpdate(post=E[r:r + 16], pre=X[r:r + 16]))
    d.flush()
    assert bool(calls) == sparse
    assert torch.allclose(layer.weight, W0 - 0.1 * E.T @ X, atol=1e-5)
    assert torch.allclose(layer.bias, b0 - 0.1 * E.sum(0), atol=1e-5)
