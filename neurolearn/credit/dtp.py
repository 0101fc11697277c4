"""Difference target propagation with pooling (Tang, Yang & Amit 2022, Algorithm 1; Lee et al. 2015).

Every encoder layer learns to move its own output toward a *target* that the layers above send down
through learned inverses; only the last layer (the head) sees the objective's gradient. Per mini-batch,
for a network of ``L`` layers (encoder layers ``1 .. L-1``, head ``L``; ``h_0 = x``):

1. forward   ``h_l = f_l(h_{l-1})`` -- conv (or dense), activation, pooling, as the network computes it;
   the objective gives ``dL/dy`` at the output ``y = h_L``;
2. inverses  (Algorithm 1 trains them first; ``train_inverse_first``) for ``l = 2 .. L-1``:
   ``tilde h = h_{l-1} + sigma eps`` (``eps ~ N(0, I)``, ``sigma = inverse_noise``),
   ``L_inv_l = mean( (g_l(f_l(tilde h)) - tilde h)^2 )`` minimised w.r.t. ``g_l``'s parameters only, with
   their own Adam (``inverse_lr``; Tang's code) or plain SGD (Algorithm 1's text);
3. top target on the last encoder layer ``hat h_{L-1} = h_{L-1} - alpha dL/dh_{L-1}``: the derivative
   passes through the head's transposed weights (``top = "backprop"``, the papers') or through a fixed
   random matrix ``B`` shaped like the head's weights (``top = "random_feedback"``: local, METHODS 8 A14);
4. targets downward by difference correction, ``l = L-1 .. 2``:
   ``hat h_{l-1} = h_{l-1} - g_l(h_l) + g_l(hat h_l)``;
5. forward layers ``l = 1 .. L-1`` minimise ``L_l = mean( (f_l(h_{l-1}) - hat h_l)^2 )`` w.r.t. their own
   weight and bias only (``h_{l-1}`` and ``hat h_l`` constant): the local update
   ``g_W_l = e_l^T h_{l-1}`` with ``e_l = dL_l/du_l = 2/N (h_l - hat h_l) * f'(u_l)`` routed through the
   pool's arg-max (``N`` = elements of ``h_l``); the head takes the objective's gradient directly,
   ``e_L = dL/dy * f'(u_L)``. Every layer's update goes through the trainer's optimiser
   (:func:`~neurolearn.plasticity.apply_updates`, SGD or Adam).

Inverses ``g_l`` map ``h_l`` back to ``h_{l-1}``'s shape: for a conv layer
``g_l(h) = act(ConvTranspose2d(C_l -> C_{l-1}, stride s)(h))`` with ``s`` the layer's total stride (conv
stride times pool stride) and kernel, padding and output padding solved from the shapes
(:func:`inverse_geometry`: E-MNIST3's ``g_3`` is 3x3 -> 7x7 with kernel 3, padding 0; its ``g_2`` 7x7 -> 14x14
with padding 1, output padding 1); for a dense layer ``g_l(h) = act(G h + c)``. ``act`` is
``inverse_activation`` (tanh in Tang's code). ``variant = "pooling"`` (Tang's DTP with pooling: every
conv layer pools, stride 1) or ``"strided"`` (Bartunov et al. 2018, Tang's "DTP with strided conv": conv
layers of stride >= 2, no pooling); the network must match the variant.

The inverses' parameters and their Adam moments live in the credit state (``inv{l}.weight``,
``inv{l}.bias``, ``inv{l}.weight.m`` ...; ``inverse_steps``), so the trainer checkpoints and restores them.

Locality (METHODS section 8): a forward layer's synapse reads its pre cell ``h_{l-1,j}``, its post cell
and the target ``hat h_{l,i}`` delivered by the feedback pathway (for a pooled conv layer, routed to the
window's winner by the pool: a declared circuit) -- local (:func:`conv_layer_checkable`,
:meth:`DTP.checkable`); an inverse's synapse reads the reconstruction error of its post cell in layer
``l-1`` and the activity of its pre cell in layer ``l`` -- local to the feedback pathway
(:func:`inverse_checkable`); the top target through ``W_L^T`` is weight transport, through a fixed ``B``
local.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import ParameterError
from ..describe import param, register
from ..locality.catalog import register_check
from ..locality.contract import Cells, Checkable, Contract, Fixed, Layer, Shared, Signal, StateSpec, Weight
from ..networks.activations import ACTIVATIONS, activation, activation_derivative
from ..networks.layers import Conv, Factors, ops
from ..plasticity.base import apply_updates
from .base import CreditMethod

#: how the top target's derivative reaches the last encoder layer
TOPS = ("backprop", "random_feedback")
#: the down-sampling the network's conv layers use
VARIANTS = ("pooling", "strided")
#: the inverses' optimiser
INVERSE_OPTIMIZERS = ("adam", "sgd")
#: Adam's constants for the inverses (Kingma & Ba 2015; torch defaults, Tang's code)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


# ----------------------------------------------------------------------------- inverse shapes
def transpose_geometry(n_in: int, n_out: int, stride: int, kernel: int) -> tuple[int, int, int]:
    """``(kernel, padding, output_padding)`` of a transposed convolution along one axis mapping ``n_in``
    positions to ``n_out`` with ``stride``:

        n_out = (n_in - 1) stride - 2 padding + kernel + output_padding,   padding >= 0,  0 <= output_padding < stride

    The smallest kernel ``>= kernel`` for which a solution exists, with the smallest padding (torch allows
    ``output_padding < stride`` only)."""
    for name, v in (("n_in", n_in), ("n_out", n_out), ("stride", stride), ("kernel", kernel)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError(f"transpose_geometry: {name} must be an integer >= 1, got {v!r}")
    k = kernel
    while True:
        d = (n_in - 1) * stride + k - n_out  # = 2 padding - output_padding
        if d >= 0:
            p = (d + 1) // 2
            op = 2 * p - d
            if op < stride:
                return k, p, op
        elif -d < stride:
            return k, 0, -d
        k += 1


def inverse_geometry(net, kernel: int = 3) -> dict:
    """The inverse ``g_l`` of every encoder layer above the first (``l = 2 .. L-1``, 1-based), by ``l``:
    ``{"kind": "conv_transpose" | "linear", "in_shape": shape of h_l, "out_shape": shape of h_{l-1},
    "kernel", "stride", "padding", "output_padding"}`` (the last four per axis, conv layers only), so
    that ``g_l(h_l)`` has ``h_{l-1}``'s shape (:func:`transpose_geometry`)."""
    out = {}
    for l in range(2, net.n_layers):
        d, shape_in, shape_out = net.descriptions[l - 1], tuple(net.shapes[l]), tuple(net.shapes[l - 1])
        if isinstance(d, Conv):
            s = d.stride * (d.pool_stride if d.pool != "none" else 1)
            geo = [transpose_geometry(a, b, s, kernel) for a, b in zip(shape_in[1:], shape_out[1:])]
            out[l] = {"kind": "conv_transpose", "in_shape": shape_in, "out_shape": shape_out,
                      "kernel": tuple(g[0] for g in geo), "stride": (s, s), "padding": tuple(g[1] for g in geo),
                      "output_padding": tuple(g[2] for g in geo)}
        else:
            out[l] = {"kind": "linear", "in_shape": shape_in, "out_shape": shape_out}
    return out


@functools.lru_cache(maxsize=64)
def _geometry(shapes: tuple, descriptions: tuple, kernel: int) -> dict:
    """:func:`inverse_geometry` by the network's shapes and layer descriptions (cached: read every step)."""
    return inverse_geometry(SimpleNamespace(shapes=shapes, descriptions=descriptions, n_layers=len(descriptions)), kernel)


def _numel(shape) -> int:
    return math.prod(shape)


# ----------------------------------------------------------------------------- the method
@register("credit", "dtp")
@dataclass(frozen=True)
class DTP(CreditMethod):
    """Difference target propagation with pooling (Tang et al. 2022, Algorithm 1; module docstring)."""

    top: str = param("backprop", choices=TOPS,
                     help="top target's dL/dh through the head's transposed weights (backprop) or a fixed random B")
    variant: str = param("pooling", choices=VARIANTS,
                         help="conv layers pool (stride 1) or down-sample by a strided conv (no pooling)")
    alpha: float = param(0.5, low=0.0, low_open=True, help="top target step: hat h = h - alpha dL/dh")
    inverse_lr: float = param(1e-3, low=0.0, low_open=True, help="learning rate of the inverses")
    inverse_noise: float = param(1.0, low=0.0, help="sigma of the noise on the inverses' training input (0: none)")
    inverse_kernel: int = param(3, low=1, help="kernel of the transposed convolutions (enlarged if the shapes need it)")
    inverse_activation: str = param("tanh", choices=ACTIVATIONS, help="activation of the inverses")
    inverse_optimizer: str = param("adam", choices=INVERSE_OPTIMIZERS, help="the inverses' optimiser (Algorithm 1: sgd)")
    train_inverse_first: bool = param(True, help="train the inverses before computing the targets (Algorithm 1)")

    # ------------------------------------------------------------------ setup
    def check_network(self, net) -> None:
        """Raise a :class:`ParameterError` unless ``net`` is a feed-forward network of at least two layers,
        without dropout, whose conv encoder layers match ``variant``."""
        if not hasattr(net, "descriptions") or not hasattr(net, "shapes"):
            raise ParameterError(f"DTP: the network must be a FeedForward network of Conv and Dense layers, got "
                                 f"{type(net).__name__}")
        if net.n_layers < 2:
            raise ParameterError(f"DTP: the network must have at least 2 layers (encoder layers and a head), got "
                                 f"{net.n_layers}")
        if any(p > 0 for p in net.dropout):
            raise ParameterError(f"DTP: dropout must be 0 for every population (targets are set on the cells' "
                                 f"activities), got {list(net.dropout)}")
        for l, d in enumerate(net.descriptions[:-1], start=1):
            if not isinstance(d, Conv):
                continue
            if self.variant == "pooling" and (d.pool == "none" or d.stride != 1):
                raise ParameterError(
                    f"DTP: variant 'pooling' needs every conv encoder layer to pool with stride 1 (conv + pooling, "
                    f"Tang et al. 2022 Algorithm 1); layer {l} has pool={d.pool!r}, stride={d.stride} -- use "
                    f"variant='strided' for strided convolutions without pooling")
            if self.variant == "strided" and (d.pool != "none" or d.stride < 2):
                raise ParameterError(
                    f"DTP: variant 'strided' needs every conv encoder layer to have stride >= 2 and no pooling "
                    f"(Bartunov et al. 2018); layer {l} has pool={d.pool!r}, stride={d.stride} -- use "
                    f"variant='pooling' for conv + pooling layers")

    def check_setup(self, net, objective, optimizer: str = "sgd") -> None:
        """See :meth:`check_network` (any objective, SGD or Adam)."""
        self.check_network(net)

    def inverse_geometry(self, net) -> dict:
        """:func:`inverse_geometry` of ``net`` with this method's ``inverse_kernel``."""
        return inverse_geometry(net, self.inverse_kernel)

    def init_state(self, net, generator: torch.Generator | None = None) -> dict:
        """Inverse parameters ``inv{l}.weight``, ``inv{l}.bias`` (PyTorch's default initialisation,
        ``U(+-1/sqrt(fan_in))``) for ``l = 2 .. L-1``, their Adam moments (``.m``, ``.v``, zeros),
        ``inverse_steps`` (0) and, with ``top = "random_feedback"``, ``feedback`` ``B`` shaped like the head's
        weights, drawn as they are (``U(+-1/sqrt(fan_in))``) and fixed."""
        self.check_network(net)
        dtype = net.layers[0].weight.dtype

        def uniform(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound

        state: dict = {}
        for l, geo in self.inverse_geometry(net).items():
            if geo["kind"] == "conv_transpose":
                c_up, c_lo = geo["in_shape"][0], geo["out_shape"][0]
                shape = (c_up, c_lo) + geo["kernel"]  # ConvTranspose2d's (in, out, kh, kw)
                fan_in = c_lo * geo["kernel"][0] * geo["kernel"][1]  # torch's fan_in of a transposed kernel
                bias_shape = (c_lo,)
            else:
                shape = (_numel(geo["out_shape"]), _numel(geo["in_shape"]))
                fan_in, bias_shape = shape[1], (shape[0],)
            state[f"inv{l}.weight"] = uniform(shape, fan_in)
            state[f"inv{l}.bias"] = uniform(bias_shape, fan_in)
            for p in ("weight", "bias"):
                state[f"inv{l}.{p}.m"] = torch.zeros_like(state[f"inv{l}.{p}"])
                state[f"inv{l}.{p}.v"] = torch.zeros_like(state[f"inv{l}.{p}"])
        state["inverse_steps"] = torch.zeros((), dtype=torch.float64)
        if self.top == "random_feedback":
            W = net.layers[-1].weight
            fan_in = nn.init._calculate_fan_in_and_fan_out(W)[0]
            state["feedback"] = uniform(tuple(W.shape), fan_in)
        return state

    # ------------------------------------------------------------------ pieces of the step
    def inverse(self, net, l: int, h: torch.Tensor, state: dict, weight=None, bias=None) -> torch.Tensor:
        """``g_l(h)``: ``act(ConvTranspose2d(h))`` or ``act(G h + c)``, shaped like ``h_{l-1}``
        (``weight``/``bias`` replace the state's, e.g. tensors that require grad)."""
        w = state[f"inv{l}.weight"] if weight is None else weight
        b = state[f"inv{l}.bias"] if bias is None else bias
        geo = _geometry(tuple(net.shapes), tuple(net.descriptions), self.inverse_kernel)[l]
        if geo["kind"] == "conv_transpose":
            u = F.conv_transpose2d(h, w, b, stride=geo["stride"], padding=geo["padding"],
                                   output_padding=geo["output_padding"])
        else:
            u = F.linear(h.flatten(1), w, b)
        return activation(self.inverse_activation, u).reshape(h.shape[0], *geo["out_shape"])

    @staticmethod
    def layer_output(net, l: int, h: torch.Tensor, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, f(u) pooled)`` of layer ``l`` (0-based) on input ``h``, the weights held constant; with ``grad``
        ``u`` is a leaf that requires grad, so the pair carries the chain rule from the output back to the current."""
        layer = net.layers[l]
        if isinstance(layer, nn.Linear) and h.ndim > 2:
            h = h.flatten(1)
        with torch.no_grad():
            u = ops(layer).current(layer, h)
        u.requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            a = activation(net.activation_of(l), u)
            d = net.descriptions[l]
            if isinstance(d, Conv):
                a = d.pooling(a)
        return u, a

    def forward(self, net, x: torch.Tensor) -> tuple[list, list]:
        """``(hs, record)``: the activities ``[h_0, ..., h_L]`` (no dropout, detached) and per layer the pair
        ``(u_l, h_l)`` of :meth:`layer_output` (graphs from each layer's current to its output, for the errors)."""
        hs, record = [net.check_input(x)], []
        for l in range(net.n_layers):
            u, a = self.layer_output(net, l, hs[-1])
            record.append((u, a))
            hs.append(a.detach())
        return hs, record

    def _record(self, net, hs: list, record) -> list:
        return record if record is not None else [self.layer_output(net, l, hs[l]) for l in range(net.n_layers)]

    def noisy_inputs(self, net, hs: list, generator=None) -> dict:
        """``{l: tilde h_{l-1}}`` for ``l = 2 .. L-1``: ``tilde h = h_{l-1} + sigma eps``, ``eps ~ N(0, I)`` drawn from
        ``generator`` in ascending ``l`` (``h_{l-1}`` itself when ``sigma = 0``)."""
        out = {}
        for l in range(2, net.n_layers):
            h = hs[l - 1]
            out[l] = h
            if self.inverse_noise > 0:
                where = generator.device if generator is not None else h.device
                eps = torch.randn(h.shape, generator=generator, device=where, dtype=h.dtype).to(h.device)
                out[l] = eps.mul_(self.inverse_noise).add_(h)  # h + sigma eps, in the noise's own buffer
        return out

    def inverse_losses(self, net, hs: list, state: dict, generator=None, grad: bool = True) -> dict:
        """``{l: (L_inv_l, (g_W, g_b))}``: ``L_inv_l = mean((g_l(f_l(tilde h)) - tilde h)^2)`` with
        ``tilde h = h_{l-1} + sigma eps`` (:meth:`noisy_inputs`) and, with ``grad``, its gradient w.r.t. ``g_l``'s
        weight and bias (nothing else)."""
        tilde = self.noisy_inputs(net, hs, generator)
        fh = {l: self.layer_output(net, l - 1, t, grad=False)[1] for l, t in tilde.items()}
        return self.reconstruction_losses(net, fh, tilde, state, grad)

    def reconstruction_losses(self, net, fh: dict, tilde: dict, state: dict, grad: bool = True) -> dict:
        """``{l: (L_inv_l, (g_W, g_b))}`` of :meth:`inverse_losses` from the inverses' inputs ``fh[l] = f_l(tilde h)``
        and targets ``tilde[l] = tilde h``."""
        out = {}
        for l, t in tilde.items():
            w = state[f"inv{l}.weight"].detach().requires_grad_(grad)
            b = state[f"inv{l}.bias"].detach().requires_grad_(grad)
            with torch.enable_grad():
                loss = ((self.inverse(net, l, fh[l], state, w, b) - t) ** 2).mean()
                grads = torch.autograd.grad(loss, (w, b)) if grad else None
            out[l] = (loss.detach(), grads)
        return out

    @torch.no_grad()
    def train_inverses(self, net, hs: list, state: dict, generator=None) -> dict:
        """One step of every inverse on its reconstruction loss (:meth:`inverse_losses`, :meth:`step_inverses`);
        returns ``{l: L_inv_l}`` before the step."""
        return self.step_inverses(state, self.inverse_losses(net, hs, state, generator))

    @torch.no_grad()
    def step_inverses(self, state: dict, losses: dict) -> dict:
        """One step of every inverse on its gradient ``losses[l] = (L_inv_l, (g_W, g_b))`` with its own Adam
        (``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``, ``p -= lr m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps)``)
        or SGD (``p -= lr g``); returns ``{l: L_inv_l}``."""
        if not losses:
            return {}
        state["inverse_steps"] += 1
        t = float(state["inverse_steps"])
        b1, b2 = ADAM_BETAS
        for l, (_, grads) in losses.items():
            for name, g in zip(("weight", "bias"), grads):
                p = state[f"inv{l}.{name}"]
                if self.inverse_optimizer == "sgd":
                    p.sub_(g, alpha=self.inverse_lr)
                    continue
                m, v = state[f"inv{l}.{name}.m"], state[f"inv{l}.{name}.v"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2 ** t)).sqrt_().add_(ADAM_EPS)
                p.addcdiv_(m, denom, value=-self.inverse_lr / (1 - b1 ** t))
        return {l: float(loss) for l, (loss, _) in losses.items()}

    def output_error(self, net, hs: list, grad: torch.Tensor, record=None) -> torch.Tensor:
        """``e_L = dL/du_L``: the objective's ``dL/dy`` through the head's activation (and pooling)."""
        u, a = self._record(net, hs, record)[-1]
        return torch.autograd.grad(a, u, grad_outputs=grad.reshape(a.shape))[0]

    @torch.no_grad()
    def top_gradient(self, net, hs: list, e_out: torch.Tensor, state: dict) -> torch.Tensor:
        """``dL/dh_{L-1}``: ``e_L`` sent down through the head's weights (``top = "backprop"``) or the fixed
        ``B`` (``"random_feedback"``), shaped like ``h_{L-1}``."""
        L = net.n_layers
        head, h = net.layers[L - 1], hs[L - 1]
        weight = state["feedback"] if self.top == "random_feedback" else None
        pre = h.flatten(1) if isinstance(head, nn.Linear) else h
        return ops(head).send_down(head, e_out, weight=weight, input_shape=pre.shape).reshape(h.shape)

    @torch.no_grad()
    def targets(self, net, hs: list, e_out: torch.Tensor, state: dict) -> dict:
        """``{l: hat h_l}`` for ``l = 1 .. L-1``: ``hat h_{L-1} = h_{L-1} - alpha dL/dh_{L-1}``, then
        ``hat h_{l-1} = h_{l-1} - g_l(h_l) + g_l(hat h_l)`` downward."""
        L = net.n_layers
        t = {L - 1: hs[L - 1] - self.alpha * self.top_gradient(net, hs, e_out, state)}
        for l in range(L - 1, 1, -1):
            g_h, g_t = self.inverse(net, l, torch.cat([hs[l], t[l]]), state).split(hs[l].shape[0])  # one pass for both
            t[l - 1] = hs[l - 1] - g_h + g_t
        return t

    def layer_errors(self, net, hs: list, targets: dict, record=None) -> list:
        """``e_l = dL_l/du_l`` for ``l = 1 .. L-1``, ``L_l = mean((f_l(h_{l-1}) - hat h_l)^2)`` (the pool
        routes it to each window's arg-max), by autograd of ``L_l`` w.r.t. the layer's own current."""
        record = self._record(net, hs, record)[:-1]
        with torch.enable_grad():
            total = sum(((a - targets[l]) ** 2).mean() for l, (_, a) in enumerate(record, start=1))
        return list(torch.autograd.grad(total, [u for u, _ in record]))

    def step(self, net, x, objective, objective_state, state, optimizer, labels=None, generator=None) -> dict:
        """One DTP step on batch ``x`` (module docstring, steps 1-5); ``{"loss": L, "inverse_loss": sum L_inv}``."""
        hs, record = self.forward(net, x)
        out = objective.error(hs[-1], objective_state, None, labels)
        inv = self.train_inverses(net, hs, state, generator) if self.train_inverse_first else {}
        e_out = self.output_error(net, hs, out.grad, record)
        targets = self.targets(net, hs, e_out, state)
        if not self.train_inverse_first:
            inv = self.train_inverses(net, hs, state, generator)
        errors = self.layer_errors(net, hs, targets, record) + [e_out]
        pres = [h.flatten(1) if isinstance(layer, nn.Linear) else h for h, layer in zip(hs[:-1], net.layers)]
        apply_updates(optimizer, list(net.layers), [Factors(post=e, pre=p) for e, p in zip(errors, pres)])
        return {"loss": float(out.loss), "inverse_loss": float(sum(inv.values()))}

    # ------------------------------------------------------------------ locality
    def checkable(self, sizes, pathway: str = "target", output_activation: str = "hardsigmoid",
                  hidden_activation: str = "relu") -> Checkable:
        """A whole DTP step on an MLP of ``sizes`` (at least 3 populations) as a pure function.

        State: ``x``, each layer's current ``u{l}``, the target ``d`` of the output cells (``pathway``), the
        weights ``W{l}``, the inverses ``G{l}`` (``l = 2 .. L-1``; learned by their own loss, fixed within the
        step: :class:`Fixed` matrices on the pathways ``"inverse G{l}"``) and, with ``top = "random_feedback"``,
        ``B`` (``"feedback B{L}"``). With summed losses (the means' ``1/N`` are learning-rate factors):
        ``e_L = (y - d) f'(u_L)``, ``g_W_L = e_L^T h_{L-1}``; ``hat h_{L-1} = h_{L-1} - alpha e_L F`` (``F = W_L``
        or ``B``); ``hat h_{l-1} = h_{l-1} - g_l(h_l) + g_l(hat h_l)``, ``g_l(h) = act(h G_l^T)``;
        ``g_W_l = ((h_l - hat h_l) f'(u_l))^T h_{l-1}``.
        """
        sizes = tuple(sizes)
        if len(sizes) < 3:
            raise ParameterError(f"DTP.checkable: sizes must list at least 3 populations (input, encoder, head), "
                                 f"got {sizes}")
        L = len(sizes) - 1
        rf = self.top == "random_feedback"
        layers = tuple(Layer(f"W{l}", post=f"p{l}", pre=f"p{l - 1}") for l in range(1, L + 1))
        entries = {"x": Cells("p0"), "d": Signal(f"p{L}", pathway)}
        for l in range(1, L + 1):
            entries[f"u{l}"] = Cells(f"p{l}", "current")
            entries[f"W{l}"] = Weight(f"W{l}")
        for l in range(2, L):
            entries[f"G{l}"] = Fixed(f"inverse G{l}", post=f"p{l - 1}", pre=f"p{l}")
        if rf:
            entries["B"] = Fixed(f"feedback B{L}", post=f"p{L}", pre=f"p{L - 1}")
        spec = StateSpec({f"p{i}": n for i, n in enumerate(sizes)}, layers, entries)
        allows = {"pre", "post", "neuron_signal"}
        contracts = {f"W{L}": Contract(f"DTP head W{L}", allows=allows, pathways=(pathway,))}
        for l in range(1, L):
            ways = (pathway,) + tuple(f"inverse G{m}" for m in range(l + 1, L)) + ((f"feedback B{L}",) if rf else ())
            contracts[f"W{l}"] = Contract(f"DTP W{l}", allows=allows, pathways=ways)

        def act(l):
            return output_activation if l == L else hidden_activation

        def fn(s):
            h = [s["x"]] + [activation(act(l), s[f"u{l}"]) for l in range(1, L + 1)]
            e = (h[L] - s["d"]) * activation_derivative(act(L), s[f"u{L}"])
            t = {L - 1: h[L - 1] - self.alpha * (e @ (s["B"] if rf else s[f"W{L}"]))}
            for l in range(L - 1, 1, -1):
                G = s[f"G{l}"]
                t[l - 1] = (h[l - 1] - activation(self.inverse_activation, h[l] @ G.T)
                            + activation(self.inverse_activation, t[l] @ G.T))
            out = {f"W{L}": e.T @ h[L - 1]}
            for l in range(1, L):
                out[f"W{l}"] = ((h[l] - t[l]) * activation_derivative(act(l), s[f"u{l}"])).T @ h[l - 1]
            return out

        return Checkable(f"DTP top={self.top} ({L} layers)", spec, contracts, fn)


# ----------------------------------------------------------------------------- checkables of single layers
#: the input map and kernel of :func:`conv_layer_checkable`: 3x3 input, 2x2 kernel -> 2x2 map -> one pooled cell per channel
CONV_CHECK = {"height": 3, "width": 3, "kernel": 2, "pool": 2}


def conv_layer_checkable(in_channels: int, out_channels: int, hidden_activation: str = "tanh",
                         routing: str = "declared") -> Checkable:
    """A DTP conv layer's update with max pooling, one term per position of the shared kernel (:class:`Shared`).

    State: the input map ``x`` (pre cells), the conv current ``u`` (the post cells, before pooling), the
    target ``t`` of each pooled cell delivered to the cells of its window (pathway ``"target"``: sent down by
    the inverses ``g``) and, with ``routing = "declared"``, the window's winner ``win`` (0/1, pathway
    ``"max-pool routing"``: the pool as a declared circuit). With ``L = 1/2 sum (maxpool(f(u)) - hat h)^2``
    the error of conv cell ``i`` is ``e_i = win_i (f(u_i) - t_i) f'(u_i)`` (the winner's ``f(u_i)`` is the
    pooled cell's activity) and the kernel's term at position ``p`` is ``dK_p[o, c, ky, kx] = sum_b
    e[b, o, p] x[b, c, p + (ky, kx)]``; their sum is the gradient of ``L`` w.r.t. the kernel (tested).
    ``routing = "computed"`` finds the winners from the layer's own currents inside the update (every
    cell of the window: not local without the pool circuit).
    """
    if routing not in ("declared", "computed"):
        raise ParameterError(f"conv_layer_checkable: routing must be 'declared' or 'computed', got {routing!r}")
    H, W, k, pool = CONV_CHECK["height"], CONV_CHECK["width"], CONV_CHECK["kernel"], CONV_CHECK["pool"]
    conv = Shared.conv2d("K", "u", "x", in_channels, out_channels, k, H, W)
    ho, wo = H - k + 1, W - k + 1
    entries = {"x": Cells("x"), "u": Cells("u", "current"), "t": Signal("u", "target")}
    ways = ("target",)
    if routing == "declared":
        entries["win"] = Signal("u", "max-pool routing")
        ways = ("target", "max-pool routing")
    spec = StateSpec({"x": conv.n_pre, "u": conv.n_post}, (conv,), entries)
    contract = Contract("DTP conv layer", allows={"pre", "post", "neuron_signal"}, pathways=ways)

    def fn(s):
        B = s["x"].shape[0]
        u = s["u"].reshape(B, out_channels, ho, wo)
        a = activation(hidden_activation, u)
        if routing == "declared":
            win = s["win"].reshape(u.shape)
        else:
            hp, wp = ho // pool, wo // pool  # each window's maximum, from every cell of it (ties: all win)
            aw = a[:, :, :hp * pool, :wp * pool].reshape(B, out_channels, hp, pool, wp, pool)
            win = torch.zeros_like(a)
            win[:, :, :hp * pool, :wp * pool] = (aw == aw.amax((3, 5), keepdim=True)).to(a.dtype).reshape(
                B, out_channels, hp * pool, wp * pool)
        e = win * (a - s["t"].reshape(u.shape)) * activation_derivative(hidden_activation, u)
        xm = s["x"].reshape(B, in_channels, H, W)
        # patch(x)[b, c, ky, kx, py, px] = x[b, c, py + ky, px + kx] (slices: im2col is slow on tiny float64 maps)
        cols = torch.stack([torch.stack([xm[:, :, ky:ky + ho, kx:kx + wo] for kx in range(k)], 2) for ky in range(k)], 2)
        terms = torch.einsum("boyx,bcijyx->yxocij", e, cols)
        return {"K": terms.reshape(ho * wo, out_channels, in_channels, k, k)}

    return Checkable(f"DTP conv layer ({routing} pool routing)", spec, {"K": contract}, fn)


def inverse_checkable(n_lower: int, n_upper: int, inverse_activation: str = "tanh", reads: str = "own") -> Checkable:
    """A DTP inverse's update ``G: upper -> lower`` on its reconstruction loss, as a pure function.

    State: the noisy activity ``tilde h`` of the lower cells (post of ``G``), the upper cells' response
    ``f = f_l(tilde h)`` (pre of ``G``), the lower cells' reconstruction current ``r = G f + c`` (the post
    cells' own state in the reconstruction phase) and the weights ``G`` and ``W`` (the forward layer
    lower -> upper). With ``L_inv = 1/2 sum (act(r) - tilde h)^2``:
    ``g_G_ij = sum_b (act(r_i) - tilde h_i) act'(r_i) f_j`` -- the post cell's reconstruction error times the
    pre cell's activity, local to the feedback pathway. ``reads = "forward"`` reconstructs through the
    forward weights transposed, ``act(f W)``, instead of its own current (weight transport).
    """
    if reads not in ("own", "forward"):
        raise ParameterError(f"inverse_checkable: reads must be 'own' or 'forward', got {reads!r}")
    spec = StateSpec({"lower": n_lower, "upper": n_upper},
                     (Layer("G", post="lower", pre="upper"), Layer("W", post="upper", pre="lower")),
                     {"xt": Cells("lower", "noisy"), "f": Cells("upper", "noisy"), "r": Cells("lower", "reconstruction"),
                      "G": Weight("G"), "W": Weight("W")})
    contracts = {"G": Contract("DTP inverse (feedback pathway)", allows={"pre", "post"}),
                 "W": Contract("forward layer (not trained here)", allows={"pre", "post"})}

    def fn(s):
        r = s["r"] if reads == "own" else s["f"] @ s["W"]
        rec = activation(inverse_activation, r)
        e = (rec - s["xt"]) * activation_derivative(inverse_activation, r)
        return {"G": e.T @ s["f"], "W": torch.zeros_like(s["W"])}

    return Checkable(f"DTP inverse ({'own current' if reads == 'own' else 'through W^T'})", spec, contracts, fn)


# ----------------------------------------------------------------------------- check-locality rows
_WT = {"weight transport"}
register_check(lambda s: DTP().checkable(s, "target", "identity", "tanh"), 3, False, _WT, label="DTP top=backprop")
register_check(lambda s: DTP().checkable(s, "target", "identity", "tanh"), 4, False, _WT, label="DTP top=backprop")
register_check(lambda s: DTP(top="random_feedback").checkable(s, "target", "identity", "tanh"), 3, True,
               label="DTP top=random_feedback")
register_check(lambda s: DTP(top="random_feedback").checkable(s, "target", "identity", "tanh"), 4, True,
               label="DTP top=random_feedback")
# channels at most 2 (on a 3x3 map): the verdict does not depend on them, and every extra cell is checked at every position
register_check(lambda s: conv_layer_checkable(min(s[0], 2), min(s[1], 2)), 2, True, label="DTP conv layer")
register_check(lambda s: inverse_checkable(s[0], s[1]), 2, True, label="DTP inverse")
