"""Spiking hinge error circuit in Brian2: rectified difference units, one summing unit, two threshold units.

The spiking realisation of :class:`neurolearn.circuits.hinge_error.HingeError` (Tang et al. 2022,
Appendix A; METHODS.md 3.3 and 10). Activities are rates: a value ``a`` is carried at ``a r_0`` Hz
(``r_0 = rate_scale``), a signed value by two channels ``[a]_+`` and ``[-a]_+``. Every unit is a
non-leaky integrate-and-fire cell (threshold ``v_th``, reset by subtraction) driven by a synaptic
current filtered with ``tau_syn`` and a tonic drive, with its potential held at or above 0:

    dv/dt = I + drive,   dI/dt = -I / tau_syn,   a presynaptic spike: I += w v_th / tau_syn,   v >= 0

so each input spike brings the charge ``w v_th`` and a unit fires at ``[sum_inputs w r_in + drive / v_th]_+``:
**rectification is the firing threshold** (the floor at 0 forbids storing negative charge). Per top cell ``i``:

* sources (excitatory): ``M+_i, M-_i`` (the memory units, at the held rates) and ``z+_i, z-_i`` (the
  current top cell), each firing regularly at its rate;
* inhibitory copies (interneurons): ``v+-_i`` driven by ``M+-_i`` and ``u+-_i`` by ``z+-_i``, fast relays (a
  source spike moves the copy's potential by ``g v_th``: it fires one step later, at ``g`` times the
  source's rate; ``g = inhibition_gain``, 1 = intact); the direct excitation of the ``D`` units is delayed
  by that one step, so that excitation and inhibition of equal rates cancel spike for spike;
* rectified difference units (excitatory): ``D+_i`` excited by ``M+_i, z-_i`` and inhibited by ``u+_i, v-_i``,
  so ``D+_i = [M_i - z_i]_+``; ``D-_i`` excited by ``z+_i, M-_i`` and inhibited by ``v+_i, u-_i``: ``[z_i - M_i]_+``;
* one summing unit ``S`` excited by every ``D`` (``S = ||M - z||_1``);
* two threshold units: ``G+`` excited by ``S`` (weight ``gate_gain``) against a tonic inhibition
  ``gate_gain m1 r_0``, so it fires iff ``S > m1``; ``G-`` tonic at ``gate_gain m2 r_0`` and inhibited by ``S``,
  so it fires iff ``S < m2``.

A presentation is simulated for ``settle + read`` seconds and read out from spike counts in the last
``read`` seconds: ``S`` and ``D+-`` as rates over ``r_0``, a gate open when its unit fired at least
``gate_count`` times, ``sign_i = [D+_i fired >= gate_count] - [D-_i fired >= gate_count]`` (graded: the
rate difference), and ``delta_i = -G+ sign_i`` (positive phase) or ``w_neg G- sign_i`` (negative): the
gate is broadcast and multiplies each cell's sign at its synapses, as in the locality contract. The
discreteness of spike counts sets the resolution: a value is read to about ``1 / (r_0 read)``, and a
difference ``|M_i - z_i|`` or a distance ``|S - m|`` below a few times that can be misread
(``tests/test_hinge_circuit.py`` states the measured tolerance). Presentations follow one another
without a reset (the sequence of anchor, positive, negatives); trials are blocks of one network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import ParameterError, check_choice, check_float, check_int

UNIT = """
dv/dt = I + drive : volt
dI/dt = -I / tau_syn : volt / second
drive : volt / second
"""
THRESHOLD = "v > v_th"
RESET = "v -= v_th"
FLOOR_EVENT = "v < 0 * volt"
FLOOR = "v = 0 * volt"
SYNAPSE_MODEL = "w : 1"
SYNAPSE_ON_PRE = "I_post += w * v_th / tau_syn"
RELAY_ON_PRE = "v_post += w * v_th"
NAMES = ("v_th", "tau_syn")
SPIKING_KEYS = ("rate_scale", "tau_syn", "gate_gain", "gate_count", "settle", "read", "dt")


@dataclass
class HingeCircuit:
    """The Brian2 objects of :func:`build_hinge_circuit` for ``trials`` circuits of ``n`` top cells.

    Groups (cell index within a trial's block): ``sources`` (4n: ``M+``, ``M-``, ``z+``, ``z-``),
    ``copies`` (4n: ``v+``, ``v-``, ``u+``, ``u-``, the inhibitory copies, in the sources' order),
    ``diff`` (2n: ``D+``, ``D-``), ``sum`` (1: ``S``), ``gates`` (2: ``G+``, ``G-``); ``synapses`` lists the
    connections (sources -> copies, sources -> diff, copies -> diff, diff -> sum, sum -> gates).
    """

    namespace: dict
    n: int
    trials: int
    sources: object
    copies: object
    diff: object
    sum: object
    gates: object
    synapses: list

    @property
    def objects(self) -> list:
        """Every Brian2 object of the circuit (to add to a ``Network``)."""
        return [self.sources, self.copies, self.diff, self.sum, self.gates, *self.synapses]


def _group(b2, size, namespace, kw):
    g = b2.NeuronGroup(size, UNIT, threshold=THRESHOLD, reset=RESET, method="euler",
                       events={"floor": FLOOR_EVENT}, namespace=namespace, **kw)
    g.run_on_event("floor", FLOOR)
    return g


def build_hinge_circuit(n: int, namespace: dict, *, trials: int = 1, inhibition_gain: float = 1.0,
                        gate_gain: float = 4.0, dt=None) -> HingeCircuit:
    """Build ``trials`` independent hinge circuits of ``n`` top cells (module docstring). ``namespace``
    maps ``v_th`` (volt) and ``tau_syn`` (second) to values with Brian2 units. Drives (the sources'
    rates, the gates' tonic drives) are set by the caller (:func:`spiking_hinge_error`)."""
    from .brian2_kwta import quiet_brian2

    b2 = quiet_brian2()
    check_int("build_hinge_circuit", "n", n, 1)
    check_int("build_hinge_circuit", "trials", trials, 1)
    check_float("build_hinge_circuit", "inhibition_gain", inhibition_gain, 0.0)
    check_float("build_hinge_circuit", "gate_gain", gate_gain, 0.0, low_open=True)
    missing = [name for name in NAMES if name not in namespace]
    if missing:
        raise ParameterError(f"build_hinge_circuit: namespace lacks {missing} (needs {list(NAMES)})")
    kw = {} if dt is None else {"dt": dt}
    src, cop, diff = _group(b2, 4 * n * trials, namespace, kw), _group(b2, 4 * n * trials, namespace, kw), \
        _group(b2, 2 * n * trials, namespace, kw)
    tot, gates = _group(b2, trials, namespace, kw), _group(b2, 2 * trials, namespace, kw)
    syn = []

    def connect(pre, post, i, j, w, on_pre=SYNAPSE_ON_PRE, delay=None):
        s = b2.Synapses(pre, post, SYNAPSE_MODEL, on_pre=on_pre, namespace=namespace,
                        **({} if delay is None else {"delay": delay}), **kw)
        s.connect(i=np.asarray(i), j=np.asarray(j))
        s.w = w
        syn.append(s)

    cells4 = np.arange(4 * n * trials)
    connect(src, cop, cells4, cells4, inhibition_gain, RELAY_ON_PRE)  # inhibitory copies v = g M, u = g z (relays)
    k = np.arange(n)
    pre_exc, pre_inh, post_d = [], [], []
    for b in range(trials):
        s0, d0 = b * 4 * n, b * 2 * n
        Mp, Mm, zp, zm = s0 + k, s0 + n + k, s0 + 2 * n + k, s0 + 3 * n + k   # also the copies' indices
        for post, exc, inh in ((d0 + k, (Mp, zm), (zp, Mm)), (d0 + n + k, (zp, Mm), (Mp, zm))):
            for e, h in zip(exc, inh):
                pre_exc.append(e)
                pre_inh.append(h)
                post_d.append(post)
    pre_exc, pre_inh, post_d = np.concatenate(pre_exc), np.concatenate(pre_inh), np.concatenate(post_d)
    # the direct excitation waits one step, as long as the disynaptic inhibition through a relay takes
    connect(src, diff, pre_exc, post_d, 1.0, delay=dt if dt is not None else b2.defaultclock.dt)  # D+ <- M+, z-; D- <- z+, M-
    connect(cop, diff, pre_inh, post_d, -1.0)         # D+ <- -(u+, v-);  D- <- -(v+, u-)
    d_idx = np.arange(2 * n * trials)
    connect(diff, tot, d_idx, d_idx // (2 * n), 1.0)  # S <- sum of D
    b_idx = np.arange(trials)
    connect(tot, gates, np.concatenate([b_idx, b_idx]), np.concatenate([2 * b_idx, 2 * b_idx + 1]),
            np.concatenate([np.full(trials, gate_gain), np.full(trials, -gate_gain)]))
    return HingeCircuit(namespace, n, trials, src, cop, diff, tot, gates, syn)


def spiking_params(**given) -> dict:
    """The spiking keys (``rate_scale``, ``tau_syn``, ``gate_gain``, ``gate_count``, ``settle``, ``read``, ``dt``)
    from the ``[spiking]`` table of ``circuits/hinge_error.toml``, overridden by ``given`` (``None`` = default)."""
    from ..circuits import circuit_params

    params = dict(circuit_params("hinge_error").get("spiking", {}))
    for key, value in given.items():
        if key not in SPIKING_KEYS:
            raise ParameterError(f"spiking_hinge_error: unknown key {key!r}; the spiking keys are {list(SPIKING_KEYS)}")
        if value is not None:
            params[key] = value
    missing = [k for k in SPIKING_KEYS if k not in params]
    if missing:
        raise ParameterError(f"spiking_hinge_error: circuits/hinge_error.toml [spiking] lacks {missing}")
    return params


def spiking_hinge_error(memory, current, phases, w_neg: float = 1.0, circuit=None, *, record: bool = False,
                        target: str = "numpy", **spiking) -> dict:
    """Run the spiking circuit over a sequence of presentations and read each one out (module docstring).

    ``memory`` and ``current``: ``(P, trials, n)`` (P presentations; ``(trials, n)`` or ``(n,)`` for one);
    ``phases``: one ``"positive"`` / ``"negative"`` per presentation (a string for all). ``circuit``: the
    :class:`~neurolearn.circuits.hinge_error.HingeError` whose ``m1``, ``m2``, ``graded`` and ``inhibition_gain``
    are used (default: ``circuits/hinge_error.toml``); ``spiking``: the keys of :func:`spiking_params`.
    Returns a dict of arrays ``(P, trials, ...)``: ``S``, ``G_pos``, ``G_neg``, ``gate``, ``D_plus``, ``D_minus``,
    ``sign``, ``delta``; with ``record``: ``"trace"`` -- ``t`` and the spike times and indices of each group.
    """
    from ..circuits.hinge_error import PHASES, HingeError, default_hinge_error
    from .brian2_kwta import V_TH, check_units, quiet_brian2
    from .checks import check_spiking

    circuit = default_hinge_error() if circuit is None else circuit
    if not isinstance(circuit, HingeError):
        raise ParameterError(f"spiking_hinge_error: circuit must be a HingeError, got {type(circuit).__name__}")
    p = spiking_params(**spiking)
    r0 = check_float("spiking_hinge_error", "rate_scale", p["rate_scale"], 0.0, low_open=True)
    tau = check_float("spiking_hinge_error", "tau_syn", p["tau_syn"], 0.0, low_open=True)
    gain = check_float("spiking_hinge_error", "gate_gain", p["gate_gain"], 0.0, low_open=True)
    count = check_int("spiking_hinge_error", "gate_count", p["gate_count"], 1)
    settle = check_float("spiking_hinge_error", "settle", p["settle"], 0.0)
    read = check_float("spiking_hinge_error", "read", p["read"], 0.0, low_open=True)
    dt = check_float("spiking_hinge_error", "dt", p["dt"], 0.0, low_open=True)
    w_neg = check_float("spiking_hinge_error", "w_neg", w_neg, 0.0)
    check_choice("spiking_hinge_error", "target", target, ("numpy", "cython"))
    M, z = np.asarray(memory, dtype=float), np.asarray(current, dtype=float)
    if M.shape != z.shape or M.ndim not in (1, 2, 3):
        raise ParameterError(f"spiking_hinge_error: memory and current must have the same shape (P, trials, n), "
                             f"(trials, n) or (n,), got {M.shape} and {z.shape}")
    M, z = M.reshape((1,) * (3 - M.ndim) + M.shape), z.reshape((1,) * (3 - z.ndim) + z.shape)
    P, trials, n = M.shape
    phases = [phases] * P if isinstance(phases, str) else list(phases)
    if len(phases) != P:
        raise ParameterError(f"spiking_hinge_error: phases must give one phase per presentation ({P}), got {len(phases)}")
    for ph in phases:
        check_choice("spiking_hinge_error", "phases", ph, PHASES)
    check_spiking("spiking_hinge_error", dt=dt, tau=tau, tau_name="tau_syn", steps=int(round((settle + read) / dt)),
                  memory=M, current=z)
    s_max = float(np.abs(M - z).sum(-1).max())   # the fastest unit: S, G+ at gain (S - m1), G- at gain m2, a source
    top = r0 * max(s_max * max(gain, 1.0), gain * circuit.m2, float(np.abs(M).max()), float(np.abs(z).max()))
    if top * dt > 0.5:
        raise ParameterError(f"spiking_hinge_error: rates up to {top:.0f} Hz fire more than every other step of "
                             f"dt = {dt} s; lower rate_scale or dt")
    b2 = quiet_brian2()
    b2.prefs.codegen.target = target
    v_th = V_TH * b2.volt
    ns = {"v_th": v_th, "tau_syn": tau * b2.second}
    c = build_hinge_circuit(n, ns, trials=trials, inhibition_gain=circuit.inhibition_gain, gate_gain=gain,
                            dt=dt * b2.second)
    groups = {"sources": c.sources, "copies": c.copies, "diff": c.diff, "sum": c.sum, "gates": c.gates}
    mons = {k: b2.SpikeMonitor(g) for k, g in groups.items()}
    net = b2.Network(*c.objects, *mons.values())
    check_units(net)
    gate_drive = np.tile([-gain * circuit.m1, gain * circuit.m2], trials) * r0
    c.gates.drive = gate_drive * v_th / b2.second
    c.sum.drive = 0 * v_th / b2.second
    Tp = settle + read
    for k in range(P):
        rates = np.concatenate([np.maximum(M[k], 0), np.maximum(-M[k], 0), np.maximum(z[k], 0), np.maximum(-z[k], 0)],
                               axis=1)                                          # (trials, 4n)
        c.sources.drive = rates.ravel() * r0 * v_th / b2.second
        net.run(Tp * b2.second, namespace={})

    def counts(name, size):
        t = np.asarray(mons[name].t[:] / b2.second)
        i = np.asarray(mons[name].i[:])
        k = (t / Tp + 1e-9).astype(int)
        keep = (t - k * Tp) >= settle
        out = np.zeros((P, size))
        np.add.at(out, (np.minimum(k[keep], P - 1), i[keep]), 1.0)
        return out

    d = counts("diff", 2 * n * trials).reshape(P, trials, 2, n)
    s = counts("sum", trials).reshape(P, trials)
    g = counts("gates", 2 * trials).reshape(P, trials, 2)
    g_pos, g_neg = (g[..., 0] >= count).astype(float), (g[..., 1] >= count).astype(float)
    d_plus, d_minus = d[:, :, 0] / (r0 * read), d[:, :, 1] / (r0 * read)
    if circuit.graded:
        sign = d_plus - d_minus
    else:
        sign = (d[:, :, 0] >= count).astype(float) - (d[:, :, 1] >= count).astype(float)
    pos = np.array([ph == "positive" for ph in phases])[:, None]
    gate = np.where(pos, g_pos, g_neg)
    coef = np.where(pos, -1.0, w_neg) * gate
    out = {"S": s / (r0 * read), "G_pos": g_pos, "G_neg": g_neg, "gate": gate, "D_plus": d_plus,
           "D_minus": d_minus, "sign": sign, "delta": coef[..., None] * sign, "presentation": Tp, "settle": settle}
    if record:
        out["trace"] = {k: (np.asarray(m.t[:] / b2.second), np.asarray(m.i[:])) for k, m in mons.items()}
    return out
