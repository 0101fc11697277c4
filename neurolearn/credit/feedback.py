"""Random feedback: errors sent down through fixed (or updated) random matrices instead of the forward weights.

Notation of Tang, Yang & Amit 2022 (Sec. 3, eqs. 9-10): ``h_l = W_l x_{l-1}`` (dense or convolution),
``x_l = pool_l(sigma_l(h_l))``. Backprop sends the error down through ``W_{l+1}^T`` (eq. 9); random
feedback (RF, Lillicrap, Cownden, Tweed & Akerman 2016; Tang eq. 10) through a matrix ``B_{l+1}`` of
``W_{l+1}``'s shape drawn once, independently, from ``W_{l+1}``'s initial distribution:

    delta_L = dL/dh_L = dL/dy * m * sigma_L'(h_L)                     (output error, m: output dropout mask)
    delta_l = sigma_l'(h_l) * pool_l^T( r_{l+1} * (B_{l+1}^T delta_{l+1}) )   (B^T: transposed conv for a conv layer)
    Delta W_l = -eta delta_l x_{l-1}^T                                (the delta rule; a conv sums over positions)

``pool^T`` routes a pooled cell's error to the arg-max of its window (max pooling) or spreads it evenly
(average pooling), ``r`` is the scaled dropout mask. Through pooling and the activation the error is
carried by autograd on a small graph of that population alone (``pool(sigma(h_l))`` recomputed from the
recorded current), so with ``B = W`` the step is :class:`~neurolearn.credit.Backprop`'s exactly.

Variants (``RandomFeedback`` options, registered names):

* ``"random_feedback"`` -- RF: ``B`` fixed;
* ``"updated_random_feedback"`` -- URF (Amit 2019; Tang Sec. 3): ``B_l`` receives exactly ``W_l``'s
  increment at every step, whatever the optimiser (``B_l <- B_l + (W_l(t+1) - W_l(t))``), so
  ``B_l - W_l = B_l(0) - W_l(0)`` for all time;
* ``"sign_feedback"`` -- the code-only option "US" (METHODS.md section 4): the error goes down through
  ``sign(B_{l+1})``, ``B`` updated like ``W`` (``updated=True``, the default of this name).

``B`` lives in the method's state (``B1 .. B{L-1}``: layer 0 sends no error down), drawn from the
generator given to ``init_state``, so the trainer checkpoints and restores it.

Locality (METHODS.md section 8): RF on a convolution with a dense head is local -- the kernel's
per-position term reads its own pre and post cells and the error delivered through the declared fixed
matrix ``B``; the same step through ``W`` (end-to-end backprop) is weight transport; URF's feedback
synapse ``B_ij += -eta delta_{l+1,i} x_{l,j}`` is Hebbian on the feedback synapse. The three are
registered with ``neurolearn check-locality`` (:func:`conv_head_step`, :func:`urf_feedback_step`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .._validate import ParameterError
from ..describe import param, register
from ..locality.catalog import register_check
from ..locality.reference_steps import mlp_base
from ..locality.contract import Cells, Checkable, Contract, Fixed, Layer, Shared, Signal, StateSpec, Weight
from ..networks.activations import activation, times_derivative
from ..networks.layers import Conv, ops
from ..plasticity.base import apply_updates
from ..plasticity.delta import Delta
from .base import CreditMethod

#: how ``B`` is drawn: like the network's own initialisation, PyTorch's default, or xavier-uniform
FEEDBACK_INITS = ("network", "torch", "xavier")


def draw_like(weight: torch.Tensor, scheme: str, gain: float, generator: torch.Generator | None) -> torch.Tensor:
    """A matrix of ``weight``'s shape, dtype and device, uniform in ``+-a``: ``a = 1/sqrt(fan_in)`` for
    ``scheme="torch"`` (PyTorch's default, Tang et al. 2022's code), ``a = gain sqrt(6 / (fan_in + fan_out))``
    for ``"xavier"`` (Glorot & Bengio 2010). Drawn on the CPU from ``generator`` (device-independent)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    bound = 1.0 / fan_in ** 0.5 if scheme == "torch" else gain * (6.0 / (fan_in + fan_out)) ** 0.5
    gen_device = generator.device if generator is not None else "cpu"
    r = torch.rand(weight.shape, generator=generator, dtype=weight.dtype, device=gen_device)
    return ((r * 2 - 1) * bound).to(weight.device)


def population_error(net, l: int, signal: torch.Tensor, current: torch.Tensor, mask: torch.Tensor | None = None):
    """``delta_l = sigma_l'(h_l) * pool_l^T(r * s)``: the error of layer ``l``'s currents ``h_l`` from the
    signal ``s = dL/dx_l`` arriving at its output cells (after pooling; any shape with ``x_l``'s elements).

    ``r`` is the dropout mask of those cells; ``pool^T`` is autograd's backward of the layer's pooling on
    ``sigma(h_l)`` recomputed from the recorded current (the arg-max of each window for max pooling)."""
    act = net.activation_of(l)
    if mask is not None:
        signal = signal.reshape(mask.shape) * mask
    d = net.descriptions[l]
    if isinstance(d, Conv) and d.pool != "none":
        with torch.enable_grad():
            a = activation(act, current.detach()).requires_grad_(True)
            pooled = d.pooling(a)
            signal = torch.autograd.grad(pooled, a, signal.reshape(pooled.shape))[0]
    return times_derivative(act, signal.reshape(current.shape), current)


def feedback_errors(net, rec, grad: torch.Tensor, matrix: Callable[[int], torch.Tensor]) -> list:
    """Every layer's error ``delta_l`` (module docstring) with ``B_l = matrix(l)``, from the forward record
    ``rec`` (:meth:`~neurolearn.networks.feedforward.FeedForward.forward_train`) and ``grad = dL/dy * m``."""
    L = net.n_layers
    e = times_derivative(net.activation_of(L - 1), grad, rec.currents[-1])
    errors = [e]
    for l in range(L - 1, 0, -1):
        layer = net.layers[l]
        s = ops(layer).send_down(layer, e, weight=matrix(l), input_shape=rec.pres[l].shape)
        e = population_error(net, l - 1, s, rec.currents[l - 1], rec.masks[l])
        errors.insert(0, e)
    return errors


class _FeedbackCurrent(torch.autograd.Function):
    """``u = W h + b`` (the layer's own current); backward ``dL/dh = send_down(dL/du, B)``: the error goes down
    through ``B`` instead of ``W`` (with ``B = None``, through ``W``: layer 0, whose input error is never used).
    Used by :meth:`RandomFeedback.step` so that autograd applies pooling routing and ``f'`` exactly as
    :func:`feedback_errors` writes them out (tested equal)."""

    @staticmethod
    def forward(ctx, h, layer, B):
        ctx.layer, ctx.B, ctx.shape = layer, B, h.shape
        return ops(layer).current(layer, h)

    @staticmethod
    def backward(ctx, grad_u):
        layer = ctx.layer
        return ops(layer).send_down(layer, grad_u, weight=ctx.B, input_shape=ctx.shape), None, None


@register("credit", "random_feedback")
@dataclass(frozen=True)
class RandomFeedback(CreditMethod):
    """Random feedback (Lillicrap et al. 2016; Tang et al. 2022 eq. 10): errors sent down through fixed random B.

    Dense and conv networks with pooling: ``delta_l = sigma'(h_l) * pool^T(B_{l+1}^T delta_{l+1})``, ``Delta W_l = -eta delta_l x_{l-1}^T``
    (module docstring). ``updated``: ``B`` receives ``W``'s increment (URF, Amit 2019); ``sign``: the
    error goes down through ``sign(B)``."""

    updated: bool = param(False, help="B_l receives exactly W_l's increment at every step (URF, Amit 2019)")
    sign: bool = param(False, help="send errors down through sign(B_l) instead of B_l (Tang's code option US)")
    init: str = param("network", choices=FEEDBACK_INITS,
                      help="B's distribution: the network's own init scheme, torch (U(+-1/sqrt(fan_in))) or xavier")
    gain: float = param(0.5, low=0.0, low_open=True,
                        help="xavier gain of B with init xavier (init network uses the network's own init_gain)")
    rule: Delta = field(default_factory=Delta)

    def init_state(self, net, generator: torch.Generator | None = None) -> dict:
        """``B{l}`` for every layer ``l >= 1`` (shaped like ``W_l``), drawn in layer order from ``generator``."""
        scheme = getattr(net, "init", "torch") if self.init == "network" else self.init
        gain = getattr(net, "init_gain", self.gain) if self.init == "network" else self.gain
        return {f"B{l}": draw_like(net.layers[l].weight.detach(), scheme, gain, generator)
                for l in range(1, net.n_layers)}

    def check_setup(self, net, objective, optimizer: str = "sgd") -> None:
        """A :class:`~neurolearn.networks.feedforward.FeedForward` network (``forward_train``) whose layers have
        registered operations."""
        if not hasattr(net, "forward_train") or not hasattr(net, "descriptions"):
            raise ParameterError(f"{type(self).__name__}: net must be a FeedForward network (dense and conv layers), "
                                 f"got {type(net).__name__}")
        for layer in net.layers:
            ops(layer)

    def feedback(self, state: dict, l: int) -> torch.Tensor:
        """The matrix layer ``l`` sends errors down through: ``B_l``, or ``sign(B_l)``."""
        B = state[f"B{l}"]
        return torch.sign(B) if self.sign else B

    def step(self, net, x, objective, objective_state, state, optimizer, labels=None, generator=None) -> dict:
        """Forward with dropout, output error, errors sent down through ``B`` (through pooling and the
        activation), delta rule at every layer through the optimiser; URF: ``B_l += W_l(after) - W_l(before)``."""
        def current(l, layer, h):  # u = W h + b forward; its backward sends the error down through B_l
            return _FeedbackCurrent.apply(h, layer, self.feedback(state, l) if l else None)

        rec = net.forward_train(x, generator, grad=True, current=current)
        out = objective.error(rec.masked_output().detach(), objective_state, rec.out_mask, labels)
        with torch.no_grad():
            grad = out.grad if rec.out_mask is None else out.grad * rec.out_mask
            e = times_derivative(net.activation_of(net.n_layers - 1), grad, rec.currents[-1].detach())
        errors = [e]
        if net.n_layers > 1:  # autograd carries e_L back: pooling and f' as recorded, the linear maps through B
            errors = list(torch.autograd.grad(rec.currents[-1], rec.currents[:-1], grad_outputs=e)) + errors
        with torch.no_grad():
            layers = list(net.layers)
            before = [layers[l].weight.detach().clone() for l in range(1, len(layers))] if self.updated else []
        apply_updates(optimizer, layers, [self.rule.factors(p, e) for p, e in zip(rec.pres, errors)])
        if self.updated:
            with torch.no_grad():
                for l, w0 in enumerate(before, start=1):
                    state[f"B{l}"].add_(layers[l].weight.detach() - w0)
        return {"loss": float(out.loss)}

    def checkable(self, sizes, pathway: str = "target", output_activation: str = "identity",
                  hidden_activation: str = "tanh") -> Checkable:
        """The step on an MLP of ``sizes`` (:func:`feedback_mlp_step`, what a recipe's locality verdict checks),
        ``B`` declared fixed matrices (``sign(B)`` for the sign variant; URF's ``B`` is fixed within a step, its
        own update is :func:`urf_feedback_step`). The conv version is :func:`conv_head_step`."""
        return feedback_mlp_step(sizes, "sign" if self.sign else "rf", pathway, output_activation, hidden_activation)


@register("credit", "updated_random_feedback")
@dataclass(frozen=True)
class UpdatedRandomFeedback(RandomFeedback):
    """Updated random feedback (URF, Amit 2019; Tang et al. 2022): B receives W's increment at every step.

    :class:`RandomFeedback` with ``B_l`` receiving ``W_l``'s increment at every step, so ``B_l - W_l = B_l(0) - W_l(0)``."""

    updated: bool = param(True, help="B_l receives exactly W_l's increment at every step (URF, Amit 2019)")


@register("credit", "sign_feedback")
@dataclass(frozen=True)
class SignFeedback(RandomFeedback):
    """Sign feedback (Tang et al.'s code option "US"): errors sent down through sign(B), B updated like W.

    ``updated=True`` by default (``False`` keeps ``B`` fixed)."""

    updated: bool = param(True, help="B_l receives exactly W_l's increment at every step")
    sign: bool = param(True, help="send errors down through sign(B_l)")


# ----------------------------------------------------------------------------- locality
#: geometry of the checked convolution: a ``CONV_HEIGHT x CONV_WIDTH`` input map, ``CONV_KERNEL`` square kernel, valid
CONV_HEIGHT, CONV_WIDTH, CONV_KERNEL = 2, 3, 2
#: channels of the checked convolution are capped (the checker's cost grows with the cells it perturbs)
MAX_CHANNELS = 2
#: the feedback of :func:`conv_head_step`
CONV_HEAD_FEEDBACKS = ("rf", "sign", "bp")
_CONV_HEAD_NAMES = {"rf": "Random feedback", "sign": "Sign feedback (fixed B)", "bp": "Backprop E2E"}


def _sizes(sizes, n: int, what: str) -> tuple:
    sizes = tuple(sizes)
    if len(sizes) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
        raise ParameterError(f"{what}: sizes must be {n} integers >= 1, got {sizes!r}")
    return sizes


def feedback_mlp_step(sizes, feedback: str = "rf", pathway: str = "target", output_activation: str = "identity",
                      hidden_activation: str = "tanh", name: str | None = None) -> Checkable:
    """The step of :class:`RandomFeedback` on an MLP of ``sizes`` as a pure function of recorded activities:
    input ``x``, currents ``u{l}``, the output's ``d`` delivered on ``pathway``, weights ``W{l}`` and (RF, sign)
    fixed matrices ``B{l}`` on the pathways ``"feedback B{l}"``:

        delta_L = (f(u_L) - d) f'(u_L),   delta_l = (delta_{l+1} F_{l+1}) f'(u_l),   g_l = delta_l^T f(u_{l-1})

    with ``F = B`` (``"rf"``), ``sign(B)`` (``"sign"``) or ``W`` (``"bp"``: weight transport)."""
    if feedback not in CONV_HEAD_FEEDBACKS:
        raise ParameterError(f"feedback_mlp_step: feedback must be one of {CONV_HEAD_FEEDBACKS}, got {feedback!r}")
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ParameterError(f"feedback_mlp_step: sizes must list at least two populations, got {sizes!r}")
    L = len(sizes) - 1
    pops, layers, entries = mlp_base(sizes, pathway)
    if feedback != "bp":
        entries.update({f"B{l}": Fixed(f"feedback B{l}", post=f"p{l}", pre=f"p{l - 1}") for l in range(2, L + 1)})
    spec = StateSpec(pops, layers, entries)
    label = name or _CONV_HEAD_NAMES[feedback]
    down = "W" if feedback == "bp" else "B"
    contracts = {f"W{l}": Contract(f"{label} W{l}", allows={"pre", "post", "neuron_signal"},
                                   pathways=(pathway,) + (() if feedback == "bp" else
                                                          tuple(f"feedback B{m}" for m in range(l + 1, L + 1))))
                 for l in range(1, L + 1)}

    def act(l):
        return output_activation if l == L else hidden_activation

    def fn(s):
        h = [s["x"]] + [activation(act(l), s[f"u{l}"]) for l in range(1, L + 1)]
        e = times_derivative(act(L), h[L] - s["d"], s[f"u{L}"])
        out = {}
        for l in range(L, 0, -1):
            out[f"W{l}"] = e.T @ h[l - 1]
            if l > 1:
                F = torch.sign(s[f"B{l}"]) if feedback == "sign" else s[f"{down}{l}"]
                e = times_derivative(act(l - 1), e @ F, s[f"u{l - 1}"])
        return out

    return Checkable(f"{label} ({L} layer{'s' if L > 1 else ''})", spec, contracts, fn)


def conv_head_step(sizes, feedback: str = "rf", name: str | None = None) -> Checkable:
    """A whole training step of a convolution ``W1`` (``c_in -> c_conv`` channels, a ``2x3`` map, ``2x2``
    kernel, two positions sharing it: :class:`~neurolearn.locality.Shared`) with tanh cells and a dense linear head ``W2``
    (``2 c_conv -> n_head``), loss ``1/2 |y - d|^2`` (``sizes = (c_in, c_conv, n_head)``, channels capped at ``MAX_CHANNELS``):

        y = h_2,   delta_2 = y - d,   delta_1 = (delta_2 F) * (1 - tanh(h_1)^2)
        dW2 = -delta_2^T tanh(h_1),   dW1_p[o, c, k] = -sum_b delta_1[b, o, p] x[b, c, p + k]   (per position p)

    with ``F = B2`` (``"rf"``: a :class:`~neurolearn.locality.Fixed` matrix on the pathway ``"feedback B2"``),
    ``sign(B2)`` (``"sign"``) or ``W2`` (``"bp"``: weight transport). Pooling is left out: its arg-max
    routing is a declared circuit (METHODS.md section 8), not a synapse's reading."""
    if feedback not in CONV_HEAD_FEEDBACKS:
        raise ParameterError(f"conv_head_step: feedback must be one of {CONV_HEAD_FEEDBACKS}, got {feedback!r}")
    c_in, c_conv, n_head = _sizes(sizes, 3, "conv_head_step")
    c_in, c_conv = min(c_in, MAX_CHANNELS), min(c_conv, MAX_CHANNELS)
    conv = Shared.conv2d("W1", "p1", "p0", c_in, c_conv, CONV_KERNEL, CONV_HEIGHT, CONV_WIDTH)
    pops = {"p0": conv.n_pre, "p1": conv.n_post, "p2": n_head}
    entries = {"x": Cells("p0"), "u1": Cells("p1", "current"), "u2": Cells("p2", "current"),
               "d": Signal("p2", "target"), "W1": Weight("W1"), "W2": Weight("W2")}
    hidden_paths: tuple = ("target",)
    if feedback != "bp":
        entries["B2"] = Fixed("feedback B2", post="p2", pre="p1")
        hidden_paths = ("target", "feedback B2")
    spec = StateSpec(pops, (conv, Layer("W2", "p2", "p1")), entries)
    allows = {"pre", "post", "neuron_signal"}
    label = name or _CONV_HEAD_NAMES[feedback]
    contracts = {"W1": Contract(f"{label} conv", allows=allows, pathways=hidden_paths),
                 "W2": Contract(f"{label} head", allows=allows, pathways=("target",))}
    positions = (CONV_HEIGHT - CONV_KERNEL + 1) * (CONV_WIDTH - CONV_KERNEL + 1)

    def fn(s):
        h1 = torch.tanh(s["u1"])
        e2 = s["u2"] - s["d"]
        F = s["W2"] if feedback == "bp" else s["B2"]
        if feedback == "sign":
            F = torch.sign(F)
        e1 = (e2 @ F) * (1 - h1 * h1)
        patches = s["x"].reshape(-1, c_in, CONV_HEIGHT, CONV_WIDTH).unfold(2, CONV_KERNEL, 1).unfold(3, CONV_KERNEL, 1)
        e1 = e1.reshape(-1, c_conv, *patches.shape[2:4])  # (b, o, py, px); patches (b, c, py, px, ky, kx)
        terms = -torch.einsum("boyx,bcyxij->yxocij", e1, patches)
        return {"W1": terms.reshape(positions, c_conv, c_in, CONV_KERNEL, CONV_KERNEL), "W2": -(e2.T @ h1)}

    return Checkable(f"{label} (conv + head)", spec, contracts, fn)


def urf_feedback_step(sizes, transport: bool = False) -> Checkable:
    """URF's two updates on one layer pair (``sizes = (n_below, n_above)``): the forward synapse
    ``W: below -> above``, ``dW = -delta^T x`` (``delta`` delivered to the above cells on the pathway
    ``"error"``), and the feedback synapse from error unit ``i`` of the layer above (population ``err``,
    activity ``delta_i``) to cell ``j`` below: ``dB_ij = -delta_i x_j`` (Amit 2019; the layer ``B`` is
    stored ``(n_below, n_err)``, the transpose of the matrix the error goes down through). Hebbian on the
    feedback synapse: local. ``transport=True`` plants a fault -- the feedback synapse copies the forward
    weight, ``dB = W^T - B`` -- which is weight transport."""
    n_below, n_above = _sizes(sizes, 2, "urf_feedback_step")
    pops = {"below": n_below, "above": n_above, "err": n_above}
    layers = (Layer("W", "above", "below"), Layer("B", "below", "err"))
    entries = {"x": Cells("below"), "delta": Signal("above", "error"), "err": Cells("err"),
               "W": Weight("W"), "B": Weight("B")}
    spec = StateSpec(pops, layers, entries)
    contracts = {"W": Contract("URF forward", allows={"pre", "post", "neuron_signal"}, pathways=("error",)),
                 "B": Contract("URF feedback (Hebbian)", allows={"pre", "post"})}

    def fn(s):
        dB = s["W"].T - s["B"] if transport else -(s["x"].T @ s["err"])
        return {"W": -(s["delta"].T @ s["x"]), "B": dB}

    return Checkable("URF feedback synapse" + (" copying W" if transport else ""), spec, contracts, fn)


register_check(lambda s: conv_head_step(s, "rf"), 3, True, label="random feedback, conv + head")
register_check(lambda s: conv_head_step(s, "bp"), 3, False, {"weight transport"}, label="E2E backprop, conv + head")
register_check(lambda s: urf_feedback_step(s), 2, True, label="URF feedback synapse")
