"""Spiking simulation with Brian2: models written as equations with units.

LIF cells (Brian2 ``NeuronGroup``), the same model as :mod:`neurolearn.sim.lif`:

    dv/dt = (R I - v) / tau : volt (unless refractory),   threshold v > v_th,   reset v = 0 V,
    refractory t_ref

integrated with Brian2's exact linear solver. Objects are returned so users can add monitors; the
code-generation target is a parameter (``"numpy"`` needs no compiler, ``"cython"`` compiles once).
"""

from __future__ import annotations

import numpy as np

from .._validate import check_choice, check_float, check_int
from .lif import LIFParams

TARGETS = ("numpy", "cython")


def quiet_brian2():
    """Import Brian2 quietly: console log level ERROR and its dependencies' deprecation warnings off."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning, module="brian2")
    warnings.filterwarnings("ignore", message=".*deprecated.*", module="brian2")
    import brian2 as b2

    b2.BrianLogger.console_handler.setLevel("ERROR")
    return b2


def lif_group(currents, params: LIFParams = LIFParams(), dt: float = 1e-4):
    """A Brian2 ``NeuronGroup`` of LIF cells with constant currents ``currents`` (A), and its ``Network``.

    Returns ``(network, group, spike_monitor)``.
    """
    b2 = quiet_brian2()

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
    b2 = quiet_brian2()

    check_float("lif_spike_counts_brian2", "duration", duration, 0.0, low_open=True)
    check_choice("lif_spike_counts_brian2", "target", target, TARGETS)
    b2.prefs.codegen.target = target
    net, group, mon = lif_group(currents, params, dt)
    net.run(duration * b2.second)
    return np.asarray(mon.count[:], dtype=float)


class Brian2Network:
    """A converted one-layer network in Brian2: Poisson input -> integrate-and-fire (or leaky) output cells.

    The same model as :class:`~neurolearn.sim.snntorch_sim.SnnTorchNetwork` written as equations:
    input cell ``j`` is a ``PoissonGroup`` cell of rate ``x_j / dt`` (a spike with probability ``x_j``
    per step); output cell ``i`` integrates ``dv/dt = b_i' / dt`` and jumps by ``W_ij'`` for each input
    spike (``on_pre: v_post += w``), fires at ``v > 1`` and resets by subtraction (``v -= 1``), so
    ``count / T`` estimates ``clamp(W' x + b', 0, 1)`` (Diehl et al. 2015). With ``tau_m`` (in steps) the
    cells leak, ``dv/dt = (b_i' - (1 - exp(-1/tau_m)) v) / dt`` between input spikes: one Euler step is
    the snnTorch cell's ``v <- exp(-1/tau_m) v + b'``. With ``thresholds`` ``H`` each cell's adaptive
    threshold offset (in units of drive per step) is subtracted from its drive (``dv/dt = (b_i' - H_i) / dt``),
    so the cells compete on ``W' x + b' - H``; with ``kwta_k = k`` an inhibitory cell per example counts
    the excitatory cells that have fired (each cell's first spike) and at the k-th hyperpolarises every
    output cell of that example (lateral inhibition through an inhibitory population): the cells that
    fired are the spiking k winners. In
    that mode all drives are scaled by ``kwta_gain`` so that first spikes, ordered by drive, are spread
    over many steps (the race's resolution).
    ``copies`` examples run at once as independent
    blocks (block-diagonal synapses), the way to use one Brian2 run for many inputs. The Brian2 objects
    are built when the network is made and stay in ``self.objects`` (``"network"``, ``"input"``,
    ``"output"``, ``"synapses"``, ``"spikes"``, and with ``kwta_k`` ``"inhibitory"``, ``"to_inhibitory"``,
    ``"inhibition"``): add monitors with ``objects["network"].add(...)`` at any time; between chunks
    of examples the cells' state variables are set back to rest (nothing is restored from a snapshot),
    so monitors simply keep recording along the network's clock.
    """

    def __init__(self, weight, bias, dt: float = 1e-3, target: str = "numpy", copies: int = 50,
                 kwta_k: int | None = None, thresholds=None, kwta_gain: float = 0.05, tau_m: float | None = None):
        check_choice("Brian2Network", "target", target, TARGETS)
        self.W = np.asarray(weight, dtype=float)
        self.b = np.asarray(bias, dtype=float)
        self.kwta_k = None if kwta_k is None else int(kwta_k)
        if self.kwta_k is not None and not 1 <= self.kwta_k <= self.W.shape[0]:
            raise ValueError(f"Brian2Network: kwta_k must be in [1, {self.W.shape[0]}], got {kwta_k}")
        self.theta = np.zeros(self.W.shape[0]) if thresholds is None else np.asarray(thresholds, dtype=float)
        # in the competition the drive is scaled down so first spikes spread over many steps
        self.gain = 1.0 if self.kwta_k is None else check_float("Brian2Network", "kwta_gain", kwta_gain, 0.0, 1.0, low_open=True)
        if self.W.ndim != 2 or self.b.shape != (self.W.shape[0],):
            raise ValueError(f"Brian2Network: weight must be (n_out, n_in) and bias (n_out,), got {self.W.shape}, {self.b.shape}")
        self.dt, self.target = check_float("Brian2Network", "dt", dt, 0.0, low_open=True), target
        self.tau_m = None if tau_m is None else check_float("Brian2Network", "tau_m", tau_m, 0.0, low_open=True)
        self.copies = check_int("Brian2Network", "copies", copies, 1)
        b2 = quiet_brian2()
        b2.prefs.codegen.target = self.target
        self.objects: dict = {}
        self._build(b2)

    def _build(self, b2):
        """Create the Brian2 objects for ``copies`` parallel examples (once, when the network is made)."""
        n_out, n_in = self.W.shape
        c = self.copies
        step = self.dt * b2.second
        inp = b2.PoissonGroup(c * n_in, rates=np.zeros(c * n_in) * b2.Hz, dt=step)
        # leak 1 - exp(-1/tau_m) of v per step (none: integrate-and-fire), as the snnTorch cells
        leak = 0.0 if self.tau_m is None else 1.0 - float(np.exp(-1.0 / self.tau_m))
        out_g = b2.NeuronGroup(c * n_out, "dv/dt = (gain * (bias - theta) - leak * v) / tstep : 1\nbias : 1 (constant)\n"
                               "theta : 1 (constant)\ntstep : second (constant)\ngain : 1 (constant)\n"
                               "leak : 1 (constant)",
                               threshold="v > 1", reset="v -= 1", method="euler", dt=step)
        out_g.leak = leak
        out_g.bias = np.tile(self.b, c)
        out_g.theta = np.tile(self.theta, c)
        out_g.gain = self.gain
        out_g.tstep = step
        extra = []
        if self.kwta_k is not None:
            inh = b2.NeuronGroup(c, "u : 1", threshold=f"u > {self.kwta_k - 0.5}", reset="u = -1e9", dt=step)
            # each excitatory cell counts once: the k-th *distinct* cell to fire triggers the inhibition
            ei = b2.Synapses(out_g, inh, "fired : 1", on_pre="u_post += 1 - fired\nfired = 1", dt=step)
            ei.connect(i=np.arange(c * n_out), j=np.repeat(np.arange(c), n_out))
            ie = b2.Synapses(inh, out_g, on_pre="v_post = -1e9", dt=step)
            ie.connect(i=np.repeat(np.arange(c), n_out), j=np.arange(c * n_out))
            extra = [inh, ei, ie]
        syn = b2.Synapses(inp, out_g, "w : 1", on_pre=f"v_post += {self.gain} * w", dt=step)
        pre = np.repeat(np.arange(n_in), n_out)
        post = np.tile(np.arange(n_out), n_in)
        blocks = np.arange(c)
        syn.connect(i=(pre[None, :] + n_in * blocks[:, None]).ravel(), j=(post[None, :] + n_out * blocks[:, None]).ravel())
        syn.w = np.tile(self.W.T.ravel(), c)
        mon = b2.SpikeMonitor(out_g)
        net = b2.Network(inp, out_g, syn, mon, *extra)
        self.objects = {"network": net, "input": inp, "output": out_g, "synapses": syn, "spikes": mon}
        if extra:
            self.objects.update(inhibitory=extra[0], to_inhibitory=extra[1], inhibition=extra[2])

    def run(self, x, steps: int = 200, seed: int = 0) -> np.ndarray:
        """Spike counts ``(N, n_out)`` for inputs ``x`` ``(N, n_in)`` in [0, 1] over ``steps`` steps.

        The network (built for ``copies`` examples at a time) runs one chunk of examples after another;
        before each chunk the output cells (and inhibitory cells) are set back to rest, ``v = 0``.
        """
        b2 = quiet_brian2()
        x = np.asarray(x, dtype=float)
        if x.min() < 0 or x.max() > 1:
            raise ValueError("Brian2Network.run: x must be in [0, 1] (spike probabilities per step)")
        b2.prefs.codegen.target = self.target
        n_out, n_in = self.W.shape
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"Brian2Network.run: x must have shape (N, {n_in}), got {x.shape}")
        o = self.objects
        out = np.zeros((x.shape[0], n_out))
        for start in range(0, x.shape[0], self.copies):
            xb = x[start : start + self.copies]
            c = xb.shape[0]
            o["output"].v = 0
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
