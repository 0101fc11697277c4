"""Activation functions of rate cells and their derivatives (the chain rule through a cell's nonlinearity).

    relu(u) = max(0, u)      hardsigmoid(u) = clamp(u, 0, 1)      sigmoid(u) = 1 / (1 + e^-u)      identity(u) = u

hardsigmoid is the rate function of the networks of Liu et al. 2024 (output cells; every cell of the
bidirectional network of equilibrium propagation, Scellier & Bengio 2017); ReLU their hidden cells.
"""

from __future__ import annotations

import torch

from .._validate import ParameterError

ACTIVATIONS = ("relu", "hardsigmoid", "sigmoid", "identity")


def activation(name: str, u: torch.Tensor) -> torch.Tensor:
    """``relu: max(0, u)``, ``hardsigmoid: clamp(u, 0, 1)``, ``sigmoid: 1/(1+e^-u)``, ``identity: u``."""
    if name == "relu":
        return torch.relu(u)
    if name == "hardsigmoid":
        return u.clamp(0.0, 1.0)
    if name == "sigmoid":
        return torch.sigmoid(u)
    if name == "identity":
        return u
    raise ParameterError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def activation_derivative(name: str, u: torch.Tensor) -> torch.Tensor:
    """``f'(u)``: relu ``[u > 0]``, hardsigmoid ``[0 < u < 1]``, sigmoid ``s(1-s)``, identity 1.

    The kinks of relu and hardsigmoid count as slope 0 (as autograd's ``relu`` and ``hardtanh`` do).
    """
    if name == "relu":
        return (u > 0).to(u.dtype)
    if name == "hardsigmoid":
        return ((u > 0) & (u < 1)).to(u.dtype)
    if name == "sigmoid":
        s = torch.sigmoid(u)
        return s * (1 - s)
    if name == "identity":
        return torch.ones_like(u)
    raise ParameterError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def times_derivative(name: str, grad: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``grad * f'(u)`` in one pass (the error of a cell's input current, chain rule through ``f``).

    relu: ``grad [u > 0]``, hardsigmoid: ``grad [0 < u < 1]`` (the kinks count as slope 0, as in
    ``activation_derivative``), sigmoid: ``grad s(1 - s)``, identity: ``grad``.
    relu and hardsigmoid use PyTorch's fused threshold/hardtanh backward kernels: one elementwise pass
    instead of a comparison to bool and a masked fill.
    """
    if name == "relu":
        return torch.ops.aten.threshold_backward(grad, u, 0.0)
    if name == "hardsigmoid":
        return torch.ops.aten.hardtanh_backward(grad, u, 0.0, 1.0)
    if name == "sigmoid":
        return grad * activation_derivative(name, u)
    if name == "identity":
        return grad
    raise ParameterError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
