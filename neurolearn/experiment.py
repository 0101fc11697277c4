"""Run a recipe end to end: data, network, training, evaluation, run folder (DESIGN.md section 6).

``run_recipe(recipe, out_dir)`` trains the network the recipe describes, evaluates it by direct
association ("av" and "max") and a linear classifier on the frozen outputs -- beside the same network
untrained -- and writes to ``out_dir``: ``recipe.toml`` (resolved), ``metrics.json``,
``weights.safetensors``, ``receptive_fields.png`` and the training checkpoints. ``resume=True``
continues an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch

from . import recipe as recipes
from .data import Dataset, load_dataset
from .eval.association import direct_association_accuracy
from .eval.linear import linear_probe
from .eval.plots import receptive_fields_png
from .runs import save_tensors, write_json, write_text
from .train import Trainer


#: named IDX datasets: the folder names searched under $NEUROLEARN_DATA and the usual places
NAMED = {"mnist": ("mnist",), "fashion-mnist": ("fashion-mnist", "fashion_mnist")}
SEARCH = ("../shared/data", "/work/shared/data", "/usr/share/datasets", "~/.neurolearn/data")


def locate(name: str) -> str:
    """Folder of a named IDX dataset (``mnist``, ``fashion-mnist``): ``$NEUROLEARN_DATA/<name>`` first,
    then ``../shared/data``, ``/usr/share/datasets`` (Debian's dataset-fashion-mnist) and ``~/.neurolearn/data``."""
    roots = ([os.environ["NEUROLEARN_DATA"]] if os.environ.get("NEUROLEARN_DATA") else []) + list(SEARCH)
    tried = []
    for root in roots:
        for sub in NAMED[name]:
            p = Path(root).expanduser() / sub
            tried.append(str(p))
            if p.is_dir():
                return str(p)
    raise FileNotFoundError(
        f"[data] source {name!r}: no folder found (nothing is ever downloaded); looked in {', '.join(tried)}. "
        "Set NEUROLEARN_DATA to the folder holding it or give the folder path as source."
    )


def load_recipe_data(recipe: dict) -> Dataset:
    """The dataset a resolved recipe names, cut to its ``train_limit`` / ``test_limit``."""
    d = recipe["data"]
    kw = {"test_fraction": d["test_fraction"], "seed": recipe["seed"]} if d["source"] == "digits" else {}
    source = locate(d["source"]) if d["source"] in NAMED else d["source"]
    ds = load_dataset(source, **kw)
    if d["train_limit"] or d["test_limit"]:
        ds = ds.subset(d["train_limit"] or None, d["test_limit"] or None)
    return ds


@torch.no_grad()
def responses(credit, net, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """The network's outputs for ``x`` (in chunks, computed on the network's device, returned on the CPU),
    as the credit method defines them."""
    net.eval()
    dev = next(net.parameters()).device
    return torch.cat([credit.respond(net, x[i : i + chunk].to(dev)).cpu() for i in range(0, x.shape[0], chunk)], 0)


def evaluate(credit, net, ds: Dataset, ev: dict, seed: int = 0) -> dict:
    """Direct association ("av", "max") and linear-classifier test accuracy of ``net`` on ``ds``."""
    r_train, r_test = responses(credit, net, ds.x_train), responses(credit, net, ds.x_test)
    out: dict = {}
    if ev["direct_association"]:
        da = direct_association_accuracy(r_train, ds.y_train, r_test, ds.y_test, ds.n_classes)
        out["direct_av"], out["direct_max"] = da["av"], da["max"]
    if ev["linear"]:
        lp = linear_probe(r_train, ds.y_train, r_test, ds.y_test, ds.n_classes, epochs=ev["linear_epochs"],
                          lr=ev["linear_lr"], decay=ev["linear_decay"], schedule=ev["linear_schedule"], dropout=ev["linear_dropout"], seed=seed)
        out["linear"] = lp["test"]
    active = (r_test > 0).double().sum(1)
    out["active_cells_per_input"] = active.mean().item()
    return out


def setup_checkable(recipe: dict):
    """``(factory, n_populations)`` of the training step a recipe sets up, for the locality checker.

    Backprop on one layer with the self-defined target is the delta rule with the winners delivered
    by the KWTA circuit; with more layers it is backprop's chain rule; equilibrium propagation is the
    contrastive Hebbian rule on every layer. Sizes are drawn small: the contract does not depend on them.
    """
    from .credit import Backprop, EquilibriumProp
    from .objectives import self_defined_delta_checkable

    n_pop = len(recipe["network"]["sizes"]) + 1
    out_act = recipe["network"]["output_activation"]
    if recipe["credit"]["type"] == "equilibrium":
        return (lambda s: EquilibriumProp().checkable(s)), n_pop
    if n_pop == 2 and recipe["objective"]["type"] == "self_defined":
        k = recipe["objective"]["k"]
        return (lambda s: self_defined_delta_checkable(s[0], s[1], k, out_act)), n_pop
    hidden = recipe["network"]["hidden_activation"]
    pathway = "KWTA" if recipe["objective"]["type"] == "self_defined" else "target"
    return (lambda s: Backprop().checkable(s, pathway, out_act, hidden)), n_pop


def locality_verdict(recipe: dict, seed: int = 0) -> dict:
    """Check the training step of ``recipe`` (see :func:`setup_checkable`); a dict for metrics.json."""
    from .locality import check

    factory, n = setup_checkable(recipe)
    report = check(factory, n_populations=n, seed=seed, max_examples=15)
    out = {"rule": report.name, "local": report.local, "violations": [str(v) for v in report.violations],
           "seconds": report.seconds, "text": str(report)}
    obj = recipe["objective"]
    if obj["type"] == "self_defined":  # the homeostasis circuit that feeds the KWTA target, checked too
        from .circuits import homeostasis_checkable

        mode, gamma, eta = obj["mode"], obj["gamma"], obj["eta"]
        h = check(lambda s: homeostasis_checkable(s[0], mode, gamma, 0.1, eta), n_populations=1, seed=seed,
                  max_examples=15)
        out["homeostasis"] = {"rule": h.name, "local": h.local, "violations": [str(v) for v in h.violations],
                              "contract": next(iter(h.contracts.values())).describe()}
    return out


def format_table(rows: dict[str, dict]) -> str:
    """Rows (e.g. untrained / trained) of accuracies as a fixed-width table (percent)."""
    cols = [("direct_av", "direct av"), ("direct_max", "direct max"), ("linear", "linear")]
    cols = [c for c in cols if any(c[0] in r for r in rows.values())]
    head = f"{'network':<12}" + "".join(f"{title:>12}" for _, title in cols)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<12}" + "".join(f"{100 * r[k]:>11.2f}%" if k in r else f"{'-':>12}" for k, _ in cols))
    return "\n".join(lines)


def run_recipe(recipe: dict, out_dir: str | Path, resume: bool = False, progress: bool = True,
               dataset: Dataset | None = None, log: Callable[[str], None] = print, keep: bool = False) -> dict:
    """Train and evaluate the resolved ``recipe``; write the run folder; return the metrics.

    With ``keep=True`` the metrics also carry ``"_objects": (net, credit, dataset, objective state)``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not resume:
        raise FileExistsError(f"run folder {out_dir} exists and is not empty: pass --resume to continue it or choose another --out")
    if resume:
        saved = out_dir / "recipe.toml"
        if saved.exists():
            recipe = recipes.resolve(saved.read_text(), str(saved))
    tr = recipe["training"]
    if tr["threads"]:
        torch.set_num_threads(tr["threads"])
    ds = dataset if dataset is not None else load_recipe_data(recipe)
    net, objective, credit = recipes.build(recipe, ds.n_features)
    device = torch.device(tr["device"])
    net.to(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "recipe.toml", recipes.dumps(recipe))
    log(f"recipe {recipe['name']}: {recipe['description']}")
    log(f"data {ds.name}: {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test, network {net.sizes}, "
        f"{type(credit).__name__}, {type(objective).__name__}; run folder {out_dir}")

    metrics: dict = {"recipe": recipe["name"], "data": ds.name, "sizes": list(net.sizes),
                     "n_train": ds.x_train.shape[0], "n_test": ds.x_test.shape[0]}
    ev = recipe["eval"]
    if ev["untrained_baseline"]:
        metrics["untrained"] = evaluate(credit, net, ds, ev, recipe["seed"])

    trainer = Trainer(net, objective, credit, tr, recipe["seed"], out_dir, progress)
    if resume and trainer.load_checkpoint():
        log(f"resumed after epoch {trainer.epoch}")
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    if hasattr(credit, "solver_stats"):
        credit.solver_stats.clear()  # count the training's solves only (not the untrained evaluation)
    trainer.fit(x, y if objective.needs_labels else None)
    metrics["epochs"] = trainer.epoch
    metrics["history"] = trainer.history
    metrics["train_seconds"] = trainer.train_seconds
    metrics["seconds_per_1000_samples"] = trainer.seconds_per_1000
    stats = getattr(credit, "solver_stats", None)
    if stats:  # the EP fixed-point solver: sweeps per solve and Euler fallbacks, per phase
        metrics["solver"] = {ph: {"solves": stats[f"{ph}_solves"], "sweeps_per_solve": stats[f"{ph}_sweeps"] / stats[f"{ph}_solves"],
                                  "euler_fallbacks": stats[f"{ph}_fallbacks"]}
                             for ph in ("free", "nudged") if stats[f"{ph}_solves"]}
    t0 = time.perf_counter()
    metrics["trained"] = evaluate(credit, net, ds, ev, recipe["seed"])
    metrics["eval_seconds"] = time.perf_counter() - t0
    net.cpu()
    if isinstance(trainer.state, torch.nn.Module):
        trainer.state.cpu()

    weights = {f"layers.{i}.{k}": v for i, layer in enumerate(net.layers) for k, v in layer.state_dict().items()}
    if isinstance(trainer.state, torch.nn.Module):
        weights.update({f"objective.{k}": v for k, v in trainer.state.state_dict().items()})
    save_tensors(out_dir / "weights.safetensors", weights, {"recipe": recipe["name"], "sizes": list(net.sizes)})
    if ev["receptive_fields"] and len(ds.image_shape) == 2:
        r = responses(credit, net, ds.x_test)
        order = torch.argsort((r > 0).double().mean(0), descending=True)
        receptive_fields_png(net.layers[0].weight, ds.image_shape, out_dir / "receptive_fields.png",
                             ev["receptive_fields"], order, f"{recipe['name']}: most active cells")
    lines = []
    if ev["locality"]:
        loc = locality_verdict(recipe, recipe["seed"])
        metrics["locality"] = loc
        lines.append(f"locality of the training step ({loc['rule']}): {'LOCAL' if loc['local'] else 'NON-LOCAL'}"
                     + ("" if loc["local"] else " -- " + "; ".join(loc["violations"])))
        if "homeostasis" in loc:
            h = loc["homeostasis"]
            lines.append(f"locality of the homeostasis ({h['rule']}, {h['contract']}): "
                         + ("LOCAL" if h["local"] else "NON-LOCAL -- " + "; ".join(sorted({v.split(': ')[-1] for v in h["violations"]})))
                         + ("" if h["local"] else " (each H_i reads only its own cell's wins, averaged over the batch's "
                            "samples; [objective] mode = 'sequential' presents them as a sequence: local)"))
    if ev["spiking"] != "none":
        from .sim.compare import compare_network

        sp = compare_network(net, lambda x: credit.respond(net, x), ds, recipe["objective"]["k"],
                             getattr(trainer.state, "H", None), out_dir, ev["spiking_steps"],
                             brian2=ev["spiking"] in ("brian2", "both") and net.n_layers == 1)
        metrics["spiking"] = sp
        rate = 100 * sp["rate"]["direct_av"]
        if ev["spiking"] in ("snntorch", "both"):
            lines.append(f"spiking (snnTorch, {sp['steps']} steps): direct av {100 * sp['snntorch']['direct_av']:.2f}% "
                         f"vs rate {rate:.2f}%; rate/spike-rate correlation {sp['correlation']:.3f}")
        if "brian2" in sp:
            lines.append(f"spiking (Brian2, {sp['steps']} steps): direct av {100 * sp['brian2']['direct_av']:.2f}% "
                         f"vs rate {rate:.2f}% ({sp['brian2']['seconds_per_example']:.3f} s per example)")
    for ph, st in metrics.get("solver", {}).items():
        lines.append(f"fixed-point solver, {ph} phase: {st['sweeps_per_solve']:.1f} sweeps per solve "
                     f"({st['solves']} solves, {st['euler_fallbacks']} Euler fallbacks)")
    metrics["extra_lines"] = lines
    rows = {}
    if "untrained" in metrics:
        rows["untrained"] = metrics["untrained"]
    rows["trained"] = metrics["trained"]
    metrics["table"] = format_table(rows)
    write_json(out_dir / "metrics.json", metrics)
    if keep:
        metrics["_objects"] = (net, credit, ds, trainer.state)
    return metrics
