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
