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
``(n_cells,)``; scalars ``()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


Entry = Union[Cells, Trace, CellParam, Signal, Weight, Fixed, Scalar]


@dataclass(frozen=True)
class Layer:
    """A synaptic layer: weights ``(n_post, n_pre)`` from population ``pre`` to population ``post``."""

    name: str
    post: str
    pre: str


@dataclass(frozen=True)
class StateSpec:
    """The populations (name -> size), layers and state entries of a checkable learning step."""

    populations: Mapping[str, int]
    layers: tuple
    entries: Mapping[str, Entry]
    batch_size: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "populations", dict(self.populations))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "entries", dict(self.entries))
        names = {l.name for l in self.layers}
        for layer in self.layers:
            for pop in (layer.pre, layer.post):
                if pop not in self.populations:
                    raise ParameterError(f"StateSpec: layer {layer.name!r} names unknown population {pop!r}")
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
            if not isinstance(entry, (Cells, Trace, CellParam, Signal, Weight, Fixed, Scalar)):
                raise ParameterError(f"StateSpec: entry {key!r} must be one of Cells, Trace, CellParam, Signal, "
                                     f"Weight, Fixed, Scalar; got {type(entry).__name__}")

    def layer(self, name: str) -> Layer:
        """The :class:`Layer` called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ParameterError(f"StateSpec: no layer {name!r}; layers are {[l.name for l in self.layers]}")

    def shape(self, key: str, batch: int) -> tuple:
        """The shape entry ``key`` has for a batch of ``batch`` samples."""
        e = self.entries[key]
        if isinstance(e, Weight):
            layer = self.layer(e.layer)
            return (self.populations[layer.post], self.populations[layer.pre])
        if isinstance(e, Fixed):
            return (self.populations[e.post], self.populations[e.pre])
        if isinstance(e, CellParam):
            return (self.populations[e.population],)
        if isinstance(e, Scalar):
            return ()
        return (batch, self.populations[e.population])


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
