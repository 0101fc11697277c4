"""Run a recipe end to end as stages: load data, build, validate, train, evaluate, report (DESIGN.md section 6).

    run = Run.prepare(recipe, out_dir)   # load data, build the parts, validate the whole setup --
                                         # every incompatible combination rejected, naming the keys;
                                         # nothing is written before this stage has passed
    run.train()                          # writes recipe.toml, checkpoints after every epoch
    run.evaluate()                       # direct association, linear probe, locality, spiking
    run.report()                         # metrics.json, weights.safetensors, receptive_fields.png

``run_recipe(recipe, out_dir)`` does all of it and returns the metrics. Evaluation: direct association
("av" and "max") and a linear classifier on frozen features -- the outputs, or the population
``[eval] probe_population`` (Tang et al. 2022 probe the last conv layer) -- beside the same network
untrained, with the classifier also tested on a seeded transformed test set when ``[eval]
test_transform`` asks (Tang et al. 2022 Table 4; its parameters in ``transformed_test.json``); the
network may be trained on other data than it is evaluated on (``[data] pretrain_source``);
the locality of the training step and of the objective's circuits (the checker,
:mod:`neurolearn.locality`); with ``[eval] spiking``, the trained network in snnTorch / Brian2.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import recipe as recipes
from ._validate import ParameterError
from .data import Dataset, DataError, data_record, load_dataset
from .eval.association import direct_association_accuracy
from .eval.linear import linear_probe
from .eval.plots import receptive_fields_png
from .runs import LOCK_NAME, RunFolderError, _holder_alive, RunLock, check_writable, read_lock, save_tensors, write_json, write_text
from .train import Trainer


def _check_recorded_data(folder: Path, record: dict, what: str) -> None:
    """A :class:`DataError` if ``folder/data.json`` records other data files than ``record`` (none recorded: fine)."""
    path = folder / "data.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old.get("files") != record["files"]:
        raise DataError(f"{what}: the data differ from what {folder} was trained on "
                        f"(recorded in {path}: {old.get('folder')}; now {record['folder']})")
    old_pre, new_pre = old.get("pretrain") or {}, record.get("pretrain") or {}
    if old_pre.get("files") != new_pre.get("files"):
        raise DataError(f"{what}: the pre-training data differ from what {folder} was trained on "
                        f"(recorded in {path}: {old_pre.get('folder')}; now {new_pre.get('folder')})")


def recipe_data_record(recipe: dict) -> dict:
    """What a run of ``recipe`` reads (:func:`neurolearn.data.data_record` of ``[data] source``), with the record
    of ``[data] pretrain_source`` under ``"pretrain"`` when the network is trained on other data."""
    record = data_record(recipe["data"]["source"])
    if recipe["data"].get("pretrain_source"):
        record["pretrain"] = data_record(recipe["data"]["pretrain_source"])
    return record


def _holder_text(info: dict) -> str:
    return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}, "
            f"command {info.get('command')!r}")


class SetupError(ValueError):
    """The recipe's parts cannot work together (found before anything is written; the message names the keys)."""


def locate(name: str) -> str:
    """Folder of a named IDX dataset (:func:`neurolearn.data.locate`)."""
    from .data import locate as _locate

    return str(_locate(name))


def load_recipe_data(recipe: dict) -> Dataset:
    """The dataset a resolved recipe names, cut to its ``train_limit`` / ``test_limit``."""
    d = recipe["data"]
    kw = {"test_fraction": d["test_fraction"], "seed": recipe["seed"]} if d["source"] == "digits" else {}
    ds = load_dataset(d["source"], **kw)
    if d["train_limit"] or d["test_limit"]:
        ds = ds.subset(d["train_limit"] or None, d["test_limit"] or None)
    return ds


def load_pretrain_data(recipe: dict) -> Dataset | None:
    """The training split of ``[data] pretrain_source`` cut to ``pretrain_limit`` (``None`` when the recipe trains
    on ``source``)."""
    d = recipe["data"]
    if not d.get("pretrain_source"):
        return None
    kw = {"test_fraction": d["test_fraction"], "seed": recipe["seed"]} if d["pretrain_source"] == "digits" else {}
    ds = load_dataset(d["pretrain_source"], **kw)
    return ds.subset(d["pretrain_limit"] or None, None) if d["pretrain_limit"] else ds


@torch.no_grad()
def responses(credit, net, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """The network's outputs for ``x`` (in chunks, on the network's device, returned on the CPU),
    as the credit method defines them."""
    net.eval()
    dev = next(net.parameters()).device
    return torch.cat([credit.respond(net, x[i: i + chunk].to(dev)).cpu() for i in range(0, x.shape[0], chunk)], 0)


@torch.no_grad()
def features(credit, net, x: torch.Tensor, population: int = -1, chunk: int = 2048) -> torch.Tensor:
    """What the evaluation reads for inputs ``x``: ``population = -1`` the network's outputs as the credit method
    defines them (:func:`responses`); ``l >= 0`` population ``l`` of the forward pass without dropout,
    ``h_l = pool_l(f_l(W_l h_{l-1} + b_l))`` (``h_0 = x``), flattened to ``(N, n_l)`` (in chunks, on the CPU)."""
    if population == -1:
        return responses(credit, net, x, chunk)
    if not 0 <= population <= net.n_layers:
        raise ParameterError(f"features: population must be -1 (the output) or in [0, {net.n_layers}] for this network "
                             f"of {net.n_layers} layers, got {population}")
    net.eval()
    dev = next(net.parameters()).device
    return torch.cat([net.forward_all(x[i: i + chunk].to(dev))[population].flatten(1).cpu()
                      for i in range(0, x.shape[0], chunk)], 0)


def evaluate(credit, net, ds: Dataset, ev: dict, seed: int = 0, extra_tests: dict | None = None) -> dict:
    """Direct association ("av", "max") and linear-classifier test accuracy of ``net`` on ``ds``, on the features
    of ``[eval] probe_population`` (:func:`features`); the same classifier is tested on every ``name: (x, y)`` of
    ``extra_tests`` too (metric ``linear_<name>``, e.g. ``linear_transformed``)."""
    pop = ev.get("probe_population", -1)
    r_train, r_test = features(credit, net, ds.x_train, pop), features(credit, net, ds.x_test, pop)
    out: dict = {}
    if ev["direct_association"]:
        da = direct_association_accuracy(r_train, ds.y_train, r_test, ds.y_test, ds.n_classes)
        out["direct_av"], out["direct_max"] = da["av"], da["max"]
    if ev["linear"]:
        extra = {name: (features(credit, net, x, pop), y) for name, (x, y) in (extra_tests or {}).items()}
        lp = linear_probe(r_train, ds.y_train, r_test, ds.y_test, ds.n_classes, epochs=ev["linear_epochs"],
                          lr=ev["linear_lr"], decay=ev["linear_decay"], schedule=ev["linear_schedule"],
                          dropout=ev["linear_dropout"], batch_size=ev.get("linear_batch", 128), seed=seed,
                          extra_tests=extra)
        out["linear"] = lp["test"]
        out.update({f"linear_{name}": lp[name] for name in extra})
        if pop != -1:
            out["probe_features"] = r_train.shape[1]
    out["active_cells_per_input"] = (r_test > 0).double().sum(1).mean().item()
    return out


def transformed_test(ds: Dataset, ev: dict) -> tuple[torch.Tensor, dict] | None:
    """The transformed copy of ``ds``'s test images that ``[eval] test_transform`` asks for, flattened like
    ``ds.x_test``, and the record written to ``transformed_test.json`` (the generator's parameters and per-image
    draws, the SHA-256 of the float32 pixels); ``None`` for ``"none"``.

    ``"tang_affine_mnist"``: :func:`neurolearn.data.views.transformed_test_set` (Tang et al. 2022 Table 4, the
    offline substitute of METHODS.md section 5: rotation, isotropic scale and shift drawn from ``transform_seed``)."""
    kind = ev.get("test_transform", "none")
    if kind == "none":
        return None
    if len(ds.image_shape) != 2:
        raise ParameterError(f"[eval] test_transform = {kind!r} transforms images; the data {ds.name!r} has samples of "
                             f"shape {ds.image_shape}")
    try:
        from .data.views import transformed_test_set
    except ImportError:
        raise ParameterError(f"[eval] test_transform = {kind!r} needs neurolearn.data.views.transformed_test_set, "
                             "which this installation lacks; set [eval] test_transform = \"none\"") from None
    settings = {"seed": ev["transform_seed"], "rotation": ev["transform_rotation"],
                "log_scale": ev["transform_log_scale"], "shift": ev["transform_shift"]}
    x = ds.x_test.reshape(-1, 1, *ds.image_shape)
    x_t, params = transformed_test_set(x, **settings)
    x_t = x_t.reshape(x.shape[0], -1).to(torch.float32).contiguous()
    if x_t.shape != ds.x_test.shape or not torch.isfinite(x_t).all():
        raise ValueError(f"transformed_test_set returned {tuple(x_t.shape)} (finite: {bool(torch.isfinite(x_t).all())}) "
                         f"for a test set of shape {tuple(ds.x_test.shape)}")
    import hashlib

    record = {"transform": kind, "data": ds.name, "n": x_t.shape[0], **settings,
              "sha256_float32": hashlib.sha256(x_t.numpy().tobytes()).hexdigest(), "params": _jsonable(params)}
    return x_t, record


def _jsonable(v):
    """``v`` with tensors and arrays as (nested) lists, for JSON."""
    if torch.is_tensor(v):
        return v.detach().cpu().tolist()
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


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
    """Rows (e.g. untrained / trained / paper) of accuracies as a fixed-width table (percent)."""
    cols = [("direct_av", "direct av"), ("direct_max", "direct max"), ("linear", "linear"),
            ("linear_transformed", "transformed")]
    cols = [c for c in cols if any(c[0] in r for r in rows.values())]
    head = f"{'network':<12}" + "".join(f"{title:>12}" for _, title in cols)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<12}" + "".join(f"{100 * r[k]:>11.2f}%" if k in r else f"{'-':>12}" for k, _ in cols))
    return "\n".join(lines)


def paper_rows(recipe: dict, metrics: dict) -> tuple[dict, list[str]]:
    """The rows of the published numbers (``paper``, and ``paper untr.`` for the untrained baseline) for the result
    table, and the line comparing ours with them, from the recipe's header key ``paper`` (none: nothing)."""
    paper = recipe.get("paper")
    if not paper:
        return {}, []
    key = paper["metric"]
    rows = {"paper": {key: paper["value"] / 100}}
    ours = metrics.get("trained", {}).get(key)
    text = (f"paper ({paper['source'] or 'published'}, {key}): {paper['value']:.2f}%; ours "
            + (f"{100 * ours:.2f}% ({100 * ours - paper['value']:+.2f} points)" if ours is not None else "not measured"))
    if paper.get("baseline") is not None:
        rows["paper untr."] = {key: paper["baseline"] / 100}
        base = metrics.get("untrained", {}).get(key)
        text += (f"; untrained: paper {paper['baseline']:.2f}%, ours "
                 + (f"{100 * base:.2f}%" if base is not None else "not measured"))
    return rows, [text]


def result_table(recipe: dict, metrics: dict) -> tuple[str, list[str]]:
    """The printed result table (``untrained`` if measured, ``trained``, the paper's rows) and the line comparing
    ours with the paper's (:func:`paper_rows`)."""
    rows = ({"untrained": metrics["untrained"]} if "untrained" in metrics else {}) | {"trained": metrics["trained"]}
    published, paper_lines = paper_rows(recipe, metrics)
    return format_table(rows | published), paper_lines


def _flat(recipe: dict) -> dict:
    out = {}
    for k, v in recipe.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


#: recipe keys a ``--resume`` may change: where the run computes and for how long, not what it computes
#: (a device's float rounding aside)
RESUME_MAY_CHANGE = ("training.device", "training.threads", "training.max_minutes")


def resume_recipe(out_dir: str | Path, recipe_arg: str | None = None, overrides: dict | None = None) -> tuple[dict, list[str]]:
    """The recipe a ``--resume`` of ``out_dir`` continues, and lines saying exactly what it reuses.

    The run keeps the recipe saved in ``out_dir/recipe.toml``. A recipe argument or ``--set`` / ``--epochs``
    that differs from it is an error naming the differing keys -- except a larger ``[training] epochs``,
    which extends the run (the learning-rate schedule is then recomputed over the new total from the
    resumed epoch on, so an extended run is not the same as one started with the larger count), and the
    settings of :data:`RESUME_MAY_CHANGE` (where and how fast it runs: a run trained on a GPU can be
    finished on the CPU), each change named in the returned lines."""
    out_dir = Path(out_dir)
    saved_path = out_dir / "recipe.toml"
    if not saved_path.exists():
        raise FileNotFoundError(f"--resume: {out_dir} holds no run (no recipe.toml): nothing to resume; "
                                "drop --resume to start a new run there")
    saved_text = saved_path.read_text()
    saved = recipes.resolve(saved_text, str(saved_path))
    if recipe_arg is not None:
        label, text = recipes.find_recipe(recipe_arg)
    else:
        label, text = str(saved_path), saved_text
    given = recipes.resolve(text, label, overrides)
    a, b = _flat(saved), _flat(given)
    differ = sorted(k for k in a if k != "training.epochs" and k not in RESUME_MAY_CHANGE and a[k] != b.get(k))
    if differ:
        details = ", ".join(f"{k} = {a[k]!r} in the run, {b.get(k)!r} given" for k in differ[:6])
        raise recipes.RecipeError(
            f"--resume: {label}{' with --set' if overrides else ''} differs from the run's recipe {saved_path}: "
            f"{details}{' ...' if len(differ) > 6 else ''}. A resumed run keeps its recipe; only raising "
            "[training] epochs (--epochs) extends it and " + ", ".join(RESUME_MAY_CHANGE) + " may change. "
            "Start a new run (another --out) to change anything else.")
    old_e, new_e = a["training.epochs"], b["training.epochs"]
    if new_e < old_e:
        raise recipes.RecipeError(f"--resume: [training] epochs {new_e} is below the run's {old_e}; a resumed run "
                                  "can only be extended")
    done = None
    info = out_dir / "checkpoint.json"
    if info.exists():
        try:
            done = json.loads(info.read_text()).get("epoch")
        except (OSError, ValueError):
            done = None
    lines = [f"resuming {out_dir}: the recipe saved in {saved_path} ({saved['name']}), "
             + (f"the checkpoint after epoch {done} of {old_e}" if done is not None else "no checkpoint yet (training "
                "restarts from the initial weights)")
             + ", its optimiser and objective state, the data recorded in data.json"]
    changed = [k for k in RESUME_MAY_CHANGE if a.get(k) != b.get(k)]
    for k in changed:
        lines.append(f"{k} changed from {a.get(k)!r} to {b.get(k)!r}")
    if new_e > old_e:
        lines.append(f"epochs raised from {old_e} to {new_e}: the run is extended (the learning-rate schedule is "
                     f"recomputed over {new_e} epochs from the resumed epoch on)")
    return given if new_e > old_e or changed else saved, lines


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
        self.pretrain: Dataset | None = None  # the data trained on, when not dataset's training split
        self.transformed = None  # (x, record) of [eval] test_transform

    @property
    def train_data(self) -> Dataset:
        """The dataset whose training split the network is trained on."""
        return self.pretrain if self.pretrain is not None else self.dataset

    def extra_tests(self) -> dict:
        """Further test sets of the classifier: ``{"transformed": (x, y)}`` with ``[eval] test_transform``."""
        if self.transformed is None:
            return {}
        return {"transformed": (self.transformed[0], self.dataset.y_test)}

    # ------------------------------------------------------------------ stages 1-3: load, build, validate
    @classmethod
    def prepare(cls, recipe: dict, out_dir: str | Path, resume: bool = False, progress: bool = True,
                dataset: Dataset | None = None, log: Callable[[str], None] = print) -> "Run":
        """Load the data, build the parts and validate the whole setup; writes nothing."""
        out_dir = Path(out_dir)
        check_writable(out_dir, "--out")
        holder = read_lock(out_dir) if out_dir.is_dir() else None
        if holder is not None and _holder_alive(holder) is not False:
            raise RunFolderError(f"run folder {out_dir} is being written by another run: {_holder_text(holder)}")
        if not resume and out_dir.exists() and any(p.name != LOCK_NAME for p in out_dir.iterdir()):
            raise FileExistsError(f"run folder {out_dir} exists and is not empty: pass --resume to continue it or "
                                  "choose another --out")
        if resume and not (out_dir / "recipe.toml").exists():
            raise FileNotFoundError(f"--resume: {out_dir} holds no run (no recipe.toml): nothing to resume; "
                                    "drop --resume to start a new run there")
        parts = recipes.describe_recipe(recipe)
        tr, ev = parts["training"], recipe["eval"]
        t0 = time.perf_counter()
        ds = dataset if dataset is not None else load_recipe_data(recipe)
        record = None if dataset is not None else recipe_data_record(recipe)
        if resume and record is not None:
            _check_recorded_data(out_dir, record, "--resume")
        log(f"data {ds.name}: {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test "
            f"({time.perf_counter() - t0:.1f} s)")
        pre = load_pretrain_data(recipe)
        if pre is not None:
            if tuple(pre.image_shape) != tuple(ds.image_shape):
                raise SetupError(f"[data] pretrain_source {recipe['data']['pretrain_source']!r} has samples of shape "
                                 f"{pre.image_shape}, source {recipe['data']['source']!r} {ds.image_shape}: the network "
                                 "is trained on one and evaluated on the other, so they must agree")
            log(f"pre-training data {pre.name}: {pre.x_train.shape[0]} samples")
        try:
            net = parts["network"].build(tuple(ds.image_shape), seed=recipe["seed"])
        except ParameterError as e:
            raise SetupError(f"[network] {e}") from None
        objective, credit = parts["objective"], parts["credit"]
        notes: list[str] = []
        pop = ev["probe_population"]
        if pop > net.n_layers:
            raise SetupError(f"[eval] probe_population must be -1 (the output) or a population in [0, {net.n_layers}] "
                             f"of this network of {net.n_layers} layers, got {pop}")
        try:
            transformed = transformed_test(ds, ev)
        except ParameterError as e:
            raise SetupError(str(e)) from None
        trained_on = pre if pre is not None else ds
        try:
            if objective.needs_labels and trained_on.n_classes > net.sizes[-1]:
                raise ParameterError(f"{type(objective).__name__}: the data has {trained_on.n_classes} classes but the "
                                     f"network only {net.sizes[-1]} output cells")
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
            if net.n_layers > 1 and ev["spiking"] == "brian2":
                raise SetupError(f"[eval] spiking = 'brian2': the Brian2 conversion takes one-layer networks, this one has "
                                 f"{net.n_layers}; use 'snntorch' or 'none'")
            if net.n_layers > 1 and ev["spiking"] == "both":
                notes.append(f"[eval] spiking = 'both': the Brian2 conversion takes one-layer networks, this one has "
                             f"{net.n_layers}; it is compared in snnTorch only")
        if ev["receptive_fields"] and not isinstance(net.layers[0], torch.nn.Linear):
            notes.append("[eval] receptive_fields: drawn for dense first layers only; none for this network")
        for n in notes:
            warnings.warn(n, stacklevel=2)
        run = cls(recipe, out_dir, ds, net, objective, credit, trainer, log, resume, notes)
        run.data_record = record
        run.pretrain, run.transformed = pre, transformed
        if pre is not None:
            run.metrics.update(pretrain_data=pre.name, n_pretrain=pre.x_train.shape[0])
        return run

    # ------------------------------------------------------------------ stage 4: train
    def train(self) -> None:
        """Write ``recipe.toml``, resume from the last checkpoint if asked, train."""
        r, tr = self.recipe, self.trainer
        if tr.config.threads:
            torch.set_num_threads(tr.config.threads)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.out_dir / "recipe.toml", recipes.dumps(r))
        if self.data_record is not None:
            write_json(self.out_dir / "data.json", self.data_record)
            self.metrics["data_files"] = self.data_record
        if self.transformed is not None:
            write_json(self.out_dir / "transformed_test.json", self.transformed[1])
            self.metrics["transformed_test"] = {k: v for k, v in self.transformed[1].items() if k != "params"}
        self.log(f"recipe {r['name']}: {r['description']}")
        self.log(f"network {self.net.sizes}, {type(self.credit).__name__}, {type(self.objective).__name__}, "
                 f"executor {tr.executor}; run folder {self.out_dir}")
        if self.recipe["eval"]["untrained_baseline"]:
            t0 = time.perf_counter()
            self.metrics["untrained"] = evaluate(self.credit, self.net, self.dataset, r["eval"], r["seed"],
                                                 self.extra_tests())
            self.log(f"untrained baseline evaluated ({time.perf_counter() - t0:.1f} s)")
        if self.resume and tr.load_checkpoint():
            self.log(f"resumed after epoch {tr.epoch}")
        ds = self.train_data
        x = ds.x_train
        shape = getattr(self.net, "input_shape", None)
        if shape is not None and len(shape) == 3:  # images as maps (C, H, W): what view generators deform
            x = x.reshape(-1, *shape)
        tr.fit(x, ds.y_train if self.objective.needs_labels else None)
        m = self.metrics
        m["epochs"], m["history"] = tr.epoch, tr.history
        if tr.stopped_early is not None:
            m["stopped_early"] = tr.stopped_early
            self.log(f"time budget reached: trained {tr.epoch} of {tr.stopped_early['epochs_planned']} epochs "
                     f"([training] max_minutes = {tr.stopped_early['max_minutes']})")
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
        m["trained"] = evaluate(self.credit, self.net, self.dataset, ev, r["seed"], self.extra_tests())
        m["eval_seconds"] = time.perf_counter() - t0
        self.log(f"trained network evaluated ({m['eval_seconds']:.1f} s)")
        lines = []
        if ev["locality"]:
            t0 = time.perf_counter()
            if not all(isinstance(layer, torch.nn.Linear) for layer in self.net.layers):
                why = ("the credit methods' checkables describe dense networks; a convolution's weight sharing is "
                       "checked with locality.Shared on hand-written steps (docs/locality.md), not yet from a recipe")
                m["locality"] = {"checked": False, "why": why}
                lines.append(f"locality: not checked ({why})")
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
                                 brian2=ev["spiking"] in ("brian2", "both"))
            m["spiking"] = sp
            self.log(f"spiking comparison done ({time.perf_counter() - t0:.1f} s)")
            rate = 100 * sp["rate"]["direct_av"]
            if ev["spiking"] in ("snntorch", "both"):
                lines.append(f"spiking (snnTorch, {sp['steps']} steps): direct av {100 * sp['snntorch']['direct_av']:.2f}% "
                             f"vs rate {rate:.2f}%; rate/spike-rate correlation {sp['correlation']:.3f}")
            if "brian2_skipped" in sp:
                lines.append(f"spiking (Brian2): skipped -- {sp['brian2_skipped']}")
            if "brian2" in sp:
                lines.append(f"spiking (Brian2, {sp['steps']} steps): direct av {100 * sp['brian2']['direct_av']:.2f}% "
                             f"vs rate {rate:.2f}% ({sp['brian2']['seconds_per_example']:.3f} s per example)")
        for ph, st in m.get("solver", {}).items():
            lines.append(f"fixed-point solver, {ph} phase: {st['sweeps_per_solve']:.1f} sweeps per solve "
                         f"({st['solves']} solves, {st['euler_fallbacks']} Euler fallbacks)")
        lines += [f"note: {n}" for n in self.warnings]
        table, paper_lines = result_table(r, m)
        if r.get("paper"):
            m["paper"] = r["paper"]
        m["extra_lines"] = paper_lines + lines
        m["table"] = table

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


#: recipe keys :func:`load_run` (``neurolearn evaluate``) may change: how the trained network is read out and
#: where that runs, never what was trained
EVALUATE_MAY_CHANGE = ("eval.*", "training.device", "training.threads")


def _may_change(key: str, allowed: tuple) -> bool:
    return any(key == a or (a.endswith(".*") and key.startswith(a[:-1])) for a in allowed)


def load_run(run_dir: str | Path, overrides: dict | None = None):
    """A finished run rebuilt from its folder: ``(recipe, dataset, net, objective, credit, objective state)``
    with the trained weights of ``weights.safetensors`` (the data must still match ``data.json``).

    ``overrides`` (``{section: {key: value}}``, as ``--set``) may change the keys of :data:`EVALUATE_MAY_CHANGE`
    only (e.g. a run trained on a GPU read on the CPU, another probe); any other key is an error naming it."""
    from .runs import load_tensors

    run_dir = Path(run_dir)
    for name in ("recipe.toml", "weights.safetensors"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run: {name} is missing")
    given = []  # dotted keys; a top-level key stands alone ("seed"; --set puts it under the section "")
    for sec, kv in (overrides or {}).items():
        given += [f"{sec}.{k}" if sec else k for k in kv] if isinstance(kv, dict) else [sec]
    bad = sorted(k for k in given if not _may_change(k, EVALUATE_MAY_CHANGE))
    if bad:
        raise recipes.RecipeError(f"{run_dir}: a finished run's evaluation may change only "
                                  f"{', '.join(EVALUATE_MAY_CHANGE)}; got {', '.join(bad)} (train a new run to change those)")
    recipe = recipes.resolve((run_dir / "recipe.toml").read_text(), str(run_dir / "recipe.toml"), overrides)
    ds = load_recipe_data(recipe)
    _check_recorded_data(run_dir, recipe_data_record(recipe), "compare")
    parts = recipes.describe_recipe(recipe)
    net = parts["network"].build(tuple(ds.image_shape), seed=recipe["seed"])
    objective, credit = parts["objective"], parts["credit"]
    w = load_tensors(run_dir / "weights.safetensors")
    try:
        net.load_state_dict({k: v for k, v in w.items() if k.startswith("layers.")})
    except RuntimeError as e:
        raise ValueError(f"{run_dir}/weights.safetensors does not fit the recipe's network: {e}") from None
    state = objective.init_state(net.sizes[-1], net.dropout[-1])
    if isinstance(state, torch.nn.Module):
        state.load_state_dict({k.removeprefix("objective."): v for k, v in w.items() if k.startswith("objective.")})
    return recipe, ds, net, objective, credit, state


def evaluate_run(run_dir: str | Path, overrides: dict | None = None, out: str | Path | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Evaluate a finished run's trained network again, as stage 5 of :class:`Run` does, with its ``[eval]``
    section changed by ``overrides`` (:func:`load_run`): the linear probe / direct association on the
    probed population, the transformed test set, the untrained baseline (the network rebuilt from the run's
    seed, i.e. its initial weights) and the paper's row. Writes ``out`` (default
    ``<run_dir>/evaluation.json``: the overrides, the ``[eval]`` section used and the results); the run's own
    ``metrics.json`` and weights are never touched. Returns that record with ``"table"`` and ``"extra_lines"``."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "evaluation.json"
    if out.resolve() in {(run_dir / n).resolve() for n in ("metrics.json", "recipe.toml", "data.json", "weights.safetensors")}:
        raise FileExistsError(f"--out {out} is one of the run's own files; evaluate writes a separate record")
    check_writable(out.parent, "--out folder")
    recipe, ds, net, objective, credit, state = load_run(run_dir, overrides)
    ev = recipe["eval"]
    tr = recipe["training"]
    if tr["threads"]:
        torch.set_num_threads(tr["threads"])
    net.to(torch.device(tr["device"]))
    try:
        transformed = transformed_test(ds, ev)
    except ParameterError as e:
        raise SetupError(str(e)) from None
    extra = {"transformed": (transformed[0], ds.y_test)} if transformed is not None else {}
    m: dict = {"run": str(run_dir), "recipe": recipe["name"], "overrides": overrides or {}, "eval": ev}
    if transformed is not None:
        m["transformed_test"] = {k: v for k, v in transformed[1].items() if k != "params"}
        saved = run_dir / "transformed_test.json"
        rec = json.loads(saved.read_text()) if saved.exists() else None
        if rec is not None and rec.get("sha256_float32") != transformed[1]["sha256_float32"]:
            why = ("the same transform parameters, other pixels: the float rounding of the torch build or device that "
                   "made the run's copy" if rec.get("params") == _jsonable(transformed[1]["params"])
                   else "other transform parameters ([eval] transform keys differ)")
            m["transformed_test"]["differs_from_run"] = why
            log(f"note: the transformed test set is not the run's ({saved}): {why}")
    if ev["untrained_baseline"]:
        t0 = time.perf_counter()
        net0 = recipes.describe_recipe(recipe)["network"].build(tuple(ds.image_shape), seed=recipe["seed"])
        net0.to(torch.device(tr["device"]))
        m["untrained"] = evaluate(credit, net0, ds, ev, recipe["seed"], extra)
        log(f"untrained baseline evaluated ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    m["trained"] = evaluate(credit, net, ds, ev, recipe["seed"], extra)
    m["eval_seconds"] = time.perf_counter() - t0
    log(f"trained network evaluated ({m['eval_seconds']:.1f} s)")
    m["table"], m["extra_lines"] = result_table(recipe, m)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, m)
    m["out"] = str(out)
    return m


def run_recipe(recipe: dict, out_dir: str | Path, resume: bool = False, progress: bool = True,
               dataset: Dataset | None = None, log: Callable[[str], None] = print, keep: bool = False) -> dict:
    """Train and evaluate the resolved ``recipe`` stage by stage (:class:`Run`); return the metrics.

    With ``keep=True`` the metrics also carry ``"_objects": (net, credit, dataset, objective state)``.
    """
    run = Run.prepare(recipe, out_dir, resume, progress, dataset, log)
    with RunLock(run.out_dir):
        run.train()
        run.evaluate()
        metrics = run.report()
    if keep:
        metrics["_objects"] = (run.net, run.credit, run.dataset, run.trainer.state)
    return metrics
