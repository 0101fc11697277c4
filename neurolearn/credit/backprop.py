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

from dataclasses import dataclass, field

import torch

from ..describe import register
from ..locality.contract import Checkable, Contract, StateSpec
from ..locality.reference_steps import mlp_base
from ..networks.activations import activation, activation_derivative, times_derivative
from ..plasticity.base import apply_updates
from ..plasticity.delta import Delta
from .base import CreditMethod


def _contract(pathway: str) -> Contract:
    return Contract("Backprop", allows={"pre", "post", "neuron_signal"}, pathways=(pathway,))


@register("credit", "backprop")
@dataclass(frozen=True)
class Backprop(CreditMethod):
    """Backpropagation of the objective's error with autograd; weight change by the delta rule."""

    rule: Delta = field(default_factory=Delta)

    def step(self, net, x, objective, objective_state, state, optimizer, labels=None, generator=None) -> dict:
        """One training step on batch ``x``: forward with dropout, output error, hidden errors, update.

            e_L = dL/dy * m * f'(u_L);   e_l = autograd of u_L w.r.t. u_l seeded with e_L;   g_l = e_l^T h_{l-1}
        """
        rec = net.forward_train(x, generator, grad=True)
        y = rec.masked_output()
        out = objective.error(y.detach(), objective_state, rec.out_mask, labels)
        with torch.no_grad():
            grad = out.grad if rec.out_mask is None else out.grad * rec.out_mask  # dL/dh_L = dL/dy * m
            e = times_derivative(net.activation_of(net.n_layers - 1), grad, rec.currents[-1].detach())
        errors = [e]
        if net.n_layers > 1:  # hidden errors: autograd carries e_L back through the forward graph
            errors = list(torch.autograd.grad(rec.currents[-1], rec.currents[:-1], grad_outputs=e)) + errors
        apply_updates(optimizer, list(net.layers), [self.rule.factors(p, err) for p, err in zip(rec.pres, errors)])
        return {"loss": float(out.loss)}

    def checkable(self, sizes, pathway: str = "target", output_activation: str = "hardsigmoid",
                  hidden_activation: str = "relu") -> Checkable:
        """Backprop on an MLP of ``sizes`` written out as a pure function of recorded activities.

        State: ``x`` (input cells), ``u{l}`` (input current of population l, the post cell's own
        state), ``d`` (target delivered to the output cells through ``pathway``), ``W{l}`` (weights).
        ``g_l = e_l^T h_{l-1}`` with the errors of the module docstring (sum over samples).
        """
        sizes = tuple(sizes)
        L = len(sizes) - 1
        pops, layers, entries = mlp_base(sizes, pathway)
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
