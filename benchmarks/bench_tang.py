"""Training speed of Tang, Yang & Amit 2022's E-MNIST3 rows: seconds per 1,000 pairs, side by side in one run.

Every method trains E-MNIST3 (models/tang2022/, contrastive hinge m1 1, m2 1.5, all negatives, no gradient block,
Adam) on the first ``--samples`` MNIST training images in batches of ``--batch`` images (one pair of views each),
with the same views: batch order from :func:`neurolearn.data.batch_indices`, views from the objective's
``present`` with the batch's generator (:func:`neurolearn.rng.batch_generator`), so every method sees the same
pairs. Timed: one epoch after ``--warmup-epochs`` epochs on the same samples, ``--repeats`` times (median and
range), methods interleaved within each repeat.

Rows:
- ``e2e_bp``: ours, the recipe ``e2e_bp`` (Backprop: the delta rule's factors, one optimiser step) run by the
  executor the trainer picks (``engine = "auto"``: the fused executor, :mod:`neurolearn.engine.fused`);
- ``autograd``: the straightforward PyTorch implementation -- a ``torch.nn.Sequential`` of the same layers and
  initial weights, the hinge written with ``torch.cdist(p=1)``, ``loss.backward()``, ``torch.optim.Adam`` -- on
  the same views;
- the local methods, each from its recipe: ``e2e_rf``, ``e2e_urf`` (``e2e_rf`` with updated random feedback),
  ``e2e_dtp`` (the inverses learn without noise, as the paper's Algorithm 1 writes it), ``e2e_dtp_noise`` (the
  authors' code's setting: ``e2e_dtp`` with ``inverse_noise = 1``), ``gll_bp_l{0,1,2}`` /
  ``gll_rf_l{0,1,2}`` (the greedy layer-wise step of each layer: ``epochs_per_layer = 1``, epoch l trains layer l),
  ``rll_bp`` / ``rll_rf`` (a random layer per batch), and
  ``sequential`` when a credit type of that name is registered. A method whose type is not registered in this
  checkout is skipped with a printed note;
- ``e2e_bp_reference``, ``e2e_rf_reference``, ``e2e_dtp_reference``: those recipes run by the reference executor
  (``credit.step`` on every batch: the readable reference the fast executors are tested equal to).

Reported per row: the executor that ran it, s / 1,000 pairs (median, range), the ratio to ``e2e_bp`` (the issue's
bound for local methods: at most 1.3x), and GFLOP/s of the row's nominal work against the float32 matrix-multiply peak measured in the
same run (``bench_training.matmul_peak``). Nominal work per pair: 2 views x (forward and weight gradient of the
layers a step trains, the input gradient of each of them but the lowest, the forward of the frozen layers below:
:func:`nominal_flops_per_pair`; RLL: the mean over its layers, each drawn with the same probability); DTP: the
forward and weight gradients, its inverses and, with noise, the noisy forwards (:func:`dtp_flops_per_pair`). The 1-minute load
average is recorded; a warning says when the machine was busy.

    python benchmarks/bench_tang.py [--samples 2000] [--batch 1000] [--repeats 3] [--threads 2]
        [--methods e2e_bp,autograd,e2e_rf,...,e2e_bp_reference] [--out benchmarks/results/tang.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import matmul_peak, median_range  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "models" / "tang2022"
METHODS = ("e2e_bp", "autograd", "e2e_rf", "e2e_urf", "e2e_dtp", "e2e_dtp_noise", "gll_bp", "gll_rf", "rll_bp", "rll_rf", "sequential",
           "e2e_bp_reference", "e2e_rf_reference", "e2e_dtp_reference")


# ---------------------------------------------------------------------------------------------------
# Every call into neurolearn is in this section (the library's API may move: adapt it here only).
# ---------------------------------------------------------------------------------------------------
def recipe_of(method: str, batch: int) -> tuple[dict | None, str | None]:
    """The resolved recipe timed for ``method`` (``None`` and why when a type it needs is not registered)."""
    from neurolearn import recipe as recipes
    from neurolearn.describe import registered

    over: dict = {"training": {"batch_size": batch, "threads": 0}}
    name = method
    if method.endswith("_reference"):
        name = method[: -len("_reference")]
        over["training"]["engine"] = "reference"
    if method == "e2e_urf":
        name, over["credit"] = "e2e_rf", {"type": "updated_random_feedback"}
    elif method == "e2e_dtp_noise":
        name, over["credit"] = "e2e_dtp", {"inverse_noise": 1.0}
    elif method == "sequential":
        name, over["credit"] = "e2e_bp", {"type": "sequential"}
    elif method in ("gll_bp", "gll_rf"):
        over["credit"] = {"epochs_per_layer": 1}
    path = RECIPES / f"{name}.toml"
    text = path.read_text()
    import tomllib

    raw = tomllib.loads(text)
    for section, kind in (("objective", "objective"), ("credit", "credit")):
        t = over.get(section, {}).get("type", raw.get(section, {}).get("type"))
        if t not in registered(kind):
            return None, f"{kind} type {t!r} is not registered in this checkout"
    try:
        return recipes.resolve(text, str(path), over), None
    except recipes.RecipeError as e:
        return None, str(e)


def make_trainer(recipe: dict, seed: int = 0):
    """``(trainer, objective)`` of a resolved recipe on 28x28 images."""
    from neurolearn import recipe as recipes
    from neurolearn.train import Trainer

    net, objective, credit = recipes.build(recipe, (1, 28, 28))
    return Trainer(net, objective, credit, recipe["training"], seed, None, False), objective


def dtp_inverse_flops(trainer) -> tuple[list[float], float] | None:
    """``(multiply-adds x 2 of each inverse g_l on one image, the inverses' noise sigma)`` when ``trainer`` trains
    by DTP (the geometry from the method's ``inverse_geometry``), else ``None``."""
    from neurolearn.credit.dtp import DTP

    credit, net = trainer.credit, trainer.net
    if not isinstance(credit, DTP):
        return None
    out = []
    for l, g in sorted(credit.inverse_geometry(net).items()):
        # every input cell of h_l feeds C_{l-1} k_h k_w outputs (transposed conv) or every output (dense)
        fan_out = g["out_shape"][0] * math.prod(g["kernel"]) if g["kind"] == "conv_transpose" else math.prod(g["out_shape"])
        out.append(2.0 * math.prod(net.shapes[l]) * fan_out)
    return out, credit.inverse_noise


def load_images(n: int) -> torch.Tensor:
    """The first ``n`` MNIST training images as ``(n, 1, 28, 28)`` (located like recipes' ``source = "mnist"``)."""
    from neurolearn.data import load_dataset

    return load_dataset("mnist").x_train[:n].reshape(-1, 1, 28, 28)


def batches(n: int, batch: int, seed: int, epoch: int):
    """``(index, generator)`` of every batch of one epoch, as the trainer draws them."""
    from neurolearn.data import batch_indices
    from neurolearn.rng import batch_generator

    return [(idx, batch_generator(seed, epoch, b)) for b, idx in enumerate(batch_indices(n, batch, seed, epoch))]


# ---------------------------------------------------------------------------------------------------
def autograd_model(net) -> torch.nn.Module:
    """E-MNIST3 as a plain ``torch.nn.Sequential`` with ``net``'s current weights."""
    import copy

    mods = []
    for layer in net.layers:
        if isinstance(layer, torch.nn.Linear):
            mods += [torch.nn.Flatten(), copy.deepcopy(layer)]
        else:
            mods += [copy.deepcopy(layer), torch.nn.Tanh(), torch.nn.MaxPool2d(2)]
    return torch.nn.Sequential(*mods)


def hinge(z: torch.Tensor, m1: float, m2: float) -> torch.Tensor:
    """Tang et al. 2022 eq. (2) with all negatives: ``sum_s [d(s,s) - m1]_+ + sum_{t != s} [m2 - d(s,t)]_+``,
    ``d(s,t) = |z^A_s - z^B_t|_1`` (the straightforward way: the full distance matrix, autograd for the rest)."""
    B = z.shape[0] // 2
    d = torch.cdist(z[:B], z[B:], p=1)
    eye = torch.eye(B, dtype=torch.bool)
    return torch.relu(d.diagonal() - m1).sum() + torch.relu(m2 - d[~eye]).sum()


def time_autograd(model, opt, objective, x, batch, seed, epoch) -> float:
    """Seconds of one epoch of the straightforward implementation on the same views as ours."""
    t0 = time.perf_counter()
    for idx, g in batches(x.shape[0], batch, seed, epoch):
        views, _ = objective.present(x[idx], None, g)
        loss = hinge(model(views), objective.m1, objective.m2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def forward_flops(net) -> list[float]:
    """Multiply-adds x 2 of each layer's forward pass for one image: a conv layer over its whole map before
    pooling (``C_in k_h k_w`` per output cell), a dense layer ``in x out``."""
    out = []
    for l, layer in enumerate(net.layers):
        if isinstance(layer, torch.nn.Linear):
            out.append(2.0 * layer.in_features * layer.out_features)
            continue
        _, h, w = net.shapes[l]  # the layer's input
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        cells = ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1)
        out.append(2.0 * layer.in_channels * kh * kw * layer.out_channels * cells)
    return out


def dtp_flops_per_pair(net, inverses: list[float], noise: float) -> float:
    """Nominal work of one pair of a DTP step: 2 views x (the forward and the weight gradient of every layer, the
    top target's gradient through the head, each inverse three times -- on ``h_l``, ``hat h_l`` and
    ``f_l(tilde h_{l-1})`` -- and its weight gradient, and with noise the forward of layers ``2 .. L-1`` on the
    noisy inputs): ``2 (2 sum_l f_l + f_L + 4 sum_l i_l + [sigma > 0] sum_{l=2}^{L-1} f_l)``."""
    f = forward_flops(net)
    noisy = sum(f[1:-1]) if noise > 0 else 0.0
    return 2 * (2 * sum(f) + f[-1] + 4 * sum(inverses) + noisy)


def nominal_flops_per_pair(net, method: str, layer: int | None = None) -> float:
    """Nominal work of one pair (module docstring): 2 views x (the forward and the weight gradient of every layer a
    step trains, the input gradient of every trained layer but the lowest, the forward of the frozen layers below).
    E2E: ``2 (3 sum_l f_l - f_0)``; the layer-wise step of layer ``l`` with its 64-cell head ``h_l``:
    ``2 (sum_{k<l} f_k + 2 f_l + 3 h_l)``."""
    f = forward_flops(net)
    if layer is None:
        return 2 * (3 * sum(f) - f[0])
    head = 2.0 * 64 * net.sizes[layer + 1]
    return 2 * (sum(f[:layer]) + 2 * f[layer] + 3 * head)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000, help="images (pairs) per timed epoch")
    ap.add_argument("--batch", type=int, default=1000, help="images (pairs) per batch (the recipes': 1000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="benchmarks/results/tang.json")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"--methods: unknown {', '.join(bad)}; allowed: {', '.join(METHODS)}")
    if min(args.samples, args.batch, args.repeats) < 1 or args.warmup_epochs < 0 or args.threads < 0:
        ap.error("--samples, --batch, --repeats must be >= 1; --warmup-epochs, --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    x = load_images(args.samples)
    n = x.shape[0]
    load_before = os.getloadavg()[0]
    peak = matmul_peak()

    # every timed unit: name -> (setup once, one timed epoch(repeat) -> seconds, nominal flops per pair)
    units, notes = {}, []
    base_recipe, why = recipe_of("e2e_bp", args.batch)
    if base_recipe is None:
        print(f"cannot run: e2e_bp: {why}")
        return 1
    for method in methods:
        if method == "autograd":
            trainer, objective = make_trainer(base_recipe)
            model = autograd_model(trainer.net)
            opt = torch.optim.Adam(model.parameters(), lr=base_recipe["training"]["lr"])
            for e in range(args.warmup_epochs):
                time_autograd(model, opt, objective, x, args.batch, 0, e)
            state = {"epoch": args.warmup_epochs}

            def run(state=state, model=model, opt=opt, objective=objective):
                s = time_autograd(model, opt, objective, x, args.batch, 0, state["epoch"])
                state["epoch"] += 1
                return s

            units["autograd"] = (run, nominal_flops_per_pair(trainer.net, "e2e"), "torch autograd")
            continue
        recipe, why = recipe_of(method, args.batch)
        if recipe is None:
            notes.append(f"skipped {method}: {why}")
            print(notes[-1])
            continue
        if method in ("gll_bp", "gll_rf"):  # epoch l trains layer l (epochs_per_layer = 1): time each layer's step
            for layer in range(3):
                net = make_trainer(recipe)[0].net
                # each repeat: a fresh trainer, layers below trained one epoch each (untimed), layer l timed
                def fresh(recipe=recipe, layer=layer):
                    tr, _ = make_trainer(recipe)
                    tr.fit(x, epochs=layer)
                    t0 = time.perf_counter()
                    tr.fit(x, epochs=layer + 1)
                    return time.perf_counter() - t0

                units[f"{method}_l{layer}"] = (fresh, nominal_flops_per_pair(net, method, layer),
                                               make_trainer(recipe)[0].executor)
            continue
        trainer, _ = make_trainer(recipe)
        trainer.fit(x, epochs=args.warmup_epochs)

        def run(trainer=trainer):
            t0 = time.perf_counter()
            trainer.fit(x, epochs=trainer.epoch + 1)
            return time.perf_counter() - t0

        if method in ("rll_bp", "rll_rf"):  # a uniformly drawn layer per batch: the mean of the layers' steps
            stages = trainer.net.n_layers - 1
            flops = sum(nominal_flops_per_pair(trainer.net, method, layer) for layer in range(stages)) / stages
        elif (inverses := dtp_inverse_flops(trainer)) is not None:
            flops = dtp_flops_per_pair(trainer.net, *inverses)
        else:
            flops = nominal_flops_per_pair(trainer.net, "e2e")
        units[method] = (run, flops, trainer.executor)

    times: dict = {name: [] for name in units}
    for r in range(args.repeats):
        order = list(units) if r % 2 == 0 else list(units)[::-1]
        for name in order:
            times[name].append(1000 * units[name][0]() / n)
    load_after = os.getloadavg()[0]
    ref = statistics.median(times["e2e_bp"]) if "e2e_bp" in times else None
    rows = []
    for name, (_, flops, executor) in units.items():
        med = statistics.median(times[name])
        rows.append({"method": name, "executor": executor, "pairs": n, "batch": args.batch, "s_per_1000_pairs": median_range(times[name]),
                     "ratio_to_e2e_bp": med / ref if ref else None, "gflops": flops / med / 1e6,
                     "fraction_of_peak": flops / med / 1e6 / peak, "nominal_flops_per_pair": flops})
    print_table(rows, peak)
    for note in notes:
        print(note)
    if max(load_before, load_after) > (os.cpu_count() or 1):
        print(f"warning: the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} after, "
              f"{os.cpu_count()} cores): other processes shared the cores, the timings are unreliable")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"peak_gflops": peak, "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "machine": platform.machine(), "load_average_before": load_before,
                               "load_average_after": load_after, "cpu_count": os.cpu_count(), "skipped": notes,
                               "command": "python benchmarks/bench_tang.py " + " ".join(argv or sys.argv[1:]),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def print_table(rows: list[dict], peak: float) -> None:
    """Medians, ranges, ratio to E2E BP, GFLOP/s and the fraction of the measured peak."""
    cols = [("method", 17), ("executor", 15), ("s/1000 pairs", 13), ("range", 15), ("x e2e_bp", 9), ("GFLOP/s", 9), ("% peak", 8)]
    print(f"matrix-multiply peak (float32, 2048^3, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    hdr = " ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(cols))
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        s = r["s_per_1000_pairs"]
        cells = [r["method"], r["executor"], f"{s['median']:.3f}", f"{s['min']:.3f}-{s['max']:.3f}",
                 f"{r['ratio_to_e2e_bp']:.2f}x" if r["ratio_to_e2e_bp"] else "-", f"{r['gflops']:.1f}",
                 f"{100 * r['fraction_of_peak']:.0f}%"]
        print(" ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells, cols))))


if __name__ == "__main__":
    sys.exit(main())
