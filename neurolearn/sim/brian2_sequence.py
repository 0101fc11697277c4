"""The short-term memory and the hinge error circuit coupled in one Brian2 network, over one presentation sequence.

Tang, Yang & Amit 2022 (Section 3.1 and Appendix A; METHODS.md 3.2, 3.3 and 10): the anchor view is shown and
its top-layer representation ``z^A`` is stored in memory units; the positive view and then the ``K``
negatives are shown one after another while the memory units hold ``z^A``; for each of them the E/I circuit
compares the memory units with the current top cells and outputs a gate and a per-cell error; then the
memory is reset. :mod:`~neurolearn.sim.brian2_memory` and :mod:`~neurolearn.sim.brian2_hinge` simulate the two
halves separately (the circuit's memory units driven at a given rate); here the memory population's own
spikes drive the circuit's memory units, in one network, through the whole sequence. The anchor is shown
only in the store window: what the circuit compares with later is whatever the memory holds.

Time: windows of ``T = settle + read`` seconds each (the circuit's ``[spiking]`` table): ``store`` (the
anchor), ``positive``, ``negative 1 .. K``, and with ``reset`` one more after the reset. Values are rates:
``a`` is carried at ``a r_m`` Hz per memory cell (``r_m``: the memory's ``rate_scale``) and at ``a r_0`` Hz
by a circuit unit (``r_0``: the circuit's ``rate_scale``); signed values by two channels ``[a]_+, [-a]_+``.

**Memory** (:mod:`~neurolearn.sim.brian2_memory`; Mongillo et al. 2008 / Seung 1996 persistent activity): per
channel ``c`` of each top cell a pool of ``P`` non-leaky integrate-and-fire cells, threshold ``v_th``, reset
by subtraction, exciting their own pool through a synapse of time constant ``tau_s = retention T``:

    dv_k/dt = v_th ( w (1 - writing) s + inp ),     ds/dt = -s / tau_s,     a spike in the pool: s += 1 / (P tau_s)

store window: ``writing = 1``, ``inp = [+-z^A]_+ r_m / (1 - exp(-T / tau_s))`` (``s`` reaches ``[+-z^A]_+ r_m``
at its end); then ``writing = 0``, ``inp = 0``: every cell fires at ``w s``. ``w = 1`` (``recurrence``): ``s``
is held (the line attractor of the memory module); ``w < 1``: the rate drops to ``w s`` at once and decays
with ``tau_s / (1 - w)``; ``w = 0``: silent after the store window. Reset: ``v = 0, s = 0``. The held
value read out in a window is ``M_c = count_c / (P read r_m)`` (channels recombined ``M+ - M-``).

**Coupling** (this module): every cell of pool ``c`` excites the circuit's memory unit of channel ``c``
(``M+_i`` or ``M-_i``, which has no drive of its own) through the circuit's synapse with weight
``w_c = r_0 / (P r_m)``:

    dv_M/dt = I_M,   dI_M/dt = -I_M / tau_syn,   a pool spike: I_M += w_c v_th / tau_syn

so ``M+-_i`` fires at ``P (w s) w_c = r_0 [+-M_i]_+``: the memory's value in the circuit's units.

**Circuit** (:mod:`~neurolearn.sim.brian2_hinge`, Appendix A), per top cell ``i`` with the current view's
``z_i`` on the sources ``z+-_i`` (driven at ``r_0 [+-z_i]_+``; in the store window the anchor itself):

    u_i = g z_i,  v_i = g M_i                  inhibitory copies (relays; g = inhibition_gain, 1 = intact)
    D+_i = [M_i - u_i]_+,  D-_i = [z_i - v_i]_+  rectified difference units (rectification = firing threshold)
    S = sum_i (D+_i + D-_i) = ||M - z||_1      summing unit
    G+ = H(S - m1),  G- = H(m2 - S)            threshold units against tonic drives
    positive: gate = G+, delta_i = -G+ sign_i;  negative k: gate = G-, delta_i = w_neg G- sign_i  (eqs. 5, 6)

read from spike counts in the last ``read`` seconds of each window exactly as
:func:`~neurolearn.sim.brian2_hinge.spiking_hinge_error` does (a gate is open when its unit fired at least
``gate_count`` times; ``sign_i`` from the D units' counts, graded or not).

The rate counterpart (:func:`rate_presentation_sequence`) is the sequential mode's
(:mod:`neurolearn.credit.sequential`): ``M = write(z^A)``, then before each presentation
``M <- M exp(-(1 - w) / retention)`` (:class:`~neurolearn.circuits.memory.ShortTermMemory`) and the
:class:`~neurolearn.circuits.hinge_error.HingeError` on ``(M, z)``. With ``w = 1`` both hold ``z^A`` and the
spiking gates and errors equal the rate form's up to the spike-count resolution ``1 / (r_0 read)`` and the
memory's held-rate error (``tests/test_sim_sequence.py`` states the tolerances). Trials (independent
anchors with their own sequences) are blocks of one network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validate import ParameterError, check_choice, check_float, check_int

MEMORY_KEYS = ("pool", "rate_scale")
RELAY_MODEL = "w : 1"


@dataclass
class CoupledNetwork:
    """The Brian2 objects of :func:`build_coupled_network`: the memory population (``trials * 2n`` pools,
    channel ``b 2n + j`` of trial ``b`` is ``M+_j`` for ``j < n`` and ``M-_{j-n}`` after), the hinge circuit
    (``trials`` blocks) and ``relay``, the synapses from every memory cell to its channel's circuit memory unit."""

    memory: object
    circuit: object
    relay: object

    @property
    def objects(self) -> list:
        """Every Brian2 object of the network (to add to a ``Network``)."""
        return [*self.memory.objects, *self.circuit.objects, self.relay]


def build_coupled_network(n: int, trials: int, memory_namespace: dict, circuit_namespace: dict, *, pool: int,
                          relay_weight: float, inhibition_gain: float = 1.0, gate_gain: float = 4.0, dt=None,
                          seed: int = 0) -> CoupledNetwork:
    """Build the memory population (:func:`~neurolearn.sim.brian2_memory.build_memory_population`, namespace
    ``v_th, w_rec, tau_s, pool_size``), the hinge circuit (:func:`~neurolearn.sim.brian2_hinge.build_hinge_circuit`,
    namespace ``v_th, tau_syn``) and the relay: memory cell ``m`` (channel ``c = m // pool``) -> circuit source
    ``(c // 2n) 4n + c % 2n`` (its ``M+`` or ``M-`` unit), ``I += relay_weight v_th / tau_syn`` per spike (module
    docstring: ``relay_weight = r_0 / (P r_m)``). Drives are set by the caller."""
    from .brian2_hinge import SYNAPSE_ON_PRE, build_hinge_circuit
    from .brian2_kwta import quiet_brian2
    from .brian2_memory import build_memory_population

    b2 = quiet_brian2()
    check_int("build_coupled_network", "n", n, 1)
    check_int("build_coupled_network", "trials", trials, 1)
    check_float("build_coupled_network", "relay_weight", relay_weight, 0.0, low_open=True)
    mem = build_memory_population(trials * 2 * n, memory_namespace, pool=pool, dt=dt, seed=seed)
    circ = build_hinge_circuit(n, circuit_namespace, trials=trials, inhibition_gain=inhibition_gain,
                               gate_gain=gate_gain, dt=dt)
    cells = np.arange(trials * 2 * n * pool)
    channel = cells // pool
    target = (channel // (2 * n)) * 4 * n + channel % (2 * n)
    relay = b2.Synapses(mem.cells, circ.sources, RELAY_MODEL, on_pre=SYNAPSE_ON_PRE, namespace=circuit_namespace,
                        **({} if dt is None else {"dt": dt}))
    relay.connect(i=cells, j=target)
    relay.w = relay_weight
    return CoupledNetwork(mem, circ, relay)


def memory_spiking_params(**given) -> dict:
    """``pool`` and ``rate_scale`` from the ``[spiking]`` table of ``circuits/short_term_memory.toml``, overridden
    by ``given`` (``None`` = default). The memory's presentation time and time step are the circuit's here
    (``settle + read`` and ``dt``), so those keys are refused."""
    from ..circuits import circuit_params

    table = circuit_params("short_term_memory").get("spiking", {})
    params = {k: table[k] for k in MEMORY_KEYS if k in table}
    for key, value in given.items():
        if key not in MEMORY_KEYS:
            raise ParameterError(f"spiking_presentation_sequence: unknown memory_spiking key {key!r}; allowed: "
                                 f"{list(MEMORY_KEYS)} (presentation and dt are the circuit's settle + read and dt)")
        if value is not None:
            params[key] = value
    missing = [k for k in MEMORY_KEYS if k not in params]
    if missing:
        raise ParameterError(f"spiking_presentation_sequence: circuits/short_term_memory.toml [spiking] lacks {missing}")
    return params


def _sequence_inputs(owner: str, anchor, positive, negatives):
    """``(A, views)``: the anchor ``(trials, n)`` and the views ``(1 + K, trials, n)`` (positive first), checked."""
    A, B = np.asarray(anchor, dtype=float), np.asarray(positive, dtype=float)
    if A.ndim not in (1, 2) or A.shape[-1] < 1 or A.size == 0:
        raise ParameterError(f"{owner}: anchor must have shape (trials, n) or (n,), got {A.shape}")
    if B.shape != A.shape:
        raise ParameterError(f"{owner}: positive must have the anchor's shape {A.shape}, got {B.shape}")
    N = np.asarray(negatives, dtype=float)
    if N.ndim != A.ndim + 1 or N.shape[1:] != A.shape:
        raise ParameterError(f"{owner}: negatives must have shape (K,) + the anchor's shape {A.shape}, got {N.shape}")
    A, B = A.reshape((1,) * (2 - A.ndim) + A.shape), B.reshape((1,) * (2 - B.ndim) + B.shape)
    N = N.reshape((N.shape[0], *A.shape))
    for name, x in (("anchor", A), ("positive", B), ("negatives", N)):
        if not np.isfinite(x).all():
            raise ParameterError(f"{owner}: {name} must be finite, got {int((~np.isfinite(x)).sum())} non-finite value(s)")
    return A, np.concatenate([B[None], N], axis=0)


def _parts(owner: str, memory, circuit):
    from ..circuits.hinge_error import HingeError, default_hinge_error
    from ..circuits.memory import ShortTermMemory, default_memory

    memory = default_memory() if memory is None else memory
    circuit = default_hinge_error() if circuit is None else circuit
    if not isinstance(memory, ShortTermMemory):
        raise ParameterError(f"{owner}: memory must be a ShortTermMemory, got {type(memory).__name__}")
    if memory.store_pre:
        raise ParameterError(f"{owner}: memory.store_pre must be False (the sequence holds the top-layer representation only)")
    if not isinstance(circuit, HingeError):
        raise ParameterError(f"{owner}: circuit must be a HingeError, got {type(circuit).__name__}")
    return memory, circuit


def sequence_phases(K: int) -> list[str]:
    """``["positive", "negative" x K]``: the phases of the presentations after the anchor."""
    return ["positive"] + ["negative"] * K


def rate_presentation_sequence(anchor, positive, negatives, memory=None, circuit=None, *, w_neg: float = 1.0) -> dict:
    """The rate form of the same sequence (module docstring): ``ShortTermMemory.write(z^A)``, then for the positive
    and each negative ``step`` (one presentation), ``read`` and :class:`~neurolearn.circuits.hinge_error.HingeError`
    in that phase, as :mod:`neurolearn.credit.sequential` does. Arguments as :func:`spiking_presentation_sequence`.
    Returns numpy arrays ``(1 + K, trials, ...)``: ``memory`` (the ``M`` read), ``S``, ``G_pos``, ``G_neg``, ``gate``,
    ``D_plus``, ``D_minus``, ``sign``, ``delta``, and ``phases``."""
    import torch

    owner = "rate_presentation_sequence"
    A, views = _sequence_inputs(owner, anchor, positive, negatives)
    memory, circuit = _parts(owner, memory, circuit)
    w_neg = check_float(owner, "w_neg", w_neg, 0.0)
    phases = sequence_phases(views.shape[0] - 1)
    state = memory.write(memory.init_state(*A.shape, dtype=torch.float64), torch.tensor(A))
    keys = ("S", "G_pos", "G_neg", "D_plus", "D_minus", "sign", "delta")
    rows = {k: [] for k in ("memory", "gate", *keys)}
    for z, phase in zip(views, phases):
        state = memory.step(state)
        M = memory.read(state)
        sig = circuit(M, torch.tensor(z), phase, w_neg)
        rows["memory"].append(M.numpy())
        rows["gate"].append(sig.gate.numpy())
        for k in keys:
            rows[k].append(sig.units[k].numpy())
    out = {k: np.stack(v) for k, v in rows.items()}
    out["phases"] = phases
    return out


def spiking_presentation_sequence(anchor, positive, negatives, memory=None, circuit=None, *, w_neg: float = 1.0,
                                  memory_spiking: dict | None = None, circuit_spiking: dict | None = None,
                                  reset: bool = True, record: bool = False, seed: int = 0, target: str = "numpy") -> dict:
    """One Brian2 network of the memory population and the hinge circuit over the sequence store (anchor), positive,
    ``K`` negatives, [reset] (module docstring), the memory's spikes driving the circuit's memory units throughout.

    ``anchor`` and ``positive``: ``(trials, n)`` or ``(n,)``; ``negatives``: ``(K, trials, n)`` or ``(K, n)``.
    ``memory``: a :class:`~neurolearn.circuits.memory.ShortTermMemory` (``recurrence`` = ``w``, ``retention``:
    ``tau_s = retention (settle + read)``; default ``circuits/short_term_memory.toml``); ``circuit``: a
    :class:`~neurolearn.circuits.hinge_error.HingeError` (``m1``, ``m2``, ``graded``, ``inhibition_gain``; default
    ``circuits/hinge_error.toml``); ``w_neg``: a negative's weight (1 or 1/K). ``memory_spiking``: ``pool``,
    ``rate_scale`` (``r_m``) overriding ``circuits/short_term_memory.toml [spiking]``; ``circuit_spiking``: the keys of
    :func:`~neurolearn.sim.brian2_hinge.spiking_params` (``rate_scale`` ``r_0``, ``tau_syn``, ``gate_gain``,
    ``gate_count``, ``settle``, ``read``, ``dt``: one clock for the whole network). ``seed``: the memory cells'
    initial potentials. ``reset``: reset the memory after the last negative and simulate one more window.

    Returns a dict; arrays ``(1 + K, trials, ...)``, one row per presentation (positive, negatives), read in the
    last ``read`` seconds of its window: ``memory`` (the memory pools' decoded value), ``M`` (the circuit's memory
    units, decoded at ``r_0``), ``S``, ``G_pos``, ``G_neg``, ``gate``, ``D_plus``, ``D_minus``, ``sign``, ``delta``;
    ``phases``; ``memory_after_reset`` (``(trials, n)``, with ``reset``); ``presentation`` (``T``), ``settle``,
    ``tau_s`` (s); with ``record``, ``trace``: per group (``memory``, ``sources``, ``copies``, ``diff``, ``sum``,
    ``gates``) the spike times and indices, window 0 being the store window.
    """
    from .brian2_hinge import spiking_params
    from .brian2_kwta import V_TH, check_units, quiet_brian2
    from .checks import check_spiking

    owner = "spiking_presentation_sequence"
    A, views = _sequence_inputs(owner, anchor, positive, negatives)
    memory, circuit = _parts(owner, memory, circuit)
    w_neg = check_float(owner, "w_neg", w_neg, 0.0)
    check_choice(owner, "target", target, ("numpy", "cython"))
    check_int(owner, "seed", seed, 0)
    for name, d in (("memory_spiking", memory_spiking), ("circuit_spiking", circuit_spiking)):
        if d is not None and not isinstance(d, dict):
            raise ParameterError(f"{owner}: {name} must be a dict or None, got {type(d).__name__}")
    mp = memory_spiking_params(**(memory_spiking or {}))
    cp = spiking_params(**(circuit_spiking or {}))
    pool = check_int(owner, "pool", mp["pool"], 1)
    r_m = check_float(owner, "memory rate_scale", mp["rate_scale"], 0.0, low_open=True)
    r0 = check_float(owner, "rate_scale", cp["rate_scale"], 0.0, low_open=True)
    tau = check_float(owner, "tau_syn", cp["tau_syn"], 0.0, low_open=True)
    gain = check_float(owner, "gate_gain", cp["gate_gain"], 0.0, low_open=True)
    count = check_int(owner, "gate_count", cp["gate_count"], 1)
    settle = check_float(owner, "settle", cp["settle"], 0.0)
    read = check_float(owner, "read", cp["read"], 0.0, low_open=True)
    dt = check_float(owner, "dt", cp["dt"], 0.0, low_open=True)
    T = settle + read
    tau_s = memory.retention * T
    check_spiking(owner, dt=dt, tau=tau, tau_name="tau_syn", steps=int(round(T / dt)))
    check_spiking(owner, dt=dt, tau=tau_s, tau_name="tau_s (retention x (settle + read))")
    P, (trials, n) = views.shape[0], A.shape
    boost = 1.0 / (1.0 - math.exp(-T / tau_s))                    # the store window's drive over the held rate
    amax = float(np.abs(A).max())
    # ||M - z||_1 is convex in M, and M runs between 0 and z^A (store window: z = z^A; held or decaying after)
    s_max = max(float(np.abs(A).sum(-1).max()), float(np.abs(A[None] - views).sum(-1).max()),
                float(np.abs(views).sum(-1).max()))
    # the fastest unit: S (at S r_0), G+ (gain (S - m1) r_0), G- (gain m2 r_0), a source, a writing memory cell
    top = max(r0 * max(s_max, gain * (s_max - circuit.m1), gain * circuit.m2, amax * boost, float(np.abs(views).max())),
              r_m * amax * boost)
    if top * dt > 0.5:
        raise ParameterError(f"{owner}: rates up to {top:.0f} Hz fire more than every other step of dt = {dt} s; "
                             f"lower rate_scale or dt")

    b2 = quiet_brian2()
    b2.prefs.codegen.target = target
    v_th = V_TH * b2.volt
    mem_ns = {"v_th": v_th, "w_rec": float(memory.recurrence), "tau_s": tau_s * b2.second, "pool_size": float(pool)}
    circ_ns = {"v_th": v_th, "tau_syn": tau * b2.second}
    net_parts = build_coupled_network(n, trials, mem_ns, circ_ns, pool=pool, relay_weight=r0 / (pool * r_m),
                                      inhibition_gain=circuit.inhibition_gain, gate_gain=gain, dt=dt * b2.second,
                                      seed=seed)
    mem, c = net_parts.memory, net_parts.circuit
    groups = {"memory": mem.cells, "sources": c.sources, "copies": c.copies, "diff": c.diff, "sum": c.sum, "gates": c.gates}
    mons = {k: b2.SpikeMonitor(g) for k, g in groups.items()}
    net = b2.Network(*net_parts.objects, *mons.values())
    check_units(net)
    c.gates.drive = np.tile([-gain * circuit.m1, gain * circuit.m2], trials) * r0 * v_th / b2.second
    c.sum.drive = 0 * v_th / b2.second
    rate_unit = v_th / b2.second

    def show(z):
        """The current top cells on the z sources; the M sources get no drive (the memory drives them)."""
        zeros = np.zeros((trials, 2 * n))
        rates = np.concatenate([zeros, np.maximum(z, 0), np.maximum(-z, 0)], axis=1)
        c.sources.drive = rates.ravel() * r0 * rate_unit

    def channels(a):
        return np.concatenate([np.maximum(a, 0), np.maximum(-a, 0)], axis=1).ravel()   # (trials 2n,)

    # store window: the anchor on the top cells and written into the memory (recurrence gated off)
    show(A)
    mem.cells.inp = np.repeat(channels(A) * r_m * boost, pool) * b2.Hz
    mem.cells.writing = 1.0
    net.run(T * b2.second, namespace={})
    mem.cells.inp = 0 * b2.Hz
    mem.cells.writing = 0.0
    for z in views:                                              # positive, then the K negatives; the memory holds
        show(z)
        net.run(T * b2.second, namespace={})
    windows = 1 + P
    if reset:
        mem.cells.v = 0 * b2.volt
        mem.cells.s = 0 * b2.Hz
        show(np.zeros_like(A))
        net.run(T * b2.second, namespace={})
        windows += 1

    def counts(name, size, cell_to_unit=None):
        t, i = np.asarray(mons[name].t[:] / b2.second), np.asarray(mons[name].i[:])
        k = (t / T + 1e-9).astype(int)
        keep = (t - k * T) >= settle
        unit = i[keep] if cell_to_unit is None else cell_to_unit(i[keep])
        out = np.zeros((windows, size))
        np.add.at(out, (np.minimum(k[keep], windows - 1), unit), 1.0)
        return out

    m_pool = counts("memory", trials * 2 * n, lambda i: i // pool).reshape(windows, trials, 2, n) / (pool * read * r_m)
    src = counts("sources", trials * 4 * n).reshape(windows, trials, 4, n) / (r0 * read)
    d = counts("diff", 2 * n * trials).reshape(windows, trials, 2, n)[1 : 1 + P]
    s = counts("sum", trials)[1 : 1 + P] / (r0 * read)
    g = counts("gates", 2 * trials).reshape(windows, trials, 2)[1 : 1 + P]
    g_pos, g_neg = (g[..., 0] >= count).astype(float), (g[..., 1] >= count).astype(float)
    d_plus, d_minus = d[:, :, 0] / (r0 * read), d[:, :, 1] / (r0 * read)
    if circuit.graded:
        sign = d_plus - d_minus
    else:
        sign = (d[:, :, 0] >= count).astype(float) - (d[:, :, 1] >= count).astype(float)
    phases = sequence_phases(P - 1)
    pos = np.array([ph == "positive" for ph in phases])[:, None]
    gate = np.where(pos, g_pos, g_neg)
    coef = np.where(pos, -1.0, w_neg) * gate
    held = m_pool[:, :, 0] - m_pool[:, :, 1]
    out = {"memory": held[1 : 1 + P], "M": (src[:, :, 0] - src[:, :, 1])[1 : 1 + P], "S": s, "G_pos": g_pos,
           "G_neg": g_neg, "gate": gate, "D_plus": d_plus, "D_minus": d_minus, "sign": sign,
           "delta": coef[..., None] * sign, "phases": phases, "presentation": T, "settle": settle, "tau_s": tau_s}
    if reset:
        out["memory_after_reset"] = held[-1]
    if record:
        out["trace"] = {k: (np.asarray(m.t[:] / b2.second), np.asarray(m.i[:])) for k, m in mons.items()}
    return out
