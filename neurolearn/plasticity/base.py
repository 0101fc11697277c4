"""What every plasticity rule shares: a low-rank weight gradient and how an optimiser applies it.

Every rule in neurolearn produces, for a layer with weights ``W`` of shape ``(n_post, n_pre)``, a
gradient that is a sum of outer products over samples (and phases),

    g = sum_r  a_r  b_r^T  =  A^T B,        A: (R, n_post),  B: (R, n_pre),

so the rule returns the two factors (:class:`LowRankUpdate`) instead of the dense matrix. Applying
it with plain SGD is then one fused matrix product ``W <- W - lr A^T B`` (``torch.addmm_``): no dense
gradient is written and read back, which is what makes the one-layer rules memory-bound no more.
With any other torch optimiser (Adam ...) the dense gradient is written to ``W.grad`` and the
optimiser steps as usual. The sign convention is that of ``.grad``: the weight change is ``-lr * g``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LowRankUpdate:
    """Gradient ``g_W = post^T @ pre`` (and ``g_b = bias``) for one layer.

    ``post``: ``(R, n_post)``, ``pre``: ``(R, n_pre)``, ``bias``: ``(n_post,)`` or ``None``.
    """

    post: torch.Tensor
    pre: torch.Tensor
    bias: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        """The dense gradient ``post^T @ pre`` of shape ``(n_post, n_pre)``."""
        return self.post.T @ self.pre


def _plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    if type(optimizer) is not torch.optim.SGD:
        return False
    g = optimizer.param_groups
    return all(p.get("momentum", 0) == 0 and p.get("weight_decay", 0) == 0 and not p.get("maximize", False) for p in g)


def apply_updates(
    optimizer: torch.optim.Optimizer, layers: list[nn.Linear], updates: list[LowRankUpdate | None]
) -> None:
    """Apply one update per layer: fused ``W.addmm_(-lr A^T B)`` for plain SGD, else via ``.grad``.

    ``updates[l]`` belongs to ``layers[l]`` (``None`` leaves the layer unchanged). The learning rate
    of each weight is read from the optimiser's parameter groups, so LR schedulers act as usual.
    """
    if _plain_sgd(optimizer):
        lr_of = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                lr_of[id(p)] = group["lr"]
        with torch.no_grad():
            for layer, upd in zip(layers, updates):
                if upd is None:
                    continue
                if id(layer.weight) not in lr_of:
                    raise ValueError("apply_updates: a layer's weight is not among the optimizer's parameters")
                layer.weight.addmm_(upd.post.T, upd.pre, alpha=-lr_of[id(layer.weight)])
                if layer.bias is not None and upd.bias is not None:
                    layer.bias.add_(upd.bias, alpha=-lr_of[id(layer.bias)])
        return
    optimizer.zero_grad(set_to_none=False)
    for layer, upd in zip(layers, updates):
        if upd is None:
            continue
        layer.weight.grad = upd.dense()
        if layer.bias is not None:
            layer.bias.grad = upd.bias if upd.bias is not None else torch.zeros_like(layer.bias)
    optimizer.step()
