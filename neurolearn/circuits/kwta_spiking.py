"""Spiking realisation of the KWTA circuit in Brian2: first-k-to-fire with one inhibitory cell.

The circuit is :func:`neurolearn.sim.brian2_kwta.build_kwta_circuit` (the one Brian2 kWTA builder),
one block per trial. Excitatory cells (LIF, threshold ``v_th``) receive constant drives from
``a_i = d_i - H_i`` (the drive minus the homeostatic offset: the adaptive threshold of Diehl & Cook
2015 expressed in units of drive), mapped by the circuit's input gain stage affinely onto
``[1.05, 3.05]`` thresholds per trial, and start from rest:

    tau dv_i/dt = -v_i + g_i v_th,   g_i = 1.05 + 2 (a_i - min a) / (max a - min a)
    first spike at  t_i = tau ln(g_i / (g_i - 1)):  the larger a_i, the earlier cell i fires.

(in the builder's terms: ``leak = 1 / tau``, ``drive_i = g_i v_th / tau``, ``t_ref`` the whole trial, so
each cell fires at most once). One inhibitory cell per circuit integrates the excitatory spikes
without leak and fires at the ``k``-th (threshold ``k - 1/2`` in units of one EPSP); its spike
hyperpolarises every excitatory cell of the circuit by ``inhibition x v_th``, silencing them for the
rest of the trial. The winners are the cells that fired: with a clear margin between the k-th and
(k+1)-th drive they are the rate top-k (:func:`neurolearn.circuits.kwta.kwta`). Many independent
circuits (trials) run in one Brian2 network as blocks.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_choice, check_float, check_int


def spiking_kwta(drives, k: int, H=None, tau: float = 20e-3, duration: float = 50e-3,
                 dt: float = 0.05e-3, inhibition: float = 50.0, target: str = "numpy") -> np.ndarray:
    """Winners (0/1) of ``drives`` (trials, n) through the spiking circuit; see module docstring.

    ``tau`` (s) membrane time constant, ``duration`` (s) of a trial, ``inhibition`` the hyperpolarisation
    by the inhibitory spike in units of the threshold. Returns an int array of the drives' shape.
    Refused before any simulation: non-finite ``drives`` or ``H``, ``dt >= tau``, ``duration < dt``.
    """
    from ..sim.brian2_kwta import (
        SILENCE,
        V_TH,
        build_kwta_circuit,
        check_units,
        quiet_brian2,
    )
    from ..sim.checks import check_spiking

    drives = np.atleast_2d(np.asarray(drives, dtype=float))
    trials, n = drives.shape
    check_int("spiking_kwta", "k", k, 1, n)
    check_float("spiking_kwta", "duration", duration, 0.0, low_open=True)
    check_float("spiking_kwta", "tau", tau, 0.0, low_open=True)
    check_float("spiking_kwta", "dt", dt, 0.0, duration, low_open=True)
    check_float("spiking_kwta", "inhibition", inhibition, 0.0, low_open=True)
    check_choice("spiking_kwta", "target", target, ("numpy", "cython"))
    H = np.zeros(n) if H is None else np.asarray(H, dtype=float)
    if H.shape != (n,):
        raise ValueError(f"spiking_kwta: H must have one threshold per cell, shape ({n},), got {H.shape}")
    check_spiking("spiking_kwta", dt=dt, tau=tau, steps=int(round(duration / dt)), drives=drives, H=H)
    a = drives - H  # the competition is on d - H
    # shift each trial so that the weakest cell sits just above threshold: every cell would fire
    # eventually; the order of first spikes is the order of a
    lo = a.min(1, keepdims=True)
    span = np.maximum(a.max(1, keepdims=True) - lo, 1e-12)
    rel = 1.05 + 2.0 * (a - lo) / span  # drive in units of threshold, in [1.05, 3.05], monotone in a
    b2 = quiet_brian2()
    b2.prefs.codegen.target = target
    step = dt * b2.second
    v_th = V_TH * b2.volt
    ns = {"v_th": v_th, "leak": 1 / (tau * b2.second), "t_ref": duration * b2.second, "theta_plus": 0.0,
          "tau_theta": 1 * b2.second, "k_winners": k, "inh_leak": 0 * b2.Hz, "u_reset": -SILENCE, "count_once": 1.0,
          "inhibition": inhibition * v_th}
    circuit = build_kwta_circuit(n, ns, blocks=trials, reset="zero", method="exact", dt=step)
    circuit.excitatory.drive = rel.ravel() * v_th / (tau * b2.second)
    mon = b2.SpikeMonitor(circuit.excitatory)
    net = b2.Network(mon, *circuit.objects)
    check_units(net)
    net.run(duration * b2.second, namespace={})
    winners = (np.asarray(mon.count[:]) > 0).astype(int).reshape(trials, n)
    return winners
