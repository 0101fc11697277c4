"""Simulators of neurolearn networks: torch rate (training), snnTorch and Brian2 spiking.

* :mod:`.simulators` -- one interface, ``simulator("rate" | "snntorch" | "brian2", network).run(x)``;
* :mod:`.lif` -- the LIF model and its analytic rate; :mod:`.snntorch_sim`, :mod:`.brian2_sim`;
* :func:`to_spiking` -- conversion with data-based normalisation; :mod:`.compare` -- rate vs spiking;
* :mod:`.brian2_kwta` -- the one Brian2 kWTA circuit builder (equations with units, namespace);
* :mod:`.brian2_learning` -- the kWTA Hebbian rule learning inside Brian2;
* :mod:`.checks` -- :func:`check_spiking`, the checks both simulators make before simulating.
"""

from .checks import check_spiking
from .convert import SpikingModel, to_spiking
from .lif import LIFParams, lif_rate
from .simulators import Brian2Simulator, RateSimulator, SnnTorchSimulator, simulator

__all__ = ["Brian2Simulator", "LIFParams", "RateSimulator", "SnnTorchSimulator", "SpikingModel", "check_spiking",
           "lif_rate", "simulator", "to_spiking"]
