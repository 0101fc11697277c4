"""Feedback alignment as a credit method written outside the library, in this one file.

Lillicrap, Cownden, Tweed & Akerman 2016 (Nature Communications 7:13276): the error reaches hidden
cells through fixed random matrices ``B`` instead of the transposed forward weights,

    e_L = dL/dy * m * f'(u_L)                          (output error, m: output dropout mask)
    e_l = (e_{l+1} B_{l+1}) * r_l * f'(u_l)            (B_{l+1} fixed, drawn like W_{l+1}; r_l: dropout mask)
    g_l = e_l^T h_{l-1}                                (delta rule at every layer)

so no synapse reads another layer's weights. ``B`` is the method's state: drawn once from the run's
"credit" stream, checkpointed and restored by the trainer (``--resume`` continues with the same ``B``).

Use it from a recipe (``plugins = ["feedback_alignment.py"]`` and ``[credit] type = "feedback_alignment"``;
see ``fa_digits.toml`` beside this file) or from Python::

    import feedback_alignment                     # registers "feedback_alignment"
    Trainer(net, SelfDefinedTarget(k=5), feedback_alignment.FeedbackAlignment(), {"epochs": 5}).fit(x)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from neurolearn._validate import ParameterError
from neurolearn.credit import CreditMethod
from neurolearn.describe import param, register
from neurolearn.locality import Cells, Checkable, Contract, Fixed, Layer, Signal, StateSpec, Weight
from neurolearn.networks import activation, activation_derivative, ops, times_derivative
from neurolearn.plasticity import Delta, apply_updates


@register("credit", "feedback_alignment")
@dataclass(frozen=True)
class FeedbackAlignment(CreditMethod):
    """Feedback alignment (Lillicrap et al. 2016): errors sent down through fixed random ``B`` (module docstring)."""

    scale: float = param(1.0, low=0.0, low_open=True, help="B uniform in +-scale * W's xavier bound")
    rule: Delta = field(default_factory=Delta)

    def init_state(self, net, generator=None) -> dict:
        """``B{l}`` for every layer above the first, shaped like ``W_l``, uniform in ``+-scale * bound``."""
        state = {}
        for l in range(1, net.n_layers):
            W = net.layers[l].weight
            bound = self.scale * (6.0 / (W.shape[0] + W.shape[1])) ** 0.5
            state[f"B{l}"] = (torch.rand(W.shape, generator=generator, dtype=W.dtype) * 2 - 1) * bound
        return state

    def check_setup(self, net, objective, optimizer: str = "sgd") -> None:
        """Dense layers only (this example sends errors down through dense matrices)."""
        if not getattr(net, "dense_only", False):
            raise ParameterError("FeedbackAlignment: this example takes dense networks only")

    def step(self, net, x, objective, objective_state, state, optimizer, labels=None, generator=None) -> dict:
        """Forward with dropout, output error, errors sent down through ``B``, delta rule everywhere."""
        rec = net.forward_train(x, generator)
        out = objective.error(rec.masked_output(), objective_state, rec.out_mask, labels)
        grad = out.grad if rec.out_mask is None else out.grad * rec.out_mask
        L = net.n_layers
        e = times_derivative(net.activation_of(L - 1), grad, rec.currents[-1])
        errors = [e]
        for l in range(L - 1, 0, -1):  # e_{l-1} = (e_l B_l) * r * f'(u_{l-1})
            layer = net.layers[l]
            e = ops(layer).send_down(layer, e, weight=state[f"B{l}"])
            if rec.masks[l] is not None:
                e = e * rec.masks[l]
            e = times_derivative(net.activation_of(l - 1), e, rec.currents[l - 1])
            errors.insert(0, e)
        apply_updates(optimizer, list(net.layers), [self.rule.factors(p, err) for p, err in zip(rec.pres, errors)])
        return {"loss": float(out.loss)}

    def checkable(self, sizes, pathway="target", output_activation="hardsigmoid", hidden_activation="relu"):
        """The step as a pure function: ``B{l}`` are :class:`~neurolearn.locality.Fixed` matrices delivered
        through the pathways ``"feedback B{l}"`` that each hidden layer's contract declares."""
        sizes = tuple(sizes)
        L = len(sizes) - 1
        layers = tuple(Layer(f"W{l}", post=f"p{l}", pre=f"p{l - 1}") for l in range(1, L + 1))
        entries = {"x": Cells("p0"), "d": Signal(f"p{L}", pathway)}
        for l in range(1, L + 1):
            entries[f"u{l}"] = Cells(f"p{l}", "current")
            entries[f"W{l}"] = Weight(f"W{l}")
        for l in range(2, L + 1):
            entries[f"B{l}"] = Fixed(f"feedback B{l}", post=f"p{l}", pre=f"p{l - 1}")
        spec = StateSpec({f"p{i}": n for i, n in enumerate(sizes)}, layers, entries)
        contracts = {f"W{l}": Contract(f"FeedbackAlignment W{l}", allows={"pre", "post", "neuron_signal"},
                                       pathways=(pathway,) + tuple(f"feedback B{m}" for m in range(l + 1, L + 1)))
                     for l in range(1, L + 1)}

        def act(l):
            return output_activation if l == L else hidden_activation

        def fn(s):
            h = [s["x"]] + [activation(act(l), s[f"u{l}"]) for l in range(1, L + 1)]
            e = (h[L] - s["d"]) * activation_derivative(act(L), s[f"u{L}"])
            out = {}
            for l in range(L, 0, -1):
                out[f"W{l}"] = self.rule.update(h[l - 1], e)
                if l > 1:
                    e = (e @ s[f"B{l}"]) * activation_derivative(act(l - 1), s[f"u{l - 1}"])
            return out

        return Checkable(f"FeedbackAlignment ({L} layer{'s' if L > 1 else ''})", spec, contracts, fn)
