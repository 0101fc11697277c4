"""Feed-forward networks of dense and convolutional layers whose weights live in plain torch modules.

    h_0 = x,   u_l = W_l h_{l-1} + b_l   (dense: a matrix product; conv: a convolution),
    h_l = pool_l( f_l(u_l) )             (pooling after conv layers that ask for it)      l = 1 .. L

``f`` is ``hidden_activation`` on hidden layers and ``output_activation`` on the last (Liu et al. 2024:
ReLU hidden, hardsigmoid ``clamp(u, 0, 1)`` output for backprop; hardsigmoid everywhere for equilibrium
propagation, whose bidirectional dynamics read the same weights, :mod:`neurolearn.networks.bidirectional`).
A dense layer after a map reads it flattened. Initialisation as the authors' code: xavier-uniform with
gain 0.5 (``init_gain``), zero biases; then conv layers with ``prune > 0`` lose that fraction of their
kernel weights at random (Liu et al. 2024 Sec. 6.6.2; the removed weights stay zero in training).

Dropout, per population of cells (input, hidden..., output), as in the paper: ordinary (scaled)
dropout on the input and hidden cells; on the output an *unscaled* Bernoulli(1 - p) mask that the
objective applies to both the output and its target (REFERENCES.md, Liu section). Masks are drawn
from the generator the caller passes (the trainer's stream for the batch, keyed by seed, epoch and
batch: :mod:`neurolearn.rng`), input first, then hidden populations in order, then the output.

:class:`MLP` is the dense-only network ``sizes[0] -> ... -> sizes[-1]``; the registered network
descriptions ``"mlp"`` and ``"feedforward"`` are what recipes build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .._validate import ParameterError, check_choice, check_float, check_int
from ..describe import Description, lookup, param, register
from .activations import ACTIVATIONS, activation
from .layers import Conv, Dense, PrunedConv2d, ops


#: initialisations of :class:`FeedForward`
INITS = ("xavier", "torch")


def keep_mask(shape, keep: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Bernoulli(``keep``) mask of 0/1 floats, drawn four 16-bit numbers per random 64-bit word.

    The probability is quantised to 1/65536, four times fewer random draws than ``bernoulli_``
    (which dominates the cost of a one-layer training step otherwise). The words are drawn on the
    generator's device and moved to ``device``, so the mask does not depend on where it is used.
    """
    n = 1
    for s in shape:
        n *= s
    words = (n + 3) // 4
    where = generator.device if generator is not None else device
    raw = torch.randint(-(2**63), 2**63 - 1, (words,), dtype=torch.int64, generator=generator, device=where)
    if device is not None and raw.device != torch.device(device):
        raw = raw.to(device)
    u16 = raw.view(torch.int16)[:n].view(shape)
    threshold = int(round(keep * 65536)) - 32768  # int16 is uniform on [-32768, 32767]
    # [u16 < threshold] as clamp(threshold - u16, 0, 1): integer operands, so exactly 0 or 1, and
    # float arithmetic runs three times faster here than a comparison to bool
    return u16.to(torch.float32).sub_(threshold).neg_().clamp_(0.0, 1.0)


@dataclass
class ForwardRecord:
    """One training forward pass: ``pres[l]`` is what layer ``l``'s synapses see (its input after
    dropout, flattened for a dense layer), ``currents[l]`` its input current ``u_l``, ``masks[l]`` the
    scaled dropout mask of population ``l`` (``None``: none), ``output`` the output ``h_L`` before the
    output mask, ``out_mask`` the unscaled output mask (``None`` when ``p_out = 0``)."""

    pres: list
    currents: list
    masks: list
    output: torch.Tensor
    out_mask: torch.Tensor | None

    def masked_output(self) -> torch.Tensor:
        """``y = h_L * m`` (the output the objective sees)."""
        return self.output if self.out_mask is None else self.output * self.out_mask


class FeedForward(nn.Module):
    """A network of dense and conv layers (see module docstring).

    Parameters
    ----------
    input_shape: shape of one sample, ``(n,)`` or ``(channels, height, width)``.
    layers: layer descriptions (:class:`~neurolearn.networks.layers.Dense`, :class:`~neurolearn.networks.layers.Conv`).
    hidden_activation, output_activation: one of :data:`~neurolearn.networks.activations.ACTIVATIONS`.
    dropout: one probability per population (input, hidden..., output), each in ``[0, 1)``.
    init_gain: gain of the xavier-uniform initialisation. seed: of the initialisation (``None``: global).
    init: "xavier" (``W ~ U(-a, a)``, ``a = init_gain sqrt(6 / (fan_in + fan_out))``, biases 0) or "torch"
    (PyTorch's default for ``nn.Linear``/``nn.Conv2d``: ``W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, the
    initialisation of Tang et al. 2022's code).
    A layer description's own ``activation`` (when not "") overrides the network's for that layer.
    """

    def __init__(self, input_shape: Sequence[int], layers: Sequence, hidden_activation: str = "relu",
                 output_activation: str = "hardsigmoid", dropout: Sequence[float] | None = None,
                 init_gain: float = 0.5, seed: int | None = None, init: str = "xavier"):
        super().__init__()
        input_shape = tuple(input_shape)
        if len(input_shape) not in (1, 3):
            raise ParameterError(f"FeedForward: input_shape must be (n,) or (channels, height, width), got {input_shape}")
        for i, n in enumerate(input_shape):
            check_int("FeedForward", f"input_shape[{i}]", n, 1)
        if not layers:
            raise ParameterError("FeedForward: layers must list at least one layer")
        self.descriptions = tuple(layers)
        shapes = [input_shape]
        modules = []
        for i, d in enumerate(self.descriptions):
            if not isinstance(d, (Dense, Conv)) and not hasattr(d, "module"):
                raise ParameterError(f"FeedForward: layers[{i}] must be a layer description (Dense, Conv), got {d!r}")
            modules.append(d.module(shapes[-1]))
            shapes.append(tuple(d.out_shape(shapes[-1])))
        self.shapes = tuple(shapes)
        self.input_shape = input_shape
        self.sizes = tuple(_numel(s) for s in shapes)
        self.hidden_activation = check_choice("FeedForward", "hidden_activation", hidden_activation, ACTIVATIONS)
        self.output_activation = check_choice("FeedForward", "output_activation", output_activation, ACTIVATIONS)
        dropout = tuple(dropout) if dropout is not None else (0.0,) * len(shapes)
        if len(dropout) != len(shapes):
            raise ParameterError(
                f"FeedForward: dropout must give one probability per population ({len(shapes)}: input, hidden..., "
                f"output), got {dropout}")
        self.dropout = tuple(check_float("FeedForward", f"dropout[{i}]", p, 0.0, 1.0, high_open=True)
                             for i, p in enumerate(dropout))
        self.init_gain = check_float("FeedForward", "init_gain", init_gain, 0.0, low_open=True)
        self.init = check_choice("FeedForward", "init", init, INITS)
        for i, d in enumerate(self.descriptions):
            act = getattr(d, "activation", "")
            if act:
                check_choice("FeedForward", f"layers[{i}].activation", act, ACTIVATIONS)
        self.layers = nn.ModuleList(modules)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for layer in self.layers:
                fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
                if init == "torch":
                    bound = 1.0 / fan_in ** 0.5
                    layer.weight.uniform_(-bound, bound, generator=gen)
                    if layer.bias is not None:
                        layer.bias.uniform_(-bound, bound, generator=gen)
                    continue
                bound = init_gain * (6.0 / (fan_in + fan_out)) ** 0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                if layer.bias is not None:
                    layer.bias.zero_()
            for d, layer in zip(self.descriptions, self.layers):  # after every weight: dense draws unchanged
                if isinstance(layer, PrunedConv2d):
                    layer.prune(d.prune, gen)

    # ------------------------------------------------------------------ structure
    @property
    def n_layers(self) -> int:
        """Number of synaptic layers."""
        return len(self.layers)

    @property
    def dense_only(self) -> bool:
        """True when every layer is dense (an MLP)."""
        return all(isinstance(layer, nn.Linear) for layer in self.layers)

    def activation_of(self, l: int) -> str:
        """Activation name of population ``l + 1`` (the output of layer ``l``): the layer description's own
        ``activation`` when set, else the network's output (last layer) or hidden activation."""
        own = getattr(self.descriptions[l], "activation", "")
        if own:
            return own
        return self.output_activation if l == self.n_layers - 1 else self.hidden_activation

    def layer_input_shape(self, l: int) -> tuple:
        """Shape of one sample of layer ``l``'s input as the layer reads it (flattened for dense)."""
        s = self.shapes[l]
        return (_numel(s),) if isinstance(self.layers[l], nn.Linear) else s

    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """``x`` as ``(batch, *input_shape)``; flat rows of the right width are reshaped. Raises naming
        the expected shape otherwise."""
        if x.ndim == 2 and x.shape[1] == self.sizes[0]:
            return x if len(self.input_shape) == 1 else x.view(x.shape[0], *self.input_shape)
        if tuple(x.shape[1:]) == self.input_shape:
            return x
        raise ValueError(f"{type(self).__name__}: {name} must have shape (batch, {self.sizes[0]}) or "
                         f"(batch, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")

    # ------------------------------------------------------------------ dynamics
    def stage(self, l: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``l`` on its input ``h``: ``(u_l, pool(f(u_l)))`` (no dropout; differentiable in the
        weights, as the torch modules are)."""
        layer = self.layers[l]
        if isinstance(layer, nn.Linear) and h.ndim > 2:
            h = h.flatten(1)
        u = layer(h)
        a = activation(self.activation_of(l), u)
        d = self.descriptions[l]
        if isinstance(d, Conv):
            a = d.pooling(a)
        return u, a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output rates without dropout: ``f_L(W_L ... f_1(W_1 x + b_1) ... + b_L)``."""
        return self.forward_all(x)[-1]

    def forward_all(self, x: torch.Tensor, generator: torch.Generator | None = None, train: bool = False):
        """All populations' activities ``[h_0, ..., h_L]``; with ``train=True``, scaled dropout on
        input/hidden cells (the returned ``h_l`` are the dropped-out activities that feed the next layer;
        the output without its unscaled mask, see :meth:`output_mask`)."""
        h = self.check_input(x)
        hs = [self.drop(h, 0, generator) if train else h]
        for l in range(self.n_layers):
            _, h = self.stage(l, hs[-1])
            if train and l < self.n_layers - 1:
                h = self.drop(h, l + 1, generator)
            hs.append(h)
        return hs

    def forward_train(self, x: torch.Tensor, generator: torch.Generator | None = None,
                      grad: bool = False, current=None) -> ForwardRecord:
        """One training pass with dropout (masks drawn from ``generator`` in population order, then the
        output mask). With ``grad=True`` the pass is recorded by autograd from the first current on (no
        weight gradients), so that errors can be carried back through it (:class:`~neurolearn.credit.Backprop`).
        ``current(l, layer, h) -> u`` replaces the layer's current ``u = W h + b`` (e.g. one whose backward sends
        errors down through a feedback matrix, :class:`~neurolearn.credit.feedback.RandomFeedback`); it must
        compute the same ``u``."""
        h = self.check_input(x)
        L = self.n_layers
        masks = [self.dropout_mask(h, 0, generator)]
        if masks[0] is not None:
            h = h * masks[0]
        pres, currents = [], []
        for l in range(L):
            layer = self.layers[l]
            if isinstance(layer, nn.Linear) and h.ndim > 2:
                h = h.flatten(1)
            pres.append(h.detach())
            u = ops(layer).current(layer, h) if current is None else current(l, layer, h)
            if grad and l == 0 and L > 1:
                u.requires_grad_(True)
            currents.append(u)
            a = activation(self.activation_of(l), u)
            if isinstance(self.descriptions[l], Conv):
                a = self.descriptions[l].pooling(a)
            if l < L - 1:
                m = self.dropout_mask(a, l + 1, generator)
                masks.append(m)
                if m is not None:
                    a = a * m
            h = a
        out_mask = self.output_mask(h.shape[0], generator, h.device)
        return ForwardRecord(pres, currents, masks, h, out_mask)

    def dropout_mask(self, h: torch.Tensor, pop: int, generator) -> torch.Tensor | None:
        """The scaled dropout mask ``r / (1 - p)`` of population ``pop`` for activity ``h``, or ``None``."""
        p = self.dropout[pop]
        if p == 0:
            return None
        return keep_mask(h.shape, 1 - p, generator, h.device).mul_(1.0 / (1 - p))

    def drop(self, h: torch.Tensor, pop: int, generator) -> torch.Tensor:
        """``h`` times the scaled dropout mask of population ``pop`` (unchanged when ``p = 0``)."""
        m = self.dropout_mask(h, pop, generator)
        return h if m is None else h * m

    _drop = drop  # the former private name

    def output_mask(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor | None:
        """The unscaled Bernoulli(1 - p_out) output mask for one batch, or ``None`` when p_out = 0."""
        p = self.dropout[-1]
        if p == 0:
            return None
        return keep_mask((batch, self.sizes[-1]), 1 - p, generator, device)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class MLP(FeedForward):
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]`` (see module docstring).

    ``sizes``: cells per population, input first (e.g. ``(784, 2000)``); ``bias``: biases on every layer.
    """

    def __init__(self, sizes: Sequence[int], hidden_activation: str = "relu", output_activation: str = "hardsigmoid",
                 dropout: Sequence[float] | None = None, init_gain: float = 0.5, bias: bool = True,
                 seed: int | None = None):
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ParameterError(f"MLP: sizes must list at least 2 populations (input, output), got {sizes}")
        for i, n in enumerate(sizes):
            check_int("MLP", f"sizes[{i}]", n, 1)
        super().__init__((sizes[0],), [Dense(n, bias) for n in sizes[1:]], hidden_activation, output_activation,
                         dropout, init_gain, seed)


# ----------------------------------------------------------------------------- recipe descriptions
@register("network", "mlp")
@dataclass(frozen=True)
class MLPNetwork(Description):
    """Recipe description of an :class:`MLP`; the input size comes from the data."""

    sizes: tuple = param((2000,), "ints", low=1, help="cells of each population after the input")
    hidden_activation: str = param("relu", choices=ACTIVATIONS, help="activation of hidden cells")
    output_activation: str = param("hardsigmoid", choices=ACTIVATIONS, help="activation of output cells")
    dropout: tuple = param((0.3, 0.2), "floats", low=0.0, high=1.0, high_open=True,
                           help="dropout per population: input, hidden..., output (output: unscaled mask)")
    init_gain: float = param(0.5, low=0.0, low_open=True, help="xavier-uniform gain")

    def validate(self):
        if len(self.dropout) != len(self.sizes) + 1:
            raise ParameterError(f"MLPNetwork: dropout must have {len(self.sizes) + 1} entries (input, hidden..., "
                                 f"output) for sizes {list(self.sizes)}, got {list(self.dropout)}")

    @property
    def n_layers(self) -> int:
        """Synaptic layers."""
        return len(self.sizes)

    def build(self, input_shape: tuple, seed: int | None = None) -> MLP:
        """The network for inputs of ``input_shape`` (flattened)."""
        return MLP((_numel(input_shape),) + tuple(self.sizes), self.hidden_activation, self.output_activation,
                   self.dropout, self.init_gain, seed=seed)


@register("network", "feedforward")
@dataclass(frozen=True)
class FeedForwardNetwork(Description):
    """Recipe description of a :class:`FeedForward` network: ``layers`` is a list of tables, each with a
    ``type`` (a registered layer: "dense", "conv") and that layer's keys, e.g.
    ``{type = "conv", channels = 32, kernel = 5, padding = 2, pool = "avg", pool_kernel = 4}``."""

    layers: tuple = param((), "any", help="list of layer tables, each with its type and keys")
    hidden_activation: str = param("relu", choices=ACTIVATIONS, help="activation of hidden cells")
    output_activation: str = param("hardsigmoid", choices=ACTIVATIONS, help="activation of output cells")
    dropout: tuple = param((0.0, 0.0), "floats", low=0.0, high=1.0, high_open=True,
                           help="dropout per population: input, after each layer (output: unscaled mask)")
    init_gain: float = param(0.5, low=0.0, low_open=True, help="xavier-uniform gain")
    init: str = param("xavier", choices=INITS, help="initialisation: xavier (init_gain, zero biases) or torch "
                                                    "(PyTorch's default U(+-1/sqrt(fan_in)) on weights and biases)")

    def validate(self):
        if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, (list, tuple)) or not self.layers:
            raise ParameterError(f"FeedForwardNetwork: layers must be a non-empty list of layer tables, got {self.layers!r}")
        built = []
        for i, item in enumerate(self.layers):
            if isinstance(item, Description):
                built.append(item)
                continue
            if not isinstance(item, dict) or "type" not in item:
                raise ParameterError(f"FeedForwardNetwork: layers[{i}] must be a table with a 'type' "
                                     f"(e.g. {{type = \"dense\", units = 100}}), got {item!r}")
            cls = lookup("layer", item["type"])
            built.append(cls.from_values({k: v for k, v in item.items() if k != "type"}, f"[network] layers[{i}]: "))
        object.__setattr__(self, "layers", tuple(built))
        if len(self.dropout) != len(self.layers) + 1:
            raise ParameterError(f"FeedForwardNetwork: dropout must have {len(self.layers) + 1} entries (input, "
                                 f"after each layer), got {list(self.dropout)}")

    def values(self) -> dict:
        out = super().values()
        out["layers"] = [dict(type=d.registry_name, **d.values()) for d in self.layers]
        return out

    @property
    def n_layers(self) -> int:
        """Synaptic layers."""
        return len(self.layers)

    def build(self, input_shape: tuple, seed: int | None = None) -> FeedForward:
        """The network for inputs of ``input_shape`` (an image ``(height, width)`` is one channel)."""
        input_shape = tuple(input_shape)
        if len(input_shape) == 2:
            input_shape = (1,) + input_shape
        return FeedForward(input_shape, self.layers, self.hidden_activation, self.output_activation, self.dropout,
                           self.init_gain, seed, self.init)
