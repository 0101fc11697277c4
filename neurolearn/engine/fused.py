"""Fast executor: conv networks without dropout trained by Backprop, random feedback, DTP or layer-wise learning
(Tang et al. 2022's E-MNIST3 rows).

Supported setups (:meth:`FusedConvExecutor.unsupported` says why another is not): on the CPU, a
:class:`~neurolearn.networks.feedforward.FeedForward` network with at least one conv layer, plain
``nn.Conv2d`` / ``nn.Linear`` layers ending in a dense layer, no dropout, max pooling (if any) over
windows that do not overlap (``pool_kernel <= pool_stride``), hidden activations in :data:`BACKWARD`, and
:class:`~neurolearn.credit.Backprop` or :class:`~neurolearn.credit.feedback.RandomFeedback` (RF, URF, sign)
with the delta rule, :class:`~neurolearn.credit.dtp.DTP`, or :class:`~neurolearn.credit.layerwise.LayerWise`
(greedy or randomised, any head update; its own update :meth:`~neurolearn.credit.layerwise.LayerWise.apply_gradients`
is called as is); any objective, any optimiser. Per batch it
computes what the credit method's ``step`` computes, with the same calls wherever the work is the same
(the objective's error, sending errors down through ``W`` or ``B``, DTP's noise, top target and inverse
optimiser, the delta rule's factors through :func:`~neurolearn.plasticity.apply_updates`), and these
exact rearrangements of the rest:

1. a layer ``h_l = pool(f(u_l))`` applies ``f`` in place on its current ``u_l`` (which nothing reads
   afterwards) instead of writing a second map of the same size: the same values;
2. the error of a pooled layer is taken at the pooled size and then routed: the step's autograd computes
   ``e_l = f'(u_l) * pool^T(s)`` (``pool^T`` writes the pooled cells' signal ``s`` at each window's
   arg-max, zeros elsewhere); here ``e_l = pool^T(f'(u_l) * s)`` with ``f'`` read at the window's winner,
   whose activity is the pooled cell's own: the same numbers (``f'(u) * 0 = 0`` at the other cells, and a
   cell is the winner of one window at most when windows do not overlap), with ``f'`` computed on a
   quarter of the cells of a 2x2 pool, written into the buffer of ``f(u_l)`` (no new map);
3. DTP's layer losses ``L_l = mean((h_l - hat h_l)^2)`` are differentiated with respect to the pooled
   activities ``h_l`` in closed form, ``(h_l - hat h_l) * (2 fl(1/N))``: autograd's product of the mean's
   ``fl(1/N)`` and the square's exact ``2 (h - hat h)`` (:func:`layer_loss_gradient`; then 2. carries them to
   the currents);
4. DTP's inverses are trained on ``f_l(tilde h)``, values only, computed as ``f(maxpool(u))``: the maximum
   of a window commutes with a non-decreasing ``f`` (:func:`pooled_first`);
5. DTP's inverses ``g_l`` apply their activation in place; a transposed convolution reads its input in
   channels-last order (torch's CPU kernel: the same numbers, about twice as fast); the reconstruction
   loss's gradient is the chain rule written out with autograd's factors (:func:`reconstruction_losses`);
6. max pooling is the maximum over the strided views of each window offset, and the routing one 0/1 mask
   per offset marking the window's first maximal cell, the cell ``F.max_pool2d`` picks (:func:`max_pool`):
   the same values and winners without the pooling kernel's int64 indices, which on the CPU cost more than
   the whole rest of the layer's elementwise work.
7. DTP without noise (``inverse_noise = 0``, Algorithm 1 as the paper writes it): the inverses' training
   input ``f_l(tilde h_{l-1}) = f_l(h_{l-1})`` is the forward's own ``h_l`` (the same convolution on the same
   input; 4. gives the same values), not computed a second time;
8. a result is written into the buffer of an operand nothing reads afterwards (a layer's error into its fresh
   signal ``dL/dh_l``, a target's difference into ``g_l(h_l)``, a layer
   loss's gradient into the spent target, an inverse's ``act'`` product into its loss gradient): the same
   numbers, fewer fresh maps.

The saving is memory traffic (on the CPU a fresh tensor of this size costs about as much as one pass
over it): the reference's backward through pooling and ``f`` writes two full-size maps per layer, this
one writes the error into the buffer of ``f(u_l)``. Tested equal to the reference executor
(``tests/test_tang_fastpath.py``: the same weights, bit for bit on the CPU, after two epochs of Adam and of
SGD); the weight gradients come from the same convolution calls. Layer-wise steps agree to float rounding
(at most 2e-7 in the weights, 1.4e-6 in the Adam moments after four epochs of the tests' network): the reference
reads ``f'`` from the current ``u``, this one from the activity ``f(u)``, which can differ in the last bit.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..credit.backprop import Backprop
from ..credit.dtp import DTP, _geometry
from ..credit.feedback import RandomFeedback, SignFeedback, UpdatedRandomFeedback
from ..credit.layerwise import LayerWise
from ..networks.activations import activation, times_derivative
from ..networks.feedforward import FeedForward
from ..networks.layers import Conv, Factors, ops
from ..plasticity.base import apply_updates
from ..plasticity.delta import Delta
from . import Executor, register_executor
from .reference import run_batches

#: activation name -> (in-place ``f``, ``grad * f'`` from the activity ``f(u)``, the same written into ``grad``):
#: autograd's own backward formulas of ``torch.tanh`` and ``torch.relu`` (``tanh_backward``,
#: ``threshold_backward``), so the errors are the reference's numbers
BACKWARD = {
    "tanh": (torch.Tensor.tanh_, torch.ops.aten.tanh_backward,
             lambda g, a: torch.ops.aten.tanh_backward.grad_input(g, a, grad_input=g)),
    "relu": (torch.Tensor.relu_, lambda g, a: torch.ops.aten.threshold_backward(g, a, 0.0),
             lambda g, a: torch.ops.aten.threshold_backward.grad_input(g, a, 0.0, grad_input=g)),
    "identity": (lambda u: u, lambda g, a: g, lambda g, a: g),
}


def windows(m: torch.Tensor, d: Conv) -> list:
    """The cells at offset ``(i, j)`` of every pooling window of the map ``m`` (pool ``d``: padding 0, windows that
    do not overlap), one strided view ``(N, C, H', W')`` per offset, in the window's row-major order."""
    k, s = d.pool_kernel, d.pool_stride
    hp, wp = (m.shape[2] - k) // s + 1, (m.shape[3] - k) // s + 1
    return [m[:, :, i:i + s * (hp - 1) + 1:s, j:j + s * (wp - 1) + 1:s] for i in range(k) for j in range(k)]


def max_pool(a: torch.Tensor, d: Conv, routing: bool = True) -> tuple[torch.Tensor, list | None]:
    """``(maxpool(a), winners)``: the maximum over the offsets of :func:`windows` (the values of
    ``F.max_pool2d``; on the CPU an order of magnitude faster than its kernel, which also writes int64 indices)
    and, with ``routing``, one 0/1 mask per offset marking each window's winner as ``F.max_pool2d`` chooses it:
    the first cell of the window, in row-major order, that holds the maximum (windows holding NaN aside)."""
    views = windows(a, d)
    m = torch.maximum(views[0], views[1]) if len(views) > 1 else views[0].clone()
    for v in views[2:]:
        torch.maximum(m, v, out=m)
    if not routing:
        return m, None
    winners, taken = [], None
    for v in views[:-1]:
        w = v == m
        if taken is not None:
            w &= ~taken
        taken = w if taken is None else taken | w
        winners.append(w)
    winners.append(~taken if taken is not None else torch.ones_like(m, dtype=torch.bool))
    return m, winners


class Layer:
    """One layer's forward on input ``h``: ``(h_next, routing)``, ``h_next = pool(f(W h + b))`` with ``f``
    applied in place; ``routing = (map, winners)`` for a max-pooled conv layer (the buffer of ``f(u)``, reused
    for the error, and :func:`max_pool`'s winner masks), else ``None``."""

    @staticmethod
    def forward(net, l: int, h: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        layer, d = net.layers[l], net.descriptions[l]
        if isinstance(layer, nn.Linear) and h.ndim > 2:
            h = h.flatten(1)
        a = BACKWARD[net.activation_of(l)][0](ops(layer).current(layer, h))
        if isinstance(d, Conv) and d.pool == "max":
            pooled, winners = max_pool(a, d)
            return pooled, (a, winners)
        return a, None

    @staticmethod
    def error(net, l: int, signal: torch.Tensor, h: torch.Tensor, routing, own: bool = False) -> torch.Tensor:
        """``e_l = dL/du_l`` from ``signal = dL/dh_l`` (any shape with ``h_l``'s elements): ``f'`` at the pooled
        cells, then routed to the winners in the (overwritten) buffer of ``f(u_l)`` (module docstring, 2.);
        ``own``: the caller hands ``signal`` over, and ``signal * f'`` is written into it (module docstring, 8.)."""
        e = BACKWARD[net.activation_of(l)][2 if own else 1](signal.reshape(h.shape), h)
        if routing is None:
            return e
        a, winners = routing
        d = net.descriptions[l]
        views = windows(a, d)
        covered = d.pool_kernel == d.pool_stride and a.shape[2] == d.pool_stride * e.shape[2] \
            and a.shape[3] == d.pool_stride * e.shape[3]
        if not covered:  # cells in no window (a stride wider than the window, a map not a multiple of it)
            a.zero_()
        zero = e.new_zeros(())
        for v, w in zip(views, winners):  # 0 + e w: e at the winner, +0 elsewhere (as the reference's zero fill)
            torch.addcmul(zero, e, w, out=v)
        return a


def forward(net, x: torch.Tensor) -> tuple[list, list]:
    """``(hs, routings)``: the activities ``[h_0 .. h_L]`` and each layer's routing (:meth:`Layer.forward`; every
    activation, the output's too, in :data:`BACKWARD`)."""
    hs, routings = [net.check_input(x)], []
    for l in range(net.n_layers):
        h, r = Layer.forward(net, l, hs[-1])
        hs.append(h)
        routings.append(r)
    return hs, routings


def _pres(net, hs: list) -> list:
    return [h.flatten(1) if isinstance(layer, nn.Linear) and h.ndim > 2 else h for h, layer in zip(hs[:-1], net.layers)]


@torch.no_grad()
def backprop_step(credit, net, x, objective, objective_state, state, optimizer, labels=None) -> dict:
    """:meth:`Backprop.step` (or :meth:`RandomFeedback.step`) without dropout: ``e_L = dL/dy f'(u_L)``;
    ``e_l = f'(u_l) pool^T(send_down(e_{l+1}, M_{l+1}))`` with ``M = W`` (as autograd's backward of ``W h + b``
    with respect to ``h``) or the feedback matrix ``B`` (``sign(B)``); the delta rule's factors through the
    optimiser; URF: ``B_l += W_l(after) - W_l(before)``."""
    L = net.n_layers
    hs, routings = [net.check_input(x)], []
    for l in range(L - 1):
        h, r = Layer.forward(net, l, hs[-1])
        hs.append(h)
        routings.append(r)
    head, pres = net.layers[L - 1], _pres(net, hs + [None])
    u = ops(head).current(head, pres[-1])
    out = objective.error(activation(net.activation_of(L - 1), u), objective_state, None, labels)
    errors = [times_derivative(net.activation_of(L - 1), out.grad, u)]
    feedback = isinstance(credit, RandomFeedback)
    for l in range(L - 1, 0, -1):
        s = ops(net.layers[l]).send_down(net.layers[l], errors[0], weight=credit.feedback(state, l) if feedback else None,
                                         input_shape=pres[l].shape)
        errors.insert(0, Layer.error(net, l - 1, s, hs[l], routings[l - 1], own=True))
    layers = list(net.layers)
    before = [layer.weight.detach().clone() for layer in layers[1:]] if feedback and credit.updated else []
    apply_updates(optimizer, layers, [credit.rule.factors(p, e) for p, e in zip(pres, errors)])
    for l, w0 in enumerate(before, start=1):
        state[f"B{l}"].add_(layers[l].weight.detach() - w0)
    return {"loss": float(out.loss)}


@torch.no_grad()
def pooled_first(net, l: int, h: torch.Tensor) -> torch.Tensor:
    """``pool(f(W h + b))`` of layer ``l``, values only, as ``f(pool(W h + b))``: the maximum of a window commutes
    with a non-decreasing ``f`` (tanh, relu, identity; torch's float32 tanh is non-decreasing on every float), so
    the same numbers, with ``f`` on the pooled cells only (module docstring, 4.)."""
    layer, d = net.layers[l], net.descriptions[l]
    if isinstance(layer, nn.Linear) and h.ndim > 2:
        h = h.flatten(1)
    u = ops(layer).current(layer, h)
    if isinstance(d, Conv) and d.pool == "max":
        u = max_pool(u, d, routing=False)[0]
    return BACKWARD[net.activation_of(l)][0](u)


@torch.no_grad()
def inverse(credit: DTP, net, l: int, h: torch.Tensor, state: dict, contiguous: bool = True) -> torch.Tensor:
    """:meth:`DTP.inverse` with the activation applied in place on the transposed convolution's (or dense map's)
    fresh output (``contiguous=False``: a transposed convolution's output is left in channels-last order)."""
    geo = _geometry(tuple(net.shapes), tuple(net.descriptions), credit.inverse_kernel)[l]
    w, b = state[f"inv{l}.weight"], state[f"inv{l}.bias"]
    if geo["kind"] == "conv_transpose":
        # the input in channels-last order: the same numbers from torch's CPU kernel, twice as fast (tested equal)
        u = F.conv_transpose2d(h.contiguous(memory_format=torch.channels_last), w, b, stride=geo["stride"],
                               padding=geo["padding"], output_padding=geo["output_padding"])
        if contiguous:
            u = u.contiguous()
    else:
        u = F.linear(h.flatten(1), w, b)
    return BACKWARD[credit.inverse_activation][0](u).reshape(h.shape[0], *geo["out_shape"])


def reconstruction_losses(credit: DTP, net, fh: dict, tilde: dict, state: dict) -> dict:
    """:meth:`DTP.reconstruction_losses` with the chain rule written out for a transposed-conv inverse:
    ``r = g_l(f_l(tilde h))``, ``dL_inv/dr = (1/N) 2 (r - tilde h)`` (autograd's
    factors of the mean and the square, the same product), ``act'`` from ``r`` written into that buffer, the
    kernel's and bias' gradients from the transposed convolution's backward; a dense inverse goes to the credit
    method's own. The reported ``L_inv`` is ``|r - tilde h|^2 / N`` from one dot product (the reference's
    ``mean((r - tilde h)^2)`` sums in another order: the value differs in the last bits; nothing reads it but
    the run's record)."""
    out = {}
    for l, t in tilde.items():
        geo = _geometry(tuple(net.shapes), tuple(net.descriptions), credit.inverse_kernel)[l]
        if geo["kind"] != "conv_transpose":
            out.update(credit.reconstruction_losses(net, {l: fh[l]}, {l: t}, state))
            continue
        with torch.no_grad():
            w = state[f"inv{l}.weight"]
            r = inverse(credit, net, l, fh[l], state)
            d = r - t
            flat = d.reshape(-1)
            loss = torch.dot(flat, flat) / d.numel()
            scale = 2.0 * float(torch.ones((), dtype=d.dtype) / d.numel())  # 2 x autograd's 1/N, in the tensor's precision
            grad = BACKWARD[credit.inverse_activation][2](d.mul_(scale), r)
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, fh[l], w, [w.shape[1]], list(geo["stride"]), list(geo["padding"]), [1, 1], True,
                list(geo["output_padding"]), 1, (False, True, True))
        out[l] = (loss, (gw, gb))
    return out


@torch.no_grad()
def targets(credit: DTP, net, hs: list, e_out: torch.Tensor, state: dict) -> dict:
    """:meth:`DTP.targets` with :func:`inverse`: ``hat h_{L-1} = h_{L-1} - alpha dL/dh_{L-1}``, then
    ``hat h_{l-1} = (h_{l-1} - g_l(h_l)) + g_l(hat h_l)`` (the sum in the same order, the second term added in place)."""
    L = net.n_layers
    t = {L - 1: hs[L - 1] - credit.alpha * credit.top_gradient(net, hs, e_out, state)}
    for l in range(L - 1, 1, -1):  # two passes (the reference concatenates): on the CPU cheaper than one of twice the batch
        g_h, g_t = inverse(credit, net, l, hs[l], state), inverse(credit, net, l, t[l], state)
        t[l - 1] = torch.sub(hs[l - 1], g_h, out=g_h).add_(g_t)  # written into g_h's buffer
    return t


def layer_loss_gradient(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``dL_l/dh_l = (2/N)(h_l - hat h_l)`` of ``L_l = mean((h_l - hat h_l)^2)`` over its ``N`` elements, as
    autograd's product: the mean's ``1/N`` (in the tensor's precision) times the square's ``2 (h - hat h)``; the
    doubling is exact, so ``(h - hat h) * (2 * fl(1/N))`` is the same number (module docstring, 3.). Written into
    ``target``'s buffer (the caller's targets are spent; module docstring, 8.)."""
    d = torch.sub(h, target, out=target)
    return d.mul_(2.0 * float(torch.ones((), dtype=d.dtype) / d.numel()))


def dtp_step(credit: DTP, net, x, objective, objective_state, state, optimizer, labels=None, generator=None) -> dict:
    """:meth:`DTP.step` (steps 1-5 of :mod:`neurolearn.credit.dtp`), with the forward, the inverses' training
    input, their losses, the targets and the layer errors rearranged as the module docstring says."""
    L = net.n_layers
    with torch.no_grad():
        hs, routings = forward(net, x)
    out = objective.error(hs[-1], objective_state, None, labels)

    def train_inverses():
        tilde = credit.noisy_inputs(net, hs, generator)
        # sigma = 0 hands back the forward's own h_{l-1}: then f_l(tilde h) is the forward's h_l (module docstring, 7.)
        fh = {l: hs[l] if t is hs[l - 1] else pooled_first(net, l - 1, t) for l, t in tilde.items()}
        return credit.step_inverses(state, reconstruction_losses(credit, net, fh, tilde, state))

    inv = train_inverses() if credit.train_inverse_first else {}
    with torch.no_grad():
        e_out = Layer.error(net, L - 1, out.grad, hs[-1], None)
        hat = targets(credit, net, hs, e_out, state)
    if not credit.train_inverse_first:
        inv = train_inverses()
    with torch.no_grad():
        grads = [layer_loss_gradient(hs[l], hat[l]) for l in range(1, L)]
        errors = [Layer.error(net, l - 1, g, hs[l], routings[l - 1], own=True) for l, g in enumerate(grads, start=1)] + [e_out]
    apply_updates(optimizer, list(net.layers), [Factors(post=e, pre=p) for e, p in zip(errors, _pres(net, hs))])
    return {"loss": float(out.loss), "inverse_loss": float(sum(inv.values()))}


@torch.no_grad()
def layerwise_gradients(credit: LayerWise, net, x, objective, objective_state, state: dict, l: int, labels=None):
    """:meth:`LayerWise.gradients` of stage ``l``: the frozen layers below as :func:`pooled_first` (values only),
    layer ``l`` as :meth:`Layer.forward`, the head's error ``e_z = dL/dz f'(u_z)`` sent to the layer through
    ``M = H_l`` or ``B_l`` and routed by :meth:`Layer.error`; ``g_W`` from the same gradient call, ``g_H = e_z^T x_l``."""
    L = net.n_layers
    h = net.check_input(x)
    for k in range(l):
        h = pooled_first(net, k, h)
    layer = net.layers[l]
    pre = h.flatten(1) if isinstance(layer, nn.Linear) and h.ndim > 2 else h
    a, routing = Layer.forward(net, l, pre)
    z_in = a.flatten(1)
    top = l == credit.n_stages(net) - 1
    H = credit.head_weight(net, state, l).detach()
    bias = net.layers[-1].bias.detach() if top and net.layers[-1].bias is not None else None
    uz = F.linear(z_in, H, bias)
    out = objective.error(activation(net.activation_of(L - 1), uz), objective_state, None, labels)
    ez = times_derivative(net.activation_of(L - 1), out.grad, uz)
    grads = {"H": ez.T @ z_in}
    f = Factors(post=Layer.error(net, l, ez @ credit.head_feedback(net, state, l), a, routing, own=True), pre=pre)
    grads["W"] = ops(layer).gradient(layer, f)
    if layer.bias is not None:
        grads["b"] = f.bias
    if bias is not None:
        grads["Hb"] = ez.sum(0)
    return out.loss, grads


@register_executor
class FusedConvExecutor(Executor):
    """Backprop, random feedback, DTP or layer-wise learning on a conv network, batch by batch (see module docstring)."""

    name = "fused"

    @classmethod
    def unsupported(cls, trainer) -> str | None:
        net, credit = trainer.net, trainer.credit
        if not isinstance(net, FeedForward):
            return "the network is not a FeedForward network"
        if trainer.device.type != "cpu":
            return (f"the network is on {trainer.device.type}: this executor saves CPU memory traffic and is tested "
                    "equal to the reference on the CPU only")
        if not any(isinstance(d, Conv) for d in net.descriptions):
            return "the network has no conv layer"
        if any(p > 0 for p in net.dropout):
            return "dropout is on"
        if any(type(layer) not in (nn.Conv2d, nn.Linear) for layer in net.layers) or type(net.layers[-1]) is not nn.Linear:
            return "a layer is not a plain nn.Conv2d / nn.Linear, or the last layer is not dense"
        for l, d in enumerate(net.descriptions):
            if isinstance(d, Conv) and d.pool != "none" and (d.pool != "max" or d.pool_kernel > d.pool_stride or d.pool_padding):
                return f"layer {l} pools otherwise than by max pooling over windows that do not overlap, without padding"
            if l < net.n_layers - 1 and net.activation_of(l) not in BACKWARD:
                return f"layer {l}'s activation {net.activation_of(l)!r} is not one of {', '.join(BACKWARD)}"
        if type(credit) in (Backprop, RandomFeedback, UpdatedRandomFeedback, SignFeedback) and type(credit.rule) is Delta:
            return None
        if type(credit) is LayerWise:
            return None
        if type(credit) is DTP:
            if net.activation_of(net.n_layers - 1) not in BACKWARD or credit.inverse_activation not in BACKWARD:
                return f"the output or the inverses' activation is not one of {', '.join(BACKWARD)}"
            return None
        return f"{type(credit).__name__} is not Backprop or random feedback with the delta rule, DTP or LayerWise"

    def run_epoch(self, epoch, x, labels, progress):
        t = self.trainer
        if isinstance(t.credit, DTP):
            def step(xb, lb, g):
                return dtp_step(t.credit, t.net, xb, t.objective, t.state, t.credit_state, t.optimizer, lb, g)
        elif isinstance(t.credit, LayerWise):  # the method's own step (schedule, update) with these gradients
            def step(xb, lb, g):
                return t.credit.step(t.net, xb, t.objective, t.state, t.credit_state, t.optimizer, lb, g,
                                     gradients=lambda *a: layerwise_gradients(t.credit, *a))
        else:
            def step(xb, lb, g):
                return backprop_step(t.credit, t.net, xb, t.objective, t.state, t.credit_state, t.optimizer, lb)
        return run_batches(t, epoch, x, labels, progress, step)
