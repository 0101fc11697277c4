"""Spiking simulation with Brian2: models written as equations with units.

LIF cells (Brian2 ``NeuronGroup``), the same model as :mod:`neurolearn.sim.lif`:

    dv/dt = (R I - v) / tau : volt (unless refractory),   threshold v > v_th,   reset v = 0 V,
    refractory t_ref

integrated with Brian2's exact linear solver. Objects are returned so users can add monitors; the
code-generation target is a parameter (``"numpy"`` needs no compiler, ``"cython"`` compiles once).
"""

from __future__ import annotations

import numpy as np

from .._validate import check_choice, check_float
from .lif import LIFParams

TARGETS = ("numpy", "cython")


def lif_group(currents, params: LIFParams = LIFParams(), dt: float = 1e-4):
    """A Brian2 ``NeuronGroup`` of LIF cells with constant currents ``currents`` (A), and its ``Network``.

    Returns ``(network, group, spike_monitor)``.
    """
    import brian2 as b2

    currents = np.asarray(currents, dtype=float).ravel()
    eqs = """
    dv/dt = (R * I - v) / tau : volt (unless refractory)
    I : amp (constant)
    """
    ns = {"R": params.R * b2.ohm, "tau": params.tau * b2.second, "v_th": params.v_th * b2.volt}
    group = b2.NeuronGroup(len(currents), eqs, threshold="v > v_th", reset="v = 0*volt",
                           refractory=params.t_ref * b2.second, method="exact", namespace=ns, dt=dt * b2.second)
    group.I = currents * b2.amp
    mon = b2.SpikeMonitor(group)
    return b2.Network(group, mon), group, mon


def lif_spike_counts_brian2(currents, params: LIFParams = LIFParams(), duration: float = 1.0, dt: float = 1e-4,
                            target: str = "numpy") -> np.ndarray:
    """Spike counts of LIF cells with constant ``currents`` over ``duration`` seconds (Brian2)."""
    import brian2 as b2

    check_float("lif_spike_counts_brian2", "duration", duration, 0.0, low_open=True)
    check_choice("lif_spike_counts_brian2", "target", target, TARGETS)
    b2.prefs.codegen.target = target
    net, group, mon = lif_group(currents, params, dt)
    net.run(duration * b2.second)
    return np.asarray(mon.count[:], dtype=float)
