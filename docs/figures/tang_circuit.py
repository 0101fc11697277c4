"""The hinge error circuit's signals over one presentation sequence (Tang et al. 2022, Section 3.1 and App. A).

One anchor with K = 2 negatives: anchor (z^A written into the short-term memory), positive (view B of the
same image: ||M - z||_1 > m1, the positive gate opens), negative 1 (close to the anchor: the negative gate
opens), negative 2 (far: it stays closed), reset. Writes, next to this file:

* ``tang_circuit_rate.png``: the rate circuits (:class:`ShortTermMemory`, :class:`HingeError`), one value per
  presentation: memory units, current top cells, D+/D- units, the summing unit S against m1 and m2, the gates,
  the per-cell error delta;
* ``tang_circuit_spiking.png``: the Brian2 circuits (:func:`spiking_memory`, :func:`spiking_hinge_error`): the
  memory pools' rates through their synapse over the whole sequence, then, for the positive and the two
  negatives (each ``settle + read`` seconds, the memory read from the spiking memory's decoded pattern),
  the spikes of the D units, the rate of S, the gate units' spikes and the decoded delta.

* with ``--coupled`` (instead of the two above): ``tang_circuit_coupled.png``, the same sequence in one Brian2
  network (:func:`~neurolearn.sim.brian2_sequence.spiking_presentation_sequence`): the memory pools holding z^A and
  driving the circuit's memory units, the summing unit, the gate units' spikes and the per-cell errors.

Run: ``python docs/figures/tang_circuit.py`` (about a minute on one core), ``... --coupled`` (about 20 s).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from neurolearn.circuits.hinge_error import HingeError  # noqa: E402
from neurolearn.circuits.memory import ShortTermMemory  # noqa: E402
from neurolearn.sim.brian2_hinge import spiking_hinge_error  # noqa: E402
from neurolearn.sim.brian2_memory import spiking_memory  # noqa: E402

HERE = Path(__file__).resolve().parent
M1, M2, K = 1.0, 1.5, 2
W_NEG = 1.0 / K
ZA = np.array([0.8, -0.4, 0.6, 0.0])
VIEWS = {"positive": np.array([0.3, -0.1, 0.6, 0.5]),      # S = 1.3 > m1: pulled
         "negative 1": np.array([0.5, -0.4, 0.2, 0.3]),    # S = 1.0 < m2: pushed
         "negative 2": np.array([-0.6, 0.5, 0.8, -0.3])}   # S = 2.8 >= m2: ignored
LABELS = ["anchor", "positive", "negative 1", "negative 2", "reset"]
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def rate_sequence():
    """Rate circuits over the sequence: one row per presentation of every unit's activity (NaN where unused)."""
    mem, circuit = ShortTermMemory(recurrence=1.0), HingeError(m1=M1, m2=M2)
    st = mem.write(mem.init_state(1, 4, dtype=torch.float64), torch.tensor(ZA)[None])
    rows = {k: [] for k in ("M", "z", "D_plus", "D_minus", "S", "G_pos", "G_neg", "delta")}
    nan4, nan1 = np.full(4, np.nan), np.nan
    rows["M"].append(ZA)
    rows["z"].append(ZA)
    for k in ("D_plus", "D_minus", "delta"):
        rows[k].append(nan4)
    for k in ("S", "G_pos", "G_neg"):
        rows[k].append(nan1)
    for name, z in VIEWS.items():
        st = mem.step(st)
        phase = "positive" if name == "positive" else "negative"
        out = circuit(mem.read(st), torch.tensor(z)[None], phase, W_NEG)
        for k in rows:
            rows[k].append(out.units[k][0].numpy() if k not in ("S", "G_pos", "G_neg") else float(out.units[k][0]))
    st = mem.reset(st)
    rows["M"].append(st["M"][0].numpy())
    rows["z"].append(nan4)
    for k in ("D_plus", "D_minus", "delta"):
        rows[k].append(nan4)
    for k in ("S", "G_pos", "G_neg"):
        rows[k].append(nan1)
    return {k: np.array(v) for k, v in rows.items()}


def _steps(ax, values, **kw):
    x = np.arange(len(values) + 1)
    ax.stairs(values, x, **kw)


def plot_rate(path):
    r = rate_sequence()
    fig, axes = plt.subplots(6, 1, figsize=(7, 10), sharex=True)
    for i in range(4):
        _steps(axes[0], r["M"][:, i], color=COLORS[i], label=f"M_{i}")
        _steps(axes[1], r["z"][:, i], color=COLORS[i], label=f"z_{i}")
        _steps(axes[2], r["D_plus"][:, i], color=COLORS[i], label=f"D+_{i}")
        _steps(axes[2], -r["D_minus"][:, i], color=COLORS[i], linestyle="--")
        _steps(axes[5], r["delta"][:, i] + 0.04 * (i - 1.5), color=COLORS[i], label=f"delta_{i}")
    _steps(axes[3], r["S"], color="k", label="S = ||M - z||_1")
    axes[3].axhline(M1, color="tab:red", lw=0.8, ls=":", label="m1")
    axes[3].axhline(M2, color="tab:blue", lw=0.8, ls=":", label="m2")
    _steps(axes[4], r["G_pos"] + 0.02, color="tab:red", label="G+ = H(S - m1)")
    _steps(axes[4], r["G_neg"] - 0.02, color="tab:blue", label="G- = H(m2 - S)")
    titles = ["memory units M (written at the anchor, held, reset)", "current top cells z",
              "D+ = [M - z]_+ (solid), -D- = -[z - M]_+ (dashed)", "summing unit S", "gate units",
              "per-cell error delta (-G+ sign on the positive, G- sign / K on a negative)"]
    for ax, t in zip(axes, titles):
        ax.set_title(t, fontsize=9, loc="left")
        ax.legend(fontsize=6, loc="best", ncol=4)
    axes[-1].set_xticks(np.arange(5) + 0.5, LABELS)
    fig.suptitle("Hinge error circuit, rate form (Tang et al. 2022, App. A), K = 2, m1 = 1, m2 = 1.5", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spiking(path):
    mem_out = spiking_memory(ZA[None], ShortTermMemory(recurrence=1.0), hold=1 + K, reset=True, record=True, pool=20)
    held = mem_out["decoded"][1 : 2 + K, 0]                          # the memory read in each held presentation
    views = np.array(list(VIEWS.values()))
    phases = ["positive", "negative", "negative"]
    circ = HingeError(m1=M1, m2=M2)
    out = spiking_hinge_error(held[:, None], views[:, None], phases, W_NEG, circuit=circ, record=True)
    Tp, settle = out["presentation"], out["settle"]
    fig, axes = plt.subplots(5, 1, figsize=(7, 10))
    t = mem_out["t"] / 0.1                                             # presentations of 0.1 s
    for i in range(4):
        axes[0].plot(t, mem_out["s"][:, 0, i], color=COLORS[i], lw=0.8, label=f"M_{i}")
        axes[0].axhline(ZA[i], color=COLORS[i], lw=0.5, ls=":")
    axes[0].set_xticks(np.arange(5) + 0.5, LABELS)
    axes[0].set_title("spiking memory: pool rate through the recurrent synapse / r_0 (dotted: z^A)", fontsize=9, loc="left")
    axes[0].legend(fontsize=6, ncol=4, loc="upper right")
    ts, ids = out["trace"]["diff"]
    for i in range(4):
        for off in (0, 4):
            sel = ids == i + off
            axes[1].plot(ts[sel] / Tp, np.full(sel.sum(), i + off), "|", color=COLORS[i], ms=4)
    axes[1].set_yticks(range(8), [f"D+_{i}" for i in range(4)] + [f"D-_{i}" for i in range(4)], fontsize=6)
    axes[1].set_title("rectified difference units (spikes)", fontsize=9, loc="left")
    ts, _ = out["trace"]["sum"]
    bins = np.arange(0, 3 * Tp + 1e-9, 0.02)
    rate = np.histogram(ts, bins)[0] / 0.02 / 200.0
    axes[2].stairs(rate, bins / Tp, color="k", label="S (spike count / 20 ms / r_0)")
    axes[2].axhline(M1, color="tab:red", lw=0.8, ls=":", label="m1")
    axes[2].axhline(M2, color="tab:blue", lw=0.8, ls=":", label="m2")
    axes[2].legend(fontsize=6, loc="upper left")
    axes[2].set_ylim(0, 1.15 * max(rate.max(), M2))
    axes[2].set_title("summing unit", fontsize=9, loc="left")
    ts, ids = out["trace"]["gates"]
    for k, (name, c) in enumerate((("G+", "tab:red"), ("G-", "tab:blue"))):
        sel = ids == k
        axes[3].plot(ts[sel] / Tp, np.full(sel.sum(), k), "|", color=c, ms=6, label=name)
    axes[3].set_yticks([0, 1], ["G+", "G-"])
    axes[3].set_title("gate (threshold) units (spikes)", fontsize=9, loc="left")
    for ax in axes[1:4]:
        for k in range(3):
            ax.axvspan(k, k + settle / Tp, color="0.9", zorder=0)
        ax.set_xlim(0, 3)
        ax.set_xticks(np.arange(3) + 0.5, LABELS[1:4])
    for i in range(4):
        axes[4].stairs(out["delta"][:, 0, i] + 0.04 * (i - 1.5), np.arange(4), color=COLORS[i], label=f"delta_{i}")
    axes[4].set_xticks(np.arange(3) + 0.5, LABELS[1:4])
    axes[4].set_title("decoded per-cell error delta (read windows; grey: settling)", fontsize=9, loc="left")
    axes[4].legend(fontsize=6, ncol=4, loc="upper right")
    fig.suptitle("Hinge error circuit, spiking form (Brian2): memory pools, then the circuit per presentation",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return out


def plot_coupled(path):
    """The same sequence in ONE Brian2 network (:func:`spiking_presentation_sequence`): the memory pools hold z^A and
    drive the circuit's memory units through the positive and both negatives, then the reset."""
    from neurolearn.sim.brian2_hinge import spiking_params
    from neurolearn.sim.brian2_sequence import memory_spiking_params, spiking_presentation_sequence

    views = np.array(list(VIEWS.values()))
    out = spiking_presentation_sequence(ZA, views[0], views[1:], ShortTermMemory(recurrence=1.0), HingeError(m1=M1, m2=M2),
                                        w_neg=W_NEG, record=True)
    T, settle, n, windows = out["presentation"], out["settle"], len(ZA), 2 + len(views)
    width = 0.05                                   # s: rate bins (a bin resolves 1 / (r_0 width) = 0.1 of a unit)
    bins = np.arange(0, windows * T + 1e-9, width)

    def signed_rate(group, size, scale):          # binned rate of channel + minus channel -, per top cell
        ts, ids = out["trace"][group]
        h = np.array([np.histogram(ts[ids // size == c], bins)[0] for c in range(2 * n)]) / width / scale
        return h[:n] - h[n:]

    fig, axes = plt.subplots(5, 1, figsize=(7, 10), sharex=True)
    mp, r0 = memory_spiking_params(), spiking_params()["rate_scale"]
    for ax, rate, title in ((axes[0], signed_rate("memory", mp["pool"], mp["pool"] * mp["rate_scale"]),
                             "memory pools (rate / (P r_m), 50 ms bins); dotted: z^A"),
                            (axes[1], signed_rate("sources", 1, r0), "circuit's memory units M (rate / r_0), driven by the pools")):
        for i in range(n):
            ax.stairs(rate[i], bins / T, color=COLORS[i], lw=0.8, label=f"M_{i}")
            ax.axhline(ZA[i], color=COLORS[i], lw=0.5, ls=":")
        ax.set_title(title, fontsize=9, loc="left")
        ax.legend(fontsize=6, ncol=4, loc="upper right")
    ts, _ = out["trace"]["sum"]
    axes[2].stairs(np.histogram(ts, bins)[0] / width / r0, bins / T, color="k", label="S (rate / r_0)")
    axes[2].axhline(M1, color="tab:red", lw=0.8, ls=":", label="m1")
    axes[2].axhline(M2, color="tab:blue", lw=0.8, ls=":", label="m2")
    axes[2].legend(fontsize=6, loc="upper right")
    axes[2].set_title("summing unit (the store window compares the filling memory with the anchor)", fontsize=9, loc="left")
    ts, ids = out["trace"]["gates"]
    for k, (name, c) in enumerate((("G+", "tab:red"), ("G-", "tab:blue"))):
        axes[3].plot(ts[ids == k] / T, np.full((ids == k).sum(), k), "|", color=c, ms=6, label=name)
    axes[3].set_yticks([0, 1], ["G+", "G-"])
    axes[3].set_title("gate (threshold) units (spikes)", fontsize=9, loc="left")
    for i in range(n):
        axes[4].stairs(out["delta"][:, 0, i] + 0.04 * (i - 1.5), np.arange(1, 2 + len(views)), color=COLORS[i], label=f"delta_{i}")
    axes[4].set_title("per-cell error read in each presentation's read window", fontsize=9, loc="left")
    axes[4].legend(fontsize=6, ncol=4, loc="upper right")
    for ax in axes:
        for k in range(windows):
            ax.axvspan(k, k + settle / T, color="0.92", zorder=0)
    axes[-1].set_xlim(0, windows)
    axes[-1].set_xticks(np.arange(windows) + 0.5, LABELS)
    fig.suptitle("Memory and hinge circuit coupled in one Brian2 network (grey: settling)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    import sys

    if "--coupled" in sys.argv[1:]:            # only the coupled network's figure
        out = plot_coupled(HERE / "tang_circuit_coupled.png")
        print("coupled S per presentation:", np.round(out["S"][:, 0], 3), "gates:", out["gate"][:, 0])
        sys.exit(0)
    plot_rate(HERE / "tang_circuit_rate.png")
    out = plot_spiking(HERE / "tang_circuit_spiking.png")
    print("spiking S per presentation:", np.round(out["S"][:, 0], 3), "gates:", out["gate"][:, 0])
