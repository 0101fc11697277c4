"""Backpropagation: the error reaches hidden cells through the transposed forward weights.

    e_L = dL/du_L = 2/(B n) (y - d) * m * f'(u_L)                 (output error, m: output dropout mask)
    e_l = dL/du_l = (e_{l+1} W_{l+1}) * f'(u_l) * r_l              (r_l: scaled dropout mask of h_l)
    g_l = e_l^T h_{l-1}                                             (delta rule at every layer)

Rumelhart, Hinton & Williams 1986; the baseline credit assignment of Liu et al. 2024 and Tang et al.
2022. In training the output error is the closed-form derivative of the MSE and the hidden errors
``e_l`` come from autograd (``torch.autograd.grad`` of the output current with respect to each
hidden layer's current, seeded with ``e_L``: the chain rule through the forward graph, dropout masks
included); the weight change is the :class:`Delta` rule applied with those errors, one fused GEMM per
layer. Autograd never computes a dense weight
gradient. For the locality checker the same rule is written out (:meth:`Backprop.checkable`):
``e_l`` reads ``W_{l+1}`` -- weight transport -- so backprop is non-local for two layers or more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..locality.contract import Cells, Checkable, Contract, Layer, Signal, StateSpec, Weight
from ..networks.mlp import MLP, activation, activation_derivative, times_derivative
from ..plasticity.base import apply_updates
from ..plasticity.delta import Delta
from .base import mse


def _contract(pathway: str) -> Contract:
    return Contract("Backprop", allows={"pre", "post", "neuron_signal"}, pathways=(pathway,))


@dataclass(frozen=True)
class Backprop:
    """Backpropagation of the objective's error with autograd; weight change by the delta rule."""

    rule: Delta = Delta()

    @torch.no_grad()
    def respond(self, net: MLP, x: torch.Tensor) -> torch.Tensor:
        """Output of the trained feed-forward network (no dropout): ``net(x)``."""
        return net(x)

    def step(self, net: MLP, x, objective, state, optimizer, labels=None, generator=None, defer=None,
             out_mask=None) -> dict:
        """One training step on batch ``x``: forward with dropout, target, errors, fused update.

        With ``defer`` (a :class:`~neurolearn.plasticity.base.DeferredLayer`, one-layer networks)
        ``x`` is already dropped out, its current comes from ``defer``, the output mask is ``out_mask``
        (drawn for the block) and the update is recorded in ``defer``.
        """
        pres, currents = [], []
        L = net.n_layers
        h = x if defer is not None else net._drop(x, 0, generator)
        for l, layer in enumerate(net.layers):
            pres.append(h.detach())
            if defer is not None:
                u = defer.drive(h)
            else:
                bias = layer.bias.detach() if layer.bias is not None else None
                u = torch.nn.functional.linear(h, layer.weight.detach(), bias)
            if l == 0 and L > 1:
                u.requires_grad_(True)  # the graph starts at the first current (no weight gradients)
            currents.append(u)
            h = activation(net.activation_of(l), u)
            if l < L - 1:
                h = net._drop(h, l + 1, generator)
        mask = out_mask if defer is not None else net.output_mask(x.shape[0], generator, x.device)
        h_out = h.detach()
        y = h if mask is None else h * mask
        d = objective.decide(y.detach(), state, mask, labels)
        with torch.no_grad():
            diff = y.detach() - d  # zero where the output is dropped: y and d are both masked
            flat = diff.view(-1)
            n = flat.numel()
            loss = torch.dot(flat, flat).item() / n
            # output error: dL/du_L = 2/(B n) (y - d) f'(u) of the MSE in closed form (tested equal to autograd)
            e = times_derivative(net.activation_of(L - 1), diff, currents[-1].detach())
            if defer is not None and L == 1:  # the constant goes with the copy into the block buffer
                defer.add(self.rule.factors(pres[0], e), 2.0 / n)
                return {"loss": loss}
            e.mul_(2.0 / n)
        errors = [e]
        if L > 1:  # hidden errors: autograd carries e_L back through the forward graph
            errors = list(torch.autograd.grad(currents[-1], currents[:-1], grad_outputs=e)) + errors
        updates = [self.rule.factors(pre, err) for pre, err in zip(pres, errors)]
        if defer is not None:
            defer.add(updates[0])
        else:
            apply_updates(optimizer, list(net.layers), updates)
        return {"loss": loss}

    def checkable(self, sizes, pathway: str = "target", output_activation: str = "hardsigmoid",
                  hidden_activation: str = "relu") -> Checkable:
        """Backprop on an MLP of ``sizes`` written out as a pure function of recorded activities.

        State: ``x`` (input cells), ``u{l}`` (input current of population l, the post cell's own
        state), ``d`` (target delivered to the output cells through ``pathway``), ``W{l}`` (weights).
        ``g_l = e_l^T h_{l-1}`` with the errors of the module docstring (sum over samples).
        """
        sizes = tuple(sizes)
        L = len(sizes) - 1
        pops = {f"p{i}": n for i, n in enumerate(sizes)}
        layers = tuple(Layer(f"W{l}", post=f"p{l}", pre=f"p{l - 1}") for l in range(1, L + 1))
        entries = {"x": Cells("p0")}
        for l in range(1, L + 1):
            entries[f"u{l}"] = Cells(f"p{l}", "current")
            entries[f"W{l}"] = Weight(f"W{l}")
        entries["d"] = Signal(f"p{L}", pathway)
        spec = StateSpec(pops, layers, entries)

        def act(l):
            return output_activation if l == L else hidden_activation

        def fn(s):
            h = [s["x"]] + [activation(act(l), s[f"u{l}"]) for l in range(1, L + 1)]
            e = (h[L] - s["d"]) * activation_derivative(act(L), s[f"u{L}"])
            out = {}
            for l in range(L, 0, -1):
                out[f"W{l}"] = self.rule.update(h[l - 1], e)
                if l > 1:
                    e = (e @ s[f"W{l}"]) * activation_derivative(act(l - 1), s[f"u{l - 1}"])
            return out

        name = f"Backprop ({L} layer{'s' if L > 1 else ''})"
        return Checkable(name, spec, {ly.name: _contract(pathway) for ly in layers}, fn)
