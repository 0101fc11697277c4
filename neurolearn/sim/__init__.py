"""Simulators of neurolearn networks: torch rate (training), snnTorch and Brian2 spiking.

This release: the LIF model and its analytic rate (:mod:`.lif`), snnTorch LIF / integrate-and-fire
simulation (:mod:`.snntorch_sim`), Brian2 LIF groups (:mod:`.brian2_sim`), rate -> spiking conversion
(:func:`to_spiking`) and the rate-vs-spiking comparison (:mod:`.compare`). The Brian2 network with an
inhibitory kWTA population and Brian2 learning are not implemented yet (issue 4).
"""

from .convert import SpikingModel, to_spiking
from .lif import LIFParams, lif_rate

__all__ = ["LIFParams", "lif_rate", "to_spiking", "SpikingModel"]
