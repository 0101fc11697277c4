"""Spiking simulation with snnTorch: LIF cells stepped in discrete time, batched, CPU or GPU.

One step of length ``dt`` of snnTorch's ``Leaky`` neuron with reset to zero applied at once,

    v[t+1] = beta v[t] + (1 - beta) R I[t],   beta = exp(-dt / tau)

is the exact solution of ``tau dv/dt = -v + R I`` over the step for a current held constant during
it; after a spike ``v`` is held at 0 for ``round(t_ref / dt)`` steps (refractory period, enforced
here because ``Leaky`` has none). A converted network (:func:`neurolearn.sim.to_spiking`) uses by
default the non-leaky limit ``beta = 1`` (``tau_m -> inf``: integrate-and-fire, reset by subtraction),
in which the spike count of a cell over ``T`` steps divided by ``T`` estimates its rate output
(Diehl et al. 2015); with a finite membrane time constant ``tau_m`` (in steps) the cells leak,
``v[t+1] = exp(-1/tau_m) v[t] + I[t]``, and the rate falls below the rate output for weak drives.
Every model checks its parameters first (:func:`~neurolearn.sim.checks.check_spiking`, the same
checks as the Brian2 models): finite numbers, ``dt < tau`` (``tau_m`` more than one step), at least one step.
"""

from __future__ import annotations

import math

import snntorch as snn
import torch

from .._validate import check_float
from .checks import check_spiking
from .lif import LIFParams


def lif_spike_counts(current: torch.Tensor, params: LIFParams = LIFParams(), duration: float = 1.0,
                     dt: float = 1e-4) -> torch.Tensor:
    """Spike counts of independent LIF cells driven by constant currents ``current`` (A), any shape.

    Simulated with ``snntorch.Leaky`` (see module docstring); returns counts of the same shape.
    Refused before any simulation: non-finite currents, ``dt >= tau``, a duration shorter than one step.
    """
    check_float("lif_spike_counts", "duration", duration, 0.0, low_open=True)
    check_float("lif_spike_counts", "dt", dt, 0.0, low_open=True)
    steps = int(round(duration / dt))
    check_spiking("lif_spike_counts", dt=dt, tau=params.tau, steps=steps, currents=current)
    beta = math.exp(-dt / params.tau)
    n_ref = int(round(params.t_ref / dt))
    cell = snn.Leaky(beta=beta, threshold=params.v_th, reset_mechanism="zero", reset_delay=False)
    drive = (1.0 - beta) * params.R * current.double()
    mem = torch.zeros_like(drive)
    refractory = torch.zeros_like(drive)
    counts = torch.zeros_like(drive)
    for _ in range(steps):
        spk, mem = cell(drive, mem)
        held = refractory > 0
        spk = torch.where(held, torch.zeros_like(spk), spk)
        mem = torch.where(held, torch.zeros_like(mem), mem)
        refractory = torch.where(spk > 0, torch.full_like(refractory, n_ref), (refractory - 1).clamp_min(0))
        counts += spk
    return counts


class SnnTorchNetwork:
    """A converted feed-forward network simulated with ``snntorch.Leaky`` integrate-and-fire layers.

    Input: Bernoulli spike trains, pixel ``x_j`` firing with probability ``x_j`` per step (rate
    coding at up to one spike per step). Layer ``l`` receives the current
    ``I_l[t] = W_l' s_{l-1}[t] + b_l'`` (normalised weights, see :func:`to_spiking`); its cells
    integrate without leak (``beta = 1``, ``tau_m=None``) or leak with ``beta = exp(-1 / tau_m)``
    (``tau_m`` in steps), fire at threshold 1 and reset by subtraction, at most once per step; without
    leak ``count / T`` estimates ``clamp(W_l' r_{l-1} + b_l', 0, 1)`` (Diehl et al. 2015). Refused at
    construction: non-finite weights or biases, ``tau_m`` of one step or less; at ``run``: non-finite
    inputs, ``steps < 1``.
    """

    def __init__(self, weights: list, biases: list, device=None, tau_m: float | None = None):
        if len(weights) != len(biases) or not weights:
            raise ValueError(f"SnnTorchNetwork: one bias per weight matrix is needed, got {len(weights)} weights, {len(biases)} biases")
        self.tau_m = None if tau_m is None else check_float("SnnTorchNetwork", "tau_m", tau_m, 0.0, low_open=True)
        check_spiking("SnnTorchNetwork", dt=None if tau_m is None else 1.0, tau=self.tau_m, dt_name="one time step",
                      tau_name="tau_m", unit="steps", **{f"weights[{l}]": w for l, w in enumerate(weights)},
                      **{f"biases[{l}]": b for l, b in enumerate(biases)})
        self.device = torch.device(device) if device is not None else weights[0].device
        self.weights = [w.detach().to(self.device, torch.float32) for w in weights]
        self.biases = [b.detach().to(self.device, torch.float32) for b in biases]
        beta = 1.0 if tau_m is None else math.exp(-1.0 / tau_m)
        self.cells = [snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="subtract", reset_delay=False)
                      for _ in self.weights]

    @torch.no_grad()
    def run(self, x: torch.Tensor, steps: int = 100, seed: int = 0, record_every: int | None = None) -> dict:
        """Simulate ``steps`` steps for inputs ``x`` (N, D) in [0, 1]; returns spike counts per layer.

        ``{"counts": [ (N, n_l) per layer ], "input_spikes": (N,), "checkpoints": [(step, output counts)]}``;
        with ``record_every``, output counts are also recorded every that many steps (accuracy vs time).
        """
        check_spiking("SnnTorchNetwork.run", steps=steps, x=x)
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("SnnTorchNetwork.run: x must be in [0, 1] (spike probabilities per step)")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        x = x.to(self.device, torch.float32)
        mems = [torch.zeros(x.shape[0], w.shape[0], device=self.device) for w in self.weights]
        counts = [torch.zeros_like(m) for m in mems]
        in_spikes = torch.zeros(x.shape[0], device=self.device)
        checkpoints = []
        for t in range(steps):
            s = (torch.rand(x.shape, generator=gen, device=self.device) < x).float()
            in_spikes += s.sum(1)
            for l, (w, b, cell) in enumerate(zip(self.weights, self.biases, self.cells)):
                current = torch.addmm(b, s, w.T)
                s, mems[l] = cell(current, mems[l])
                counts[l] += s
            if record_every and (t + 1) % record_every == 0:
                checkpoints.append((t + 1, counts[-1].clone()))
        return {"counts": counts, "input_spikes": in_spikes, "checkpoints": checkpoints}
