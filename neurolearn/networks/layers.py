"""Synaptic layers behind one protocol: dense (``nn.Linear``) and convolutional (``nn.Conv2d``).

Every learning rule in neurolearn changes a synapse by a sum of local products of a post-synaptic
factor and a pre-synaptic factor (samples, phases and -- for a convolution, whose kernel is shared by
every position -- positions):

    dense:  g_ij   = sum_r post[r, i] pre[r, j]                                  (g = post^T pre)
    conv:   g_oc.. = sum_r sum_p post[r, o, p] patch(pre)[r, c.., p]             (the same local product
            at every position p of the output map, summed: weight sharing)

A rule returns the two factors (:class:`Factors`); the layer's :class:`LayerOps`, registered per torch
module type, turn them into the weight gradient, compute the input current ``u = W h + b`` and send a
signal down through a matrix (``e W`` for backprop, ``e B`` for random feedback). Credit methods and
rules go through these operations only, so a new layer type is one registration
(:func:`register_ops`) and every credit method and rule works on it. The weights stay in plain torch
modules, so users bring their own architectures.

Layer *descriptions* (:class:`Dense`, :class:`Conv`) are the frozen, registered recipe entries from
which :class:`~neurolearn.networks.feedforward.FeedForward` builds the modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .._validate import ParameterError
from ..describe import Description, param, register
from .activations import ACTIVATIONS

#: a layer's ``activation``: "" takes the network's (hidden or output) activation
LAYER_ACTIVATIONS = ("",) + ACTIVATIONS


@dataclass
class Factors:
    """A weight gradient as its local factors: ``post`` (R, n_post[, positions]) and ``pre`` (R, n_pre
    [, map]); the layer's ops give ``g_W`` (see module docstring) and ``g_b = sum post`` (a bias is a
    synapse from a constant input 1). Sign convention of ``.grad``: the weight change is ``-lr g``."""

    post: torch.Tensor
    pre: torch.Tensor

    @property
    def bias(self) -> torch.Tensor:
        """``g_b``: ``post`` summed over rows (and positions)."""
        return self.post.sum(0) if self.post.ndim == 2 else self.post.sum((0, 2, 3))

    def dense(self) -> torch.Tensor:
        """``post^T pre`` for a dense layer (use :func:`ops` ``.gradient`` for any layer)."""
        return self.post.T @ self.pre


#: the former name of :class:`Factors` (one-layer updates are low-rank products)
LowRankUpdate = Factors


@dataclass(frozen=True)
class LayerOps:
    """The operations a credit method or rule may apply to a layer module (see module docstring).

    ``current(m, h)``: ``u = W h + b``; ``send_down(m, e, weight)``: ``e W`` (the transpose of the
    forward map applied to a post signal; ``weight`` replaces ``W``, e.g. a feedback matrix ``B``);
    ``gradient(m, f)``: ``g_W`` from :class:`Factors`; ``sgd(m, f, lr_w, lr_b)``: ``W <- W - lr g_W``
    and ``b <- b - lr g_b`` in place, fused where the layer type allows."""

    current: Callable
    send_down: Callable
    gradient: Callable
    sgd: Callable


_OPS: dict[type, LayerOps] = {}


def register_ops(module_type: type, layer_ops: LayerOps) -> None:
    """Register the operations of a torch module type (subclasses inherit them)."""
    _OPS[module_type] = layer_ops


def ops(module: nn.Module) -> LayerOps:
    """The :class:`LayerOps` of ``module`` (looked up along its class hierarchy)."""
    for cls in type(module).__mro__:
        if cls in _OPS:
            return _OPS[cls]
    raise ParameterError(
        f"layer of type {type(module).__name__} has no registered operations; registered: "
        + ", ".join(t.__name__ for t in _OPS) + " (neurolearn.networks.layers.register_ops)")


# ----------------------------------------------------------------------------- dense
def _linear_sgd(m: nn.Linear, f: Factors, lr_w: float, lr_b: float) -> None:
    m.weight.addmm_(f.post.T, f.pre, alpha=-lr_w)  # one fused GEMM: no dense gradient written
    if m.bias is not None:
        m.bias.add_(f.bias, alpha=-lr_b)


register_ops(nn.Linear, LayerOps(
    current=lambda m, h: nn.functional.linear(h, m.weight.detach(), None if m.bias is None else m.bias.detach()),
    send_down=lambda m, e, weight=None, input_shape=None: e @ (m.weight.detach() if weight is None else weight),
    gradient=lambda m, f: f.post.T @ f.pre,
    sgd=_linear_sgd,
))


# ----------------------------------------------------------------------------- convolution
def _conv_gradient(m: nn.Conv2d, f: Factors) -> torch.Tensor:
    # sum over samples and positions of post[o, p] * patch(pre)[c, ky, kx, p]: the weight gradient of
    # the convolution (torch computes it as one convolution)
    return torch.nn.grad.conv2d_weight(f.pre, m.weight.shape, f.post, stride=m.stride, padding=m.padding,
                                       dilation=m.dilation, groups=m.groups)


def _conv_send_down(m: nn.Conv2d, e: torch.Tensor, weight=None, input_shape=None):
    w = m.weight.detach() if weight is None else weight
    if input_shape is None:
        raise ParameterError("Conv2d send_down needs input_shape (the shape of the pre map)")
    return torch.nn.grad.conv2d_input(input_shape, w, e, stride=m.stride, padding=m.padding, dilation=m.dilation,
                                      groups=m.groups)


def _conv_sgd(m: nn.Conv2d, f: Factors, lr_w: float, lr_b: float) -> None:
    m.weight.sub_(_conv_gradient(m, f), alpha=lr_w)
    if m.bias is not None:
        m.bias.sub_(f.bias, alpha=lr_b)


register_ops(nn.Conv2d, LayerOps(
    current=lambda m, h: nn.functional.conv2d(h, m.weight.detach(), None if m.bias is None else m.bias.detach(),
                                              m.stride, m.padding, m.dilation, m.groups),
    send_down=_conv_send_down,
    gradient=_conv_gradient,
    sgd=_conv_sgd,
))


class PrunedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` with a fixed random subset of its kernel weights removed (Liu et al. 2024, Sec. 6.6.2,
    after Miconi 2021; the authors' code removes 50% on MNIST): ``W = W * M`` with a 0/1 buffer ``mask``
    ``M`` drawn once, and every weight gradient masked, ``g_W <- g_W * M``, so removed synapses stay zero
    under SGD and Adam (a zero gradient leaves Adam's moments, and so the weight, at zero)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))

    def prune(self, fraction: float, generator: torch.Generator | None = None) -> None:
        """Remove ``round(fraction * n)`` of the ``n`` kernel weights, chosen uniformly at random."""
        n = self.weight.numel()
        drop = torch.randperm(n, generator=generator)[: round(fraction * n)]
        mask = torch.ones(n)
        mask[drop] = 0.0
        with torch.no_grad():
            self.mask.copy_(mask.view_as(self.mask))
            self.weight.mul_(self.mask)


def _pruned_gradient(m: PrunedConv2d, f: Factors) -> torch.Tensor:
    return _conv_gradient(m, f).mul_(m.mask)


def _pruned_sgd(m: PrunedConv2d, f: Factors, lr_w: float, lr_b: float) -> None:
    m.weight.sub_(_pruned_gradient(m, f), alpha=lr_w)
    if m.bias is not None:
        m.bias.sub_(f.bias, alpha=lr_b)


register_ops(PrunedConv2d, LayerOps(
    current=_OPS[nn.Conv2d].current,
    send_down=_conv_send_down,
    gradient=_pruned_gradient,
    sgd=_pruned_sgd,
))


# ----------------------------------------------------------------------------- descriptions
POOLS = ("none", "avg", "max")


@register("layer", "dense")
@dataclass(frozen=True)
class Dense(Description):
    """A fully connected layer of ``units`` cells: ``u = W h + b`` (``nn.Linear``)."""

    units: int = param(100, low=1, help="number of cells")
    bias: bool = param(True, help="a bias per cell (a synapse from a constant input)")
    activation: str = param("", choices=LAYER_ACTIVATIONS,
                            help="this layer's activation ('': the network's hidden or output activation)")

    def out_shape(self, in_shape: tuple) -> tuple:
        """``(units,)``."""
        return (self.units,)

    def module(self, in_shape: tuple) -> nn.Module:
        """The ``nn.Linear`` from the flattened input to ``units`` cells."""
        n = 1
        for s in in_shape:
            n *= s
        return nn.Linear(n, self.units, bias=self.bias)


@register("layer", "conv")
@dataclass(frozen=True)
class Conv(Description):
    """A convolution ``u = W * h + b`` (``nn.Conv2d``: ``channels`` kernels of ``kernel`` x ``kernel``,
    shared by every position) followed, after the activation, by an optional pooling of the map
    (``pool`` = "avg" / "max" over ``pool_kernel`` with ``pool_stride`` and ``pool_padding``). ``prune``: the
    fraction of kernel weights removed at random at initialisation (:class:`PrunedConv2d`)."""

    channels: int = param(32, low=1, help="output channels (kernels)")
    kernel: int = param(5, low=1, help="kernel size")
    stride: int = param(1, low=1, help="stride of the convolution")
    padding: int = param(0, low=0, help="zero padding of the input")
    bias: bool = param(True, help="a bias per channel")
    pool: str = param("none", choices=POOLS, help="pooling after the activation")
    pool_kernel: int = param(2, low=1, help="pooling window")
    pool_stride: int = param(2, low=1, help="pooling stride")
    pool_padding: int = param(0, low=0, help="pooling padding")
    prune: float = param(0.0, low=0.0, high=1.0, high_open=True,
                         help="fraction of kernel weights removed at random at initialisation (they stay zero)")
    activation: str = param("", choices=LAYER_ACTIVATIONS,
                            help="this layer's activation ('': the network's hidden or output activation)")

    def validate(self):
        if self.pool != "none" and 2 * self.pool_padding > self.pool_kernel:
            raise ParameterError(f"Conv: pool_padding must be <= pool_kernel / 2 ({self.pool_kernel / 2:g}), "
                                 f"got {self.pool_padding}")

    def conv_shape(self, in_shape: tuple) -> tuple:
        """Shape ``(channels, H', W')`` of the convolution's output for an input ``(C, H, W)``."""
        if len(in_shape) != 3:
            raise ParameterError(f"Conv: the input must be a map (channels, height, width), got shape {in_shape}; "
                                 "a conv layer cannot follow a dense one")
        _, h, w = in_shape
        h2 = (h + 2 * self.padding - self.kernel) // self.stride + 1
        w2 = (w + 2 * self.padding - self.kernel) // self.stride + 1
        if h2 < 1 or w2 < 1:
            raise ParameterError(f"Conv: kernel {self.kernel} does not fit the input map {h}x{w} (padding {self.padding})")
        return (self.channels, h2, w2)

    def out_shape(self, in_shape: tuple) -> tuple:
        """Shape after convolution and pooling."""
        c, h, w = self.conv_shape(in_shape)
        if self.pool == "none":
            return (c, h, w)
        h2 = (h + 2 * self.pool_padding - self.pool_kernel) // self.pool_stride + 1
        w2 = (w + 2 * self.pool_padding - self.pool_kernel) // self.pool_stride + 1
        if h2 < 1 or w2 < 1:
            raise ParameterError(f"Conv: pool_kernel {self.pool_kernel} does not fit the map {h}x{w}")
        return (c, h2, w2)

    def module(self, in_shape: tuple) -> nn.Module:
        """The ``nn.Conv2d`` (a :class:`PrunedConv2d` when ``prune > 0``, pruned by the network after its
        initialisation, :meth:`~neurolearn.networks.feedforward.FeedForward`)."""
        self.conv_shape(in_shape)
        cls = PrunedConv2d if self.prune > 0 else nn.Conv2d
        return cls(in_shape[0], self.channels, self.kernel, self.stride, self.padding, bias=self.bias)

    def pooling(self, a: torch.Tensor) -> torch.Tensor:
        """The pooled map of the activity ``a`` (identity without pooling)."""
        if self.pool == "avg":
            return nn.functional.avg_pool2d(a, self.pool_kernel, self.pool_stride, self.pool_padding)
        if self.pool == "max":
            return nn.functional.max_pool2d(a, self.pool_kernel, self.pool_stride, self.pool_padding)
        return a
