"""What every plasticity rule shares: a weight gradient as local factors, and how an optimiser applies it.

Every rule in neurolearn produces, for a layer with weights ``W``, a gradient that is a sum of local
products of a post-synaptic and a pre-synaptic factor over samples and phases (and, for a
convolution, over positions: weight sharing),

    dense:  g = sum_r  a_r  b_r^T  =  A^T B,        A: (R, n_post),  B: (R, n_pre)

so a rule returns the two factors (:class:`~neurolearn.networks.layers.Factors`) and the layer's
registered operations turn them into the gradient (:mod:`neurolearn.networks.layers`). Applying it
with plain SGD is one fused step per layer (``W <- W - lr A^T B`` as ``torch.addmm_`` for a dense
layer: no dense gradient written and read back); with any other torch optimiser (Adam ...) the
gradient is written to ``W.grad`` and the optimiser steps as usual. The sign convention is that of
``.grad``: the weight change is ``-lr * g``.

A rule is a frozen description registered under kind ``"rule"`` (:func:`neurolearn.describe.register`)
with a pure update and a locality contract (``checkable``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..networks.layers import Factors, LowRankUpdate, ops

__all__ = ["Factors", "LowRankUpdate", "apply_updates", "plain_sgd"]


def plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """True for ``torch.optim.SGD`` without momentum, weight decay or maximize (``W <- W - lr g``)."""
    if type(optimizer) is not torch.optim.SGD:
        return False
    g = optimizer.param_groups
    return all(p.get("momentum", 0) == 0 and p.get("weight_decay", 0) == 0 and not p.get("maximize", False) for p in g)


def apply_updates(optimizer: torch.optim.Optimizer, layers: list[nn.Module], updates: list[Factors | None]) -> None:
    """Apply one update per layer: the layer's fused SGD step for plain SGD, else via ``.grad``.

    ``updates[l]`` belongs to ``layers[l]`` (``None`` leaves the layer unchanged). The learning rate
    of each weight is read from the optimiser's parameter groups, so LR schedulers act as usual.
    """
    if plain_sgd(optimizer):
        lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        with torch.no_grad():
            for layer, upd in zip(layers, updates):
                if upd is None:
                    continue
                if id(layer.weight) not in lr_of:
                    raise ValueError("apply_updates: a layer's weight is not among the optimizer's parameters")
                lr_b = lr_of.get(id(layer.bias), 0.0) if layer.bias is not None else 0.0
                ops(layer).sgd(layer, upd, lr_of[id(layer.weight)], lr_b)
        return
    optimizer.zero_grad(set_to_none=False)
    for layer, upd in zip(layers, updates):
        if upd is None:
            continue
        layer.weight.grad = ops(layer).gradient(layer, upd)
        if layer.bias is not None:
            layer.bias.grad = upd.bias
    optimizer.step()
