"""Contrastive Hebbian rule of equilibrium propagation.

    g_ij = -1 / (beta B) * sum_b [ rho(s_i^beta) rho(s_j^beta) - rho(s_i^0) rho(s_j^0) ]     (weights)
    g_i  = -1 / (beta B) * sum_b [ rho(s_i^beta) - rho(s_i^0) ]                             (biases)

``s^0`` is the free equilibrium, ``s^beta`` the nudged one, ``rho`` the activation (hardsigmoid).
Scellier & Bengio 2017, Eq. 11 (and Liu et al. 2024, who train the self-defined target with it);
with the symmetric estimator of Laborieux et al. 2021 the two phases are ``+beta`` and ``-beta`` and
the factor is ``1 / (2 beta B)``. Weight change ``dW = -lr g``. Locality: pre and post activity of the
same sample in two phases; samples independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..locality.contract import Cells, Checkable, Contract, Layer, StateSpec, Weight
from ..describe import Description, register
from .base import LowRankUpdate

CHL_CONTRACT = Contract("ContrastiveHebbian", allows={"pre", "post"})


@register("rule", "contrastive_hebbian")
@dataclass(frozen=True)
class ContrastiveHebbian(Description):
    """Contrastive Hebbian learning from two phases (see module docstring)."""

    contract: Contract = CHL_CONTRACT

    @staticmethod
    def factors(
        pre_a: torch.Tensor, post_a: torch.Tensor, pre_b: torch.Tensor, post_b: torch.Tensor, scale: float
    ) -> LowRankUpdate:
        """``g = -scale (post_a^T pre_a - post_b^T pre_b)`` as stacked factors (one GEMM of depth 2B).

        ``a`` is the nudged (or +beta) phase, ``b`` the free (or -beta) phase; inputs are already
        passed through ``rho``; ``scale = 1 / (beta B)`` (or ``1 / (2 beta B)`` for the symmetric one).
        """
        if pre_a is pre_b:  # clamped input: the two phases share the pre activity, depth B suffices
            post, pre = (post_b - post_a) * scale, pre_a
        else:
            post = torch.cat([post_a * (-scale), post_b * scale], 0)
            pre = torch.cat([pre_a, pre_b], 0)
        return LowRankUpdate(post=post, pre=pre)  # bias: post.sum(0) = scale sum_b (post_b - post_a)

    @staticmethod
    def update(pre_a, post_a, pre_b, post_b, beta: float, mean: bool = True) -> torch.Tensor:
        """Pure function: the dense gradient for phases ``a`` (nudged) and ``b`` (free).

        ``scale = 1/(beta B)`` (batch mean, as in training) or ``1/beta`` with ``mean=False`` (sum of
        per-sample updates: the form the locality checker verifies, the 1/B being part of the LR).
        """
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta == 0 or beta != beta:
            raise ValueError(f"ContrastiveHebbian.update: beta must be a non-zero number (the nudging strength), got {beta!r}")
        scale = 1.0 / (beta * (pre_a.shape[0] if mean else 1))
        return ContrastiveHebbian.factors(pre_a, post_a, pre_b, post_b, scale).dense()

    def checkable(self, n_pre: int, n_post: int, beta: float = 0.2) -> Checkable:
        """The rule on one layer as a :class:`~neurolearn.locality.Checkable` (phases: free, nudged)."""
        spec = StateSpec(
            populations={"pre": n_pre, "post": n_post},
            layers=(Layer("W", post="post", pre="pre"),),
            entries={
                "pre_free": Cells("pre", "free"),
                "post_free": Cells("post", "free"),
                "pre_nudged": Cells("pre", "nudged"),
                "post_nudged": Cells("post", "nudged"),
                "W": Weight("W"),
            },
        )

        def fn(s):
            return {"W": self.update(s["pre_nudged"], s["post_nudged"], s["pre_free"], s["post_free"], beta, mean=False)}

        return Checkable("ContrastiveHebbian", spec, {"W": self.contract}, fn)
