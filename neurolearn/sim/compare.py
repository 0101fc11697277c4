"""Rate vs spiking on the same inputs: how far apart the two simulations of one network are.

For a trained network and a converted spiking version (:func:`to_spiking`) this reports, on the same
test inputs: direct-association accuracy of each (assignments computed from each simulator's own
responses on the labelled assignment set), the Pearson correlation between rate outputs and spike
rates, how often the spiking k winners (top k of ``rate - H``) equal the rate top-k and their mean
overlap, spikes per inference (input and all layers), and accuracy against simulated time (PNG).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from .._validate import check_int
from ..eval.association import assign_classes, predict_direct
from ..runs import atomic_path, write_json
from .convert import to_spiking


def _acc(train_r, train_y, test_r, test_y, n_classes, mode="av"):
    a = assign_classes(train_r, train_y, n_classes)
    return (predict_direct(test_r, a, n_classes, mode) == test_y).double().mean().item()


def topk_agreement(rate: torch.Tensor, spiking: torch.Tensor, k: int, H: torch.Tensor | None = None) -> dict:
    """How often the k winners of two simulations agree.

    With ``A_b = top_k(rate_b - H)`` and ``S_b = top_k(spiking_b - H)`` (the kWTA of Liu et al. 2024,
    Eq. 1, on each simulation's output), returns ``equal = mean_b [A_b = S_b]`` and
    ``overlap = mean_b |A_b & S_b| / k``.
    """
    H = torch.zeros(rate.shape[1]) if H is None else H
    a = torch.topk(rate - H, k, dim=1).indices
    b = torch.topk(spiking - H, k, dim=1).indices
    ma = torch.zeros_like(rate, dtype=torch.bool).scatter_(1, a, True)
    mb = torch.zeros_like(rate, dtype=torch.bool).scatter_(1, b, True)
    overlap = (ma & mb).sum(1).double() / k
    return {"equal": (overlap == 1).double().mean().item(), "overlap": overlap.mean().item()}


def compare_network(network, rate_fn, ds, k: int, H: torch.Tensor | None, out_dir: str | Path | None = None,
                    steps: int = 200, record_every: int = 10, test_limit: int = 0, assign_limit: int = 0,
                    seed: int = 0, device=None, brian2: bool = False, brian2_target: str = "numpy") -> dict:
    """Compare ``rate_fn(x)`` (the rate network's output) with its snnTorch (and Brian2) conversion on ``ds``.

    Reported on the test inputs: direct-association accuracy of each simulator (Liu et al. 2024:
    each cell gets the class it responds to most on the assignment set); the Pearson correlation
    ``r = cov(y, c/T) / (sd(y) sd(c/T))`` over all (sample, cell) pairs of rate outputs ``y`` and spike
    rates ``c / T``; the mean ``|y - c/T|``; :func:`topk_agreement` of the k winners; spikes per
    inference (input and every layer); accuracy against simulated time (every ``record_every`` steps);
    with ``brian2``, the Brian2 accuracy (scored with the rate network's cell-to-class assignment: its
    spike counts estimate the rate output) and how often the Brian2 k-winners circuit (inhibitory cell,
    thresholds ``H - c``) picks the top-k of the drive ``u - H``; the common offset ``c`` (kWTA ignores
    it) lifts the k-th largest ``u - H`` of every assignment input above 0 so that k cells can fire.
    Conversion: Diehl et al. 2015. ``brian2=True`` on a network of more than one layer (the Brian2
    conversion is one-layer only) skips Brian2 with a warning and records why in ``brian2_skipped``.
    """
    check_int("compare_network", "steps", steps, 1)
    check_int("compare_network", "record_every", record_every, 1)
    check_int("compare_network", "test_limit", test_limit, 0)
    check_int("compare_network", "assign_limit", assign_limit, 0)
    record_every = min(record_every, steps)  # at least one point of the accuracy-vs-time curve
    xa, ya = ds.x_train[: assign_limit or None], ds.y_train[: assign_limit or None]
    xt, yt = ds.x_test[: test_limit or None], ds.y_test[: test_limit or None]
    with torch.no_grad():
        ra, rt = rate_fn(xa), rate_fn(xt)
    model = to_spiking(network, "snntorch", calibration_x=xa, device=device)
    t0 = time.perf_counter()
    run_a = model.network.run(xa, steps, seed, record_every)
    run_t = model.network.run(xt, steps, seed + 1, record_every)
    seconds = time.perf_counter() - t0
    sa, st = run_a["counts"][-1].cpu() / steps, run_t["counts"][-1].cpu() / steps
    nc = ds.n_classes
    out = {
        "describes": model.describes,
        "steps": steps,
        "rate": {"direct_av": _acc(ra, ya, rt, yt, nc), "direct_max": _acc(ra, ya, rt, yt, nc, "max")},
        "snntorch": {"direct_av": _acc(sa, ya, st, yt, nc), "direct_max": _acc(sa, ya, st, yt, nc, "max")},
        "correlation": torch.corrcoef(torch.stack([rt.flatten(), st.flatten()]))[0, 1].item(),
        "mean_abs_rate_error": (rt - st).abs().mean().item(),
        "topk": topk_agreement(rt, st, k, H),
        "spikes_per_inference": (run_t["input_spikes"].cpu() + sum(c.cpu().sum(1) for c in run_t["counts"])).mean().item(),
        "output_spikes_per_inference": run_t["counts"][-1].cpu().sum(1).mean().item(),
        "examples_per_second": (xa.shape[0] + xt.shape[0]) / seconds,
        "accuracy_vs_steps": [
            (t, _acc(ca.cpu() / t, ya, ct.cpu() / t, yt, nc))
            for (t, ca), (_, ct) in zip(run_a["checkpoints"], run_t["checkpoints"])
        ],
    }
    if brian2 and network.n_layers > 1:
        reason = f"the Brian2 conversion supports one-layer networks, this one has {network.n_layers} layers"
        warnings.warn(f"compare_network: Brian2 skipped: {reason}", stacklevel=2)
        out["brian2_skipped"] = reason
    elif brian2:
        b2_model = to_spiking(network, "brian2", calibration_x=xa, target=brian2_target)
        t0 = time.perf_counter()
        sb = b2_model.rates(xt, steps, seed + 2)
        b2_seconds = time.perf_counter() - t0
        a_rate = assign_classes(ra, ya, nc)
        out["brian2"] = {mode: (predict_direct(sb, a_rate, nc, mode) == yt).double().mean().item() for mode in ("av", "max")}
        out["brian2"] = {"direct_av": out["brian2"]["av"], "direct_max": out["brian2"]["max"],
                         "seconds_per_example": b2_seconds / xt.shape[0], "target": brian2_target,
                         "correlation": torch.corrcoef(torch.stack([rt.flatten(), sb.flatten()]))[0, 1].item()}
        out["rate_assigned_by_rate"] = {"direct_av": _acc(ra, ya, rt, yt, nc)}
        # the k-winners competition in Brian2: inhibitory population + thresholds H, on up to 200 inputs
        n_k = min(200, xt.shape[0])
        H0 = torch.zeros(network.sizes[-1]) if H is None else H.detach().cpu()
        with torch.no_grad():
            drive = network.layers[0](xt[:n_k])
            # a common offset c (kWTA ignores it) lifts the k-th largest drive u - H above 0 on the
            # assignment inputs, so that k cells can fire (data-based, like the weight normalisation)
            kth = torch.topk(network.layers[0](xa) - H0, k, dim=1).values[:, -1]
        offset = max(0.0, -float(kth.min())) + 0.05
        kw_model = to_spiking(network, "brian2", calibration_x=xa, target=brian2_target, kwta_k=k,
                              thresholds=(H0 - offset).numpy())
        winners = (kw_model.rates(xt[:n_k], steps, seed + 3) > 0).float()
        # the reference: the rate kWTA of the drive u - H the circuit competes on (the clamped output
        # y = clamp(u, 0, 1) ties every saturated cell at 1, where the rate top-k would be arbitrary)
        ref = torch.zeros_like(drive).scatter_(1, torch.topk(drive - H0, k, dim=1).indices, 1.0)
        overlap = (winners * ref).sum(1) / k
        out["brian2_kwta"] = {"inputs": n_k, "offset": offset, "equal": ((winners == ref).all(1)).double().mean().item(),
                              "overlap": overlap.mean().item(), "winners_per_input": winners.sum(1).mean().item()}
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(out_dir / "compare.json", out)
        _plot(out, out_dir / "accuracy_vs_time.png")
    return out


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, acc = zip(*res["accuracy_vs_steps"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(t, [100 * a for a in acc], "o-", label="snnTorch (spiking)")
    ax.axhline(100 * res["rate"]["direct_av"], color="k", ls="--", label="rate")
    ax.set_xlabel("simulated time (steps of 1 ms)")
    ax.set_ylabel("direct association accuracy (%)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def format_compare(res: dict) -> str:
    """The comparison as a short table."""
    lines = [f"{'simulator':<12}{'direct av':>11}{'direct max':>12}",
             f"{'rate':<12}{100 * res['rate']['direct_av']:>10.2f}%{100 * res['rate']['direct_max']:>11.2f}%",
             f"{'snnTorch':<12}{100 * res['snntorch']['direct_av']:>10.2f}%{100 * res['snntorch']['direct_max']:>11.2f}%",
             *([f"{'Brian2':<12}{100 * res['brian2']['direct_av']:>10.2f}%{100 * res['brian2']['direct_max']:>11.2f}%"
                f"   ({res['brian2']['seconds_per_example']:.3f} s per example, {res['brian2']['target']} target)"]
               if "brian2" in res else []),
             *([f"Brian2 skipped: {res['brian2_skipped']}"] if "brian2_skipped" in res else []),
             f"correlation rate vs spike rate: {res['correlation']:.3f}; mean |rate - spike rate|: {res['mean_abs_rate_error']:.3f}",
             f"snnTorch top-k of spike counts = rate top-k: {100 * res['topk']['equal']:.1f}% of inputs "
             f"(mean overlap {100 * res['topk']['overlap']:.1f}%)",
             *([f"Brian2 k-winners (inhibitory population, thresholds H - {res['brian2_kwta']['offset']:.3f}) = rate top-k: "
                f"{100 * res['brian2_kwta']['equal']:.1f}% of "
                f"{res['brian2_kwta']['inputs']} inputs (mean overlap {100 * res['brian2_kwta']['overlap']:.1f}%, "
                f"{res['brian2_kwta']['winners_per_input']:.1f} winners per input)"] if "brian2_kwta" in res else []),
             f"spikes per inference: {res['spikes_per_inference']:.0f} (output {res['output_spikes_per_inference']:.1f}); "
             f"{res['steps']} steps; {res['examples_per_second']:.0f} examples/s",
             f"a spike count stands for: {res['describes']}"]
    return "\n".join(lines)


def main_compare(argv) -> int:
    """``neurolearn compare [RECIPE | RUN_DIR]``: rate vs snnTorch and Brian2 on the test set.

    A finished run folder (``recipe.toml`` and ``weights.safetensors``) is compared without retraining;
    a recipe is trained first (``--epochs`` and ``--set`` as for ``run``; its own ``[eval]`` spiking pass
    is switched off, so the options here govern every spiking simulation made)."""
    from .. import recipe as recipes
    from ..experiment import load_run, run_recipe

    def nonneg(v):
        n = int(v)
        if n < 0:
            raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {v}")
        return n

    def positive(v):
        n = int(v)
        if n < 1:
            raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {v}")
        return n

    ap = argparse.ArgumentParser(
        prog="neurolearn compare",
        description="Run a trained network rate-based, spiking in snnTorch and spiking in Brian2 on the same "
                    "test inputs and report how far apart they are.")
    ap.add_argument("source", nargs="?", help="a finished run folder (compared without retraining), or a recipe "
                                              "path / built-in name to train first (default: the main job)")
    ap.add_argument("--out", help="folder for compare.json and the plot (default: RUN_DIR/compare, or "
                                  "runs/compare-<name>-<time> for a recipe)")
    ap.add_argument("--steps", type=positive, default=200, help="time steps of both spiking simulations (>= 1)")
    ap.add_argument("--test-limit", type=nonneg, default=0, help="first N test inputs (0: all)")
    ap.add_argument("--no-brian2", action="store_true", help="snnTorch only (skip the Brian2 simulation)")
    ap.add_argument("--epochs", type=nonneg, help="recipe only: override [training] epochs")
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="recipe only: override one key")
    args = ap.parse_args(argv)
    src = Path(args.source) if args.source else None
    t0 = time.perf_counter()
    if src is not None and src.is_dir():
        if args.epochs is not None or args.set:
            raise ValueError("compare RUN_DIR: --epochs and --set apply to a recipe, not to a finished run")
        recipe, ds, net, objective, credit, state = load_run(src)
        out = Path(args.out) if args.out else src / "compare"
        print(f"compare: run {src} ({recipe['name']}), no retraining", flush=True)
    else:
        overrides = recipes.parse_overrides(args.set or [])
        if args.epochs is not None:
            overrides.setdefault("training", {})["epochs"] = args.epochs
        overrides.setdefault("eval", {}).update(locality=False, linear=False, spiking="none")
        label, text = recipes.find_recipe(args.source)
        recipe = recipes.resolve(text, label, overrides)
        out = Path(args.out or f"runs/compare-{recipe['name']}-{time.strftime('%Y%m%d-%H%M%S')}")
        print(f"compare: training {recipe['name']} ({recipe['training']['epochs']} epochs) into {out}", flush=True)
        metrics = run_recipe(recipe, out, progress=False, log=lambda s: None, keep=True)
        net, credit, ds, state = metrics.pop("_objects")
        print(f"compare: trained ({time.perf_counter() - t0:.1f} s)", flush=True)
    k = recipe["objective"].get("k", 1)
    H = state.H if hasattr(state, "H") else None
    t1 = time.perf_counter()
    res = compare_network(net, lambda x: credit.respond(net, x), ds, k, H, out, args.steps, test_limit=args.test_limit,
                          brian2=not args.no_brian2)
    print(f"compare: simulations done ({time.perf_counter() - t1:.1f} s)", flush=True)
    print(format_compare(res))
    print(f"results: {out} (compare.json, accuracy_vs_time.png)")
    return 0
