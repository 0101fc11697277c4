"""What a credit-assignment method is: a way to deliver an error to every synapse.

A credit-assignment method (``Backprop``, ``EquilibriumProp`` ...) is a frozen, validated
configuration with one training entry point,

    step(net, x, objective, state, optimizer, labels=None, generator=None) -> {"loss": ...}

which runs the network on a batch, asks the objective for its target (updating the objective's state,
e.g. the homeostatic thresholds), turns the result into one :class:`~neurolearn.plasticity.LowRankUpdate`
per layer through its plasticity rule, and applies them with the optimiser; and one checking entry
point, ``checkable(sizes)``, which exposes the same per-layer update as a pure function of the
recorded cell activities and weights for the locality checker (:mod:`neurolearn.locality`).
"""

from __future__ import annotations

import torch


def mse(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``L = 1/(B n) sum (y - d)^2`` -- the loss of Liu et al. 2024, Eq. 3 (mean reduction)."""
    return ((y - d) ** 2).mean()
