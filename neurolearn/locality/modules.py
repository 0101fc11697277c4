"""Checking a training step written in plain torch on an ``nn.Module``: the state is recorded, not wired.

:func:`check_module_step` takes a module (an ``nn.Sequential`` of ``nn.Linear`` / ``nn.ReLU``, or
your own module built from ``nn.Linear`` layers), a training step written the usual way, and the
contracts of the layers to check. It runs the step once to record what it reads and derives the
:class:`~neurolearn.locality.contract.StateSpec` from it:

* every module that owns one 2-D parameter (``nn.Linear``'s ``weight``) is a **layer** ``l`` with
  weights ``W_l`` (``Weight``), from the population that feeds it (``pre``) to its own population
  ``l`` (``post``); a 1-D parameter or buffer of that module of length ``n_post`` (the bias) is a
  per-cell parameter of its cells (``CellParam``);
* the step's tensor arguments named in ``inputs`` are **input populations** (``Cells``), those
  named in ``signals`` are **signals** delivered through a pathway (``Signal``, e.g. the target to
  the output cells), those named in ``scalars`` are broadcast **scalars**;
* the output of each call of layer ``l`` (its current ``u_l = x W_l^T + b_l``) is recorded by a
  forward hook as **cell activity** of population ``l`` (``Cells(l, "current")``); later calls of
  the same layer in one step (a second phase) are further entries;
* a 2-D float buffer is a **fixed matrix** (``Fixed``): the random feedback ``B`` of feedback
  alignment (Lillicrap et al. 2016), delivered through the pathway named in ``fixed`` (by default
  the buffer's own name, which no contract declares until you do).

The derived update recomputes the step from any state the checker draws: parameters and buffers
are copied from the state into (a private copy of) the module, the arguments come from the state,
and each recorded layer output is *replaced* by the state's value. The replacement is exact in the
forward pass and passes gradients straight through to the layer's own computation, so autograd
still gives ``dL/dW_l = delta_l^T x_l`` with ``delta_l`` evaluated at the state's activities:
exactly what a weight change of the step reads. The checker (:func:`~neurolearn.locality.check`)
then perturbs what each layer's contract forbids.

**The step protocol.** The step is called as ``step(module, **arguments)``, one keyword per name
in ``inputs``, ``signals`` and ``scalars``. It reports the weight change in one of three ways, tried
in this order:

1. it returns ``{name: dW}``, ``name`` a layer's weight parameter (``"0.weight"``, ``"fc1.weight"``)
   or the layer's name (``"0"``); other parameters (biases) may be returned and are not checked;
2. it returns ``None`` after setting ``.grad`` (``loss.backward()``, with or without an optimiser
   step): ``dW_l = -W_l.grad``, the gradient-descent direction;
3. it returns ``None`` after changing the weights in place (``W += lr * dW`` under
   ``torch.no_grad()``): ``dW_l`` is the change. Rounding of ``W + lr dW`` in float32 is relative to
   ``W``; with a small ``lr`` it can exceed the tolerance, which is relative to ``dW`` -- prefer 1 or 2.

The update of a batch must be the sum of the per-sample updates (contract ``batch="samples"``): a
loss averaged over the batch (``F.mse_loss``'s default ``reduction="mean"``) divides by the batch
size, which is reported as batch statistics unless ``batch_reduction="mean"`` says so (the derived
update is then multiplied by the batch size before it is compared).

Only the layers named in ``contracts`` are checked (one layer of a multi-layer step, e.g. the
first layer of a backprop step, which reads the next layer's weights: *weight transport*); the
others keep their weights, cells and parameters in the state -- so reading them is seen -- but
their own update is not examined.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from .checker import CheckerError, Report, check
from .contract import SIGNAL_KINDS, Cells, CellParam, Checkable, Contract, Fixed, Layer, Scalar, Signal, StateSpec, Weight

#: how the step combines the samples of a batch (see the module docstring)
BATCH_REDUCTIONS = ("sum", "mean")
_UNCHECKED = Contract("not checked (update not examined)", allows=frozenset(SIGNAL_KINDS), batch="sequence")


class _Replace(torch.autograd.Function):
    """Forward: the recorded value ``v`` exactly; backward: the gradient goes to the computed ``u`` unchanged.

    So ``y = _Replace.apply(u, v)`` makes ``y == v`` while ``dL/du = dL/dy`` (a straight-through
    substitution): the layer's weight gradient ``dL/dW = (dL/dy)^T x`` is the one at the recorded value.
    """

    @staticmethod
    def forward(ctx, computed, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


@dataclass
class _LayerInfo:
    name: str          # layer name (module path, or the parameter's name for the root module)
    module: nn.Module
    weight: str        # full parameter name, e.g. "0.weight"
    n_post: int
    n_pre: int
    pre: str | None = None   # population feeding it, found by the probe
    calls: int = 0           # calls per step, found by the probe


def _out_key(layer: str, k: int) -> str:
    return f"{layer}:out" if k == 0 else f"{layer}:out{k + 1}"


def _find_layers(module: nn.Module, owner: str) -> dict:
    layers = {}
    for path, sub in module.named_modules():
        two_d = [(n, p) for n, p in sub.named_parameters(recurse=False) if p.dim() == 2]
        if len(two_d) > 1:
            raise CheckerError(f"{owner}: module {path or type(module).__name__!r} owns several 2-D parameters "
                               f"{[n for n, _ in two_d]}; put each weight matrix in its own nn.Linear (one layer each)")
        if two_d:
            pname, p = two_d[0]
            if path == "" and any(m is not sub and any(q.dim() == 2 for q in m.parameters(recurse=False))
                                  for m in module.modules()):
                raise CheckerError(f"{owner}: the module owns the 2-D parameter {pname!r} and also has layers; put "
                                   f"{pname!r} in its own nn.Linear so that its output can be recorded")
            name = path or pname
            full = f"{path}.{pname}" if path else pname
            layers[name] = _LayerInfo(name, sub, full, p.shape[0], p.shape[1])
    if not layers:
        raise CheckerError(f"{owner}: the module {type(module).__name__} has no 2-D weight to check; expected "
                           "nn.Linear layers (or modules owning one 2-D nn.Parameter each), got parameters "
                           f"{[(n, tuple(p.shape)) for n, p in module.named_parameters()] or 'none'}")
    return layers


def _width(owner: str, what: str, name: str, value) -> int:
    if isinstance(value, torch.Tensor):
        if value.dim() != 2:
            raise CheckerError(f"{owner}: {what} {name!r} must be an example tensor (batch, n) or a width n, got a "
                               f"tensor of shape {tuple(value.shape)}")
        return int(value.shape[1])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckerError(f"{owner}: {what} {name!r} must be an example tensor (batch, n) or a width n >= 1, got {value!r}")
    return value


class _Recorder:
    """The hooks on a private copy of the module: record populations (probe) or replace layer outputs (check)."""

    def __init__(self, module: nn.Module, layers: Mapping[str, _LayerInfo]):
        self.module = module
        self.layers = layers
        self.mode = "off"
        self.state: Mapping[str, torch.Tensor] = {}
        self.counts: dict = {}
        self.pop_of: dict = {}        # id(tensor) -> population (probe)
        self.keep: list = []          # tensors whose ids are in pop_of, kept alive
        self.order: list = []         # (population, width) of layer outputs in the order they ran (probe)
        self.inputs: dict = {}        # input population -> width
        by_module = {id(info.module): info for info in layers.values()}
        for sub in module.modules():
            info = by_module.get(id(sub))
            if info is not None:
                sub.register_forward_pre_hook(self._pre_hook(info))
                sub.register_forward_hook(self._layer_hook(info))
            elif not any(True for _ in sub.children()) and not any(True for _ in sub.parameters(recurse=False)):
                sub.register_forward_hook(self._passthrough_hook)

    def _track(self, t, pop):
        if isinstance(t, torch.Tensor):
            self.pop_of[id(t)] = pop
            self.keep.append(t)

    def _pre_hook(self, info):
        def hook(mod, args):
            if self.mode != "probe":
                return None
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != info.n_pre:
                raise CheckerError(f"layer {info.name!r} must be called on a (batch, {info.n_pre}) tensor, got "
                                   f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
            pop = self.pop_of.get(id(x))
            if pop is None:  # computed outside a module (torch.relu(...)): the latest population of that width
                pops = [p for p, n in reversed(self.order) if n == info.n_pre]
                pops += [p for p, n in self.inputs.items() if n == info.n_pre]
                if not pops:
                    raise CheckerError(f"layer {info.name!r}: cannot tell which population its input of width "
                                       f"{info.n_pre} comes from; populations are {dict(self.inputs)} and the layer "
                                       f"outputs {dict(self.order)}")
                pop = pops[0]
            if info.pre is not None and info.pre != pop:
                raise CheckerError(f"layer {info.name!r} is called on inputs from two populations ({info.pre!r} and "
                                   f"{pop!r}); one layer must have one pre population")
            info.pre = pop
            return None
        return hook

    def _layer_hook(self, info):
        def hook(mod, args, out):
            if self.mode == "off":
                return None
            k = self.counts.get(info.name, 0)
            self.counts[info.name] = k + 1
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != info.n_post:
                raise CheckerError(f"layer {info.name!r} must return a (batch, {info.n_post}) tensor, got "
                                   f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
            if self.mode == "probe":
                self._track(out, info.name)
                self.order.append((info.name, info.n_post))
                return None
            key = _out_key(info.name, k)
            if key not in self.state:
                raise CheckerError(f"layer {info.name!r} was called {k + 1} times in one step, but only {k} times when "
                                   "the step was recorded; the step must run the same layers on every call")
            return _Replace.apply(out, self.state[key].to(out.dtype))
        return hook

    def _passthrough_hook(self, mod, args, out):
        # an elementwise module without parameters (ReLU, Sigmoid, Dropout): its output is its input's population
        if self.mode == "probe" and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor) \
                and out.shape == args[0].shape and id(args[0]) in self.pop_of and id(out) not in self.pop_of:
            self._track(out, self.pop_of[id(args[0])])
        return None


def module_step_checkable(
    module: nn.Module,
    step: Callable[..., Mapping[str, torch.Tensor] | None],
    contracts: Contract | Mapping[str, Contract],
    *,
    inputs: Mapping[str, int | torch.Tensor],
    signals: Mapping[str, str | Signal] | None = None,
    scalars: Iterable[str] = (),
    fixed: Mapping[str, str | Fixed] | None = None,
    batch_reduction: str = "sum",
    name: str | None = None,
) -> Checkable:
    """The :class:`~neurolearn.locality.contract.Checkable` of a plain-torch training step on ``module``.

    ``step(module, **arguments)`` is one training step (module docstring: returns ``{weight name: dW}``,
    or sets ``.grad``, or changes the weights in place). ``contracts`` is one :class:`Contract` for
    every layer or ``{layer name: Contract}`` for the layers to check (layer names are module paths:
    ``"0"`` in an ``nn.Sequential``, ``"fc1"`` in your module). ``inputs`` maps the step's cell inputs
    to an example ``(batch, n)`` tensor or their width ``n``; ``signals`` maps signal arguments to the
    pathway they arrive through (delivered to the cells of the module's last layer) or to a
    ``Signal(layer name, pathway)``; ``scalars`` names scalar arguments; ``fixed`` maps 2-D buffers to
    their pathway (populations inferred from a layer weight of the same shape) or to a
    ``Fixed(pathway, post=layer name, pre=population)``.

    The state is what a weight change may read (DESIGN.md section 4): ``W_l``, ``b_l``, the inputs,
    every layer's current ``u_l`` and the signals; ``dW_l`` is recomputed from it by the step itself.
    """
    owner = "check_module_step"
    if not isinstance(module, nn.Module):
        raise CheckerError(f"{owner}: module must be a torch.nn.Module, got {type(module).__name__}")
    if not callable(step):
        raise CheckerError(f"{owner}: step must be a function step(module, **arguments), got {type(step).__name__}")
    if batch_reduction not in BATCH_REDUCTIONS:
        raise CheckerError(f"{owner}: batch_reduction must be one of {BATCH_REDUCTIONS}, got {batch_reduction!r}")
    if not isinstance(inputs, Mapping) or not inputs:
        raise CheckerError(f"{owner}: inputs must map the step's input argument names to an example (batch, n) "
                           f"tensor or a width, e.g. inputs={{'x': 3}}; got {inputs!r}")
    signals = dict(signals or {})
    fixed = dict(fixed or {})
    scalars = list(scalars) if not isinstance(scalars, str) else [scalars]
    copy = _private_copy(module, owner)
    layers = _find_layers(copy, owner)
    dtype = next(p.dtype for p in copy.parameters() if p.dim() == 2)

    if isinstance(contracts, Contract):
        contracts = {n: contracts for n in layers}
    if not isinstance(contracts, Mapping) or not contracts:
        raise CheckerError(f"{owner}: contracts must be a Contract or {{layer name: Contract}} for some of the layers "
                           f"{list(layers)}; got {contracts!r}")
    unknown = [k for k in contracts if k not in layers]
    if unknown:
        raise CheckerError(f"{owner}: contracts name unknown layer(s) {unknown}; the module's layers are {list(layers)} "
                           "(module paths of the modules that own a 2-D weight)")
    bad = [k for k, c in contracts.items() if not isinstance(c, Contract)]
    if bad:
        raise CheckerError(f"{owner}: contracts[{bad[0]!r}] must be a Contract, got {type(contracts[bad[0]]).__name__}")
    args = [*inputs, *signals, *scalars]
    clash = sorted({a for a in args if args.count(a) > 1} | {a for a in args if a in layers})
    if clash:
        raise CheckerError(f"{owner}: argument names {clash} are used twice (inputs, signals, scalars and layer names "
                           "must all differ)")
    widths = {k: _width(owner, "input", k, v) for k, v in inputs.items()}

    populations = dict(widths) | {n: i.n_post for n, i in layers.items()}
    last = list(layers)[-1]
    signals = {k: _signal_entry(k, how, last, populations, owner) for k, how in signals.items()}

    # ---- the probe: run the step once on the module's own weights to record what it reads
    rec = _Recorder(copy, layers)
    rec.inputs = dict(widths)
    gen = torch.Generator().manual_seed(0)
    probe_args = {k: torch.randn(2, n, generator=gen).to(dtype) for k, n in widths.items()}
    for k, v in probe_args.items():
        rec._track(v, k)
    out, before = _probe(copy, step, rec, probe_args, signals, scalars, layers, populations, dtype, owner)
    for info in layers.values():
        info.calls = rec.counts.get(info.name, 0)
    unrun = [n for n in contracts if layers[n].calls == 0]
    if unrun:
        raise CheckerError(f"{owner}: the step never ran layer(s) {unrun} (the layers it ran: "
                           f"{[n for n, i in layers.items() if i.calls]}); a checked layer's cells must be recorded")
    _read_update(copy, out, layers, contracts, before, owner, probe=True)
    for info in layers.values():  # a layer the step does not run: its pre population by width
        if info.pre is None:
            pops = [p for p, n in reversed(rec.order) if n == info.n_pre] + [p for p, n in widths.items() if n == info.n_pre]
            if not pops:
                raise CheckerError(f"{owner}: layer {info.name!r} is not run by the step and no population has its "
                                   f"input width {info.n_pre}")
            info.pre = pops[0]
    rec.keep, rec.pop_of = [], {}

    # ---- the spec
    entries: dict = {k: Cells(k) for k in widths}
    for info in layers.values():
        entries[info.weight] = Weight(info.name)
        for c in range(info.calls):
            entries[_out_key(info.name, c)] = Cells(info.name, "current" if c == 0 else f"current, call {c + 1}")
    entries.update(_parameter_entries(copy, layers, populations, fixed, owner))
    entries.update(signals)
    for k in scalars:
        entries[k] = Scalar(k)
    spec = StateSpec(populations, tuple(Layer(n, n, i.pre) for n, i in layers.items()), entries)
    all_contracts = {n: contracts.get(n, _UNCHECKED) for n in layers}
    return Checkable(name or f"{getattr(step, '__name__', 'step')} on {type(module).__name__}", spec, all_contracts,
                     _update_fn(copy, step, rec, layers, contracts, spec, [*inputs, *signals, *scalars], dtype,
                                batch_reduction, owner))


def _private_copy(module, owner):
    try:
        return _copy.deepcopy(module)
    except Exception as e:
        raise CheckerError(f"{owner}: the module could not be copied ({type(e).__name__}: {e}); the check runs on a "
                           "copy so that your module is left as it is") from e


def _probe(copy, step, rec, probe_args, signals, scalars, layers, populations, dtype, owner):
    """Run the step once on probe values (the module's own weights) with the recorder on; check what it returns."""
    gen = torch.Generator().manual_seed(1)
    args = dict(probe_args)
    for k, how in signals.items():
        args[k] = torch.randn(2, populations[how.population], generator=gen).to(dtype)
    for k in scalars:
        args[k] = torch.tensor(1.0, dtype=dtype)
    before = {n: copy.get_parameter(i.weight).detach().clone() for n, i in layers.items()}
    rec.mode = "probe"
    try:
        with torch.enable_grad():
            out = step(copy, **args)
    except CheckerError:
        raise
    except Exception as e:
        raise CheckerError(f"{owner}: the step raised {type(e).__name__}: {e} when called as step(module, "
                           f"{', '.join(f'{k}=<{tuple(v.shape)}>' for k, v in args.items())})") from e
    finally:
        rec.mode = "off"
    return out, before


def _signal_entry(key, how, last, populations, owner) -> Signal:
    if isinstance(how, str):
        return Signal(last, how)
    if not isinstance(how, Signal):
        raise CheckerError(f"{owner}: signals[{key!r}] must be a pathway name or a Signal(population, pathway), got {how!r}")
    if how.population not in populations:
        raise CheckerError(f"{owner}: signal {key!r} goes to unknown population {how.population!r}; populations are "
                           f"{sorted(populations)} (inputs and layer names)")
    return how


def _parameter_entries(copy, layers, populations, fixed, owner) -> dict:
    entries = {}
    by_module = {id(i.module): i for i in layers.values()}
    weights = {i.weight for i in layers.values()}
    unknown = [k for k in fixed if k not in dict(copy.named_buffers())]
    if unknown:
        raise CheckerError(f"{owner}: fixed names unknown buffer(s) {unknown}; the module's buffers are "
                           f"{[n for n, _ in copy.named_buffers()]} (register a fixed matrix with register_buffer)")
    for path, sub in copy.named_modules():
        info = by_module.get(id(sub))
        for kind, items in (("parameter", sub.named_parameters(recurse=False)), ("buffer", sub.named_buffers(recurse=False))):
            for pname, t in items:
                full = f"{path}.{pname}" if path else pname
                if full in weights or not t.is_floating_point():
                    continue
                if kind == "buffer" and t.dim() == 2:
                    entries[full] = _fixed_entry(full, t, fixed.get(full, full), layers, populations, owner)
                elif info is not None and t.dim() == 1 and t.shape[0] == info.n_post:
                    entries[full] = CellParam(info.name)
                elif t.dim() == 0:
                    entries[full] = Scalar(full)
                else:
                    raise CheckerError(
                        f"{owner}: cannot place the {kind} {full!r} of shape {tuple(t.shape)}: the state can hold a "
                        "layer's 2-D weight, a 1-D parameter or buffer of a layer's own cells (length n_post, like the "
                        "bias), a 2-D buffer (a fixed matrix) and 0-D buffers (scalars)")
    return entries


def _fixed_entry(key, t, how, layers, populations, owner) -> Fixed:
    if isinstance(how, Fixed):
        for pop in (how.post, how.pre):
            if pop not in populations:
                raise CheckerError(f"{owner}: fixed matrix {key!r} names unknown population {pop!r}; populations are "
                                   f"{sorted(populations)} (inputs and layer names)")
        want = (populations[how.post], populations[how.pre])
        if tuple(t.shape) != want:
            raise CheckerError(f"{owner}: fixed matrix {key!r} has shape {tuple(t.shape)}, but {how.post!r} x {how.pre!r} "
                               f"is {want}")
        return how
    if not isinstance(how, str):
        raise CheckerError(f"{owner}: fixed[{key!r}] must be a pathway name or a Fixed(pathway, post, pre), got {how!r}")
    like = [i for i in layers.values() if (i.n_post, i.n_pre) == tuple(t.shape)]
    if len(like) != 1:
        raise CheckerError(f"{owner}: the 2-D buffer {key!r} of shape {tuple(t.shape)} is shaped like "
                           f"{'the weights of ' + str([i.name for i in like]) if like else 'no layer weight'}; say "
                           f"which cells it connects: fixed={{{key!r}: Fixed({how!r}, post=<layer>, pre=<population>)}}")
    return Fixed(how, post=like[0].name, pre=like[0].pre)


def _read_update(copy, out, layers, checked, before, owner, probe=False) -> dict:
    """``{layer: dW}`` for the ``checked`` layers from what the step returned, its ``.grad`` or its in-place change."""
    if out is not None and not isinstance(out, Mapping):
        raise CheckerError(f"{owner}: the step must return {{weight name: dW}} or None (after loss.backward() or an "
                           f"in-place change of the weights), got {type(out).__name__}")
    result = {}
    if out is not None:
        names = {n: n for n in layers} | {i.weight: n for n, i in layers.items()}
        params = dict(copy.named_parameters())
        unknown = [k for k in out if k not in names and k not in params]
        if unknown:
            raise CheckerError(f"{owner}: the step returned dW for unknown name(s) {unknown}; expected layer weights "
                               f"{[i.weight for i in layers.values()]} (or layer names {list(layers)})")
        for k, v in out.items():
            if k in names and names[k] in checked:
                result[names[k]] = v
    for n in checked:
        if n in result:
            continue
        w = copy.get_parameter(layers[n].weight)
        if w.grad is not None:
            result[n] = -w.grad
        elif out is None and (probe is False or not torch.equal(w.detach(), before[n])):
            result[n] = w.detach() - before[n]
        else:
            raise CheckerError(f"{owner}: the step gave no update for layer {n!r}: it returned "
                               f"{sorted(out) if out is not None else 'None'}, left {layers[n].weight}.grad unset and "
                               "did not change the weight; return {'" + layers[n].weight + "': dW}, call loss.backward(),"
                               " or change the weight in place")
    for n, v in result.items():
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != (layers[n].n_post, layers[n].n_pre):
            raise CheckerError(f"{owner}: dW of layer {n!r} must be a tensor of shape {(layers[n].n_post, layers[n].n_pre)} "
                               f"(like {layers[n].weight}), got "
                               f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    return {n: v.detach() for n, v in result.items()}


def _update_fn(copy, step, rec, layers, checked, spec, args, dtype, batch_reduction, owner):
    tensors = {k for k, e in spec.entries.items() if isinstance(e, (Weight, CellParam, Fixed, Scalar)) and k not in args}
    params = {k for k, _ in copy.named_parameters()}

    def fn(state):
        with torch.no_grad():
            for k in tensors:  # the state's weights, biases and buffers into the module (its dtype)
                (copy.get_parameter(k) if k in params else copy.get_buffer(k)).copy_(state[k])
        for p in copy.parameters():
            p.grad = None
        before = {n: copy.get_parameter(layers[n].weight).detach().clone() for n in checked}
        call = {k: state[k].to(dtype) for k in args}
        rec.state, rec.counts, rec.mode = state, {}, "replace"
        try:
            with torch.enable_grad():
                out = step(copy, **call)
        finally:
            rec.mode = "off"
        missing = [n for n in checked if rec.counts.get(n, 0) != layers[n].calls]
        if missing:
            raise CheckerError(f"{owner}: the step ran layer(s) {missing} a different number of times than when it was "
                               "recorded; it must run the same layers on every call")
        dW = _read_update(copy, out, layers, checked, before, owner)
        if batch_reduction == "mean":
            batch = next(state[k].shape[0] for k in args if state[k].dim() == 2)
            dW = {n: v * batch for n, v in dW.items()}
        return {n: dW[n] if n in dW else torch.zeros(i.n_post, i.n_pre, dtype=dtype) for n, i in layers.items()}

    return fn


def check_module_step(
    module: nn.Module,
    step: Callable[..., Mapping[str, torch.Tensor] | None],
    contracts: Contract | Mapping[str, Contract],
    *,
    inputs: Mapping[str, int | torch.Tensor],
    signals: Mapping[str, str | Signal] | None = None,
    scalars: Iterable[str] = (),
    fixed: Mapping[str, str | Fixed] | None = None,
    batch_reduction: str = "sum",
    name: str | None = None,
    **check_kw,
) -> Report:
    """Check a plain-torch training step on ``module`` against the layers' contracts; return the :class:`Report`.

    The state is recorded from the step (module docstring), so nothing is wired by hand:
    :func:`module_step_checkable` derives it, :func:`~neurolearn.locality.check` perturbs what each
    contract forbids (``check_kw``: ``max_examples``, ``seed``, ``synapses_per_layer``,
    ``time_budget_s``, ``rtol``; ``dtype`` defaults to the module's, e.g. float32). The report lists
    the checked layers only.
    """
    ch = module_step_checkable(module, step, contracts, inputs=inputs, signals=signals, scalars=scalars, fixed=fixed,
                               batch_reduction=batch_reduction, name=name)
    check_kw.setdefault("dtype", next(p.dtype for p in module.parameters() if p.dim() == 2))
    report = check(ch, **check_kw)
    names = contracts if isinstance(contracts, Mapping) else ch.contracts
    report.contracts = {n: ch.contracts[n] for n in names}
    return report
