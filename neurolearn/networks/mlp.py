"""Fully connected networks whose weights live in plain ``torch.nn.Linear`` modules.

    h_0 = x,   u_l = W_l h_{l-1} + b_l,   h_l = f_l(u_l)     (l = 1 .. L)

``f`` is ReLU on hidden layers and hardsigmoid ``clamp(u, 0, 1)`` on the output for backprop
(Liu et al. 2024, appendix 6.6.1), hardsigmoid everywhere for equilibrium propagation (where the
same weights define the bidirectional network, see :mod:`neurolearn.networks.bidirectional`).
Initialisation as the authors' code: xavier-uniform with gain 0.5, zero biases.

Dropout, per population of cells (input, hidden..., output), as in the paper: ordinary (scaled)
dropout on the input and hidden cells; on the output an *unscaled* Bernoulli(1 - p) mask that the
objective applies to both the output and its target (REFERENCES.md, Liu section).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._validate import ParameterError, check_choice, check_float, check_int

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


def keep_mask(shape, keep: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Bernoulli(``keep``) mask of 0/1 floats, drawn four 16-bit numbers per random 64-bit word.

    The probability is quantised to 1/65536, four times fewer random draws than ``bernoulli_``
    (which dominates the cost of a one-layer training step otherwise). The words are drawn on the
    generator's device and moved to ``device``.
    """
    n = 1
    for s in shape:
        n *= s
    words = (n + 3) // 4
    where = generator.device if generator is not None else device
    raw = torch.randint(-(2**63), 2**63 - 1, (words,), dtype=torch.int64, generator=generator, device=where)
    if device is not None and raw.device != torch.device(device):
        raw = raw.to(device)  # the same draws on every device: the mask does not depend on where it is used
    u16 = raw.view(torch.int16)[:n].view(shape)
    threshold = int(round(keep * 65536)) - 32768  # int16 is uniform on [-32768, 32767]
    # [u16 < threshold] as clamp(threshold - u16, 0, 1): the operands are integers, so the result is
    # exactly 0 or 1, and float arithmetic runs three times faster here than a comparison to bool
    return u16.to(torch.float32).sub_(threshold).neg_().clamp_(0.0, 1.0)


class MLP(nn.Module):
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]`` (see module docstring).

    Parameters
    ----------
    sizes: number of cells per population, input first (e.g. ``(784, 2000)`` or ``(784, 2000, 2000)``).
    hidden_activation, output_activation: one of :data:`ACTIVATIONS`.
    dropout: one probability per population (input, hidden..., output), each in ``[0, 1)``.
    init_gain: gain of the xavier-uniform initialisation (0.5 in the authors' code).
    seed: seed of the initialisation (``None``: torch's global generator).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        hidden_activation: str = "relu",
        output_activation: str = "hardsigmoid",
        dropout: Sequence[float] | None = None,
        init_gain: float = 0.5,
        bias: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ParameterError(f"MLP: sizes must list at least 2 populations (input, output), got {sizes}")
        for i, n in enumerate(sizes):
            check_int("MLP", f"sizes[{i}]", n, 1)
        self.sizes = sizes
        self.hidden_activation = check_choice("MLP", "hidden_activation", hidden_activation, ACTIVATIONS)
        self.output_activation = check_choice("MLP", "output_activation", output_activation, ACTIVATIONS)
        dropout = tuple(dropout) if dropout is not None else (0.0,) * len(sizes)
        if len(dropout) != len(sizes):
            raise ParameterError(
                f"MLP: dropout must give one probability per population ({len(sizes)}: input, hidden..., output), got {dropout}"
            )
        self.dropout = tuple(check_float("MLP", f"dropout[{i}]", p, 0.0, 1.0, high_open=True) for i, p in enumerate(dropout))
        check_float("MLP", "init_gain", init_gain, 0.0, low_open=True)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for layer in self.layers:
                bound = init_gain * (6.0 / (layer.in_features + layer.out_features)) ** 0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                if layer.bias is not None:
                    layer.bias.zero_()

    @property
    def n_layers(self) -> int:
        """Number of synaptic layers (``len(sizes) - 1``)."""
        return len(self.layers)

    def activation_of(self, l: int) -> str:
        """Activation name of population ``l + 1`` (the output of layer ``l``)."""
        return self.output_activation if l == self.n_layers - 1 else self.hidden_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output rates without dropout: ``f_L(W_L ... f_1(W_1 x + b_1) ... + b_L)``."""
        return self.forward_all(x)[-1]

    def forward_all(self, x: torch.Tensor, generator: torch.Generator | None = None, train: bool = False):
        """All populations' activities ``[h_0, ..., h_L]``; with ``train=True``, scaled dropout on
        input/hidden cells (the returned ``h_l`` are the dropped-out, rescaled activities that feed
        the next layer; the output is returned without its unscaled mask, see :meth:`output_mask`)."""
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"MLP: x must have shape (batch, {self.sizes[0]}), got {tuple(x.shape)}")
        hs = [self._drop(x, 0, generator) if train else x]
        for l, layer in enumerate(self.layers):
            h = activation(self.activation_of(l), layer(hs[-1]))
            if train and l < self.n_layers - 1:
                h = self._drop(h, l + 1, generator)
            hs.append(h)
        return hs

    def output_mask(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor | None:
        """The unscaled Bernoulli(1 - p_out) output mask for one batch, or ``None`` when p_out = 0."""
        p = self.dropout[-1]
        if p == 0:
            return None
        return keep_mask((batch, self.sizes[-1]), 1 - p, generator, device)

    def _drop(self, h: torch.Tensor, pop: int, generator) -> torch.Tensor:
        p = self.dropout[pop]
        if p == 0:
            return h
        return h * keep_mask(h.shape, 1 - p, generator, h.device) * (1.0 / (1 - p))
