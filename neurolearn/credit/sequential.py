"""Sequential presentation of the contrastive hinge (Tang et al. 2022, Section 3.1; METHODS.md 3.2), a credit method.

The batched contrastive hinge (:class:`~neurolearn.objectives.contrastive.ContrastiveHinge`) forwards all
2B views at once and takes one step on the summed loss. Here the same batch is *presented*, one view at
a time, to a network with a short-term memory and the hinge error circuit. For every anchor ``s``:

1. anchor: view A of image ``s`` is shown; ``z^A`` is written into the memory
   (:class:`~neurolearn.circuits.memory.ShortTermMemory`; no update with the gradient block);
2. positive: view B of image ``s`` is shown; the circuit (:class:`~neurolearn.circuits.hinge_error.HingeError`)
   compares ``z^B`` with the memory and gives the per-cell error ``delta = -G+ sign`` (eq. 5) and the gate;
   the ``inner`` credit method carries ``delta`` down and updates;
3. negatives: views B of the next images in batch order, ``t = s+1 .. s+K-1`` (``negatives = K``, no
   wrap-around) or every other image ``t = s+1, ..., B-1, 0, ..., s-1`` (``negatives = 0``: "all");
   the memory still holds ``z^A`` (it steps by one presentation each time); ``delta = w_neg G- sign`` (eq. 6),
   each followed by an update;
4. without the gradient block (eq. 3) the anchor's own error ``delta^A = -(sum of the presentations'
   deltas)`` (eq. 4) is applied last, replaying the anchor's view kept in the memory (``store_pre``);
5. the memory is reset.

The inner method (any registered credit method, key ``inner``) is used unchanged: it is handed a proxy
objective whose ``error(y)`` runs the circuit on its own forward pass's output ``y`` (the memory read
through the circuit) and returns the circuit's ``delta`` as ``dL/dy`` for that single presentation.

``hold_weights = True``: every presentation's update is computed at the batch's weights and collected;
the sum is applied once per batch through the optimiser. Because ``L`` is a sum of per-pair terms and the
circuit's ``delta`` is eqs. 5-6, with plain SGD (or any optimiser fed the summed gradient) this *equals*
the batched update of the objective (tested, with and without the gradient block). ``hold_weights =
False`` (default, the biological mode): the weights change after every presentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import ParameterError
from ..describe import lookup, param, register
from ..objectives.base import Objective, OutputError
from .base import CreditMethod


@dataclass(frozen=True)
class CircuitError(Objective):
    """Proxy objective of one presentation: ``error(y)`` is the hinge circuit's ``delta`` for output ``y``.

    ``state``: ``{"circuit": HingeError, "memory": M (1, n), "phase": ..., "w_neg": float}`` (the circuit
    reads the memory and the current output; the signals are left in ``state["signals"]``), or
    ``{"fixed": delta}`` (the anchor's replayed error). ``loss``: the presentation's hinge term.
    """

    pathway = "hinge error"

    def error(self, y: torch.Tensor, state, mask: torch.Tensor | None = None, labels=None) -> OutputError:
        """``dL/dy = delta`` of the circuit (``M`` held: eq. 7's gradient block) or the fixed anchor error."""
        if "fixed" in state:
            delta, loss = state["fixed"].to(y.dtype), torch.zeros((), dtype=y.dtype, device=y.device)
        else:
            sig = state["circuit"](state["memory"].to(y.dtype), y.detach(), state["phase"], state["w_neg"])
            state["signals"] = sig
            delta, loss = sig.delta, sig.loss.sum()
        return OutputError(loss=loss, grad=delta if mask is None else delta * mask)


class _Collect(torch.optim.Optimizer):
    """Stands in for the optimiser while weights are held: ``step()`` adds each parameter's ``.grad`` to a sum
    and leaves the parameter unchanged; :meth:`apply` hands the sums to the real optimiser once."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        groups = [dict(g) for g in optimizer.param_groups]  # same hyper-parameters (an inner method may read lr)
        super().__init__(groups, {})
        self.sums: dict = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    s = self.sums.get(p)
                    self.sums[p] = p.grad.detach().clone() if s is None else s.add_(p.grad)

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """``p.grad = sum of the collected gradients``; one ``optimizer.step()``."""
        if not self.sums:
            return
        optimizer.zero_grad(set_to_none=True)
        for p, s in self.sums.items():
            p.grad = s
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@register("credit", "sequential")
@dataclass(frozen=True)
class SequentialHinge(CreditMethod):
    """Anchor, store, positive, update, K negatives each with an update, reset (module docstring; Tang et al.
    2022, Section 3.1 and eqs. 3-7), with a registered ``inner`` credit method carrying the circuit's error."""

    inner: str = param("backprop", help="registered credit method that carries the circuit's error down (not 'sequential')")
    hold_weights: bool = param(False, help="true: collect the updates and apply their sum once per batch (equals the "
                                            "batched update); false: update after every presentation")
    graded: bool = param(False, help="circuit sign: graded D+ - D- instead of H(D+) - H(D-)")
    inhibition_gain: float = param(1.0, low=0.0, help="gain of the circuit's inhibitory copies (fault injection; 1 = intact)")
    memory_retention: float = param(0.5, low=0.0, low_open=True, help="memory units' time constant, in presentations")
    memory_recurrence: float = param(1.0, low=0.0, high=1.0, help="memory recurrence: 1 holds the anchor, < 1 lets it decay")

    def validate(self) -> None:
        """``inner`` names a registered credit method other than ``"sequential"``."""
        if self.inner == "sequential":
            raise ParameterError("SequentialHinge: inner must be a registered credit method other than 'sequential', "
                                 "got 'sequential'")
        try:
            lookup("credit", self.inner)
        except ParameterError as e:
            raise ParameterError(f"SequentialHinge: inner {e}") from None

    def inner_method(self) -> CreditMethod:
        """The inner credit method with its defaults."""
        return lookup("credit", self.inner)()

    def circuits(self, objective, store_pre: bool):
        """``(HingeError, ShortTermMemory)`` with the objective's margins and this method's circuit keys."""
        from ..circuits.hinge_error import HingeError
        from ..circuits.memory import ShortTermMemory

        return (HingeError(m1=objective.m1, m2=objective.m2, graded=self.graded, inhibition_gain=self.inhibition_gain),
                ShortTermMemory(retention=self.memory_retention, recurrence=self.memory_recurrence, store_pre=store_pre))

    # ------------------------------------------------------------------ CreditMethod protocol
    def init_state(self, net, generator: torch.Generator | None = None) -> dict:
        """The inner method's state (checkpointed as its own)."""
        return self.inner_method().init_state(net, generator)

    def on_epoch_start(self, state: dict, epoch: int) -> None:
        """The inner method's schedule."""
        self.inner_method().on_epoch_start(state, epoch)

    def check_setup(self, net, objective, optimizer: str = "sgd") -> None:
        """The objective must be a :class:`ContrastiveHinge` (margins, negatives, weighting, gradient block are
        read from it); the inner method must accept the network. This method always runs its own circuit and
        memory: an objective with ``error_source = "circuit"`` must set the same circuit keys (else one set
        would be silently ignored)."""
        _require_hinge(objective)
        if getattr(objective, "error_source", "closed_form") == "circuit":
            keys = ("graded", "inhibition_gain", "memory_retention", "memory_recurrence")
            differ = [f"{k} = {getattr(objective, k)!r} in [objective], {getattr(self, k)!r} in [credit]"
                      for k in keys if getattr(objective, k) != getattr(self, k)]
            if differ:
                raise ParameterError("SequentialHinge: the sequential mode runs its own circuit from the [credit] keys; "
                                     "with [objective] error_source = \"circuit\" both sections must agree, but "
                                     + "; ".join(differ))
        self.inner_method().check_setup(net, CircuitError(), optimizer)

    def spiking_support(self, net) -> str | None:
        """As the inner method."""
        return self.inner_method().spiking_support(net)

    @torch.no_grad()
    def respond(self, net, x: torch.Tensor) -> torch.Tensor:
        """As the inner method."""
        return self.inner_method().respond(net, x)

    def checkable(self, sizes, pathway: str = "hinge error", output_activation: str = "identity",
                  hidden_activation: str = "relu"):
        """The inner method's step with the error delivered through the hinge circuit's pathway (the top
        layer's update as the circuits deliver it: :func:`~neurolearn.circuits.hinge_error.hinge_circuit_checkable`)."""
        return self.inner_method().checkable(sizes, pathway, output_activation, hidden_activation)

    def step(self, net, x, objective, objective_state, state: dict, optimizer, labels=None, generator=None) -> dict:
        """Present the ``2B`` rows ``x = [views A; views B]`` (as the objective's ``present`` makes them) anchor
        by anchor (module docstring); returns ``{"loss": sum of the presentations' hinge terms}``."""
        _require_hinge(objective)
        if x.shape[0] % 2:
            raise ParameterError(f"SequentialHinge: x must hold 2B rows (views A then views B), got {x.shape[0]}")
        from ..objectives.contrastive import _negatives_k

        B = x.shape[0] // 2
        xA, xB = x[:B], x[B:]
        K = _negatives_k(objective.negatives or "all")
        w_neg = 1.0 if K == 0 or objective.weighting == "paper" else 1.0 / K
        circuit, memory = self.circuits(objective, store_pre=not objective.grad_block)
        inner = self.inner_method()
        proxy = CircuitError()
        opt = _Collect(optimizer) if self.hold_weights else optimizer
        total = 0.0

        def present(view, proxy_state):
            nonlocal total
            lb = None if labels is None else labels[:1]
            out = inner.step(net, view, proxy, proxy_state, state, opt, lb, generator)
            total += float(out["loss"])

        for s in range(B):
            a = xA[s : s + 1]
            with torch.no_grad():
                zA = net.forward_train(a, generator).masked_output()
            mem = memory.write(memory.init_state(1, zA.shape[1], a.numel() if memory.store_pre else None,
                                                 dtype=zA.dtype, device=zA.device),
                               zA, a.reshape(1, -1) if memory.store_pre else None)
            if K:
                negatives = [t for t in range(s + 1, min(s + K, B))]
            else:
                negatives = [t for t in range(s + 1, B)] + [t for t in range(0, s)]
            anchor_error = torch.zeros_like(zA)
            for t, phase in [(s, "positive")] + [(t, "negative") for t in negatives]:
                mem = memory.step(mem)
                st = {"circuit": circuit, "memory": memory.read(mem), "phase": phase, "w_neg": w_neg}
                present(xB[t : t + 1], st)
                anchor_error -= st["signals"].delta
            if not objective.grad_block:  # eq. 4: the anchor's error, replayed with the kept anchor view
                present(mem["pre"].reshape(a.shape).to(a.dtype), {"fixed": anchor_error})
            mem = memory.reset(mem)
        if self.hold_weights:
            opt.apply(optimizer)
        return {"loss": total}


def _require_hinge(objective) -> None:
    from ..objectives.contrastive import ContrastiveHinge

    if not isinstance(objective, ContrastiveHinge):
        raise ParameterError(f"SequentialHinge: the objective must be the contrastive hinge ('contrastive_hinge', whose "
                             f"m1, m2, negatives, weighting and grad_block it reads), got {type(objective).__name__}")
