"""Training speed of the self-defined-target networks: seconds per 1,000 samples, side by side with the
authors' code, GFLOP/s and the machine's peak.

Setups (Liu et al. 2024 Table 6): ``bp1``/``bp2`` BP with one/two layers, ``ep1``/``ep2`` EP with the
published Euler phases, ``ep2fp`` EP two layers with both phases solved to their fixed points by the
alternating solver, ``ep2ff`` the free phase solved and the published 20 nudged Euler steps.

For every setup and each of ``--repeats`` repeats this times one training epoch of neurolearn on the
first ``--samples`` MNIST training images (``--ep2-samples`` for the two-layer EP setups), after
``--warmup-epochs`` epochs on the same samples (the first epoch from initialisation is reported too:
"1st ep"). With ``--reference PATH`` (a checkout of github.com/neurophysics-cnrsthales/unsupervised-target,
called from where it is, never copied: ``reference_liu.py``) the same repeat also times one epoch of
the authors' training loop (their ``train_unsupervised`` / ``train_unsupervised_ep``, after a warm-up of
3 batches) on the same samples in the same batch order, in the same process; the two alternate (ours
first in even repeats, theirs first in odd ones). The two-layer EP variants are all compared with the
authors' ``ep2``. Reported: the median and range over the repeats, the ratio of the medians
"theirs / ours" (with the range of the per-repeat ratios) and the ratio of the fastest runs ("fastest":
on a busy machine, the least disturbed run of each). Without ``--reference`` the authors' columns
are absent. The 1-minute load average before and after is recorded; a warning is printed when it
exceeds the number of cores (other processes then shared them and the timings are unreliable).
The *baseline* is the same algorithm written the straightforward way in PyTorch (autograd
``loss.backward()`` + ``optimizer.step()`` for BP; every Euler step of EP recomputing all drives, dense
outer products per phase), timed on ``--baseline-samples`` samples. The float32 matrix-multiply peak
(2048^3) is measured in the same run, and the achieved GFLOP/s of the algorithm's nominal work is
given as a fraction of it.

    python benchmarks/bench_training.py [--reference /path/to/unsupervised-target] [--samples N]
        [--setups bp1,ep1] [--repeats R] [--threads 2] [--out benchmarks/results/training.json]

Timings on a shared virtual machine are noisy: read the ranges, not only the medians.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

BLOCK = 8

SETUPS = {
    "bp1": dict(sizes=(784, 2000), hidden="relu", dropout=(0.3, 0.2), k=6, gamma=0.4, batch=16, lr=[8.0],
                credit=("backprop",), smoothing=0.0, reference="bp1", epochs=200),
    "bp2": dict(sizes=(784, 2000, 2000), hidden="relu", dropout=(0.3, 0.2, 0.2), k=5, gamma=0.5, batch=16,
                lr=[2.5, 5.0], credit=("backprop",), smoothing=0.0, reference="bp2", epochs=200),
    "ep1": dict(sizes=(784, 2000), hidden="hardsigmoid", dropout=(0.3, 0.2), k=5, gamma=0.3, batch=16, lr=[0.03],
                credit=("equilibrium", 0.2, 40, 10, 0.2, "random"), smoothing=0.3, reference="ep1", epochs=100,
                # as the recipe mnist_ep_1layer (issue 14): the authors' unscaled input mask, thresholds moved by the target
                credit_options=dict(input_dropout="unscaled"), objective_options=dict(homeostasis_from="target")),
    "ep2": dict(sizes=(784, 2000, 2000), hidden="hardsigmoid", dropout=(0.3, 0.0, 0.2), k=4, gamma=0.65, batch=32,
                lr=[0.01, 0.015], credit=("equilibrium", 0.2, 60, 20, 0.2, "random"), smoothing=0.3,
                reference="ep2", epochs=100),
}
SETUPS["ep2fp"] = dict(SETUPS["ep2"], credit=("equilibrium", 0.2, 60, 20, 0.2, "random", "alternating", "alternating"))
SETUPS["ep2ff"] = dict(SETUPS["ep2"], credit=("equilibrium", 0.2, 60, 20, 0.2, "random", "alternating", "euler"))


# ---------------------------------------------------------------------------------------------------
# Every call into neurolearn is in this section (the library's API may move: adapt it here only).
# ---------------------------------------------------------------------------------------------------
def make_credit(spec: tuple):
    """A neurolearn credit method from ``("backprop",)`` or ``("equilibrium", beta, free_steps,
    nudged_steps, dt, beta_sign[, free_solver, nudged_solver])``."""
    from neurolearn.credit import Backprop, EquilibriumProp

    if spec[0] == "backprop":
        return Backprop()
    beta, free, nudged, dt, sign = spec[1:6]
    solvers = dict(zip(("free_solver", "nudged_solver"), spec[6:]))
    return EquilibriumProp(beta, free, nudged, dt, sign, **solvers)


def make_trainer(name: str, cfg: dict, seed: int = 0, schedule: str = "none", final_lr_factor: float = 1.0,
                 epochs_plan: int | None = None):
    """neurolearn's ``Trainer`` for setup ``name`` (network, self-defined target, credit method, SGD).
    ``schedule``/``final_lr_factor``/``epochs_plan``: the linear learning-rate schedule (``"none"``: constant)."""
    from neurolearn.networks import MLP
    from neurolearn.objectives import SelfDefinedTarget
    from neurolearn.train import Trainer

    torch.manual_seed(seed)
    net = MLP(cfg["sizes"], cfg["hidden"], "hardsigmoid", cfg["dropout"], seed=seed)
    dt = "divide" if name.startswith("ep") else "multiply"
    obj = SelfDefinedTarget(k=cfg["k"], gamma=cfg["gamma"], smoothing=cfg["smoothing"], dropout_target=dt,
                            **cfg.get("objective_options", {}))
    training = {"epochs": epochs_plan or cfg["epochs"], "batch_size": cfg["batch"], "lr": cfg["lr"],
                "optimizer": "sgd", "schedule": schedule, "final_lr_factor": final_lr_factor, "block": BLOCK}
    credit = make_credit(cfg["credit"])
    if cfg.get("credit_options"):
        credit = type(credit).from_values({**credit.values(), **cfg["credit_options"]})
    return Trainer(net, obj, credit, training, seed, progress=False)


def fit_epochs(trainer, x: torch.Tensor, epochs: int) -> float:
    """Train ``trainer`` on ``x`` until ``epochs`` epochs are done; returns the training seconds spent."""
    t0 = trainer.train_seconds
    trainer.fit(x, epochs=epochs)
    return trainer.train_seconds - t0


def epoch_batches(n: int, batch: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The index batches neurolearn's trainer draws for ``epoch`` (so the authors' loop can get the same)."""
    from neurolearn.data import batch_indices

    return batch_indices(n, batch, seed, epoch)


def layers_of(trainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight (out, in), bias (out,))`` of each layer of the trainer's network, input side first."""
    return [(l.weight.detach(), l.bias.detach()) for l in trainer.net.layers]


def responses_of(trainer, x: torch.Tensor) -> torch.Tensor:
    """The outputs neurolearn's evaluation reads (no dropout) for ``x``."""
    from neurolearn.experiment import responses

    return responses(trainer.credit, trainer.net, x)


def load_mnist(path: str | None = None):
    """The MNIST files (``--data`` or located as recipes do with ``source = "mnist"``)."""
    from neurolearn.data import load_idx
    from neurolearn.experiment import locate

    return load_idx(path or locate("mnist"))


def direct_accuracy(r_train, y_train, r_test, y_test, n_classes: int = 10) -> dict:
    """Direct-association test accuracy ``{"av", "max"}`` (neurolearn.eval.association)."""
    from neurolearn.eval.association import direct_association_accuracy

    return direct_association_accuracy(r_train, y_train, r_test, y_test, n_classes)


# ---------------------------------------------------------------------------------------------------
def matmul_peak(n: int = 2048, seconds: float = 2.0) -> float:
    """Measured float32 GFLOP/s of an n x n x n matrix product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0, reps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def nominal_flops_per_sample(name: str, cfg: dict, credit=None) -> float:
    """FLOPs of the algorithm per sample: forward and weight-update GEMMs (and relaxation steps: for
    the alternating solver, the sweeps it used per batch on average, read from the trainer's credit state)."""
    s = cfg["sizes"]
    if name.startswith("bp"):
        fwd = sum(2 * a * b for a, b in itertools.pairwise(s))
        back = sum(2 * a * b for a, b in itertools.pairwise(s[1:]))  # error through W_{l+1}^T
        return 2 * fwd + back
    ep = credit if credit is not None else make_credit(cfg["credit"])  # a trainer or a credit method
    drive = 2 * s[0] * s[1]
    if len(s) == 2:
        return drive + 2 * s[0] * s[1]
    per_step = 2 * 2 * s[1] * s[2]  # bottom-up to the output and top-down to the hidden layer
    update = 2 * s[0] * s[1] + 2 * 2 * s[1] * s[2]
    return drive + per_step * steps_per_batch(ep) + update


def steps_per_batch(trainer_or_credit) -> float:
    """Relaxation steps (Euler steps or alternating sweeps) per training batch, both phases (the solver's
    counts are the credit method's state in the trainer, ``credit_state["solver"]``)."""
    if hasattr(trainer_or_credit, "credit_state"):
        ep, st = trainer_or_credit.credit, trainer_or_credit.credit_state.get("solver", {})
    else:
        ep, st = trainer_or_credit, {}
    st = {k: st.get(k, 0) for k in ("free_sweeps", "free_solves", "nudged_sweeps", "nudged_solves")}
    free = st["free_sweeps"] / st["free_solves"] if ep.free_solver == "alternating" and st["free_solves"] else ep.free_steps
    nudged = (st["nudged_sweeps"] / st["nudged_solves"] if ep.nudged_solver == "alternating" and st["nudged_solves"]
              else ep.nudged_steps)
    return free + nudged


def time_neurolearn(name, cfg, x, seed=0, warmup_epochs=1):
    """Seconds of one epoch over ``x`` with neurolearn's Trainer, after ``warmup_epochs`` epochs on the
    same samples (and a warm-up of the code paths on 3 batches); returns (timed epoch, first epoch
    from initialisation, credit)."""
    fit_epochs(make_trainer(name, cfg, seed), x[: 3 * cfg["batch"]], 1)
    trainer = make_trainer(name, cfg, seed)
    seconds = [fit_epochs(trainer, x, epoch) for epoch in range(1, 2 + warmup_epochs)]
    return seconds[-1], seconds[0], trainer


def time_reference(path, cfg, x, seed=0, epoch=0):
    """Seconds of one epoch over ``x`` with the authors' training loop (``reference_liu.Reference``), in
    the batch order neurolearn uses for ``epoch`` with ``seed``, after a warm-up of 3 batches (their
    scripted EP network compiles on its first calls)."""
    from reference_liu import Reference

    ref = Reference(path, cfg["reference"], seed=seed)
    batches = [x[idx] for idx in epoch_batches(x.shape[0], cfg["batch"], seed, epoch)]
    ref.fit_epoch(batches[:3])
    t0 = time.perf_counter()
    ref.fit_epoch(batches)
    return time.perf_counter() - t0


def time_baseline(name, cfg, x, seed=0):
    """The straightforward implementation of the same algorithm (see module docstring)."""
    from neurolearn.networks import MLP
    from neurolearn.objectives import SelfDefinedTarget

    torch.manual_seed(seed)
    net = MLP(cfg["sizes"], cfg["hidden"], "hardsigmoid", cfg["dropout"], seed=seed)
    obj = SelfDefinedTarget(k=cfg["k"], gamma=cfg["gamma"], smoothing=cfg["smoothing"])
    state = obj.init_state(cfg["sizes"][-1], cfg["dropout"][-1])
    groups = [{"params": list(l.parameters()), "lr": lr} for l, lr in zip(net.layers, cfg["lr"])]
    opt = torch.optim.SGD(groups, lr=cfg["lr"][0])
    batches = epoch_batches(x.shape[0], cfg["batch"], seed, 0)
    drop_in = torch.nn.Dropout(cfg["dropout"][0])
    p_out = cfg["dropout"][-1]

    def bp_step(xb):
        h = drop_in(xb)
        for l, layer in enumerate(net.layers):
            h = layer(h)
            h = h.clamp(0, 1) if l == net.n_layers - 1 else torch.nn.functional.dropout(torch.relu(h), cfg["dropout"][l + 1])
        m = torch.bernoulli(torch.full_like(h, 1 - p_out))
        y = h * m
        d = obj.decide(y.detach(), state, m)
        loss = ((y - d) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    ep = make_credit(cfg["credit"]) if name.startswith("ep") else None

    @torch.no_grad()
    def ep_step(xb):
        xb = drop_in(xb)
        W = [l.weight for l in net.layers]
        b = [l.bias for l in net.layers]

        def relax(s, steps, beta, d=None, m=None):
            for _ in range(steps):
                new = []
                for l in range(len(W)):
                    below = xb if l == 0 else s[l - 1]
                    drive = below @ W[l].T + b[l]
                    if l < len(W) - 1:
                        drive = drive + s[l + 1] @ W[l + 1]
                    v = s[l] + ep.dt * (-s[l] + drive)
                    if l == len(W) - 1 and beta:
                        v = v + ep.dt * beta * m * (d - s[l])
                    new.append(v.clamp(0, 1))
                s = new
            return s

        free = relax([torch.zeros(xb.shape[0], n) for n in cfg["sizes"][1:]], ep.free_steps, 0.0)
        m = torch.bernoulli(torch.full_like(free[-1], 1 - p_out))
        d = obj.decide(free[-1] * m, state, m)
        beta = ep.beta * (1 if torch.rand(()) < 0.5 else -1)
        nudged = relax(free, ep.nudged_steps, beta, d, m)
        pre_n, pre_f = [xb] + nudged[:-1], [xb] + free[:-1]
        for l in range(len(W)):
            dW = (nudged[l].T @ pre_n[l] - free[l].T @ pre_f[l]) / (beta * xb.shape[0])
            W[l] += cfg["lr"][l] * dW
            b[l] += cfg["lr"][l] * (nudged[l] - free[l]).sum(0) / (beta * xb.shape[0])

    step = ep_step if ep is not None else bp_step
    for idx in batches[:3]:
        step(x[idx])
    t0 = time.perf_counter()
    for idx in batches:
        step(x[idx])
    return time.perf_counter() - t0


def median_range(values) -> dict:
    """``{"median", "min", "max", "all"}`` of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": list(values)}


def side_by_side(name: str, x: torch.Tensor, repeats: int, reference=None, warmup_epochs: int = 1, seed: int = 0):
    """Per repeat: one timed epoch of ours and (with ``reference``) one of the authors', alternating
    which goes first. Returns ``(ours s/1000, first epochs s/1000, theirs s/1000 or None, last credit)``."""
    cfg = SETUPS[name]
    ours, first, theirs, credit = [], [], [], None
    for r in range(repeats):
        def run_ours():
            nonlocal credit
            secs, first_secs, credit = time_neurolearn(name, cfg, x, seed, warmup_epochs)
            ours.append(1000 * secs / x.shape[0])
            first.append(1000 * first_secs / x.shape[0])

        def run_theirs():
            theirs.append(1000 * time_reference(reference, cfg, x, seed, epoch=warmup_epochs) / x.shape[0])

        order = [run_ours] + ([run_theirs] if reference else [])
        for run in (order if r % 2 == 0 else order[::-1]):
            run()
    return ours, first, (theirs if reference else None), credit


def prepare(ap: argparse.ArgumentParser, reference: str | None, threads: int) -> None:
    """Import the authors' code from ``reference`` (if given; an argparse error naming the missing file
    when it is not their checkout) and set ``threads`` torch threads (0: keep torch's default)."""
    if reference:
        import reference_liu

        try:
            reference_liu.load(reference)
        except reference_liu.NotACheckout as e:
            ap.error(str(e))
    if threads:
        torch.set_num_threads(threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="MNIST folder (default: located like recipes with source = 'mnist')")
    ap.add_argument("--reference", metavar="PATH",
                    help="checkout of github.com/neurophysics-cnrsthales/unsupervised-target: time the authors' "
                         "training loop side by side (called from PATH, never copied)")
    ap.add_argument("--samples", type=int, default=10000, help="training samples of the timed epoch (the MNIST subset: 10,000)")
    ap.add_argument("--setups", default="bp1,bp2,ep1,ep2,ep2fp,ep2ff")
    ap.add_argument("--ep2-samples", type=int, default=640, help="samples timed for EP two layers (slow)")
    ap.add_argument("--baseline-samples", type=int, default=2000,
                    help="samples timed for the baseline (its cost per sample does not change as it learns); 0: skip it")
    ap.add_argument("--warmup-epochs", type=int, default=1,
                    help="epochs trained before the timed one (the first epoch is also reported)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; median and range are reported (VM noise)")
    ap.add_argument("--out", default="benchmarks/results/training.json")
    args = ap.parse_args(argv)
    names = args.setups.split(",")
    bad = [n for n in names if n not in SETUPS]
    if bad:
        ap.error(f"--setups: unknown {', '.join(bad)}; allowed: {', '.join(SETUPS)}")
    for opt in ("samples", "ep2_samples", "repeats"):
        if getattr(args, opt) < 1:
            ap.error(f"--{opt.replace('_', '-')} must be at least 1, got {getattr(args, opt)}")
    if args.warmup_epochs < 0 or args.baseline_samples < 0 or args.threads < 0:
        ap.error("--warmup-epochs, --baseline-samples and --threads must be >= 0")
    prepare(ap, args.reference, args.threads)
    ds = load_mnist(args.data)
    load_before = os.getloadavg()[0]
    peak = matmul_peak()
    rows, baselines = [], {}
    for name in names:
        cfg = SETUPS[name]
        n = min(args.ep2_samples if name.startswith("ep2") else args.samples, ds.x_train.shape[0])
        x = ds.x_train[:n]
        ours, first, theirs, credit = side_by_side(name, x, args.repeats, args.reference, args.warmup_epochs)
        per_k = statistics.median(ours)
        row = {"setup": name, "samples": n, "warmup_epochs": args.warmup_epochs, "repeats": args.repeats,
               "s_per_1000": median_range(ours), "first_epoch_s_per_1000": median_range(first)}
        if theirs is not None:
            row["reference_setup"] = cfg["reference"]
            row["reference_s_per_1000"] = median_range(theirs)
            row["ratio_reference_over_ours"] = statistics.median(theirs) / per_k
            row["ratio_per_repeat"] = median_range([t / o for t, o in zip(theirs, ours)])
            row["ratio_fastest"] = min(theirs) / min(ours)  # the least disturbed run of each (busy machine)
        nb = min(args.baseline_samples, n)
        if nb:
            algo = "ep2" if name.startswith("ep2") else name  # the solvers' baseline is the published EP: time it once
            if (algo, nb) not in baselines:
                baselines[algo, nb] = statistics.median(
                    time_baseline(algo, SETUPS[algo], ds.x_train[:nb]) for _ in range(args.repeats))
            row["baseline_samples"] = nb
            row["baseline_s_per_1000"] = 1000 * baselines[algo, nb] / nb
            row["speedup_vs_baseline"] = row["baseline_s_per_1000"] / per_k
        row["gflops"] = nominal_flops_per_sample(name, cfg, credit) / per_k / 1e6
        row["fraction_of_peak"] = row["gflops"] / peak
        row["relaxation_steps_per_batch"] = steps_per_batch(credit) if name.startswith("ep") else None
        rows.append(row)
    load_after = os.getloadavg()[0]
    print_table(rows, peak, bool(args.reference))
    if max(load_before, load_after) > os.cpu_count():
        print(f"warning: the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} after, "
              f"{os.cpu_count()} cores): other processes shared the cores, the timings are unreliable")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"peak_gflops": peak, "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "machine": platform.machine(), "processor": platform.processor(),
                               "reference": str(args.reference) if args.reference else None,
                               "load_average_before": load_before, "load_average_after": load_after,
                               "cpu_count": os.cpu_count(),
                               "command": "python benchmarks/bench_training.py " + " ".join(argv or sys.argv[1:]),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def print_table(rows: list[dict], peak: float, reference: bool) -> None:
    """The table of ``rows`` (see :func:`main`): medians, ranges, ratio theirs/ours, baseline, peak."""
    def rng(d):
        return f"{d['min']:.3f}-{d['max']:.3f}"

    cols = [("setup", 6), ("n", 6), ("s/1000 ours", 12), ("range", 13), ("1st ep", 8)]
    if reference:
        cols += [("s/1000 theirs", 14), ("range", 15), ("theirs/ours", 12), ("range", 12), ("fastest", 9)]
    cols += [("baseline", 10), ("x base", 8), ("GFLOP/s", 9), ("% peak", 8)]
    print(f"matrix-multiply peak (float32, 2048^3, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    hdr = " ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(cols))
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        cells = [r["setup"], str(r["samples"]), f"{r['s_per_1000']['median']:.3f}", rng(r["s_per_1000"]),
                 f"{r['first_epoch_s_per_1000']['median']:.3f}"]
        if reference:
            rr = r["ratio_per_repeat"]
            cells += [f"{r['reference_s_per_1000']['median']:.3f}", rng(r["reference_s_per_1000"]),
                      f"{r['ratio_reference_over_ours']:.1f}x", f"{rr['min']:.1f}-{rr['max']:.1f}",
                      f"{r['ratio_fastest']:.1f}x"]
        if "baseline_s_per_1000" in r:
            cells += [f"{r['baseline_s_per_1000']:.3f}", f"{r['speedup_vs_baseline']:.1f}"]
        else:
            cells += ["-", "-"]
        cells += [f"{r['gflops']:.1f}", f"{100 * r['fraction_of_peak']:.0f}%"]
        print(" ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells, cols))))
    if reference:
        print("theirs: the authors' code (--reference), same samples and batch order, same process, alternating;"
              " ep2fp/ep2ff against their ep2. theirs/ours: ratio of the medians (range: per repeat);"
              " fastest: ratio of the fastest runs")


if __name__ == "__main__":
    raise SystemExit(main())
