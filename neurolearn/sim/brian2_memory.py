"""Spiking short-term memory in Brian2: persistent activity of recurrently connected excitatory pools.

The spiking realisation of :class:`neurolearn.circuits.memory.ShortTermMemory` (Tang et al. 2022
cite Mongillo, Barak & Tsodyks 2008 and Barak & Tsodyks 2014 for the short-term memory; METHODS.md 10:
"a recurrent excitatory population with persistent activity"). Each stored value ``a_c`` (a signed
top-cell activity is two channels, ``[a]_+`` and ``[-a]_+``) is one pool of ``P`` non-leaky
integrate-and-fire cells (threshold ``v_th``, reset by subtraction) that excite every cell of their
pool through a slow synapse of time constant ``tau_s``:

    dv_k/dt = v_th ( w (1 - writing) s + inp )          cell k of the pool           (volt)
    ds/dt   = -s / tau_s,   on a spike of any pool cell:  s += 1 / (P tau_s)          (Hz: the pool's rate)

A cell fires at rate ``w s + inp``, and ``s`` is the pool's rate filtered by the synapse. With
``w = 1`` (``recurrence``) the quantity ``P tau_s s + sum_k v_k / v_th`` is conserved once the input is
off (``d/dt = P (w - 1) s``): the pool's rate is held (a line attractor; Seung 1996's balance of leak
and recurrence, here exact because the cells do not leak). With ``w < 1`` it decays with the time
constant ``tau_s / (1 - w)``: the rate form's ``M(t + 1) = M(t) exp(-(1 - w) / retention)`` with
``tau_s = retention x presentation`` (tested against it). With ``w = 0`` nothing refreshes the pool and
the pattern is lost within a few ``tau_s``.

Writing (the anchor presentation): recurrence is gated off (``writing = 1``) and the pool is driven at
``inp = a r_0 / (1 - exp(-T / tau_s))`` for the presentation time ``T``, so that ``s`` reaches ``a r_0``
at its end (``r_0 = rate_scale``: Hz per unit of activity). Then ``writing = 0`` and the input is off for
the ``hold`` presentations (the positive and the ``K`` negatives). Reset is a signal that sets ``v`` and
``s`` to 0 (the end of an anchor's sequence). Trials (independent anchors) are blocks of one network.

The stored pattern is *decoded* from spike counts: ``rate_c = count_c / (P T) / r_0`` per presentation
window, signed channels recombined as ``[a]_+ - [-a]_+``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validate import ParameterError, check_choice, check_float, check_int

CELL = """
dv/dt = v_th * (w_rec * (1 - writing) * s + inp) : volt
ds/dt = -s / tau_s : Hz
inp : Hz
writing : 1
"""
THRESHOLD = "v > v_th"
RESET = "v -= v_th"
RECURRENT_ON_PRE = "s_post += 1 / (pool_size * tau_s)"
NAMES = ("v_th", "w_rec", "tau_s", "pool_size")


@dataclass
class MemoryPopulation:
    """The Brian2 objects of :func:`build_memory_population`: ``cells`` (``channels * pool`` cells, channel
    ``c`` is cells ``c P ... (c + 1) P - 1``), ``recurrent`` (all-to-all within each pool) and the namespace."""

    namespace: dict
    cells: object
    recurrent: object
    channels: int
    pool: int

    @property
    def objects(self) -> list:
        """Every Brian2 object of the population (to add to a ``Network``)."""
        return [self.cells, self.recurrent]


def build_memory_population(channels: int, namespace: dict, *, pool: int = 20, dt=None, seed: int = 0) -> MemoryPopulation:
    """Build ``channels`` pools of ``pool`` cells (module docstring). ``namespace`` maps ``v_th`` (volt),
    ``w_rec`` (1), ``tau_s`` (second) and ``pool_size`` (the pool, 1) to values with Brian2 units. Cells
    start at random potentials in ``[0, v_th)`` (seeded) so that a pool's cells do not fire in lockstep."""
    from .brian2_kwta import quiet_brian2

    b2 = quiet_brian2()
    check_int("build_memory_population", "channels", channels, 1)
    check_int("build_memory_population", "pool", pool, 1)
    missing = [n for n in NAMES if n not in namespace]
    if missing:
        raise ParameterError(f"build_memory_population: namespace lacks {missing} (needs {list(NAMES)})")
    kw = {} if dt is None else {"dt": dt}
    cells = b2.NeuronGroup(channels * pool, CELL, threshold=THRESHOLD, reset=RESET, method="euler",
                           namespace=namespace, **kw)
    cells.v = np.random.default_rng(seed).random(channels * pool) * namespace["v_th"]
    rec = b2.Synapses(cells, cells, on_pre=RECURRENT_ON_PRE, namespace=namespace, **kw)
    pre = np.repeat(np.arange(channels * pool), pool)
    post = (pre // pool) * pool + np.tile(np.arange(pool), channels * pool)
    rec.connect(i=pre, j=post)
    return MemoryPopulation(namespace, cells, rec, channels, pool)


def signed_channels(a: np.ndarray) -> np.ndarray:
    """``[[a]_+, [-a]_+]`` along the last axis: a signed activity as two non-negative rate channels."""
    return np.concatenate([np.maximum(a, 0.0), np.maximum(-a, 0.0)], axis=-1)


def spiking_memory(patterns, memory=None, hold: int = 3, *, pool: int = 20, presentation: float = 0.1,
                   rate_scale: float = 100.0, dt: float = 1e-4, reset: bool = False, record: bool = False,
                   seed: int = 0, target: str = "numpy") -> dict:
    """Write ``patterns`` (``(trials, n)`` or ``(n,)``) into the spiking memory, hold them for ``hold``
    presentations (the positive and ``K`` negatives: ``hold = 1 + K``), optionally ``reset`` for one more.

    ``memory``: a :class:`~neurolearn.circuits.memory.ShortTermMemory` (default: ``circuits/short_term_memory.toml``)
    gives ``recurrence`` (``w``) and ``retention`` (``tau_s = retention x presentation``). Returns a dict:
    ``"written"`` (the patterns, ``(trials, n)``), ``"decoded"`` (``(windows, trials, n)``: the decoded
    pattern in each presentation window -- write, then the held ones, then the reset one), ``"last"``
    (the decoded pattern of the last held presentation), ``"tau_s"`` (s) and, with ``record``, ``"t"``,
    ``"s"`` (``(steps, trials, n)`` the signed pool rate through the synapse, in units of activity).
    """
    from ..circuits.memory import ShortTermMemory, default_memory
    from .brian2_kwta import V_TH, check_units, quiet_brian2
    from .checks import check_spiking

    memory = default_memory() if memory is None else memory
    if not isinstance(memory, ShortTermMemory):
        raise ParameterError(f"spiking_memory: memory must be a ShortTermMemory, got {type(memory).__name__}")
    pats = np.atleast_2d(np.asarray(patterns, dtype=float))
    if pats.ndim != 2:
        raise ParameterError(f"spiking_memory: patterns must have shape (trials, n) or (n,), got {pats.shape}")
    check_int("spiking_memory", "hold", hold, 0)
    check_int("spiking_memory", "pool", pool, 1)
    check_float("spiking_memory", "presentation", presentation, 0.0, low_open=True)
    check_float("spiking_memory", "rate_scale", rate_scale, 0.0, low_open=True)
    check_float("spiking_memory", "dt", dt, 0.0, presentation, low_open=True, high_open=True)
    check_choice("spiking_memory", "target", target, ("numpy", "cython"))
    tau_s = memory.retention * presentation
    check_spiking("spiking_memory", dt=dt, tau=tau_s, tau_name="tau_s (retention x presentation)",
                  steps=int(round(presentation / dt)), patterns=pats)
    peak = float(np.abs(pats).max()) * rate_scale / (1.0 - math.exp(-presentation / tau_s))
    if peak * dt > 0.5:
        raise ParameterError(f"spiking_memory: the writing rate {peak:.0f} Hz fires more than every other step of "
                             f"dt = {dt} s; lower rate_scale or dt")
    trials, n = pats.shape
    ch = signed_channels(pats)                   # (trials, 2n)
    channels = trials * 2 * n
    b2 = quiet_brian2()
    b2.prefs.codegen.target = target
    ns = {"v_th": V_TH * b2.volt, "w_rec": float(memory.recurrence), "tau_s": tau_s * b2.second,
          "pool_size": float(pool)}
    pop = build_memory_population(channels, ns, pool=pool, dt=dt * b2.second, seed=seed)
    spikes = b2.SpikeMonitor(pop.cells)
    objs = [spikes, *pop.objects]
    if record:
        state = b2.StateMonitor(pop.cells, "s", record=np.arange(0, channels * pool, pool))
        objs.append(state)
    net = b2.Network(*objs)
    check_units(net)
    T = presentation * b2.second
    write_rate = ch.ravel() * rate_scale / (1.0 - math.exp(-presentation / tau_s))
    pop.cells.inp = np.repeat(write_rate, pool) * b2.Hz
    pop.cells.writing = 1.0
    net.run(T, namespace={})
    pop.cells.inp = 0 * b2.Hz
    pop.cells.writing = 0.0
    for _ in range(hold):
        net.run(T, namespace={})
    windows = 1 + hold
    if reset:
        pop.cells.v = 0 * b2.volt
        pop.cells.s = 0 * b2.Hz
        net.run(T, namespace={})
        windows += 1
    idx = np.asarray(spikes.i[:])
    t = np.asarray(spikes.t[:] / b2.second)
    win = np.minimum((t / presentation + 1e-9).astype(int), windows - 1)
    counts = np.zeros((windows, channels))
    np.add.at(counts, (win, idx // pool), 1.0)
    rates = counts / (pool * presentation * rate_scale)          # units of activity
    rates = rates.reshape(windows, trials, 2, n)
    decoded = rates[:, :, 0] - rates[:, :, 1]
    out = {"written": pats, "decoded": decoded, "last": decoded[hold], "tau_s": tau_s}
    if record:
        s = np.asarray(state.s[:] / b2.Hz).T.reshape(-1, trials, 2, n) / rate_scale
        out["t"] = np.asarray(state.t[:] / b2.second)
        out["s"] = s[:, :, 0] - s[:, :, 1]
    return out


def recovery(written: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """``(correlation, gain)`` of a decoded pattern against the written one, over all entries: the Pearson
    correlation (0 when the decoded pattern is constant, e.g. silent) and the least-squares gain
    ``<w, d> / <w, w>`` (1: recovered at full amplitude)."""
    w, d = np.ravel(written).astype(float), np.ravel(decoded).astype(float)
    if w.shape != d.shape:
        raise ParameterError(f"recovery: written and decoded must have the same size, got {w.size} and {d.size}")
    gain = float(w @ d / max(w @ w, 1e-300))
    if d.std() == 0 or w.std() == 0:
        return 0.0, gain
    return float(np.corrcoef(w, d)[0, 1]), gain
