"""Supervised target: the one-hot label, optionally smoothed.

    d_bi = (1 - alpha) [i = label_b] + alpha / n          (Pereyra et al. 2017 smoothing; alpha = 0: one-hot)
    L = 1/(B n) sum_b sum_i (y_bi - d_bi)^2               (mean squared error, as the self-defined target)

The same network then trains supervised (Liu et al. 2024 compare against it) with the same credit
assignment and plasticity as the unsupervised target; the target is a ``neuron_signal`` delivered
to each output cell through the pathway ``"target"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..describe import param, register
from .base import TargetObjective


@register("objective", "supervised")
@dataclass(frozen=True)
class SupervisedTarget(TargetObjective):
    """One-hot (optionally smoothed) label target for the output cells (see module docstring)."""

    smoothing: float = param(0.0, low=0.0, high=1.0, high_open=True, help="label smoothing alpha")

    needs_labels = True
    pathway = "target"

    def init_state(self, n_out: int, output_dropout: float = 0.0):
        """No state: the target is the label."""
        return None

    def on_epoch_start(self, state) -> None:
        """Nothing to reset."""
        pass

    @torch.no_grad()
    def decide(self, y: torch.Tensor, state=None, mask: torch.Tensor | None = None, labels=None) -> torch.Tensor:
        """One-hot target of ``labels (B,)`` for outputs ``y (B, n)``; classes must be < n."""
        if labels is None:
            raise ValueError("SupervisedTarget: labels are required (the dataset has none for this batch)")
        n = y.shape[1]
        if labels.max().item() >= n:
            raise ValueError(f"SupervisedTarget: labels must be < the number of output cells ({n}), got {labels.max().item()}")
        d = torch.nn.functional.one_hot(labels.long(), n).to(y.dtype)
        if self.smoothing:
            d = (1 - self.smoothing) * d + self.smoothing / n
        if mask is not None:
            d = d * mask
        return d
