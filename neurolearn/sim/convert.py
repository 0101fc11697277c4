"""Rate -> spiking conversion with data-based weight normalisation (Diehl et al. 2015).

A trained :class:`~neurolearn.networks.MLP` with ``u_l = W_l h_{l-1} + b_l``, ``h_l = f_l(u_l)``
becomes integrate-and-fire layers whose spike rates (spikes per step) stand for scaled activities
``h_l / lambda_l``. ``lambda_l`` is the largest activity the rate layer can emit: 1 for hardsigmoid
(``clamp(u, 0, 1)`` is at most 1, which is one spike per step), and the ``percentile``-th percentile
of ``h_l`` on calibration data for ReLU. The converted weights and biases are

    W_l' = W_l lambda_{l-1} / lambda_l,    b_l' = b_l / lambda_l      (lambda_0 = 1: pixels in [0, 1])

so that ``count_l / T`` estimates ``clamp(h_l / lambda_l, 0, 1)``; for the hardsigmoid output of the
self-defined-target networks the spike count over ``T`` steps divided by ``T`` estimates the rate
output ``y = clamp(W x + b, 0, 1)`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import ParameterError, check_choice, check_float
from ..networks.mlp import MLP, activation
from .checks import check_spiking
from .snntorch_sim import SnnTorchNetwork

SIMULATORS = ("snntorch", "brian2")


@dataclass
class SpikingModel:
    """A converted network: ``run(x, steps)`` returns output rates (spikes per step) and the run."""

    simulator: str
    network: object
    scales: list
    describes: str

    def rates(self, x: torch.Tensor, steps: int = 100, seed: int = 0) -> torch.Tensor:
        """Output spike counts / ``steps`` for ``x`` (estimates the rate output, see ``describes``);
        ``steps >= 1`` and finite ``x`` are checked first (:func:`~neurolearn.sim.checks.check_spiking`)."""
        check_spiking("SpikingModel.rates", steps=steps, x=x)
        if self.simulator == "brian2":
            return torch.tensor(self.network.run(x.numpy(), steps, seed), dtype=torch.float32) / steps
        return self.network.run(x, steps, seed)["counts"][-1].cpu() / steps


def to_spiking(network: MLP, simulator: str = "snntorch", calibration_x: torch.Tensor | None = None,
               percentile: float = 99.9, device=None, tau_m: float | None = None, **brian2_options) -> SpikingModel:
    """Convert ``network`` (see module docstring); ``calibration_x`` is needed for ReLU layers.

    ``tau_m`` (steps): membrane time constant of the spiking cells; ``None`` (default) is the
    integrate-and-fire limit ``tau_m -> inf`` in which ``count / T`` estimates the rate output; a finite
    ``tau_m`` must be more than one step. Non-finite weights or biases are refused (before any simulation).
    Networks trained by equilibrium propagation with more than one layer are refused: their output is
    the fixed point of a bidirectional relaxation, not the feed-forward pass converted here.

    ``simulator="brian2"`` supports one-layer networks (:class:`~neurolearn.sim.brian2_sim.Brian2Network`;
    ``brian2_options``: ``target``, ``copies``, ``dt``, ``kwta_k``, ``thresholds``).
    """
    check_choice("to_spiking", "simulator", simulator, SIMULATORS)
    if network.n_layers > 1 and network.hidden_activation == "hardsigmoid":
        raise ParameterError("to_spiking: a multi-layer hardsigmoid network is the bidirectional network of "
                             "equilibrium propagation; its feed-forward conversion would not be the network compared "
                             "(convert one-layer EP networks, or feed-forward ReLU networks)")
    check_float("to_spiking", "percentile", percentile, 0.0, 100.0, low_open=True)
    check_spiking("to_spiking", dt=None if tau_m is None else 1.0, tau=tau_m, dt_name="one time step", tau_name="tau_m",
                  unit="steps", calibration_x=calibration_x,
                  **{f"layers[{l}].{name}": getattr(layer, name).detach() for l, layer in enumerate(network.layers)
                     for name in ("weight", "bias") if getattr(layer, name, None) is not None})
    scales = [1.0]
    h = calibration_x
    for l, layer in enumerate(network.layers):
        act = network.activation_of(l)
        if h is not None:
            with torch.no_grad():
                h = activation(act, layer(h))
        if act == "hardsigmoid":
            scales.append(1.0)
        elif act == "relu":
            if h is None:
                raise ParameterError("to_spiking: calibration_x is required to normalise ReLU layers")
            scales.append(max(float(torch.quantile(h.flatten()[:1_000_000], percentile / 100)), 1e-6))
        else:
            raise ParameterError(f"to_spiking: activation must be 'hardsigmoid' or 'relu' for conversion, got {act!r}")
    weights = [layer.weight.detach() * scales[l] / scales[l + 1] for l, layer in enumerate(network.layers)]
    biases = [(layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features)) / scales[l + 1]
              for l, layer in enumerate(network.layers)]
    describes = ((f"leaky cells (tau_m = {tau_m} steps), below the following for weak drives: " if tau_m is not None else "")
                 + f"spike count / T (steps) estimates clamp(h_l / lambda_l, 0, 1) with lambda = {scales[1:]}; "
                 + ("for the hardsigmoid output: the rate output y = clamp(W x + b, 0, 1) itself"
                    if network.output_activation == "hardsigmoid" else "the output scaled by 1 / lambda_L"))
    if simulator == "brian2":
        from .brian2_sim import Brian2Network

        if len(weights) != 1:
            raise ParameterError(f"to_spiking: simulator 'brian2' supports one-layer networks, got {len(weights)} layers")
        return SpikingModel(simulator, Brian2Network(weights[0].numpy(), biases[0].numpy(), tau_m=tau_m,
                                                     **{k: v for k, v in brian2_options.items() if v is not None or k != "thresholds"}),
                            scales, describes)
    return SpikingModel(simulator, SnnTorchNetwork(weights, biases, device, tau_m), scales, describes)
