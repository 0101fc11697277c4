"""Layer-wise learning: one layer at a time, each with its own head, as a schedule around a credit rule.

Tang, Yang & Amit 2022 (Sec. 3.3, Fig. 4): layer ``l`` gets its own head ``H_l`` (a linear map from the
flattened output ``x_l`` to the head's cells, no bias) and the objective is applied to the head's output;
the network trained at a step is the one-hidden-layer network (frozen layers ``< l``) -> layer ``l`` -> ``H_l``:

    x_{l-1} = F_{<l}(x)  (no gradient),  h_l = W_l x_{l-1} + b_l,  x_l = pool(sigma_l(h_l)),
    z = sigma_out(H_l flatten(x_l)),      delta_z = dL/dz * sigma_out'(.)
    delta_l = sigma_l'(h_l) * pool^T(M_l^T delta_z),     M_l = H_l ("backprop"), a fixed random B_l
              ("random_feedback"), B_l receiving H_l's increment at every step ("updated_random_feedback"),
              sign(B_l) with B_l updated ("sign_feedback"), or what any other registered random-feedback
              method sends errors through (``update`` names a credit type: :func:`head_updates`)
    g_{W_l} = delta_l x_{l-1}^T,   g_{H_l} = delta_z flatten(x_l)^T      (only W_l, b_l and H_l change)

Schedules (METHODS.md section 4):

* ``"greedy"`` (GLL): layer ``l = epoch // epochs_per_layer`` (the top layer after the last block), set by
  :meth:`LayerWise.on_epoch_start`; each layer starts with a fresh optimiser state;
* ``"random"`` (RLL): every mini-batch draws ``l`` uniformly from the step's generator (the trainer keys it
  by seed, epoch and batch); each layer keeps one optimiser state for the whole run.

Decisions (documented choices where the paper leaves room):

* **Heads.** The network is read as Tang's: an encoder (layers ``0 .. L-2``) and the network's final dense
  layer, the end-to-end head. Layer-wise learning trains the encoder layers; the *top* encoder layer's head
  is the network's own final dense layer (its layer-wise network is exactly the end-to-end network's last
  block and head), every lower layer ``l`` has a head ``H{l}`` in the method's state (``n_out x
  numel(x_l)``, PyTorch's default init ``U(+-1/sqrt(fan_in))`` as Tang's code). All heads have the network's
  output width (the objective's state is made for it): ``head`` must be 0 or that width. Heads use the
  network's output activation (identity in Tang's encoders).
* **Optimiser.** Each layer's optimiser runs inside the method on tensors kept in its state (so the
  trainer checkpoints them): the kind follows the trainer's ``[training] optimizer`` (``"adam"``: Adam with
  the trainer's betas and eps, Tang's choice; ``"sgd"``: plain SGD), the learning rate is the trainer's
  current one for layer ``l``'s parameter group (per-layer rates and the schedule act), used for ``W_l``,
  ``b_l`` and the head alike. The trainer's own optimiser is left untouched (stepping it would move the
  other layers through Adam's momentum).
* **Dropout** is not supported (Tang's encoders have none): the network's dropout must be 0.

Locality (METHODS.md section 8): with RF or URF feedback from the head the layer's update reads its own
pre and post cells and the error through a declared fixed matrix ``B``: local; through ``H_l^T``
("backprop") it is weight transport. Both are registered with ``neurolearn check-locality``
(:func:`layerwise_step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
import math

import torch
from torch import nn

from .._validate import ParameterError
from ..describe import lookup, param, register, registered
from ..locality.catalog import register_check
from ..locality.contract import Checkable
from ..networks.activations import activation, times_derivative
from ..networks.layers import Conv, Factors, ops
from .base import CreditMethod
from .feedback import RandomFeedback, conv_head_step, draw_like, feedback_mlp_step, population_error

SCHEDULES = ("greedy", "random")
#: the built-in head updates (any registered random-feedback credit type is one too: :func:`head_updates`)
UPDATES = ("backprop", "random_feedback", "updated_random_feedback", "sign_feedback")
_LABELS = {"backprop": "Layer-wise BP", "random_feedback": "Layer-wise RF", "updated_random_feedback": "Layer-wise URF",
           "sign_feedback": "Layer-wise sign"}


def head_updates() -> dict[str, type]:
    """``name -> credit class`` of every registered credit type a layer-wise step can send its head's error
    through: ``"backprop"`` (``M_l = H_l``) and every :class:`~neurolearn.credit.feedback.RandomFeedback` (sub)class
    (RF, URF, sign feedback, and any registered later): ``M_l`` is what its ``feedback`` makes of the head's
    ``B_l`` (``B_l`` or ``sign(B_l)``), and ``B_l`` receives ``H_l``'s increment when its ``updated`` is set."""
    from .backprop import Backprop

    return {name: cls for name, cls in registered("credit").items()
            if cls is Backprop or (isinstance(cls, type) and issubclass(cls, RandomFeedback))}


@register("credit", "layerwise")
@dataclass(frozen=True)
class LayerWise(CreditMethod):
    """Greedy (GLL) or randomised (RLL) layer-wise learning (Tang et al. 2022), each layer with its own head.

    Each layer has its own optimiser state; the error reaches the layer through ``H_l``, a fixed ``B_l`` or a
    URF-updated ``B_l`` (module docstring)."""

    schedule: str = param("greedy", choices=SCHEDULES, help="greedy: layer epoch // epochs_per_layer; random: a random "
                                                            "layer per mini-batch")
    update: str = param("backprop", help="how the head's error reaches the layer, a credit type: backprop (through H), "
                                         "random_feedback (a fixed random B), updated_random_feedback (B receiving H's "
                                         "increments), sign_feedback (sign(B), B updated), or any registered "
                                         "random-feedback type")
    head: int = param(0, low=0, help="units of every head: 0 or the network's output width (Tang: 64)")
    epochs_per_layer: int = param(1, low=1, help="greedy schedule: epochs spent on each layer")

    def validate(self) -> None:
        allowed = head_updates()
        if self.update not in allowed:
            why = (" (DTP's layer-wise network has one hidden layer: its target through the head is backprop's error; "
                   "use update = 'backprop')" if self.update == "dtp" else "")
            raise ParameterError(f"LayerWise: update must be one of {', '.join(repr(n) for n in sorted(allowed))} "
                                 f"(backprop or a registered random-feedback credit type), got {self.update!r}{why}")

    @cached_property  # read on every step: looked up and built once per description
    def feedback_method(self) -> CreditMethod:
        """The credit method named by ``update``, with its defaults (what it sends the head's error through)."""
        return lookup("credit", self.update)()

    def head_feedback(self, net, state: dict, l: int) -> torch.Tensor:
        """``M_l``, the matrix stage ``l``'s head error ``delta_z`` goes down through: ``H_l`` (backprop) or the
        random-feedback method's ``feedback`` of the head's ``B_l`` (``B_l``; ``sign(B_l)``)."""
        method = self.feedback_method
        if not isinstance(method, RandomFeedback):
            return self.head_weight(net, state, l).detach()
        return method.feedback(state, l)

    @property
    def updates_feedback(self) -> bool:
        """``B_l`` receives ``H_l``'s increment at every step (URF, sign feedback)."""
        method = self.feedback_method
        return isinstance(method, RandomFeedback) and method.updated

    # ------------------------------------------------------------------ structure
    @staticmethod
    def n_stages(net) -> int:
        """Layers trained one at a time: every layer but the network's final dense layer (the top one's head)."""
        return net.n_layers - 1

    def check_setup(self, net, objective, optimizer: str = "sgd") -> None:
        """A FeedForward network of at least two layers ending in a dense layer, no dropout, SGD or Adam,
        ``head`` 0 or the network's output width."""
        name = type(self).__name__
        if not hasattr(net, "descriptions") or not hasattr(net, "stage"):
            raise ParameterError(f"{name}: net must be a FeedForward network (dense and conv layers), got {type(net).__name__}")
        if net.n_layers < 2 or not isinstance(net.layers[-1], nn.Linear):
            raise ParameterError(f"{name}: the network must have at least two layers, the last one dense (the top "
                                 f"layer's head); got {net.n_layers} layer(s) ending in {type(net.layers[-1]).__name__}")
        if any(p != 0 for p in net.dropout):
            raise ParameterError(f"{name}: dropout must be 0 on every population for layer-wise learning, got {list(net.dropout)}")
        if optimizer not in ("sgd", "adam"):
            raise ParameterError(f"{name}: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if self.head not in (0, net.sizes[-1]):
            raise ParameterError(f"{name}: head must be 0 or the network's output width {net.sizes[-1]} (the top "
                                 f"layer's head is the network's final dense layer), got {self.head}")

    def head_weight(self, net, state: dict, l: int) -> torch.Tensor:
        """``H_l``: the state's ``H{l}``, or the network's final dense weight for the top layer."""
        return net.layers[-1].weight if l == self.n_stages(net) - 1 else state[f"H{l}"]

    def _params(self, net, state: dict, l: int) -> dict:
        """The tensors stage ``l`` changes, by name: ``W``, ``b`` (if any), ``H``, ``Hb`` (top head's bias)."""
        layer = net.layers[l]
        out = {"W": layer.weight}
        if layer.bias is not None:
            out["b"] = layer.bias
        out["H"] = self.head_weight(net, state, l)
        if l == self.n_stages(net) - 1 and net.layers[-1].bias is not None:
            out["Hb"] = net.layers[-1].bias
        return out

    # ------------------------------------------------------------------ state
    def init_state(self, net, generator: torch.Generator | None = None) -> dict:
        """Heads ``H{l}`` of the lower layers, then (RF/URF) feedback ``B{l}`` of every head, drawn in that
        order from ``generator``; per-stage optimiser moments ``opt{l}.{name}.m`` / ``.v`` and step count
        ``opt{l}.step`` (zeros); ``stage`` (the greedy schedule's layer) and ``stages`` (how many layers)."""
        S = self.n_stages(net)
        n_out = net.sizes[-1]
        top = net.layers[-1].weight.detach()
        state: dict = {}
        for l in range(S - 1):
            shape_ref = torch.empty(n_out, net.sizes[l + 1], dtype=top.dtype, device=top.device)
            state[f"H{l}"] = draw_like(shape_ref, "torch", 1.0, generator)
        if isinstance(self.feedback_method, RandomFeedback):
            for l in range(S):
                state[f"B{l}"] = draw_like(self.head_weight(net, state, l).detach(), "torch", 1.0, generator)
        for l in range(S):
            for name, p in self._params(net, state, l).items():
                state[f"opt{l}.{name}.m"] = torch.zeros_like(p.detach())
                state[f"opt{l}.{name}.v"] = torch.zeros_like(p.detach())
            state[f"opt{l}.step"] = 0  # an int: JSON in the checkpoint, no device sync per step
        state["stage"], state["stages"] = 0, S
        return state

    def on_epoch_start(self, state: dict, epoch: int) -> None:
        """Greedy: layer ``min(epoch // epochs_per_layer, top)``; a fresh optimiser state when its block starts."""
        if self.schedule != "greedy":
            return
        l = min(epoch // self.epochs_per_layer, int(state["stages"]) - 1)
        state["stage"] = l
        if epoch == l * self.epochs_per_layer:
            for k, v in state.items():
                if k.startswith(f"opt{l}.") and torch.is_tensor(v):
                    v.zero_()
            state[f"opt{l}.step"] = 0

    # ------------------------------------------------------------------ step
    def layer_for_step(self, net, state: dict, generator: torch.Generator | None) -> int:
        """Greedy: the state's ``stage``; random: uniform over the layers, drawn from ``generator``."""
        if self.schedule == "greedy":
            return int(state.get("stage", 0))
        device = generator.device if generator is not None else "cpu"
        return int(torch.randint(self.n_stages(net), (1,), generator=generator, device=device))

    def gradients(self, net, x, objective, objective_state, state: dict, l: int, labels=None):
        """``(loss, {name: g})`` of stage ``l`` on the presented batch ``x`` (module docstring equations)."""
        L = net.n_layers
        with torch.no_grad():
            h = net.check_input(x)
            for k in range(l):  # frozen layers below, no gradient
                _, h = net.stage(k, h)
            layer = net.layers[l]
            pre = h.flatten(1) if isinstance(layer, nn.Linear) and h.ndim > 2 else h
            u = ops(layer).current(layer, pre)
            a = activation(net.activation_of(l), u)
            if isinstance(net.descriptions[l], Conv):
                a = net.descriptions[l].pooling(a)
            z_in = a.flatten(1)
            top = l == self.n_stages(net) - 1
            H = self.head_weight(net, state, l).detach()
            bias = net.layers[-1].bias.detach() if top and net.layers[-1].bias is not None else None
            uz = nn.functional.linear(z_in, H, bias)
            y = activation(net.activation_of(L - 1), uz)
        out = objective.error(y, objective_state, None, labels)
        with torch.no_grad():
            ez = times_derivative(net.activation_of(L - 1), out.grad, uz)
            el = population_error(net, l, ez @ self.head_feedback(net, state, l), u)
            f = Factors(post=el, pre=pre)
            grads = {"W": ops(layer).gradient(layer, f), "H": ez.T @ z_in}
            if layer.bias is not None:
                grads["b"] = f.bias
            if bias is not None:
                grads["Hb"] = ez.sum(0)
        return out.loss, grads

    def step(self, net, x, objective, objective_state, state, optimizer, labels=None, generator=None,
             gradients=None) -> dict:
        """Train one layer (chosen by the schedule) and its head on batch ``x``; returns the loss and the layer.
        ``gradients`` (default :meth:`gradients`, same arguments) computes the stage's gradients: an executor may
        give its own implementation of the same equations (``neurolearn.engine.fused``)."""
        l = self.layer_for_step(net, state, generator)
        loss, grads = (gradients or self.gradients)(net, x, objective, objective_state, state, l, labels)
        self.apply_gradients(net, state, optimizer, l, grads)
        return {"loss": float(loss), "layer": l}

    def apply_gradients(self, net, state: dict, optimizer, l: int, grads: dict) -> None:
        """Stage ``l``'s update from its gradients ``{name: g}`` (:meth:`gradients`): one step of the layer's own
        Adam (:func:`adam_update` on the state's moments, the stage's step count ``+ 1``) or plain SGD
        ``p <- p - lr g``, with the trainer's current learning rate of layer ``l``'s parameter group; URF:
        ``B_l <- B_l + (H_l(after) - H_l(before))``."""
        group = next(g for g in optimizer.param_groups if any(p is net.layers[l].weight for p in g["params"]))
        params = self._params(net, state, l)
        with torch.no_grad():
            H0 = params["H"].detach().clone() if self.updates_feedback else None
            if isinstance(optimizer, torch.optim.Adam):
                state[f"opt{l}.step"] = t = int(state[f"opt{l}.step"]) + 1
                (b1, b2), eps = group["betas"], group["eps"]
                for name, p in params.items():
                    adam_update(p.data, grads[name], state[f"opt{l}.{name}.m"], state[f"opt{l}.{name}.v"], t,
                                group["lr"], b1, b2, eps)
            else:
                for name, p in params.items():
                    p.data.sub_(grads[name], alpha=group["lr"])
            if H0 is not None:
                state[f"B{l}"].add_(params["H"].detach() - H0)

    def checkable(self, sizes, pathway: str = "target", output_activation: str = "identity",
                  hidden_activation: str = "tanh") -> Checkable:
        """One layer-wise step on an MLP of ``sizes`` (what a recipe's locality verdict checks): the first layer
        ``sizes[0] -> sizes[1]`` and its head ``sizes[1] -> sizes[-1]``, the head's error reaching the layer
        through ``H`` (backprop) or a declared fixed ``B`` (:func:`~neurolearn.credit.feedback.feedback_mlp_step`);
        every other stage has the same form. The conv version is :func:`layerwise_step`."""
        sizes = tuple(sizes)
        if len(sizes) < 3:
            raise ParameterError(f"LayerWise.checkable: sizes must list at least three populations (input, a layer, "
                                 f"the output), got {sizes!r}")
        return feedback_mlp_step((sizes[0], sizes[1], sizes[-1]), _check_feedback(self.feedback_method), pathway,
                                 output_activation, hidden_activation, name=_LABELS.get(self.update, f"Layer-wise {self.update}"))


def adam_update(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: float, lr: float,
                beta1: float, beta2: float, eps: float) -> None:
    """One Adam step in place (Kingma & Ba 2015; as ``torch.optim.Adam``):
    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)``."""
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))


def _check_feedback(method) -> str:
    """The feedback kind of the locality checkables: ``"bp"`` (through ``H``), ``"sign"`` or ``"rf"``."""
    if not isinstance(method, RandomFeedback):
        return "bp"
    return "sign" if method.sign else "rf"


def layerwise_step(sizes, update: str = "random_feedback") -> Checkable:
    """A layer-wise step as a checkable: layer ``l`` (a shared convolution whose input is the recorded output
    of the frozen layers below) and its head ``H_l``, the head's error reaching the layer through ``H_l``
    (``"backprop"``: weight transport) or a declared fixed ``B_l`` (``"random_feedback"``; URF's ``B`` is fixed
    within a step, its own update is :func:`~neurolearn.credit.feedback.urf_feedback_step`); see
    :func:`~neurolearn.credit.feedback.conv_head_step` for the equations."""
    if update not in UPDATES:
        raise ParameterError(f"layerwise_step: update must be one of {UPDATES}, got {update!r}")
    return conv_head_step(sizes, _check_feedback(lookup("credit", update)()), name=_LABELS[update])


register_check(lambda s: layerwise_step(s, "random_feedback"), 3, True, label="layer-wise, RF head feedback")
register_check(lambda s: layerwise_step(s, "backprop"), 3, False, {"weight transport"}, label="layer-wise, BP through the head")
register_check(lambda s: layerwise_step(s, "sign_feedback"), 3, True, label="layer-wise, sign head feedback")
