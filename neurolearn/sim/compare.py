"""Rate vs spiking on the same inputs: how far apart the simulations of one network are.

For a trained network and its spiking conversions (:func:`~neurolearn.sim.to_spiking`: snnTorch and
Brian2) :func:`compare` reports, on the same test inputs and for each simulator:

* direct-association accuracy, ``"av"`` and ``"max"`` (Liu et al. 2024, section 2.2.1; Diehl & Cook
  2015): each output cell is assigned the class it answers most on the labelled assignment set,
  computed from *that simulator's own* responses;
* the Pearson correlation between the rate outputs ``y`` and the spike rates ``count / T`` (which
  estimate ``y``, see ``describes``), and their mean absolute difference;
* how often the spiking k winners (top ``k`` of ``rate - H``, Liu et al. 2024 Eq. 1) equal the rate
  top-k, and their mean overlap; for Brian2 also the winners of its inhibitory kWTA circuit;
* spikes per inference (input, hidden and output cells) and wall-clock time per example;
* accuracy against simulated time (a PNG plot): the same runs recorded at several durations.

``neurolearn compare <recipe | run folder>`` runs it from the command line (:func:`main_compare`);
:func:`compare_network` is the call for a network already trained in Python (``neurolearn run``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .._validate import ParameterError, check_float, check_int
from ..eval.association import MODES, assign_classes, predict_direct
from ..runs import atomic_path, write_json
from .simulators import DT, SIMULATORS, simulator

#: default simulated times (s) at which accuracy is recorded; the last is the comparison's duration
DEFAULT_DURATIONS = (0.01, 0.02, 0.05, 0.1, 0.2)


def topk_agreement(rate: torch.Tensor, spiking: torch.Tensor, k: int, H: torch.Tensor | None = None) -> dict:
    """Fraction of samples whose top-``k`` sets of ``rate - H`` and ``spiking - H`` are equal, and mean overlap."""
    H = torch.zeros(rate.shape[1]) if H is None else torch.as_tensor(H)
    return winners_agreement(_topk_mask(rate, k, H), _topk_mask(spiking, k, H), k)


def winners_agreement(rate_winners: torch.Tensor, spiking_winners: torch.Tensor, k: int) -> dict:
    """``{"equal": fraction of rows with identical 0/1 winner sets, "overlap": mean |both| / k}``."""
    a, b = rate_winners.bool(), spiking_winners.bool()
    overlap = (a & b).sum(1).double() / k
    return {"equal": (a == b).all(1).double().mean().item(), "overlap": overlap.mean().item()}


def _topk_mask(r: torch.Tensor, k: int, H) -> torch.Tensor:
    idx = torch.topk(r.double() - torch.as_tensor(H).double(), k, dim=1).indices
    return torch.zeros(r.shape, dtype=torch.bool).scatter_(1, idx, True)


def _accuracies(assign_r, assign_y, test_r, test_y, n_classes) -> dict:
    a = assign_classes(assign_r, assign_y, n_classes)
    return {f"direct_{m}": (predict_direct(test_r, a, n_classes, m) == test_y).double().mean().item() for m in MODES}


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    c = torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()
    return c if c == c else 0.0  # constant outputs: no correlation


def compare(network, x_test: torch.Tensor, y_test: torch.Tensor, x_assign: torch.Tensor, y_assign: torch.Tensor,
            simulators=("rate", "snntorch", "brian2"), durations=DEFAULT_DURATIONS, k: int | None = None,
            thresholds=None, rate_fn=None, n_classes: int | None = None, seed: int = 0, device=None,
            brian2_target: str = "numpy", brian2_copies: int | None = None, brian2_kwta: bool = True,
            kwta_limit: int = 200, calibration_x: torch.Tensor | None = None) -> dict:
    """Compare the rate network with its spiking simulations on the same inputs (module docstring).

    ``network``: a trained :class:`~neurolearn.networks.MLP`; ``rate_fn(x)`` its rate response
    (default ``network(x)``; for EP the relaxed output). ``simulators``: names among ``"rate"``,
    ``"snntorch"``, ``"brian2"`` (Brian2: one-layer networks). ``durations``: simulated times (s) at
    which accuracy is recorded; the spiking runs last ``max(durations)``. ``k``, ``thresholds``: the
    kWTA competition (``H``) whose winners are compared. Returns a dict with one entry per simulator
    (``direct_av``, ``direct_max``, ``correlation``, ``mean_abs_error``, ``topk``,
    ``spikes_per_inference``, ``seconds_per_example``, ``accuracy_vs_time``, ``describes``).
    """
    sims = tuple(simulators)
    for s in sims:
        if s not in SIMULATORS:
            raise ParameterError(f"compare: simulators must be a subset of {sorted(SIMULATORS)}, got {s!r}")
    if "brian2" in sims and network.n_layers != 1:
        raise ParameterError(f"compare: simulator 'brian2' supports one-layer networks, got {network.n_layers} layers; "
                             "leave 'brian2' out of simulators")
    durations = sorted(set(check_float("compare", "durations (simulated seconds)", d, DT, None) for d in durations))
    if not durations:
        raise ParameterError("compare: durations must list at least one simulated time in seconds")
    n_out = network.sizes[-1]
    if k is not None:
        check_int("compare", "k", k, 1, n_out)
    H = None if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float32).cpu()
    if H is not None and H.shape != (n_out,):
        raise ParameterError(f"compare: thresholds must have shape ({n_out},), got {tuple(H.shape)}")
    for name, x, y in (("test", x_test, y_test), ("assign", x_assign, y_assign)):
        if x.ndim != 2 or x.shape[1] != network.sizes[0] or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ParameterError(f"compare: x_{name} must be (N >= 1, {network.sizes[0]}) and y_{name} (N,), "
                                 f"got {tuple(x.shape)} and {tuple(y.shape)}")
    n_classes = n_classes or int(max(y_test.max(), y_assign.max())) + 1
    steps = int(round(durations[-1] / DT))
    rate_sim = simulator("rate", network, respond=None if rate_fn is None else (lambda net, x: rate_fn(x)), k=k,
                         thresholds=H)
    ra, rt = rate_sim.run(x_assign), rate_sim.run(x_test)
    rate_winners = rate_sim.last_run.winners
    out: dict = {"n_test": int(x_test.shape[0]), "n_assign": int(x_assign.shape[0]), "k": k, "steps": steps,
                 "duration": durations[-1], "durations": durations}
    out["rate"] = {**_accuracies(ra, y_assign, rt, y_test, n_classes), "describes": rate_sim.describes,
                   "seconds_per_example": rate_sim.last_run.seconds / x_test.shape[0]}
    for i, name in enumerate(s for s in sims if s != "rate"):
        kw = {"steps": steps, "seed": seed + 10 * i, "k": k, "thresholds": None if H is None else H.numpy()}
        if name == "snntorch":
            kw.update(device=device, calibration_x=calibration_x if calibration_x is not None else x_assign)
        else:
            kw.update(target=brian2_target, copies=brian2_copies)
        sim = simulator(name, network, **kw)
        sa = sim.run(x_assign, record=durations)
        run_a = sim.last_run
        sim.seed += 1
        st = sim.run(x_test, record=durations)
        run_t = sim.last_run
        res = {**_accuracies(sa, y_assign, st, y_test, n_classes),
               "correlation": _corr(rt, st), "mean_abs_error": (rt - st).abs().mean().item(),
               "spikes_per_inference": run_t.spikes_per_inference,
               "output_spikes_per_inference": run_t.output_spikes_per_inference,
               "seconds_per_example": (run_a.seconds + run_t.seconds) / (x_assign.shape[0] + x_test.shape[0]),
               "accuracy_vs_time": [[t, *_accuracies(ca, y_assign, ct, y_test, n_classes).values()]
                                    for (t, ca), (_, ct) in zip(run_a.checkpoints, run_t.checkpoints)],
               "describes": sim.describes}
        res["examples_per_second"] = 1.0 / max(res["seconds_per_example"], 1e-12)
        if name == "brian2":
            res["target"] = brian2_target
        if k is not None:
            res["topk"] = winners_agreement(rate_winners, run_t.winners, k)
        out[name] = res
    if k is not None and "brian2" in sims and brian2_kwta:
        n_k = min(kwta_limit, x_test.shape[0])
        circ = simulator("brian2", network, steps=steps, seed=seed + 99, target=brian2_target, copies=brian2_copies,
                         kwta_k=k, thresholds=None if H is None else H.numpy())
        circ.run(x_test[:n_k])
        w = circ.last_run.winners
        out["brian2_kwta"] = {"inputs": n_k, **winners_agreement(rate_winners[:n_k], w, k),
                              "winners_per_input": w.sum(1).mean().item()}
    first = next((s for s in ("snntorch", "brian2") if s in out), None)
    if first is not None:  # the headline spiking simulator, flat (the keys `neurolearn run` prints)
        f = out[first]
        out.update(correlation=f["correlation"], mean_abs_rate_error=f["mean_abs_error"], describes=f["describes"],
                   spikes_per_inference=f["spikes_per_inference"],
                   output_spikes_per_inference=f["output_spikes_per_inference"],
                   examples_per_second=f["examples_per_second"],
                   accuracy_vs_steps=[(int(round(t / DT)), av) for t, av, _ in f["accuracy_vs_time"]])
        if "topk" in f:
            out["topk"] = f["topk"]
    return out


def compare_network(network, rate_fn, ds, k: int | None, H: torch.Tensor | None, out_dir: str | Path | None = None,
                    steps: int = 200, record_every: int = 10, test_limit: int = 0, assign_limit: int = 0,
                    seed: int = 0, device=None, brian2: bool = False, brian2_target: str = "numpy",
                    snntorch: bool = True) -> dict:
    """:func:`compare` on a :class:`~neurolearn.data.Dataset` (assignment set: its training split), for a
    network trained in Python; writes ``compare.json`` and ``accuracy_vs_time.png`` to ``out_dir``.

    ``rate_fn(x)``: the rate response (``None``: ``network(x)``); ``steps`` of 1 ms, accuracy recorded
    every ``record_every`` steps; ``test_limit`` / ``assign_limit``: use only the first that many.
    """
    check_int("compare_network", "steps", steps, 1)
    check_int("compare_network", "record_every", record_every, 1)
    xa, ya = ds.x_train[: assign_limit or None], ds.y_train[: assign_limit or None]
    xt, yt = ds.x_test[: test_limit or None], ds.y_test[: test_limit or None]
    durations = [s * DT for s in range(record_every, steps, record_every)] + [steps * DT]
    sims = ("rate",) + (("snntorch",) if snntorch else ()) + (("brian2",) if brian2 else ())
    res = compare(network, xt, yt, xa, ya, sims, durations, k, H, rate_fn, ds.n_classes, seed, device, brian2_target)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(out_dir / "compare.json", res)
        plot_accuracy_vs_time(res, out_dir / "accuracy_vs_time.png")
    return res


def plot_accuracy_vs_time(res: dict, path: str | Path) -> None:
    """PNG: direct-association accuracy ("av") of each spiking simulator against simulated time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, label in (("snntorch", "snnTorch"), ("brian2", "Brian2")):
        if name in res:
            t, av, _ = zip(*res[name]["accuracy_vs_time"])
            ax.plot([1e3 * s for s in t], [100 * a for a in av], "o-", ms=3, label=f"{label} (spiking)")
    ax.axhline(100 * res["rate"]["direct_av"], color="k", ls="--", label="rate")
    ax.set_xscale("log")
    ax.set_xlabel("simulated time (ms)")
    ax.set_ylabel("direct association accuracy, av (%)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def format_compare(res: dict) -> str:
    """The comparison as a table (one row per simulator) and the agreement lines."""
    rate = res["rate"]
    head = (f"{'simulator':<10}{'direct av':>10}{'direct max':>11}{'av - rate':>10}{'corr':>7}{'top-k =':>9}"
            f"{'spikes/inf':>11}{'s/example':>11}")
    lines = [head, "-" * len(head),
             f"{'rate':<10}{100 * rate['direct_av']:>9.2f}%{100 * rate['direct_max']:>10.2f}%{'':>10}{'':>7}{'':>9}"
             f"{'':>11}{rate['seconds_per_example']:>11.5f}"]
    for name, label in (("snntorch", "snnTorch"), ("brian2", "Brian2")):
        if name in res:
            r = res[name]
            topk = f"{100 * r['topk']['equal']:>8.1f}%" if "topk" in r else f"{'-':>9}"
            lines.append(f"{label:<10}{100 * r['direct_av']:>9.2f}%{100 * r['direct_max']:>10.2f}%"
                         f"{100 * (r['direct_av'] - rate['direct_av']):>+9.2f}p{r['correlation']:>7.3f}{topk}"
                         f"{r['spikes_per_inference']:>11.0f}{r['seconds_per_example']:>11.5f}")
    lines.append(f"{res['n_test']} test inputs, cells assigned on {res['n_assign']} inputs by each simulator's own responses; "
                 f"{res['steps']} steps of 1 ms" + ("" if "brian2" not in res else f"; Brian2 target {res['brian2']['target']}"))
    if res.get("k"):
        lines.append(f"top-k =: the spiking k = {res['k']} winners (top k of rate - H) equal the rate top-k, % of inputs")
    if "brian2_kwta" in res:
        b = res["brian2_kwta"]
        lines.append(f"Brian2 kWTA circuit (inhibitory population, thresholds H): winners = rate top-k for "
                     f"{100 * b['equal']:.1f}% of {b['inputs']} inputs (mean overlap {100 * b['overlap']:.1f}%, "
                     f"{b['winners_per_input']:.1f} winners per input)")
    for name in ("rate", "snntorch", "brian2"):
        if name in res:
            lines.append(f"{name}: {res[name]['describes']}")
    return "\n".join(lines)


def load_run(folder: str | Path):
    """Network, rate response, dataset and ``H`` of a ``neurolearn run`` folder (``recipe.toml`` and
    ``weights.safetensors``); returns ``(recipe, network, rate_fn, dataset, H)``."""
    from .. import recipe as recipes
    from ..experiment import load_recipe_data
    from ..runs import load_tensors

    folder = Path(folder)
    missing = [f for f in ("recipe.toml", "weights.safetensors") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"run folder {folder} lacks {', '.join(missing)}: give a folder written by `neurolearn run`")
    recipe = recipes.resolve((folder / "recipe.toml").read_text(), str(folder / "recipe.toml"))
    ds = load_recipe_data(recipe)
    net, _, credit = recipes.build(recipe, ds.n_features)
    w = load_tensors(folder / "weights.safetensors")
    for i, layer in enumerate(net.layers):
        layer.load_state_dict({key.split(".", 2)[2]: v for key, v in w.items() if key.startswith(f"layers.{i}.")})
    net.eval()
    return recipe, net, (lambda x: credit.respond(net, x)), ds, w.get("objective.H")


def main_compare(argv) -> int:
    """``neurolearn compare [RECIPE | RUN_FOLDER]``: rate vs spiking on the test set, table + JSON + PNG.

    A run folder (written by ``neurolearn run``) is compared as trained; a recipe is trained first.
    """
    from .. import recipe as recipes
    from ..experiment import run_recipe

    ap = argparse.ArgumentParser(prog="neurolearn compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", help="run folder, recipe path or built-in recipe name (default: the main job)")
    ap.add_argument("--out", help="output folder (default: <run folder>/compare or runs/compare-<name>-<time>)")
    ap.add_argument("--steps", type=int, default=200, help="simulated steps of 1 ms per input (default 200)")
    ap.add_argument("--record-every", type=int, default=10, help="record accuracy every this many steps")
    ap.add_argument("--test-limit", type=int, default=0, help="first N test inputs only (0: all)")
    ap.add_argument("--assign-limit", type=int, default=0, help="first N training inputs to assign cells (0: all)")
    ap.add_argument("--target", default="numpy", choices=["numpy", "cython"], help="Brian2 code-generation target")
    ap.add_argument("--no-brian2", action="store_true", help="skip the Brian2 simulation")
    args = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.source and Path(args.source).is_dir():
        recipe, net, rate_fn, ds, H = load_run(args.source)
        out = Path(args.out or Path(args.source) / f"compare-{stamp}")
    else:
        label, text = recipes.find_recipe(args.source)
        recipe = recipes.resolve(text, label, {"eval": {"locality": False, "linear": False, "spiking": "none"}})
        out = Path(args.out or f"runs/compare-{recipe['name']}-{stamp}")
        metrics = run_recipe(recipe, out, progress=False, log=lambda s: None, keep=True)
        net, credit, ds, state = metrics.pop("_objects")
        H = getattr(state, "H", None)
        rate_fn = lambda x: credit.respond(net, x)  # noqa: E731
    k = recipe["objective"].get("k")
    res = compare_network(net, rate_fn, ds, k, H, out, args.steps, args.record_every, args.test_limit,
                          args.assign_limit, seed=recipe["seed"], brian2=net.n_layers == 1 and not args.no_brian2,
                          brian2_target=args.target)
    print(format_compare(res))
    print(f"written: {out / 'compare.json'}, {out / 'accuracy_vs_time.png'}")
    return 0
