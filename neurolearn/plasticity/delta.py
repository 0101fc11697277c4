"""The delta rule: a synapse changes by its post cell's error times its pre cell's activity.

    g_ij = sum_b  e_bi x_bj        (weight change  dW_ij = -lr g_ij)
    g_i  = sum_b  e_bi              (bias)

with ``e_i = dL/du_i`` the error delivered to post cell ``i`` (Widrow & Hoff 1960; the last layer of
backprop; Liu et al. 2024 with the self-defined target, where ``e_i = (y_i - d_i) f'(u_i)``, the
target ``d`` being delivered by the KWTA circuit). Locality: ``pre``, ``neuron_signal`` (the error),
samples independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..locality.contract import Cells, Checkable, Contract, Layer, Signal, StateSpec, Weight
from ..describe import Description, register
from .base import LowRankUpdate

#: the contract of the delta rule: the error arrives at the post cell through a declared pathway
DELTA_CONTRACT = Contract("Delta", allows={"pre", "post", "neuron_signal"}, pathways=("error",))


@register("rule", "delta")
@dataclass(frozen=True)
class Delta(Description):
    """Delta rule ``g = e^T x`` (see module docstring). Stateless; no parameters."""

    contract: Contract = DELTA_CONTRACT

    @staticmethod
    def factors(pre: torch.Tensor, error: torch.Tensor) -> LowRankUpdate:
        """The gradient as factors: ``post = e (B, n_post)``, ``pre = x (B, n_pre)`` (bias: ``sum_b e``).

        For a convolutional layer ``e`` is the error map ``(B, C_out, H', W')`` and ``x`` the input map
        ``(B, C_in, H, W)``: the layer's operations sum the same local product ``e_o(p) x_c(p + k)`` over
        the positions ``p`` (:mod:`neurolearn.networks.layers`)."""
        if pre.ndim != error.ndim or pre.ndim not in (2, 4) or pre.shape[0] != error.shape[0]:
            raise ValueError(
                "Delta: pre and error must be (batch, n) -- or maps (batch, channels, height, width) -- with the "
                f"same batch, got {tuple(pre.shape)} and {tuple(error.shape)}"
            )
        return LowRankUpdate(post=error, pre=pre)

    @staticmethod
    def update(pre: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        """Pure function: ``g_ij = sum_b e_bi x_bj`` as a dense ``(n_post, n_pre)`` tensor."""
        return Delta.factors(pre, error).dense()

    def checkable(self, n_pre: int, n_post: int) -> Checkable:
        """The rule as a :class:`~neurolearn.locality.Checkable` on one layer ``W: pre -> post``."""
        spec = StateSpec(
            populations={"pre": n_pre, "post": n_post},
            layers=(Layer("W", post="post", pre="pre"),),
            entries={"x": Cells("pre"), "e": Signal("post", "error"), "W": Weight("W")},
        )
        return Checkable("Delta", spec, {"W": self.contract}, lambda s: {"W": Delta.update(s["x"], s["e"])})
