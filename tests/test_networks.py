"""Activations, their derivatives and dropout masks of the fully connected networks."""

import pytest
import torch

from neurolearn.networks.mlp import ACTIVATIONS, activation, activation_derivative, keep_mask, times_derivative


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_times_derivative_is_grad_times_slope(name):
    """``times_derivative(f, g, u) = g f'(u)``, and f' is autograd's slope of ``f`` (kinks: slope 0)."""
    torch.manual_seed(0)
    u = torch.randn(7, 9) * 2
    u[0, :4] = torch.tensor([0.0, 1.0, -0.0, -1.0])  # the kinks of relu, hardsigmoid and hardtanh
    g = torch.randn(7, 9)
    out = times_derivative(name, g, u)
    assert torch.allclose(out, g * activation_derivative(name, u), atol=1e-6)
    v = u.clone().requires_grad_(True)
    f = {"relu": torch.relu, "hardsigmoid": lambda t: torch.nn.functional.hardtanh(t, 0.0, 1.0),
         "sigmoid": torch.sigmoid, "identity": lambda t: t * 1.0, "tanh": torch.tanh,
         "hardtanh": torch.nn.functional.hardtanh}[name]
    assert torch.allclose(f(v), activation(name, u))
    (grad,) = torch.autograd.grad(f(v), v, g)
    assert torch.allclose(out, grad, atol=1e-6)
    if name in ("relu", "hardsigmoid", "hardtanh", "tanh"):  # the opposite case: a slope of 1 where the cell is clamped is wrong
        assert not torch.allclose(out, g)


def test_times_derivative_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        times_derivative("softsign", torch.ones(2), torch.ones(2))


def test_keep_mask_is_bernoulli():
    g = torch.Generator().manual_seed(0)
    m = keep_mask((400, 500), 0.7, g)
    assert m.dtype == torch.float32 and set(m.unique().tolist()) == {0.0, 1.0}
    assert abs(m.mean().item() - 0.7) < 0.005
    # reproducible from the generator's seed, different for another seed
    assert torch.equal(keep_mask((10, 11), 0.25, torch.Generator().manual_seed(3)),
                       keep_mask((10, 11), 0.25, torch.Generator().manual_seed(3)))
    assert not torch.equal(keep_mask((10, 11), 0.25, torch.Generator().manual_seed(3)),
                           keep_mask((10, 11), 0.25, torch.Generator().manual_seed(4)))
    # independent entries: neighbours (in the 16-bit words it is drawn from) are uncorrelated
    m = keep_mask((200_000,), 0.5, torch.Generator().manual_seed(1))
    c = torch.corrcoef(torch.stack([m[:-1], m[1:]]))[0, 1]
    assert abs(c) < 0.01
    assert keep_mask((5, 5), 1.0).eq(1).all()
