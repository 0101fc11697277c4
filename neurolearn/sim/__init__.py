"""Simulators of neurolearn networks: torch rate (training), snnTorch and Brian2 spiking.

* :mod:`.simulators` -- one interface, ``simulator("rate" | "snntorch" | "brian2", network).run(x)``;
* :mod:`.lif` -- the LIF model and its analytic rate; :mod:`.snntorch_sim`, :mod:`.brian2_sim`;
* :func:`to_spiking` -- conversion with data-based normalisation; :mod:`.compare` -- rate vs spiking;
* :mod:`.brian2_learning` -- the kWTA Hebbian rule learning inside Brian2.
"""

from .convert import SpikingModel, to_spiking
from .lif import LIFParams, lif_rate
from .simulators import Brian2Simulator, RateSimulator, SnnTorchSimulator, simulator

__all__ = ["LIFParams", "lif_rate", "to_spiking", "SpikingModel", "simulator", "RateSimulator",
           "SnnTorchSimulator", "Brian2Simulator"]
