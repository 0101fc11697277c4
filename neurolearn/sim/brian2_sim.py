"""Spiking simulation with Brian2: models written as equations with units.

LIF cells (Brian2 ``NeuronGroup``), the same model as :mod:`neurolearn.sim.lif`:

    dv/dt = (R I - v) / tau : volt (unless refractory),   threshold v > v_th,   reset v = 0 V,
    refractory t_ref

integrated with Brian2's exact linear solver; the converted network (:class:`Brian2Network`) is the
kWTA circuit of :mod:`neurolearn.sim.brian2_kwta` (with or without its inhibition). Equations are
module-level strings and every parameter is a namespace value with units. Objects are returned so
users can add monitors; the code-generation target is a parameter (``"numpy"`` needs no compiler,
``"cython"`` compiles once). Every model checks its parameters first (:func:`~neurolearn.sim.checks.check_spiking`).
"""

from __future__ import annotations

import numpy as np

from .._validate import check_choice, check_float, check_int
from .brian2_kwta import (
    SILENCE,
    TRANSMIT_MODEL,
    TRANSMIT_ON_PRE,
    V_TH,
    build_kwta_circuit,
    check_units,
    quiet_brian2,
)
from .checks import check_spiking
from .lif import LIFParams

TARGETS = ("numpy", "cython")
LIF_EQUATIONS = """
dv/dt = (R * I - v) / tau : volt (unless refractory)
I : amp (constant)
"""
LIF_THRESHOLD = "v > v_th"
LIF_RESET = "v = 0 * volt"

__all__ = ["TARGETS", "Brian2Network", "lif_group", "lif_spike_counts_brian2", "quiet_brian2"]


def lif_group(currents, params: LIFParams = LIFParams(), dt: float = 1e-4):
    """A Brian2 ``NeuronGroup`` of LIF cells with constant currents ``currents`` (A), and its ``Network``.

    Returns ``(network, group, spike_monitor)``. Refuses non-finite currents and ``dt >= tau``.
    """
    currents = np.asarray(currents, dtype=float).ravel()
    check_float("lif_group", "dt", dt, 0.0, low_open=True)
    check_spiking("lif_group", dt=dt, tau=params.tau, tau_name="tau", currents=currents)
    b2 = quiet_brian2()
    ns = {"R": params.R * b2.ohm, "tau": params.tau * b2.second, "v_th": params.v_th * b2.volt,
          "t_ref": params.t_ref * b2.second}
    group = b2.NeuronGroup(len(currents), LIF_EQUATIONS, threshold=LIF_THRESHOLD, reset=LIF_RESET, refractory="t_ref",
                           method="exact", namespace=ns, dt=dt * b2.second)
    group.I = currents * b2.amp
    mon = b2.SpikeMonitor(group)
    return b2.Network(group, mon), group, mon


def lif_spike_counts_brian2(currents, params: LIFParams = LIFParams(), duration: float = 1.0, dt: float = 1e-4,
                            target: str = "numpy") -> np.ndarray:
    """Spike counts of LIF cells with constant ``currents`` over ``duration`` seconds (Brian2).

    Refused before any simulation: non-finite currents, ``dt >= tau``, a duration shorter than one step.
    """
    check_float("lif_spike_counts_brian2", "duration", duration, 0.0, low_open=True)
    check_float("lif_spike_counts_brian2", "dt", dt, 0.0, low_open=True)
    check_choice("lif_spike_counts_brian2", "target", target, TARGETS)
    check_spiking("lif_spike_counts_brian2", dt=dt, tau=params.tau, steps=int(round(duration / dt)), currents=currents)
    b2 = quiet_brian2()
    b2.prefs.codegen.target = target
    net, _, mon = lif_group(currents, params, dt)
    net.run(duration * b2.second, namespace={})
    return np.asarray(mon.count[:], dtype=float)


class Brian2Network:
    """A converted one-layer network in Brian2: Poisson input -> integrate-and-fire (or leaky) output cells.

    The same model as :class:`~neurolearn.sim.snntorch_sim.SnnTorchNetwork`, built by the one kWTA
    circuit builder (:func:`~neurolearn.sim.brian2_kwta.build_kwta_circuit`, reset by subtraction,
    Euler steps of ``dt``): input cell ``j`` is a ``PoissonGroup`` cell of rate ``x_j / dt`` (a spike with
    probability ``x_j`` per step); output cell ``i`` integrates the constant drive
    ``drive_i = g (b_i' - H_i) v_th / dt`` and jumps by ``g W_ij' v_th`` for each input spike
    (``v_post += w_unit w``), fires at ``v > v_th`` and resets by subtraction (``v -= v_th``), so
    ``count / T`` estimates ``clamp(W' x + b', 0, 1)`` (Diehl et al. 2015). With ``tau_m`` (in steps,
    more than one) the cells leak at ``leak = (1 - exp(-1/tau_m)) / dt``: one Euler step is the snnTorch
    cell's ``v <- exp(-1/tau_m) v + b'``. ``thresholds`` ``H`` (adaptive threshold offsets in units of
    drive per step) are subtracted from each cell's drive, so the cells compete on ``W' x + b' - H``;
    with ``kwta_k = k`` the circuit's inhibitory cell per example counts the excitatory cells that have
    fired (each cell's first spike, ``count_once = 1``) and at the k-th hyperpolarises every output cell
    of that example by ``inhibition = 1e9 v_th`` (once per example, ``u_reset = -1e9``): the cells that
    fired are the spiking k winners. In that mode all drives are scaled by ``g = kwta_gain`` so that
    first spikes, ordered by drive, are spread over many steps (the race's resolution); otherwise ``g = 1``.
    ``copies`` examples run at once as independent blocks (block-diagonal synapses), the way to use
    one Brian2 run for many inputs. The Brian2 objects are built when the network is made and stay in
    ``self.objects`` (``"network"``, ``"input"``, ``"output"``, ``"synapses"``, ``"spikes"``, and with
    ``kwta_k`` ``"inhibitory"``, ``"to_inhibitory"``, ``"inhibition"``); ``self.namespace`` holds every
    parameter with its unit. Add monitors with ``objects["network"].add(...)`` at any time; between
    chunks of examples the cells' state variables are set back to rest (nothing is restored from a
    snapshot), so monitors simply keep recording along the network's clock.
    """

    V_TH, SILENCE = V_TH, SILENCE  # the threshold (volt) and the silencing inhibition (see brian2_kwta)

    def __init__(self, weight, bias, dt: float = 1e-3, target: str = "numpy", copies: int = 50,
                 kwta_k: int | None = None, thresholds=None, kwta_gain: float = 0.05, tau_m: float | None = None):
        check_choice("Brian2Network", "target", target, TARGETS)
        self.W = np.asarray(weight, dtype=float)
        self.b = np.asarray(bias, dtype=float)
        if self.W.ndim != 2 or self.b.shape != (self.W.shape[0],):
            raise ValueError(f"Brian2Network: weight must be (n_out, n_in) and bias (n_out,), got {self.W.shape}, {self.b.shape}")
        self.kwta_k = None if kwta_k is None else check_int("Brian2Network", "kwta_k", kwta_k, 1, self.W.shape[0])
        self.theta = np.zeros(self.W.shape[0]) if thresholds is None else np.asarray(thresholds, dtype=float)
        if self.theta.shape != (self.W.shape[0],):
            raise ValueError(f"Brian2Network: thresholds must have shape ({self.W.shape[0]},), got {self.theta.shape}")
        # in the competition the drive is scaled down so first spikes spread over many steps
        self.gain = 1.0 if self.kwta_k is None else check_float("Brian2Network", "kwta_gain", kwta_gain, 0.0, 1.0, low_open=True)
        self.dt, self.target = check_float("Brian2Network", "dt", dt, 0.0, low_open=True), target
        self.tau_m = None if tau_m is None else check_float("Brian2Network", "tau_m", tau_m, 0.0, low_open=True)
        check_spiking("Brian2Network", dt=None if tau_m is None else 1.0, tau=self.tau_m, dt_name="one time step",
                      tau_name="tau_m", unit="steps", weight=self.W, bias=self.b, thresholds=self.theta)
        self.copies = check_int("Brian2Network", "copies", copies, 1)
        b2 = quiet_brian2()
        b2.prefs.codegen.target = self.target
        self.objects: dict = {}
        self._build(b2)

    def _namespace(self, b2) -> dict:
        """Every parameter of the circuit with its Brian2 unit (see the class docstring)."""
        v_th, step = self.V_TH * b2.volt, self.dt * b2.second
        # leak 1 - exp(-1/tau_m) of v per step (none: integrate-and-fire), as the snnTorch cells
        leak = 0.0 if self.tau_m is None else 1.0 - float(np.exp(-1.0 / self.tau_m))
        ns = {"v_th": v_th, "leak": leak / step, "t_ref": 0 * b2.second, "theta_plus": 0.0, "tau_theta": 1 * b2.second,
              "w_unit": self.gain * v_th}
        if self.kwta_k is not None:
            ns.update(k_winners=self.kwta_k, inh_leak=0 * b2.Hz, u_reset=-self.SILENCE, count_once=1.0,
                      inhibition=self.SILENCE * v_th)
        return ns

    def _build(self, b2):
        """Create the Brian2 objects for ``copies`` parallel examples (once, when the network is made)."""
        n_out, n_in = self.W.shape
        c = self.copies
        step = self.dt * b2.second
        self.namespace = self._namespace(b2)
        circuit = build_kwta_circuit(n_out, self.namespace, blocks=c, inhibit=self.kwta_k is not None, reset="subtract",
                                     method="euler", dt=step)
        out_g = circuit.excitatory
        out_g.drive = np.tile(self.gain * (self.b - self.theta), c) * self.namespace["v_th"] / step
        inp = b2.PoissonGroup(c * n_in, rates=np.zeros(c * n_in) * b2.Hz, dt=step)
        syn = b2.Synapses(inp, out_g, TRANSMIT_MODEL, on_pre=TRANSMIT_ON_PRE, namespace=self.namespace, dt=step)
        pre = np.repeat(np.arange(n_in), n_out)
        post = np.tile(np.arange(n_out), n_in)
        blocks = np.arange(c)
        syn.connect(i=(pre[None, :] + n_in * blocks[:, None]).ravel(), j=(post[None, :] + n_out * blocks[:, None]).ravel())
        syn.w = np.tile(self.W.T.ravel(), c)
        mon = b2.SpikeMonitor(out_g)
        net = b2.Network(inp, syn, mon, *circuit.objects)
        check_units(net)
        self.objects = {"network": net, "input": inp, "output": out_g, "synapses": syn, "spikes": mon}
        if circuit.inhibitory is not None:
            self.objects.update(inhibitory=circuit.inhibitory, to_inhibitory=circuit.to_inhibitory,
                                inhibition=circuit.inhibition)

    def run(self, x, steps: int = 200, seed: int = 0) -> np.ndarray:
        """Spike counts ``(N, n_out)`` for inputs ``x`` ``(N, n_in)`` in [0, 1] over ``steps`` steps.

        The network (built for ``copies`` examples at a time) runs one chunk of examples after another;
        before each chunk the output cells (and inhibitory cells) are set back to rest, ``v = 0``.
        Refused before any simulation: non-finite ``x``, ``x`` outside [0, 1], ``steps < 1``.
        """
        x = np.asarray(x, dtype=float)
        check_spiking("Brian2Network.run", steps=steps, x=x)
        n_out, n_in = self.W.shape
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"Brian2Network.run: x must have shape (N, {n_in}), got {x.shape}")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError("Brian2Network.run: x must be in [0, 1] (spike probabilities per step)")
        b2 = quiet_brian2()
        b2.prefs.codegen.target = self.target
        o = self.objects
        out = np.zeros((x.shape[0], n_out))
        for start in range(0, x.shape[0], self.copies):
            xb = x[start : start + self.copies]
            c = xb.shape[0]
            o["output"].v = 0 * b2.volt
            if "inhibitory" in o:
                o["inhibitory"].u = 0
                o["to_inhibitory"].fired = 0
            before = np.asarray(o["spikes"].count[:]).copy()
            b2.seed(seed + start)
            rates = np.zeros(self.copies * n_in)
            rates[: c * n_in] = xb.ravel() / self.dt
            o["input"].rates = rates * b2.Hz
            o["network"].run(steps * self.dt * b2.second, namespace={})
            counts = np.asarray(o["spikes"].count[:]) - before
            out[start : start + c] = counts.reshape(self.copies, n_out)[:c]
        return out
