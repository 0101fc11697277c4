"""Activation functions of rate cells and their derivatives (the chain rule through a cell's nonlinearity).

    relu(u) = max(0, u)          hardsigmoid(u) = clamp(u, 0, 1)      sigmoid(u) = 1 / (1 + e^-u)
    identity(u) = u              tanh(u)                              hardtanh(u) = clamp(u, -1, 1)

hardsigmoid is the rate function of the networks of Liu et al. 2024 (output cells; every cell of the
bidirectional network of equilibrium propagation, Scellier & Bengio 2017); ReLU their hidden cells.
tanh is the nonlinearity of Tang et al. 2022's E-MNIST3 and DTP encoders, hardtanh of their CONV6.

Each activation is one registered entry (:func:`register_activation`): the rate function, its
derivative, and optionally a fused ``grad * f'(u)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .._validate import ParameterError


@dataclass(frozen=True)
class Activation:
    """A rate function ``f``, its derivative ``df`` (``f'(u)``) and ``times`` (``grad * f'(u)``, fused where possible)."""

    f: Callable
    df: Callable
    times: Callable | None = None


_ACTIVATIONS: dict[str, Activation] = {}


def register_activation(name: str, act: Activation) -> None:
    """Register an activation under ``name`` (recipes' ``hidden_activation`` / ``output_activation``)."""
    _ACTIVATIONS[name] = act


def _get(name: str) -> Activation:
    try:
        return _ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ParameterError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {name!r}") from None


def _sigmoid_derivative(u):
    s = torch.sigmoid(u)
    return s * (1 - s)


register_activation("relu", Activation(torch.relu, lambda u: (u > 0).to(u.dtype),
                                       lambda g, u: torch.ops.aten.threshold_backward(g, u, 0.0)))
register_activation("hardsigmoid", Activation(lambda u: u.clamp(0.0, 1.0), lambda u: ((u > 0) & (u < 1)).to(u.dtype),
                                              lambda g, u: torch.ops.aten.hardtanh_backward(g, u, 0.0, 1.0)))
register_activation("sigmoid", Activation(torch.sigmoid, _sigmoid_derivative))
register_activation("identity", Activation(lambda u: u, torch.ones_like, lambda g, u: g))
register_activation("tanh", Activation(torch.tanh, lambda u: 1 - torch.tanh(u) ** 2))
register_activation("hardtanh", Activation(lambda u: u.clamp(-1.0, 1.0), lambda u: ((u > -1) & (u < 1)).to(u.dtype),
                                           lambda g, u: torch.ops.aten.hardtanh_backward(g, u, -1.0, 1.0)))

#: the registered activation names (at import of the built-ins)
ACTIVATIONS = tuple(_ACTIVATIONS)


def activation(name: str, u: torch.Tensor) -> torch.Tensor:
    """``relu: max(0, u)``, ``hardsigmoid: clamp(u, 0, 1)``, ``sigmoid: 1/(1+e^-u)``, ``identity: u``,
    ``tanh: tanh(u)``, ``hardtanh: clamp(u, -1, 1)``."""
    return _get(name).f(u)


def activation_derivative(name: str, u: torch.Tensor) -> torch.Tensor:
    """``f'(u)``: relu ``[u > 0]``, hardsigmoid ``[0 < u < 1]``, sigmoid ``s(1-s)``, identity 1,
    tanh ``1 - tanh(u)^2``, hardtanh ``[-1 < u < 1]``.

    The kinks of relu, hardsigmoid and hardtanh count as slope 0 (as autograd's ``relu`` and ``hardtanh`` do).
    """
    return _get(name).df(u)


def times_derivative(name: str, grad: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``grad * f'(u)`` in one pass (the error of a cell's input current, chain rule through ``f``).

    relu: ``grad [u > 0]``, hardsigmoid: ``grad [0 < u < 1]``, hardtanh: ``grad [-1 < u < 1]`` (the kinks
    count as slope 0, as in ``activation_derivative``), identity: ``grad``; others ``grad * f'(u)``.
    relu, hardsigmoid and hardtanh use PyTorch's fused threshold/hardtanh backward kernels: one elementwise
    pass instead of a comparison to bool and a masked fill.
    """
    act = _get(name)
    return act.times(grad, u) if act.times is not None else grad * act.df(u)
