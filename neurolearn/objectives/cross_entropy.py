"""Softmax cross-entropy on the network's outputs with the labels: a supervised classifier's objective.

    p_bc = softmax(y_b)_c = exp(y_bc) / sum_k exp(y_bk)
    L    = -1/B sum_b log p_{b, label_b}                          (mean over the batch)
    dL/dy_bc = (p_bc - [c = label_b]) / B

The "Supervised (CNN on MNIST)" row of Tang, Yang & Amit 2022 Table 4 (METHODS.md A10: E-MNIST3 plus
Linear(1152 -> 10), identity output, Adam 1e-3, no augmentation). The output cells read their error
``p - onehot`` through the pathway ``"error"``; the softmax normalises over the output layer (a
layer-wide quantity, as for any classifier trained this way). With an output dropout mask ``m`` the
masked cells' gradients are zeroed (the loss sees the masked outputs ``y * m``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..describe import register
from .base import Objective, OutputError


@register("objective", "cross_entropy")
@dataclass(frozen=True)
class CrossEntropy(Objective):
    """Softmax cross-entropy with the labels on the outputs (see module docstring); no parameters."""

    needs_labels = True
    pathway = "error"

    def error(self, y: torch.Tensor, state=None, mask: torch.Tensor | None = None, labels=None) -> OutputError:
        """``L = -1/B sum_b log softmax(y_b)_{label_b}`` and ``dL/dy = (softmax(y) - onehot(labels)) / B``."""
        if labels is None:
            raise ValueError("CrossEntropy: labels are required (fit(x, labels))")
        if y.ndim != 2 or labels.shape != (y.shape[0],):
            raise ValueError(f"CrossEntropy: y must be (batch, classes) and labels (batch,), got {tuple(y.shape)} and "
                             f"{tuple(labels.shape)}")
        n = y.shape[1]
        if labels.numel() and (labels.min().item() < 0 or labels.max().item() >= n):
            raise ValueError(f"CrossEntropy: labels must be in [0, {n}) (the output cells), got "
                             f"[{labels.min().item()}, {labels.max().item()}]")
        logp = torch.log_softmax(y, 1)
        onehot = torch.nn.functional.one_hot(labels.long(), n).to(y.dtype)
        B = y.shape[0]
        loss = -(logp * onehot).sum() / B
        grad = (logp.exp() - onehot) / B
        return OutputError(loss=loss, grad=grad if mask is None else grad * mask)
