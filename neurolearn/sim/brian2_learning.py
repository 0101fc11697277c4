"""Learning inside Brian2: the kWTA Hebbian rule as synaptic equations, no Python weight step.

Network (Diehl & Cook 2015 in outline; the rule of :class:`~neurolearn.plasticity.hebbian_kwta.KWTAHebbian`),
built with the one Brian2 kWTA circuit builder (:func:`~neurolearn.sim.brian2_kwta.build_kwta_circuit`):

* input: ``PoissonGroup`` whose rates come from a ``TimedArray``: ``x_j rate_max`` while a sample is
  presented (``t_present``), 0 during the rest period (``t_rest``) -- the whole training set is one
  ``Network.run``;
* excitatory LIF cells with adaptive thresholds (the spiking counterpart of homeostasis ``H``):

      dv/dt = -v / tau_m,   dtheta/dt = -theta / tau_theta,   spike when v > v_th (1 + theta),
      reset v = 0, theta += theta_plus,  at most one spike per 2 ms

  with ``theta_plus`` and ``tau_theta`` (``rule.tau_theta`` presentations of ``t_present + t_rest``) from the rule;
* one inhibitory cell that integrates the excitatory spikes (leak ``tau_m``) and fires at the
  ``rule.k``-th one within about a membrane time constant (threshold ``k - 1/2``), hyperpolarising every
  excitatory cell by ``inhibition v_th`` (lateral inhibition through an inhibitory population: the
  k-winners competition);
* input -> E synapses: the rule's own ``brian2_equations()`` (model, ``on_pre`` trace, ``on_post``
  update, and their namespace: ``eta``, ``c``, ``theta_plus``, ``tau_theta``, ``k``), used unchanged, plus a
  transmission pathway ``v_post += w_gain v_th w``. Plasticity is switched off while responses are
  recorded by deactivating the synapses' postsynaptic pathway (the rule's ``on_post``), not by
  editing its equations.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_choice, check_float, check_int
from ..plasticity.hebbian_kwta import KWTAHebbian
from .brian2_kwta import (
    TRANSMIT_ON_PRE,
    V_TH,
    build_kwta_circuit,
    check_units,
    quiet_brian2,
)
from .checks import check_spiking


class Brian2KWTALearner:
    """One-layer kWTA network that learns in Brian2 (see module docstring).

    Every parameter of ``rule`` (``eta``, ``k``, ``c``, ``theta_plus``, ``tau_theta``) reaches the
    simulation through ``rule.brian2_equations(...)["namespace"]``; the others are the network's:
    ``rate_max`` (Hz), ``t_present``, ``t_rest``, ``dt``, ``tau_m``, ``tau_pre`` (s), ``w_gain`` (EPSP per
    unit weight) and ``inhibition`` (in units of the threshold). ``self.namespace`` holds them all with units.
    """

    def __init__(self, n_in: int, n_out: int, rule: KWTAHebbian = KWTAHebbian(), rate_max: float = 200.0,
                 t_present: float = 0.05, t_rest: float = 0.02, dt: float = 0.5e-3, tau_m: float = 0.02,
                 tau_pre: float = 0.02, w_gain: float = 0.1, inhibition: float = 3.0,
                 target: str = "cython", seed: int = 0):
        check_int("Brian2KWTALearner", "n_in", n_in, 1)
        check_int("Brian2KWTALearner", "n_out", n_out, 1)
        check_choice("Brian2KWTALearner", "target", target, ("numpy", "cython"))
        if not isinstance(rule, KWTAHebbian):
            raise TypeError(f"Brian2KWTALearner: rule must be a KWTAHebbian, got {type(rule).__name__}")
        check_int("Brian2KWTALearner", "rule.k", rule.k, 1, n_out)
        for name, value in (("rate_max", rate_max), ("t_present", t_present), ("dt", dt), ("tau_m", tau_m),
                            ("tau_pre", tau_pre), ("w_gain", w_gain), ("inhibition", inhibition)):
            check_float("Brian2KWTALearner", name, value, 0.0, low_open=True)
        check_float("Brian2KWTALearner", "t_rest", t_rest, 0.0)
        check_spiking("Brian2KWTALearner", dt=dt, tau=tau_m, tau_name="tau_m", steps=int(t_present // dt))
        self.n_in, self.n_out, self.rule = n_in, n_out, rule
        self.rate_max, self.t_present, self.t_rest, self.dt = rate_max, t_present, t_rest, dt
        self.slot = 0.01  # TimedArray resolution (s): t_present and t_rest are multiples of it
        if abs(t_present / self.slot - round(t_present / self.slot)) > 1e-9 or abs(t_rest / self.slot - round(t_rest / self.slot)) > 1e-9:
            raise ValueError("Brian2KWTALearner: t_present and t_rest must be multiples of 10 ms")
        self.b2 = b2 = quiet_brian2()
        b2.prefs.codegen.target = target
        b2.start_scope()
        b2.seed(seed)
        rng = np.random.default_rng(seed)
        eqs = rule.brian2_equations(rate_max=rate_max, tau_pre=tau_pre, presentation=t_present + t_rest)
        v_th = V_TH * b2.volt
        self.stim = b2.TimedArray(np.zeros((1, n_in)) * b2.Hz, dt=self.slot * b2.second)
        # one namespace for every object: the network's parameters, then the rule's (k, theta_plus, tau_theta included)
        self.namespace = {"v_th": v_th, "leak": 1 / (tau_m * b2.second), "t_ref": 2 * b2.ms, "inh_leak": 1 / (tau_m * b2.second),
                          "u_reset": 0.0, "count_once": 0.0, "inhibition": inhibition * v_th, "w_unit": w_gain * v_th,
                          "stim": self.stim, **eqs["namespace"]}
        step = dt * b2.second
        self.input = b2.PoissonGroup(n_in, rates="stim(t, i)", dt=step, namespace=self.namespace)
        circuit = build_kwta_circuit(n_out, self.namespace, reset="zero", method="exact", dt=step)
        self.E, self.I = circuit.excitatory, circuit.inhibitory
        self.E.drive = 0 * b2.volt / b2.second
        self.S = b2.Synapses(self.input, self.E, eqs["model"], on_pre={"pre": eqs["on_pre"], "transmit": TRANSMIT_ON_PRE},
                             on_post=eqs["on_post"], dt=step, namespace=self.namespace, method="exact")
        self.S.connect()
        self.S.w = rng.random(n_in * n_out) * 0.3
        self.spikes = b2.SpikeMonitor(self.E)
        self.net = b2.Network(self.input, self.S, self.spikes, *circuit.objects)
        check_units(self.net)

    @property
    def plastic(self) -> bool:
        """Whether the rule's ``on_post`` update runs (the synapses' postsynaptic pathway is active)."""
        return bool(self.S.post.active)

    @plastic.setter
    def plastic(self, on: bool) -> None:
        self.S.post.active = bool(on)

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        check_spiking("Brian2KWTALearner", x=x)
        if x.ndim != 2 or x.shape[1] != self.n_in or x.shape[0] == 0:
            raise ValueError(f"Brian2KWTALearner: x must have shape (N >= 1, {self.n_in}), got {x.shape}")
        if x.min() < 0 or x.max() > 1:
            raise ValueError("Brian2KWTALearner: x must be in [0, 1] (fractions of rate_max)")
        return x

    def _present(self, x: np.ndarray) -> float:
        """Load ``x`` (N, n_in) into the stimulus TimedArray after the current time; returns the duration."""
        b2 = self.b2
        n_p, n_r = int(round(self.t_present / self.slot)), int(round(self.t_rest / self.slot))
        start = int(round(float(self.net.t / b2.second) / self.slot))
        rows = [np.zeros((start, self.n_in))]
        for xi in x:
            rows += [np.repeat(xi[None] * self.rate_max, n_p, 0), np.zeros((n_r, self.n_in))]
        values = np.concatenate(rows, 0)
        # a new TimedArray under the same name: Brian2 resolves the name again at the next run
        self.stim = self.b2.TimedArray(values * self.b2.Hz, dt=self.slot * self.b2.second)
        self.namespace["stim"] = self.stim
        return len(x) * (self.t_present + self.t_rest)

    def train(self, x, epochs: int = 1) -> None:
        """Present every sample of ``x`` for ``t_present`` (then ``t_rest``), ``epochs`` times; learning on."""
        x = self._check_x(x)
        check_int("Brian2KWTALearner.train", "epochs", epochs, 1)
        self.plastic = True
        for _ in range(epochs):
            duration = self._present(x)
            self.net.run(duration * self.b2.second, namespace={})

    def responses(self, x) -> np.ndarray:
        """Spike counts ``(N, n_out)`` during each sample's presentation, plasticity off."""
        x = self._check_x(x)
        b2 = self.b2
        self.plastic = False
        t0 = float(self.net.t / b2.second)
        n_before = self.spikes.num_spikes
        duration = self._present(x)
        self.net.run(duration * b2.second, namespace={})
        t = np.asarray(self.spikes.t[n_before:] / b2.second) - t0
        i = np.asarray(self.spikes.i[n_before:])
        period = self.t_present + self.t_rest
        sample = (t // period).astype(int)
        inside = (t - sample * period) < self.t_present
        counts = np.zeros((len(x), self.n_out))
        np.add.at(counts, (sample[inside], i[inside]), 1)
        return counts

    @property
    def weights(self) -> np.ndarray:
        """Current input -> E weights as ``(n_out, n_in)``."""
        W = np.zeros((self.n_out, self.n_in))
        W[np.asarray(self.S.j[:]), np.asarray(self.S.i[:])] = np.asarray(self.S.w[:])
        return W

    @property
    def thresholds(self) -> np.ndarray:
        """Current adaptive threshold offsets ``theta`` (units of the firing threshold), ``(n_out,)``."""
        return np.array(self.E.theta[:], dtype=float)  # a copy, not a view of the running state
