"""One interface for the three simulators of a trained network: ``simulator(name, network).run(x)``.

Every simulator returns, for inputs ``x`` ``(N, D)`` in [0, 1], the output *rates* ``(N, n_out)`` in
the units of the rate network, and keeps what else the run measured in ``last_run``
(:class:`SimRun`: spike counts, spikes per inference, rates at intermediate times, the k winners,
wall-clock time), so one behavioural test suite runs on all of them (as Nengo's ``pytest_nengo``
does for its backends):

* ``RateSimulator``     -- the torch network itself (``credit.respond``; feed-forward or EP relaxation):
  ``y = f_L(W_L ... f_1(W_1 x + b_1) ... + b_L)``;
* ``SnnTorchSimulator`` -- snnTorch integrate-and-fire layers, batched, ``device=`` CPU or GPU;
* ``Brian2Simulator``   -- Brian2 network (one layer, equations with units), code-generation target
  selectable; with ``kwta_k`` the output cells compete through an inhibitory population and adaptive
  thresholds ``H`` (:class:`~neurolearn.sim.brian2_sim.Brian2Network`).

For the spiking simulators (steps of ``dt = 1 ms``, input pixels firing with probability ``x_j`` per
step, i.e. at up to 1000 Hz) the rate is ``count / steps = count / (duration * 1000 Hz)``, which
estimates the rate output (``describes`` says which quantity, see :func:`~neurolearn.sim.to_spiking`;
Diehl et al. 2015). The k winners of a run are the top ``k`` of ``rate - H`` (Liu et al. 2024, Eq. 1),
read out of each simulator's own rates; Brian2 with ``kwta_k`` has them from its inhibitory circuit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .._validate import ParameterError, check_float, check_int
from ..circuits.kwta import kwta
from .convert import to_spiking

#: simulated time of one step of the spiking simulators (s); 1 / DT is the top firing rate (Hz)
DT = 1e-3


@dataclass
class SimRun:
    """What one :meth:`run` measured (per example means are over the ``N`` inputs of the run).

    ``rates`` ``(N, n_out)``: the output in rate units; ``counts``: output spike counts (``None`` for
    the rate simulator); ``spikes_per_inference``: spikes of every population (input, hidden, output)
    per example; ``checkpoints``: ``[(simulated seconds, rates at that time)]``; ``winners``: 0/1
    ``(N, n_out)`` when ``k`` is set.
    """

    rates: torch.Tensor
    duration: float
    seconds: float
    counts: torch.Tensor | None = None
    spikes_per_inference: float = 0.0
    output_spikes_per_inference: float = 0.0
    checkpoints: list = field(default_factory=list)
    winners: torch.Tensor | None = None

    @property
    def examples_per_second(self) -> float:
        """Inputs simulated per second of wall-clock time."""
        return self.rates.shape[0] / max(self.seconds, 1e-12)


def _check_x(owner: str, x: torch.Tensor, n_in: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"{owner}.run: x must have shape (N, {n_in}), got {tuple(x.shape)}")
    if x.numel() and (torch.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{owner}.run: x must be in [0, 1] (pixel intensities = spike probabilities per step), without NaN")
    return x


def _winners(rates: torch.Tensor, k: int | None, thresholds) -> torch.Tensor | None:
    return None if k is None else kwta(rates.double(), k, None if thresholds is None else torch.as_tensor(thresholds).double()).float()


def _check_k(owner: str, k, n_out: int):
    return None if k is None else check_int(owner, "k", k, 1, n_out)


class RateSimulator:
    """The rate network: ``run(x) = respond(network, x)`` (default: the feed-forward output ``net(x)``)."""

    name = "rate"
    describes = "the rate output y = f(W x + b) itself (hardsigmoid: clamp(W x + b, 0, 1))"

    def __init__(self, network, respond=None, k: int | None = None, thresholds=None):
        self.network = network
        self.respond = respond or (lambda net, x: net(x))
        self.k = _check_k("RateSimulator", k, network.sizes[-1])
        self.thresholds = thresholds
        self.last_run: SimRun | None = None

    @torch.no_grad()
    def run(self, x: torch.Tensor, duration: float | None = None, record=()) -> torch.Tensor:
        """Rates ``(N, n_out)``; ``duration`` and ``record`` are accepted for the common interface
        (a rate network has no simulated time: its checkpoints all equal the output)."""
        x = _check_x("RateSimulator", x, self.network.sizes[0])
        t0 = time.perf_counter()
        y = self.respond(self.network, x).detach().cpu().float()
        self.last_run = SimRun(y, 0.0 if duration is None else float(duration), time.perf_counter() - t0,
                               checkpoints=[(float(t), y) for t in record], winners=_winners(y, self.k, self.thresholds))
        return y


class _Spiking:
    name = ""

    def __init__(self, owner: str, network, steps: int, k, thresholds):
        self.steps = check_int(owner, "steps", steps, 1)
        self.network = network
        self.k = _check_k(owner, k, network.sizes[-1])
        self.thresholds = thresholds
        self.last_run: SimRun | None = None
        self._owner = owner

    @property
    def describes(self) -> str:
        """Which rate quantity a spike count stands for (from :func:`~neurolearn.sim.to_spiking`)."""
        return self.model.describes + f" (T steps of {DT * 1e3:.0f} ms: count / T = count / (duration x {1 / DT:.0f} Hz))"

    def _steps(self, duration, record):
        steps = self.steps
        if duration is not None:
            check_float(self._owner, "duration", duration, DT, None)
            steps = int(round(duration / DT))
        marks = []
        for t in record:
            check_float(self._owner, "record (a simulated time in seconds)", t, DT, steps * DT)
            marks.append(int(round(t / DT)))
        return steps, marks

    def _finish(self, counts, in_spikes, hidden_spikes, checkpoints, steps, seconds) -> torch.Tensor:
        counts = torch.as_tensor(counts, dtype=torch.float32).cpu()
        rates = counts / steps
        total = torch.as_tensor(in_spikes, dtype=torch.float32).cpu() + counts.sum(1) + hidden_spikes
        self.last_run = SimRun(rates, steps * DT, seconds, counts, total.mean().item() if len(total) else 0.0,
                               counts.sum(1).mean().item() if len(counts) else 0.0,
                               [(m * DT, torch.as_tensor(c, dtype=torch.float32).cpu() / m) for m, c in checkpoints],
                               _winners(rates, self.k, self.thresholds))
        return rates


class SnnTorchSimulator(_Spiking):
    """snnTorch simulation of the converted network (:class:`~neurolearn.sim.snntorch_sim.SnnTorchNetwork`)
    for ``steps`` steps of 1 ms; ``device=`` CPU or GPU; ``engine`` ``"fused"`` or ``"snntorch"``."""

    name = "snntorch"

    def __init__(self, network, steps: int = 200, device=None, calibration_x=None, seed: int = 0,
                 k: int | None = None, thresholds=None, engine: str = "fused"):
        super().__init__("SnnTorchSimulator", network, steps, k, thresholds)
        self.model = to_spiking(network, "snntorch", calibration_x=calibration_x, device=device, engine=engine)
        self.seed = seed

    def run(self, x: torch.Tensor, duration: float | None = None, record=()) -> torch.Tensor:
        """Output rates ``(N, n_out)`` after ``duration`` seconds (default ``steps`` ms); ``record``:
        simulated times (s) at which the rates are also kept in ``last_run.checkpoints``."""
        x = _check_x("SnnTorchSimulator", x, self.network.sizes[0])
        steps, marks = self._steps(duration, record)
        t0 = time.perf_counter()
        r = self.model.network.run(x, steps, self.seed, record_steps=marks)
        seconds = time.perf_counter() - t0
        hidden = sum(c.sum(1).cpu() for c in r["counts"][:-1]) if len(r["counts"]) > 1 else 0.0
        return self._finish(r["counts"][-1], r["input_spikes"], hidden, r["checkpoints"], steps, seconds)


class Brian2Simulator(_Spiking):
    """Brian2 simulation of the converted one-layer network for ``steps`` steps of 1 ms.

    ``target``: ``"numpy"`` (no compiler) or ``"cython"`` (compiles once, fast); ``copies`` examples
    run in parallel as independent blocks of one network. ``objects`` gives the Brian2 groups,
    synapses, monitors and ``Network`` (build them with ``simulator.model.network.build()``).
    """

    name = "brian2"

    def __init__(self, network, steps: int = 200, target: str = "numpy", copies: int | None = None, seed: int = 0,
                 kwta_k: int | None = None, thresholds=None, k: int | None = None):
        if kwta_k is not None and k is not None and kwta_k != k:
            raise ParameterError(f"Brian2Simulator: k must equal kwta_k when both are given, got {k} and {kwta_k}")
        super().__init__("Brian2Simulator", network, steps, k if k is not None else kwta_k, thresholds)
        self.circuit = kwta_k is not None
        # H enters the Brian2 cells' drive only in the competition circuit; without it the counts estimate y
        self.model = to_spiking(network, "brian2", target=target, copies=copies, kwta_k=kwta_k,
                                thresholds=thresholds if self.circuit else None)
        self.seed = seed

    @property
    def objects(self) -> dict:
        """The Brian2 objects (network, groups, synapses, monitors) of the simulation."""
        return self.model.network.objects

    def run(self, x: torch.Tensor, duration: float | None = None, record=()) -> torch.Tensor:
        """Output rates ``(N, n_out)`` after ``duration`` seconds (default ``steps`` ms); see
        :meth:`SnnTorchSimulator.run`. With ``kwta_k`` the winners are the cells that fired."""
        x = _check_x("Brian2Simulator", x, self.network.sizes[0])
        steps, marks = self._steps(duration, record)
        t0 = time.perf_counter()
        r = self.model.network.run(x.cpu().numpy(), steps, self.seed, record_steps=marks, details=True)
        seconds = time.perf_counter() - t0
        checkpoints = [(m, r["counts"]) if m == steps else (m, c) for m, c in r["checkpoints"]]
        checkpoints += [(steps, r["counts"])] if steps in marks else []
        rates = self._finish(r["counts"], r["input_spikes"], 0.0, sorted(checkpoints, key=lambda mc: mc[0]), steps, seconds)
        if self.circuit:
            self.last_run.winners = (self.last_run.counts > 0).float()
        return rates


SIMULATORS = {"rate": RateSimulator, "snntorch": SnnTorchSimulator, "brian2": Brian2Simulator}


def simulator(name: str, network, **kw):
    """Make the simulator ``name`` (``"rate"``, ``"snntorch"``, ``"brian2"``) for ``network``."""
    if name not in SIMULATORS:
        raise ValueError(f"simulator must be one of {sorted(SIMULATORS)}, got {name!r}")
    return SIMULATORS[name](network, **kw)
