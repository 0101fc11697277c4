"""Spiking simulation with snnTorch: LIF cells stepped in discrete time, batched, CPU or GPU.

One step of length ``dt`` of snnTorch's ``Leaky`` neuron with reset to zero applied at once,

    v[t+1] = beta v[t] + (1 - beta) R I[t],   beta = exp(-dt / tau)

is the exact solution of ``tau dv/dt = -v + R I`` over the step for a current held constant during
it; after a spike ``v`` is held at 0 for ``round(t_ref / dt)`` steps (refractory period, enforced
here because ``Leaky`` has none). A converted network (:func:`neurolearn.sim.to_spiking`) uses the
non-leaky limit ``beta = 1`` (integrate-and-fire, reset by subtraction), in which the spike count of
a cell over ``T`` steps divided by ``T`` estimates its rate output (Diehl et al. 2015).

Speed (:class:`SnnTorchNetwork`): the network is feed-forward, so the input current of a layer for a
block of steps is one matrix product over all the block's steps (not one per step), and a pixel of
value 0 never spikes, so each example's input product runs over its non-zero pixels only (examples
sorted by their count of non-zero pixels, so a batch pads little). Both are exact: the spikes are
those of the step-by-step simulation. The membrane update runs either through ``snntorch.Leaky``
itself (``engine="snntorch"``) or through the same update written as four in-place tensor operations
(``engine="fused"``, the default), tested to give identical spikes.
"""

from __future__ import annotations

import math

import snntorch as snn
import torch

from .._validate import check_choice, check_float, check_int
from .lif import LIFParams


def lif_spike_counts(current: torch.Tensor, params: LIFParams = LIFParams(), duration: float = 1.0,
                     dt: float = 1e-4) -> torch.Tensor:
    """Spike counts of independent LIF cells driven by constant currents ``current`` (A), any shape.

    Simulated with ``snntorch.Leaky`` (see module docstring); returns counts of the same shape.
    """
    check_float("lif_spike_counts", "duration", duration, 0.0, low_open=True)
    check_float("lif_spike_counts", "dt", dt, 0.0, low_open=True)
    beta = math.exp(-dt / params.tau)
    steps = int(round(duration / dt))
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


ENGINES = ("fused", "snntorch")

#: float32 elements allowed for one batch's per-example input weights and one block of currents
_BLOCK_ELEMENTS = 24_000_000


def leaky_subtract_step(mem: torch.Tensor, current: torch.Tensor, carry_possible: bool = True):
    """One step of ``snntorch.Leaky(beta=1, threshold=1, reset_mechanism="subtract", reset_delay=False)``
    in place on ``mem``; returns ``(spikes, carry_possible)`` (spikes as a bool tensor).

    ``Leaky`` computes ``r = [m > 1]``, ``m' = m + I - r``, ``s = [m' > 1]``, ``m <- m' - (s - r)``, i.e.

        s = [m + I - r > 1],    m <- m + I - s

    (integrate-and-fire, reset by subtraction, at most one spike per step: Diehl et al. 2015's
    converted neuron). ``r`` is non-zero only for a cell that kept more than one threshold of excess
    potential after its last spike; ``carry_possible=False`` (known from the previous step's
    ``mem.max() <= 1``) skips computing it. The returned flag says whether the next step needs it.
    """
    if carry_possible:
        carry = mem > 1.0
        mem.add_(current)
        spikes = mem > 1.0
        spikes &= ~carry | (mem > 2.0)
    else:
        mem.add_(current)
        spikes = mem > 1.0
    mem.sub_(spikes.to(mem.dtype))
    return spikes, bool(mem.max() > 1.0) if mem.numel() else False


class SnnTorchNetwork:
    """A converted feed-forward network simulated with ``snntorch.Leaky`` integrate-and-fire layers.

    Input: Bernoulli spike trains, pixel ``x_j`` firing with probability ``x_j`` per step of 1 ms
    (rate coding at up to 1000 Hz). Layer ``l`` receives the current ``I_l[t] = W_l' s_{l-1}[t] + b_l'``
    (normalised weights, see :func:`~neurolearn.sim.to_spiking`); its cells integrate without leak
    (``beta = 1``), fire at threshold 1 and reset by subtraction, at most once per step, so
    ``count / T`` estimates ``clamp(W_l' r_{l-1} + b_l', 0, 1)`` (Diehl et al. 2015). See the module
    docstring for how the simulation is organised (exact, block-wise in time, sparse input).

    ``engine``: ``"fused"`` (default) or ``"snntorch"`` (each step through ``snntorch.Leaky``).
    """

    def __init__(self, weights: list, biases: list, device=None, engine: str = "fused"):
        if len(weights) == 0 or len(weights) != len(biases):
            raise ValueError(f"SnnTorchNetwork: weights and biases must be non-empty lists of equal length, "
                             f"got {len(weights)} and {len(biases)}")
        self.engine = check_choice("SnnTorchNetwork", "engine", engine, ENGINES)
        self.device = torch.device(device) if device is not None else weights[0].device
        self.weights = [w.detach().to(self.device, torch.float32) for w in weights]
        self.biases = [b.detach().to(self.device, torch.float32) for b in biases]
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.ndim != 2 or b.shape != (w.shape[0],) or (l and w.shape[1] != self.weights[l - 1].shape[0]):
                raise ValueError(f"SnnTorchNetwork: layer {l} must have weight (n_out, n_in) matching the layer below "
                                 f"and bias (n_out,), got {tuple(w.shape)} and {tuple(b.shape)}")
        self._wt = [w.T.contiguous() for w in self.weights]
        self.cells = [snn.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract", reset_delay=False)
                      for _ in self.weights]

    @property
    def sizes(self) -> list[int]:
        """Cells per population, input first."""
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @torch.no_grad()
    def run(self, x: torch.Tensor, steps: int = 100, seed: int = 0, record_every: int | None = None,
            record_steps=()) -> dict:
        """Simulate ``steps`` steps for inputs ``x`` (N, D) in [0, 1]; returns spike counts per layer.

        ``{"counts": [(N, n_l) per layer], "input_spikes": (N,), "checkpoints": [(step, output counts)]}``;
        output counts are also recorded after every ``record_every`` steps and after each step listed
        in ``record_steps`` (accuracy against simulated time).
        """
        check_int("SnnTorchNetwork.run", "steps", steps, 1)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"SnnTorchNetwork.run: x must have shape (N, {self.sizes[0]}), got {tuple(x.shape)}")
        if x.numel() and (torch.isnan(x).any() or x.min() < 0 or x.max() > 1):
            raise ValueError("SnnTorchNetwork.run: x must be in [0, 1] (spike probabilities per step), without NaN")
        marks = set(int(s) for s in record_steps if 1 <= int(s) <= steps)
        if record_every:
            marks |= set(range(record_every, steps + 1, record_every))
        marks = sorted(marks)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        x = x.to(self.device, torch.float32)
        n = x.shape[0]
        counts = [torch.zeros(n, s, device=self.device) for s in self.sizes[1:]]
        checkpoints = [torch.zeros(n, self.sizes[-1], device=self.device) for _ in marks]
        in_spikes = torch.zeros(n, device=self.device)
        nnz = (x > 0).sum(1)
        order = torch.argsort(nnz)  # similar sparsity in a batch: little padding
        widest = max(self.sizes[1:])
        batch = max(1, min(n, _BLOCK_ELEMENTS // (max(int(nnz.max()) if n else 1, 1) * widest)))
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            self._run_batch(x[rows], steps, gen, marks, rows, counts, checkpoints, in_spikes)
        return {"counts": counts, "input_spikes": in_spikes, "checkpoints": list(zip(marks, checkpoints))}

    def _run_batch(self, xb, steps, gen, marks, rows, counts, checkpoints, in_spikes) -> None:
        nb, n_in = xb.shape
        active = xb > 0
        m = max(int(active.sum(1).max()), 1)
        sparse = m <= 0.6 * n_in
        if sparse:  # each example's product over its own non-zero pixels (zero pixels never spike)
            cols = torch.argsort((~active).to(torch.uint8), dim=1, stable=True)[:, :m]
            p = xb.gather(1, cols)
            w0 = self._wt[0][cols]  # (nb, m, n_out)
        else:
            p = xb
        mems = [torch.zeros(nb, s, device=self.device) for s in self.sizes[1:]]
        carry = [False] * len(mems)
        # integrate-and-fire with subtraction: spikes so far = integrated current - potential (exact after
        # rounding: the float error is far below 1/2), so the output layer needs no per-step count
        integrated = torch.zeros(nb, self.sizes[-1], device=self.device)
        hidden = [torch.zeros(nb, s, device=self.device) for s in self.sizes[1:-1]]
        block = max(1, min(steps, _BLOCK_ELEMENTS // (nb * max(self.sizes[1:]))))
        pending = list(enumerate(marks))  # (checkpoint index, step) still to record
        for t0 in range(0, steps, block):
            tb = min(block, steps - t0)
            s = (torch.rand(nb, tb, p.shape[1], generator=gen, device=self.device) < p[:, None, :]).float()
            in_spikes[rows] += s.sum((1, 2))
            for l, (wt, b) in enumerate(zip(self._wt, self.biases)):
                if l == 0 and sparse:
                    current = torch.baddbmm(b, s, w0)
                else:
                    current = torch.addmm(b, s.reshape(nb * tb, -1), wt).view(nb, tb, -1)
                if l < len(self._wt) - 1:
                    s = torch.empty_like(current)
                    with _one_thread(self.device):
                        for t in range(tb):
                            spk, carry[l] = self._step(l, mems, current[:, t], carry[l])
                            s[:, t] = spk
                    hidden[l] += s.sum(1)
                    continue
                here = [(i, m - t0) for i, m in pending if m <= t0 + tb]
                pending = pending[len(here):]
                cum = current.cumsum(1) if here else None
                with _one_thread(self.device):
                    for t in range(tb):
                        _, carry[l] = self._step(l, mems, current[:, t], carry[l])
                        while here and here[0][1] == t + 1:
                            checkpoints[here.pop(0)[0]][rows] = torch.round(integrated + cum[:, t] - mems[l])
                integrated += current.sum(1)
        for l in range(len(hidden)):
            counts[l][rows] = hidden[l]
        counts[-1][rows] = torch.round(integrated - mems[-1])

    def _step(self, l: int, mems: list, current: torch.Tensor, carry: bool):
        """One membrane step of layer ``l`` (``engine``); returns ``(spikes, carry_possible)``."""
        if self.engine == "fused":
            return leaky_subtract_step(mems[l], current, carry)
        spk, mems[l] = self.cells[l](current, mems[l])
        return spk, True


class _one_thread:
    """On CPU, run the per-step membrane updates on one thread: per operation on tensors of this size
    thread synchronisation costs more than it saves (and far more on a machine whose cores are busy)."""

    def __init__(self, device: torch.device):
        self.cpu = device.type == "cpu"

    def __enter__(self):
        if self.cpu:
            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.cpu:
            torch.set_num_threads(self.threads)
