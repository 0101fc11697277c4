"""One interface for the three simulators of a trained network: ``simulator(network).run(x)``.

Every simulator returns, for inputs ``x`` ``(N, D)`` in [0, 1], the output *rates* ``(N, n_out)`` in
the units of the rate network (for spiking simulators: spike count / steps, which estimates
``clamp(W x + b, 0, 1)``, see :mod:`neurolearn.sim.convert`), so one behavioural test suite runs on
all of them (as Nengo's ``pytest_nengo`` does for backends):

* ``RateSimulator``     -- the torch network itself (``credit.respond``; feed-forward or EP relaxation);
* ``SnnTorchSimulator`` -- snnTorch integrate-and-fire layers, batched, ``device=`` CPU or GPU;
* ``Brian2Simulator``   -- Brian2 network (one layer), code-generation target selectable; with
  ``kwta_k`` the output cells compete through an inhibitory population and adaptive thresholds ``H``
  (:class:`~neurolearn.sim.brian2_sim.Brian2Network`).
"""

from __future__ import annotations

import torch

from .._validate import check_int
from .convert import to_spiking


class RateSimulator:
    """The rate network: ``run(x) = respond(network, x)`` (default: the feed-forward output)."""

    name = "rate"

    def __init__(self, network, respond=None):
        self.network = network
        self.respond = respond or (lambda net, x: net(x))

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Rate output ``respond(network, x)``: ``clamp(W x + b, 0, 1)`` for one feed-forward layer (Liu et al. 2024)."""
        return self.respond(self.network, x)


class SnnTorchSimulator:
    """snnTorch simulation of the converted network for ``steps`` steps of 1 ms."""

    name = "snntorch"

    def __init__(self, network, steps: int = 200, device=None, calibration_x=None, seed: int = 0):
        self.steps = check_int("SnnTorchSimulator", "steps", steps, 1)
        self.model = to_spiking(network, "snntorch", calibration_x=calibration_x, device=device)
        self.seed = seed

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Spike rates ``counts / steps`` of the converted network (estimate ``clamp(W x + b, 0, 1)``, Diehl et al. 2015)."""
        return self.model.rates(x, self.steps, self.seed)


class Brian2Simulator:
    """Brian2 simulation of the converted one-layer network for ``steps`` steps of 1 ms."""

    name = "brian2"

    def __init__(self, network, steps: int = 200, target: str = "numpy", copies: int = 50, seed: int = 0,
                 kwta_k: int | None = None, thresholds=None):
        self.steps = check_int("Brian2Simulator", "steps", steps, 1)
        self.model = to_spiking(network, "brian2", target=target, copies=copies, kwta_k=kwta_k, thresholds=thresholds)
        self.seed = seed

    @property
    def objects(self) -> dict:
        """The Brian2 objects (network, groups, synapses, monitors) of the last run."""
        return self.model.network.objects

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Spike rates ``counts / steps`` of the Brian2 network (estimate ``clamp(W x + b - H, 0, 1)``; with
        ``kwta_k`` the winners fire)."""
        return self.model.rates(x, self.steps, self.seed)


SIMULATORS = {"rate": RateSimulator, "snntorch": SnnTorchSimulator, "brian2": Brian2Simulator}


def simulator(name: str, network, **kw):
    """Make the simulator ``name`` (``"rate"``, ``"snntorch"``, ``"brian2"``) for ``network``."""
    if name not in SIMULATORS:
        raise ValueError(f"simulator must be one of {sorted(SIMULATORS)}, got {name!r}")
    return SIMULATORS[name](network, **kw)
