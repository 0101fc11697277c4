"""Locality contracts: what the update of one synapse may read.

For a synapse ``W[l][i, j]`` (post cell ``i`` of population ``post``, pre cell ``j`` of population
``pre``) a :class:`Contract` names the signals it may read (DESIGN.md section 4):

* ``pre``            -- activity of pre cell ``j`` (any phase of the same sample),
* ``post``           -- activity of post cell ``i`` (any phase of the same sample), and its own
  per-cell parameters (bias, threshold, homeostatic offset ``H_i``),
* ``trace``          -- a short-term-memory trace of those same two cells,
* ``weight``         -- the weight ``W[l][i, j]`` itself,
* ``neuron_signal``  -- a signal delivered to cell ``i`` by a *declared* pathway (feedback weights
  ``B``, a circuit such as ``KWTA`` or ``HingeError``, a target); a declared pathway may also be a
  :class:`Fixed` matrix, whose row / column ``i`` and the cells at its other end cell ``i`` may read,
* ``global_scalar``  -- one broadcast number (a neuromodulator, the SPSA loss difference).

Everything else is non-local: other synapses' weights (``W[l+1]`` transposed is *weight transport*),
other cells' activity not delivered by a declared circuit, and statistics over a batch of samples
unless the contract declares the batch as a *sequence* of samples presented one after another.

A learning step that can be checked is described by a :class:`StateSpec`: the populations of cells,
the layers (post population, pre population) and, for each entry of the state dictionary, what it is
(:class:`Cells`, :class:`Trace`, :class:`CellParam`, :class:`Signal`, :class:`Weight`, :class:`Fixed`,
:class:`Scalar`).
An update function maps such a state to ``{layer name: dW}`` with ``dW`` of shape ``(n_post, n_pre)``.
Activity-like entries have shape ``(batch, n_cells)``; weights and fixed matrices ``(n_post, n_pre)``; per-cell parameters
``(n_cells,)``; scalars ``()``; per-sample scalars (:class:`SampleScalar`, a reward per trial) ``(batch,)``.

Two structures go beyond one synapse per weight:

* a **time axis** (``StateSpec(..., time=T)``): activity-like entries are ``(batch, T, n)``, per-sample
  scalars ``(batch, T)``, and the update returns the weight change at every step, ``(T, n_post, n_pre)``
  (the window's change is their sum). ``dW[t]`` may read the past and present of its synapse's cells,
  never the future: the checker perturbs steps ``> t`` and reports *reads the future*;
* **weight sharing** (:class:`Shared`, e.g. ``Shared.conv1d``): one kernel entry ``q`` is the weight of
  a synapse at every position ``p``; the update returns each position's term, ``(n_positions,
  *kernel_shape)``, and the kernel changes by their sum (:meth:`Shared.kernel_update`). Each term is
  checked as the update of its own synapse (post cell, pre cell) at that position.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Protocol, Union

import torch

from .._validate import ParameterError, check_choice

#: the signal kinds a contract may allow
SIGNAL_KINDS = ("pre", "post", "trace", "weight", "neuron_signal", "global_scalar")
#: how the samples of a batch may interact: ``samples`` -- the update is a sum of per-sample updates,
#: ``sequence`` -- samples are presented in order and sample t may use traces left by samples < t
#: (the paper's sequential mode). The checker then does not ask for per-sample additivity; it cannot
#: tell from the summed update which samples each term read, so that ``sequence`` holds (no sample
#: reads a later one) is the contract's claim, not something the checker proves.
BATCH_MODES = ("samples", "sequence")


@dataclass(frozen=True)
class Contract:
    """What the update of synapse ``(i, j)`` may read.

    ``allows`` is a subset of :data:`SIGNAL_KINDS`; ``pathways`` names the declared pathways through
    which a ``neuron_signal`` may arrive (e.g. ``("KWTA",)``, ``("feedback B",)``); ``batch`` is one of
    :data:`BATCH_MODES`.
    """

    name: str
    allows: frozenset = frozenset({"pre", "post", "weight"})
    pathways: tuple = ()
    batch: str = "samples"

    def __post_init__(self):
        for name, example in (("allows", "{'pre', 'post'}"), ("pathways", "('feedback B',)")):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (set, frozenset, tuple, list)):
                raise ParameterError(f"Contract {self.name!r}: {name} must be a set (or tuple) of names, e.g. "
                                     f"{example}; got {value!r} -- pass {{{value!r}}} for a single one"
                                     if isinstance(value, str) else
                                     f"Contract {self.name!r}: {name} must be a set (or tuple) of names, e.g. "
                                     f"{example}; got {type(value).__name__} {value!r}")
        allows = frozenset(self.allows)
        bad = sorted(a for a in allows if a not in SIGNAL_KINDS)
        if bad:
            raise ParameterError(
                f"Contract {self.name!r}: allows must be a subset of {SIGNAL_KINDS}, got unknown {bad}"
            )
        object.__setattr__(self, "allows", allows)
        object.__setattr__(self, "pathways", tuple(self.pathways))
        if self.pathways and "neuron_signal" not in allows:
            raise ParameterError(
                f"Contract {self.name!r}: pathways {self.pathways} declared but 'neuron_signal' is not allowed"
            )
        check_choice(f"Contract {self.name!r}", "batch", self.batch, BATCH_MODES)

    def describe(self) -> str:
        """One-line human description, e.g. ``pre, post, neuron_signal[KWTA]; batch=samples``."""
        parts = []
        for kind in SIGNAL_KINDS:
            if kind in self.allows:
                parts.append(kind + (f"[{', '.join(self.pathways)}]" if kind == "neuron_signal" and self.pathways else ""))
        return ", ".join(parts) + f"; batch={self.batch}"


# ----------------------------------------------------------------------------- state description
@dataclass(frozen=True)
class Cells:
    """Activity of a population, shape ``(batch, n)``; ``phase`` labels e.g. free / nudged."""

    population: str
    phase: str = ""


@dataclass(frozen=True)
class Trace:
    """Short-term-memory trace of a population's cells, shape ``(batch, n)``."""

    population: str


@dataclass(frozen=True)
class CellParam:
    """A per-cell parameter of a population (bias, threshold, homeostatic offset), shape ``(n,)``."""

    population: str


@dataclass(frozen=True)
class Signal:
    """A signal delivered to each cell of ``population`` through ``pathway``, shape ``(batch, n)``."""

    population: str
    pathway: str


@dataclass(frozen=True)
class Weight:
    """The weight matrix of layer ``layer``, shape ``(n_post, n_pre)``."""

    layer: str


@dataclass(frozen=True)
class Fixed:
    """A fixed, non-learning matrix between populations ``post`` and ``pre``, shape ``(n_post, n_pre)``.

    Feedback weights ``B`` of feedback alignment (Lillicrap et al. 2016: ``e_1 = (e_2 B_2) * f'(u_1)``
    with a fixed random ``B_2`` in place of ``W_2``), direct feedback alignment (Noekland 2016) or a
    fixed random projection. It is a *pathway*: a layer whose post population is one end of the matrix
    may read it only when its contract declares ``pathway`` (``Contract(..., pathways=(pathway,))``),
    and then post cell ``i`` receives, through the matrix's row or column ``i`` (``B[i, :]`` when
    ``post`` is the layer's post population, ``B[:, i]`` when ``pre`` is), the activity of every cell
    at the other end -- and, through further declared fixed matrices, of the cells beyond. Reading the
    learned weights of another layer instead stays *weight transport*.
    """

    pathway: str
    post: str
    pre: str


@dataclass(frozen=True)
class Scalar:
    """A broadcast scalar, shape ``()``."""

    name: str = "scalar"


@dataclass(frozen=True)
class SampleScalar:
    """A scalar per sample (per trial), shape ``(batch,)`` (``(batch, T)`` with a time axis).

    A reward ``r_b`` of trial ``b`` in a three-factor rule ``dW_ij = sum_b r_b post_bi pre_bj`` (the
    neuromodulated Hebbian rule of reward learning, e.g. Fremaux & Gerstner 2016): each sample's term
    may read its own sample's scalar (``global_scalar`` in the contract: broadcast to every synapse);
    reading another sample's scalar (a baseline ``r - mean_b r``) is *batch statistics*.
    """

    name: str = "reward"


Entry = Union[Cells, Trace, CellParam, Signal, Weight, Fixed, Scalar, SampleScalar]
#: the entries that carry one value (or one row of cells) per sample: sliced by sample, drawn over time
PER_SAMPLE = (Cells, Trace, Signal, SampleScalar)


@dataclass(frozen=True)
class Layer:
    """A synaptic layer: weights ``(n_post, n_pre)`` from population ``pre`` to population ``post``."""

    name: str
    post: str
    pre: str


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass(frozen=True)
class Shared:
    """A layer with shared weights (a convolution): kernel entry ``q`` at position ``p`` is the synapse
    from pre cell ``synapses[p][q][1]`` to post cell ``synapses[p][q][0]``.

    The kernel ``K`` (shape ``kernel_shape``) changes by the sum over positions of each position's
    term, ``dK = sum_p dK_p`` (a convolution's weight gradient is such a sum, LeCun et al. 1989); the
    update returns the terms, ``(n_positions, *kernel_shape)``, and each term is checked as the update
    of its own synapse: for a Hebbian kernel ``dK_p[o, c, m] = y[o, p] x[c, p s + m]``. Build one with
    :meth:`conv1d` or :meth:`conv2d` (valid convolutions, no padding).
    """

    name: str
    post: str
    pre: str
    kernel_shape: tuple
    synapses: tuple
    n_post: int
    n_pre: int

    def __post_init__(self):
        object.__setattr__(self, "kernel_shape", tuple(self.kernel_shape))
        object.__setattr__(self, "synapses", tuple(tuple(tuple(c) for c in row) for row in self.synapses))
        nk = _prod(self.kernel_shape)
        if not self.synapses or any(len(row) != nk for row in self.synapses):
            raise ParameterError(f"Shared {self.name!r}: synapses must list, for every position, one (post, pre) "
                                 f"pair per kernel entry ({nk} for kernel_shape {self.kernel_shape})")
        for row in self.synapses:
            for i, j in row:
                if not (0 <= i < self.n_post and 0 <= j < self.n_pre):
                    raise ParameterError(f"Shared {self.name!r}: synapse ({i}, {j}) outside {self.n_post} post x "
                                         f"{self.n_pre} pre cells")

    @property
    def n_positions(self) -> int:
        """How many positions share the kernel."""
        return len(self.synapses)

    def kernel_update(self, dW: torch.Tensor) -> torch.Tensor:
        """The kernel's change ``dK = sum_p dK_p`` from the per-position terms ``(n_positions, *kernel_shape)``."""
        return dW.sum(0)

    @classmethod
    def conv1d(cls, name: str, post: str, pre: str, in_channels: int, out_channels: int, kernel_size: int,
               length: int, stride: int = 1) -> "Shared":
        """A valid 1-d convolution: pre cell ``c * length + x``, post cell ``o * L_out + p``, kernel
        ``(out_channels, in_channels, kernel_size)``, ``L_out = (length - kernel_size) // stride + 1``;
        the term at position ``p`` of entry ``(o, c, m)`` is the synapse (post ``(o, p)``, pre ``(c, p stride + m)``)."""
        flat = cls.conv2d(name, post, pre, in_channels, out_channels, (1, kernel_size), 1, length, stride)
        return replace(flat, kernel_shape=(out_channels, in_channels, kernel_size))  # same order of entries

    @classmethod
    def conv2d(cls, name: str, post: str, pre: str, in_channels: int, out_channels: int, kernel_size, height: int,
               width: int, stride: int = 1) -> "Shared":
        """A valid 2-d convolution (as ``torch.nn.functional.conv2d`` without padding): pre cell
        ``(c, y, x) -> (c H + y) W + x``, post cell ``(o, py, px)``, kernel ``(out, in, kh, kw)``; the term at
        position ``(py, px)`` of entry ``(o, c, ky, kx)`` is the synapse (post ``(o, py, px)``, pre
        ``(c, py stride + ky, px stride + kx)``)."""
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        for pname, v in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel height", kh),
                         ("kernel width", kw), ("height", height), ("width", width), ("stride", stride)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"Shared.conv {name!r}: {pname} must be an integer >= 1, got {v!r}")
        if kh > height or kw > width:
            raise ParameterError(f"Shared.conv {name!r}: kernel {(kh, kw)} larger than the input {(height, width)}")
        ho, wo = (height - kh) // stride + 1, (width - kw) // stride + 1
        synapses = []
        for py in range(ho):
            for px in range(wo):
                row = []
                for o in range(out_channels):
                    for c in range(in_channels):
                        for ky in range(kh):
                            for kx in range(kw):
                                post_cell = (o * ho + py) * wo + px
                                pre_cell = (c * height + py * stride + ky) * width + px * stride + kx
                                row.append((post_cell, pre_cell))
                synapses.append(tuple(row))
        return cls(name, post, pre, (out_channels, in_channels, kh, kw), tuple(synapses), out_channels * ho * wo,
                   in_channels * height * width)


@dataclass(frozen=True)
class StateSpec:
    """The populations (name -> size), layers and state entries of a checkable learning step.

    ``time``: the number of time steps of a time axis (module docstring), or ``None``.
    """

    populations: Mapping[str, int]
    layers: tuple
    entries: Mapping[str, Entry]
    batch_size: int | None = None
    time: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "populations", dict(self.populations))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "entries", dict(self.entries))
        names = {l.name for l in self.layers}
        if self.time is not None and (isinstance(self.time, bool) or not isinstance(self.time, int) or self.time < 1):
            raise ParameterError(f"StateSpec: time must be None (no time axis) or an integer >= 1, got {self.time!r}")
        for layer in self.layers:
            if not isinstance(layer, (Layer, Shared)):
                raise ParameterError(f"StateSpec: layers must be Layer or Shared, got {type(layer).__name__}")
            for pop in (layer.pre, layer.post):
                if pop not in self.populations:
                    raise ParameterError(f"StateSpec: layer {layer.name!r} names unknown population {pop!r}")
            if isinstance(layer, Shared):
                if self.time is not None:
                    raise ParameterError(f"StateSpec: shared layer {layer.name!r} with a time axis is not supported; "
                                         "check the convolution per time step")
                have = (self.populations[layer.post], self.populations[layer.pre])
                if have != (layer.n_post, layer.n_pre):
                    raise ParameterError(f"StateSpec: shared layer {layer.name!r} connects {layer.n_post} post and "
                                         f"{layer.n_pre} pre cells but populations {layer.post!r}, {layer.pre!r} "
                                         f"have {have}")
        for key, entry in self.entries.items():
            pop = getattr(entry, "population", None)
            if pop is not None and pop not in self.populations:
                raise ParameterError(f"StateSpec: entry {key!r} names unknown population {pop!r}")
            if isinstance(entry, Weight) and entry.layer not in names:
                raise ParameterError(f"StateSpec: entry {key!r} names unknown layer {entry.layer!r}")
            if isinstance(entry, Fixed):
                for pop in (entry.post, entry.pre):
                    if pop not in self.populations:
                        raise ParameterError(f"StateSpec: fixed matrix {key!r} names unknown population {pop!r}; "
                                             f"populations are {sorted(self.populations)}")
            if not isinstance(entry, (Cells, Trace, CellParam, Signal, Weight, Fixed, Scalar, SampleScalar)):
                raise ParameterError(f"StateSpec: entry {key!r} must be one of Cells, Trace, CellParam, Signal, "
                                     f"Weight, Fixed, Scalar, SampleScalar; got {type(entry).__name__}")

    def layer(self, name: str) -> Layer | Shared:
        """The :class:`Layer` (or :class:`Shared` layer) called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ParameterError(f"StateSpec: no layer {name!r}; layers are {[l.name for l in self.layers]}")

    def shape(self, key: str, batch: int) -> tuple:
        """The shape entry ``key`` has for a batch of ``batch`` samples."""
        e = self.entries[key]
        if isinstance(e, Weight):
            layer = self.layer(e.layer)
            if isinstance(layer, Shared):
                return layer.kernel_shape
            return (self.populations[layer.post], self.populations[layer.pre])
        if isinstance(e, Fixed):
            return (self.populations[e.post], self.populations[e.pre])
        if isinstance(e, CellParam):
            return (self.populations[e.population],)
        if isinstance(e, Scalar):
            return ()
        steps = () if self.time is None else (self.time,)
        if isinstance(e, SampleScalar):
            return (batch,) + steps
        return (batch,) + steps + (self.populations[e.population],)

    def update_shape(self, layer_name: str) -> tuple:
        """The shape of the dW an update returns for ``layer_name``: ``(n_post, n_pre)``, ``(T, n_post, n_pre)``
        with a time axis, ``(n_positions, *kernel_shape)`` for a :class:`Shared` layer."""
        layer = self.layer(layer_name)
        if isinstance(layer, Shared):
            return (layer.n_positions,) + layer.kernel_shape
        steps = () if self.time is None else (self.time,)
        return steps + (self.populations[layer.post], self.populations[layer.pre])


State = Mapping[str, torch.Tensor]
UpdateFn = Callable[[State], Mapping[str, torch.Tensor]]


class LocalUpdate(Protocol):
    """Anything the checker can check: a spec, a contract per layer and a pure update function."""

    spec: StateSpec
    contracts: Mapping[str, Contract]

    def update(self, state: State) -> Mapping[str, torch.Tensor]:
        """``{layer name: dW}`` (shape ``(n_post, n_pre)``) for a state drawn from ``spec`` (DESIGN.md section 4)."""
        ...


@dataclass(frozen=True)
class Checkable:
    """A concrete :class:`LocalUpdate`: ``update(state) -> {layer: dW}`` with its spec and contracts.

    ``name`` is what reports print (e.g. ``"Backprop (2 layers)"``); ``contracts`` maps each layer
    name to the contract its update must honour.
    """

    name: str
    spec: StateSpec
    contracts: Mapping[str, Contract]
    fn: UpdateFn = field(repr=False)

    def update(self, state: State) -> Mapping[str, torch.Tensor]:
        """``{layer name: dW}`` for ``state``."""
        return self.fn(state)
