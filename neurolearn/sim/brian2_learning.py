"""Learning inside Brian2: the kWTA Hebbian rule as synaptic equations, no Python weight step.

Network (Diehl & Cook 2015 in outline; the rule of :class:`~neurolearn.plasticity.hebbian_kwta.KWTAHebbian`):

* input: ``PoissonGroup`` whose rates come from a ``TimedArray``: ``x_j rate_max`` while a sample is
  presented (``t_present``), 0 during the rest period (``t_rest``) -- the whole training set is one
  ``Network.run``;
* excitatory LIF cells with adaptive thresholds (the spiking counterpart of homeostasis ``H``):

      dv/dt = -v / tau_m,   dtheta/dt = -theta / tau_theta,   spike when v > 1 + theta,
      reset v = 0, theta += theta_plus

* one inhibitory cell that integrates the excitatory spikes (leak ``tau_m``) and fires at the
  ``rule.k``-th one within a membrane time constant (threshold ``k - 1/2``), hyperpolarising every
  excitatory cell (lateral inhibition through an inhibitory population: the k-winners competition);
* input -> E synapses with the plasticity of ``KWTAHebbian.brian2_equations()`` (presynaptic traces,
  update on the postsynaptic spike), gated by a shared ``plastic`` flag that is 0 when responses are
  recorded.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_choice, check_float, check_int
from ..plasticity.hebbian_kwta import KWTAHebbian
from .brian2_sim import quiet_brian2


class Brian2KWTALearner:
    """One-layer kWTA network that learns in Brian2 (see module docstring)."""

    def __init__(self, n_in: int, n_out: int, rule: KWTAHebbian = KWTAHebbian(), rate_max: float = 200.0,
                 t_present: float = 0.05, t_rest: float = 0.02, dt: float = 0.5e-3, tau_m: float = 0.02,
                 tau_pre: float = 0.02, tau_theta: float = 5.0, w_gain: float = 0.1, inhibition: float = 3.0,
                 target: str = "cython", seed: int = 0):
        check_int("Brian2KWTALearner", "n_in", n_in, 1)
        check_int("Brian2KWTALearner", "n_out", n_out, 1)
        check_choice("Brian2KWTALearner", "target", target, ("numpy", "cython"))
        for name, value in (("rate_max", rate_max), ("t_present", t_present), ("dt", dt), ("tau_m", tau_m),
                            ("tau_pre", tau_pre), ("tau_theta", tau_theta), ("w_gain", w_gain), ("inhibition", inhibition)):
            check_float("Brian2KWTALearner", name, value, 0.0, low_open=True)
        check_float("Brian2KWTALearner", "t_rest", t_rest, 0.0)
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
        self.namespace = {
            "tau_m": tau_m * b2.second, "tau_pre": tau_pre * b2.second, "tau_theta": tau_theta * b2.second,
            "theta_plus": rule.theta_plus, "eta_s": rule.eta, "rate_max": rate_max * b2.Hz, "w_max": 1.0,
            "w_gain": w_gain, "w_inh": inhibition,
        }
        step = dt * b2.second
        self.stim = b2.TimedArray(np.zeros((1, n_in)) * b2.Hz, dt=self.slot * b2.second)
        self.namespace["stim"] = self.stim
        self.input = b2.PoissonGroup(n_in, rates="stim(t, i)", dt=step, namespace=self.namespace)
        self.E = b2.NeuronGroup(n_out, "dv/dt = -v / tau_m : 1 (unless refractory)\ndtheta/dt = -theta / tau_theta : 1",
                                threshold="v > 1 + theta", reset="v = 0; theta += theta_plus", refractory=2 * b2.ms,
                                method="exact", dt=step, namespace=self.namespace)
        self.I = b2.NeuronGroup(1, "dv/dt = -v / tau_m : 1", threshold=f"v > {rule.k - 0.5}", reset="v = 0", method="exact",
                                dt=step, namespace=self.namespace)
        self.EI = b2.Synapses(self.E, self.I, on_pre="v_post += 1", dt=step, namespace=self.namespace)
        self.EI.connect()
        self.IE = b2.Synapses(self.I, self.E, on_pre="v_post -= w_inh", dt=step, namespace=self.namespace)
        self.IE.connect()
        eqs = rule.brian2_equations()
        self.S = b2.Synapses(self.input, self.E, eqs["model"] + "\nplastic : 1 (shared)", on_pre=eqs["on_pre"],
                             on_post=eqs["on_post"].replace("eta_s *", "eta_s * plastic *"), dt=step,
                             namespace=self.namespace, method="exact")
        self.S.connect()
        self.S.w = rng.random(n_in * n_out) * 0.3
        self.S.plastic = 1.0
        self.spikes = b2.SpikeMonitor(self.E)
        self.net = b2.Network(self.input, self.E, self.I, self.EI, self.IE, self.S, self.spikes)

    def _present(self, x: np.ndarray) -> float:
        """Load ``x`` (N, n_in) into the stimulus TimedArray after the current time; returns the duration."""
        b2 = self.b2
        n_p, n_r = int(round(self.t_present / self.slot)), int(round(self.t_rest / self.slot))
        start = int(round(float(self.net.t / b2.second) / self.slot))
        rows = [np.zeros((start, self.n_in))]
        for xi in np.asarray(x, dtype=float):
            rows += [np.repeat(xi[None] * self.rate_max, n_p, 0), np.zeros((n_r, self.n_in))]
        values = np.concatenate(rows, 0)
        # a new TimedArray under the same name: Brian2 resolves the name again at the next run
        self.stim = self.b2.TimedArray(values * self.b2.Hz, dt=self.slot * self.b2.second)
        self.input.namespace["stim"] = self.stim
        self.namespace["stim"] = self.stim
        return len(x) * (self.t_present + self.t_rest)

    def train(self, x, epochs: int = 1) -> None:
        """Present every sample of ``x`` for ``t_present`` (then ``t_rest``), ``epochs`` times; learning on."""
        self.S.plastic = 1.0
        for _ in range(epochs):
            duration = self._present(x)
            self.net.run(duration * self.b2.second, namespace=self.namespace)

    def responses(self, x) -> np.ndarray:
        """Spike counts ``(N, n_out)`` during each sample's presentation, plasticity off."""
        b2 = self.b2
        self.S.plastic = 0.0
        t0 = float(self.net.t / b2.second)
        n_before = self.spikes.num_spikes
        duration = self._present(x)
        self.net.run(duration * b2.second, namespace=self.namespace)
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
