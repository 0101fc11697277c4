"""Run a recipe end to end as stages: load data, build, validate, train, evaluate, report (DESIGN.md section 6).

    run = Run.prepare(recipe, out_dir)   # load data, build the parts, validate the whole setup --
                                         # every incompatible combination rejected, naming the keys;
                                         # nothing is written before this stage has passed
    run.train()                          # writes recipe.toml, checkpoints after every epoch
    run.evaluate()                       # direct association, linear probe, locality, spiking
    run.report()                         # metrics.json, weights.safetensors, receptive_fields.png

``run_recipe(recipe, out_dir)`` does all of it and returns the metrics. Evaluation: direct association
("av" and "max") and a linear classifier on the frozen outputs, beside the same network untrained;
the locality of the training step and of the objective's circuits (the checker,
:mod:`neurolearn.locality`); with ``[eval] spiking``, the trained network in snnTorch / Brian2.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import recipe as recipes
from ._validate import ParameterError
from .data import Dataset, load_dataset
from .eval.association import direct_association_accuracy
from .eval.linear import linear_probe
from .eval.plots import receptive_fields_png
from .runs import save_tensors, write_json, write_text
from .train import Trainer


class SetupError(ValueError):
    """The recipe's parts cannot work together (found before anything is written; the message names the keys)."""


#: named IDX datasets and the folder names searched for them
NAMED = {"mnist": ("mnist",), "fashion-mnist": ("fashion-mnist", "fashion_mnist")}


def locate(name: str) -> str:
    """Folder of a named IDX dataset: ``$NEUROLEARN_DATA/<name>``, ``~/.neurolearn/data/<name>``,
    ``/usr/share/datasets/<name>``."""
    import os

    roots = ([os.environ["NEUROLEARN_DATA"]] if os.environ.get("NEUROLEARN_DATA") else []) + [
        "~/.neurolearn/data", "/usr/share/datasets"]
    tried = []
    for root in roots:
        for sub in NAMED[name]:
            p = Path(root).expanduser() / sub
            tried.append(str(p))
            if p.is_dir():
                return str(p)
    raise FileNotFoundError(f"[data] source {name!r}: no folder found (nothing is ever downloaded); looked in "
                            f"{', '.join(tried)}. Set NEUROLEARN_DATA to the folder holding it or give the folder path.")


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
    """The network's outputs for ``x`` (in chunks, on the network's device, returned on the CPU),
    as the credit method defines them."""
    net.eval()
    dev = next(net.parameters()).device
    return torch.cat([credit.respond(net, x[i: i + chunk].to(dev)).cpu() for i in range(0, x.shape[0], chunk)], 0)


def evaluate(credit, net, ds: Dataset, ev: dict, seed: int = 0) -> dict:
    """Direct association ("av", "max") and linear-classifier test accuracy of ``net`` on ``ds``."""
    r_train, r_test = responses(credit, net, ds.x_train), responses(credit, net, ds.x_test)
    out: dict = {}
    if ev["direct_association"]:
        da = direct_association_accuracy(r_train, ds.y_train, r_test, ds.y_test, ds.n_classes)
        out["direct_av"], out["direct_max"] = da["av"], da["max"]
    if ev["linear"]:
        lp = linear_probe(r_train, ds.y_train, r_test, ds.y_test, ds.n_classes, epochs=ev["linear_epochs"],
                          lr=ev["linear_lr"], decay=ev["linear_decay"], schedule=ev["linear_schedule"],
                          dropout=ev["linear_dropout"], seed=seed)
        out["linear"] = lp["test"]
    out["active_cells_per_input"] = (r_test > 0).double().sum(1).mean().item()
    return out


def setup_checkables(recipe: dict, objective=None, credit=None) -> list:
    """``[(label, factory, n_populations)]``: the training step the recipe sets up (its credit method's
    checkable on an MLP of the recipe's depth, drawn small: contracts do not depend on sizes) and the
    circuits of its objective (e.g. the homeostasis of the self-defined target)."""
    if objective is None or credit is None:
        parts = recipes.describe_recipe(recipe)
        objective, credit = parts["objective"], parts["credit"]
    net_cfg = recipe["network"]
    n_pop = (len(net_cfg["sizes"]) if "sizes" in net_cfg else len(net_cfg["layers"])) + 1
    out_act, hidden = net_cfg["output_activation"], net_cfg["hidden_activation"]
    items = [("step", lambda s: credit.checkable(s, objective.pathway, out_act, hidden), n_pop)]
    for label, factory, n in objective.circuit_checkables():
        items.append((label, factory, n))
    return items


def locality_verdict(recipe: dict, seed: int = 0, objective=None, credit=None) -> dict:
    """Check the training step of ``recipe`` and its objective's circuits; a dict for metrics.json."""
    from .locality import check

    out: dict = {}
    for label, factory, n in setup_checkables(recipe, objective, credit):
        report = check(factory, n_populations=n, seed=seed, max_examples=15)
        entry = {"rule": report.name, "local": report.local, "violations": [str(v) for v in report.violations],
                 "seconds": report.seconds, "contract": "; ".join(sorted({c.describe() for c in report.contracts.values()}))}
        if label == "step":
            out.update(entry, text=str(report))
        else:
            out[label] = entry
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


class Run:
    """One recipe run, stage by stage (see module docstring). Attributes after :meth:`prepare`:
    ``recipe`` (resolved dict), ``parts`` (the descriptions), ``dataset``, ``net``, ``objective``,
    ``credit``, ``trainer``, ``metrics``; ``warnings`` lists what was legal but suspect."""

    def __init__(self, recipe: dict, out_dir: Path, dataset: Dataset, net, objective, credit, trainer,
                 log: Callable[[str], None], resume: bool, notes: list[str]):
        self.recipe, self.out_dir, self.dataset = recipe, out_dir, dataset
        self.net, self.objective, self.credit, self.trainer = net, objective, credit, trainer
        self.log, self.resume, self.warnings = log, resume, notes
        self.metrics: dict = {"recipe": recipe["name"], "data": dataset.name, "sizes": list(net.sizes),
                              "n_train": dataset.x_train.shape[0], "n_test": dataset.x_test.shape[0]}
        self._written = False

    # ------------------------------------------------------------------ stages 1-3: load, build, validate
    @classmethod
    def prepare(cls, recipe: dict, out_dir: str | Path, resume: bool = False, progress: bool = True,
                dataset: Dataset | None = None, log: Callable[[str], None] = print) -> "Run":
        """Load the data, build the parts and validate the whole setup; writes nothing."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise FileExistsError(f"--out {out_dir} exists and is not a folder")
        if not resume and out_dir.exists() and any(out_dir.iterdir()):
            raise FileExistsError(f"run folder {out_dir} exists and is not empty: pass --resume to continue it or "
                                  "choose another --out")
        if resume and not (out_dir / "recipe.toml").exists():
            raise FileNotFoundError(f"--resume: {out_dir} holds no run (no recipe.toml): nothing to resume; "
                                    "drop --resume to start a new run there")
        parts = recipes.describe_recipe(recipe)
        tr, ev = parts["training"], recipe["eval"]
        t0 = time.perf_counter()
        ds = dataset if dataset is not None else load_recipe_data(recipe)
        log(f"data {ds.name}: {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test "
            f"({time.perf_counter() - t0:.1f} s)")
        shape = tuple(ds.image_shape) if len(ds.image_shape) != 1 else (ds.n_features,)
        if recipe["network"].get("type") == "feedforward" and len(shape) == 2:
            shape = (1,) + shape  # one channel
        try:
            net = parts["network"].build(shape, seed=recipe["seed"])
        except ParameterError as e:
            raise SetupError(f"[network] {e}") from None
        objective, credit = parts["objective"], parts["credit"]
        notes: list[str] = []
        try:
            if objective.needs_labels and ds.n_classes > net.sizes[-1]:
                raise ParameterError(f"{type(objective).__name__}: the data has {ds.n_classes} classes but the network "
                                     f"only {net.sizes[-1]} output cells")
            net.to(torch.device(tr.device))
            trainer = Trainer(net, objective, credit, tr, recipe["seed"], out_dir, progress)
        except ParameterError as e:
            raise SetupError(f"{recipe.get('name', 'recipe')}: the parts do not fit together: {e} "
                             "(keys in [network], [objective], [credit], [training])") from None
        if ev["spiking"] != "none":
            why = credit.spiking_support(net)
            if why:
                raise SetupError(f"[eval] spiking = {ev['spiking']!r} cannot run this network: {why}; "
                                 "set [eval] spiking = \"none\"")
            if ev["spiking"] in ("brian2", "both") and net.n_layers > 1:
                notes.append("[eval] spiking: Brian2 runs one-layer networks only; this network is compared in snnTorch only")
        if ev["receptive_fields"] and not isinstance(net.layers[0], torch.nn.Linear):
            notes.append("[eval] receptive_fields: drawn for dense first layers only; none for this network")
        for n in notes:
            warnings.warn(n, stacklevel=2)
        return cls(recipe, out_dir, ds, net, objective, credit, trainer, log, resume, notes)

    # ------------------------------------------------------------------ stage 4: train
    def train(self) -> None:
        """Write ``recipe.toml``, resume from the last checkpoint if asked, train."""
        r, tr = self.recipe, self.trainer
        if tr.config.threads:
            torch.set_num_threads(tr.config.threads)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            write_text(self.out_dir / "recipe.toml", recipes.dumps(r))
        self.log(f"recipe {r['name']}: {r['description']}")
        self.log(f"network {self.net.sizes}, {type(self.credit).__name__}, {type(self.objective).__name__}, "
                 f"executor {tr.executor}; run folder {self.out_dir}")
        if self.recipe["eval"]["untrained_baseline"]:
            t0 = time.perf_counter()
            self.metrics["untrained"] = evaluate(self.credit, self.net, self.dataset, r["eval"], r["seed"])
            self.log(f"untrained baseline evaluated ({time.perf_counter() - t0:.1f} s)")
        if self.resume and tr.load_checkpoint():
            self.log(f"resumed after epoch {tr.epoch}")
        ds = self.dataset
        tr.fit(ds.x_train, ds.y_train if self.objective.needs_labels else None)
        m = self.metrics
        m["epochs"], m["history"] = tr.epoch, tr.history
        m["train_seconds"], m["seconds_per_1000_samples"] = tr.train_seconds, tr.seconds_per_1000
        m["executor"] = tr.executor
        stats = tr.credit_state.get("solver")
        if stats:  # the EP fixed-point solver: sweeps per solve and Euler fallbacks, per phase
            m["solver"] = {ph: {"solves": stats[f"{ph}_solves"], "sweeps_per_solve": stats[f"{ph}_sweeps"] / stats[f"{ph}_solves"],
                                "euler_fallbacks": stats.get(f"{ph}_fallbacks", 0)}
                           for ph in ("free", "nudged") if stats.get(f"{ph}_solves")}

    # ------------------------------------------------------------------ stage 5: evaluate
    def evaluate(self) -> None:
        """Accuracy of the trained network, locality verdicts, spiking comparison."""
        r, ev, m = self.recipe, self.recipe["eval"], self.metrics
        t0 = time.perf_counter()
        m["trained"] = evaluate(self.credit, self.net, self.dataset, ev, r["seed"])
        m["eval_seconds"] = time.perf_counter() - t0
        self.log(f"trained network evaluated ({m['eval_seconds']:.1f} s)")
        lines = []
        if ev["locality"]:
            t0 = time.perf_counter()
            if not all(isinstance(layer, torch.nn.Linear) for layer in self.net.layers):
                m["locality"] = {"checked": False, "why": "the checker has no convolutional (weight-shared) layers yet"}
                lines.append("locality: not checked (the checker has no convolutional layers yet)")
            else:
                loc = locality_verdict(r, r["seed"], self.objective, self.credit)
                m["locality"] = loc
                lines.append(f"locality of the training step ({loc['rule']}): {'LOCAL' if loc['local'] else 'NON-LOCAL'}"
                             + ("" if loc["local"] else " -- " + "; ".join(loc["violations"])))
                for label, h in loc.items():
                    if isinstance(h, dict) and "rule" in h:
                        lines.append(f"locality of the {label} ({h['rule']}, {h['contract']}): "
                                     + ("LOCAL" if h["local"] else "NON-LOCAL -- "
                                        + "; ".join(sorted({v.split(': ')[-1] for v in h["violations"]}))))
            self.log(f"locality checked ({time.perf_counter() - t0:.1f} s)")
        if ev["spiking"] != "none":
            from .sim.compare import compare_network

            t0 = time.perf_counter()
            net, credit = self.net, self.credit
            sp = compare_network(net, lambda x: credit.respond(net, x), self.dataset, getattr(self.objective, "k", 1),
                                 getattr(self.trainer.state, "H", None), self.out_dir, ev["spiking_steps"],
                                 brian2=ev["spiking"] in ("brian2", "both") and net.n_layers == 1)
            m["spiking"] = sp
            self.log(f"spiking comparison done ({time.perf_counter() - t0:.1f} s)")
            rate = 100 * sp["rate"]["direct_av"]
            if ev["spiking"] in ("snntorch", "both"):
                lines.append(f"spiking (snnTorch, {sp['steps']} steps): direct av {100 * sp['snntorch']['direct_av']:.2f}% "
                             f"vs rate {rate:.2f}%; rate/spike-rate correlation {sp['correlation']:.3f}")
            if "brian2" in sp:
                lines.append(f"spiking (Brian2, {sp['steps']} steps): direct av {100 * sp['brian2']['direct_av']:.2f}% "
                             f"vs rate {rate:.2f}% ({sp['brian2']['seconds_per_example']:.3f} s per example)")
        for ph, st in m.get("solver", {}).items():
            lines.append(f"fixed-point solver, {ph} phase: {st['sweeps_per_solve']:.1f} sweeps per solve "
                         f"({st['solves']} solves, {st['euler_fallbacks']} Euler fallbacks)")
        lines += [f"note: {n}" for n in self.warnings]
        m["extra_lines"] = lines
        rows = {}
        if "untrained" in m:
            rows["untrained"] = m["untrained"]
        rows["trained"] = m["trained"]
        m["table"] = format_table(rows)

    # ------------------------------------------------------------------ stage 6: report
    def report(self) -> dict:
        """Write ``weights.safetensors``, ``receptive_fields.png`` and ``metrics.json``; return the metrics."""
        r, ds, net = self.recipe, self.dataset, self.net
        net.cpu()
        state = self.trainer.state
        if isinstance(state, torch.nn.Module):
            state.cpu()
        weights = {f"layers.{i}.{k}": v for i, layer in enumerate(net.layers) for k, v in layer.state_dict().items()}
        if isinstance(state, torch.nn.Module):
            weights.update({f"objective.{k}": v for k, v in state.state_dict().items()})
        save_tensors(self.out_dir / "weights.safetensors", weights, {"recipe": r["name"], "sizes": list(net.sizes)})
        ev = r["eval"]
        if ev["receptive_fields"] and len(ds.image_shape) == 2 and isinstance(net.layers[0], torch.nn.Linear):
            resp = responses(self.credit, net, ds.x_test)
            order = torch.argsort((resp > 0).double().mean(0), descending=True)
            receptive_fields_png(net.layers[0].weight, ds.image_shape, self.out_dir / "receptive_fields.png",
                                 ev["receptive_fields"], order, f"{r['name']}: most active cells")
        write_json(self.out_dir / "metrics.json", self.metrics)
        return self.metrics


def run_recipe(recipe: dict, out_dir: str | Path, resume: bool = False, progress: bool = True,
               dataset: Dataset | None = None, log: Callable[[str], None] = print, keep: bool = False) -> dict:
    """Train and evaluate the resolved ``recipe`` stage by stage (:class:`Run`); return the metrics.

    With ``keep=True`` the metrics also carry ``"_objects": (net, credit, dataset, objective state)``.
    """
    run = Run.prepare(recipe, out_dir, resume, progress, dataset, log)
    run.train()
    run.evaluate()
    metrics = run.report()
    if keep:
        metrics["_objects"] = (run.net, run.credit, run.dataset, run.trainer.state)
    return metrics
