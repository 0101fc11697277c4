"""Accuracy side by side with the authors' code (issue 14): both implementations trained in one process on
the same samples in the same batch order, by default from the same initial weights, with the
direct-association test accuracy of each after every epoch.

Per epoch ``e``: neurolearn's trainer runs epoch ``e`` (its batches: ``batch_indices(n, batch, seed, e)``),
then the authors' epoch function (``reference_liu.Reference``) runs on the same index batches in the same
order; each network's responses on the training samples assign classes to its output cells and its
responses on the official 10k test set are scored ("av" and "max", Liu et al. 2024 section 2.2.1, with
:func:`neurolearn.eval.association.direct_association_accuracy` for both). Learning-rate schedules: each
implementation's own linear decay over ``--schedule-epochs`` (default: the configuration's 100 epochs for
EP, 200 for BP) -- ours to ``--our-final-lr-factor`` (default: the recipe's, 1e-3 for one-layer EP,
5e-4 otherwise), theirs to their configuration's end factor (1e-3 EP, 5e-4 BP) -- so a short run
follows the start of the full schedule. Random dropout
masks and beta signs come from each implementation's own random stream.

``--ours credit.KEY=VALUE`` / ``--ours objective.KEY=VALUE`` (repeatable) change one field of
neurolearn's credit method or objective (e.g. ``credit.input_dropout=unscaled``,
``objective.homeostasis_from=target``: the choices of issue 14); ``--ours-only`` trains neurolearn alone
(for ablations whose reference curve is already measured). The one-layer EP setup starts from the
recipe's choices (:data:`RECIPE_CHOICES`: ``mnist_ep_1layer``'s unscaled input dropout and homeostasis
from the smoothed target); ``--ours`` changes them back one at a time.

    python benchmarks/compare_accuracy.py --reference /path/to/unsupervised-target [--setup ep1] [--epochs 2]
        [--samples N] [--seed 0] [--different-init] [--ours credit.input_dropout=unscaled] [--ours-only]
        [--out benchmarks/results/accuracy_side_by_side.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch
from bench_training import (
    SETUPS,
    direct_accuracy,
    epoch_batches,
    fit_epochs,
    layers_of,
    load_mnist,
    make_trainer,
    prepare,
    responses_of,
)


#: neurolearn's choices for a setup as its recipe sets them (``(part, key, value)``; issue 14)
RECIPE_CHOICES = {"ep1": [("credit", "input_dropout", "unscaled"), ("objective", "homeostasis_from", "target")]}
#: end factor of the recipe's linear learning-rate schedule, per setup (others: 5e-4)
RECIPE_FINAL_LR_FACTOR = {"ep1": 1e-3}


def parse_option(text: str) -> tuple[str, str, object]:
    """``"credit.KEY=VALUE"`` or ``"objective.KEY=VALUE"`` as ``(part, key, value)``; the value is read as
    a bool (true/false), int, float or else kept as a string."""
    head, sep, raw = text.partition("=")
    part, dot, key = head.partition(".")
    if not sep or not dot or part not in ("credit", "objective") or not key:
        raise ValueError(f"--ours: expected credit.KEY=VALUE or objective.KEY=VALUE, got {text!r}")
    value: object = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        for kind in (int, float):
            try:
                value = kind(raw)
                break
            except ValueError:
                pass
    return part, key, value


def with_options(trainer, options) -> object:
    """``trainer`` rebuilt with fields of its credit method / objective changed (``options``: a list of
    ``(part, key, value)``, see :func:`parse_option`); the same network, configuration and seed."""
    from neurolearn.train import Trainer

    if not options:
        return trainer
    changes = {"credit": {}, "objective": {}}
    for part, key, value in options:
        owner = getattr(trainer, part)
        if key not in {f.name for f in fields(owner)}:
            raise ValueError(f"--ours: {type(owner).__name__} has no field {key!r}")
        changes[part][key] = value
    return Trainer(trainer.net, replace(trainer.objective, **changes["objective"]),
                   replace(trainer.credit, **changes["credit"]), trainer.config, trainer.seed, progress=False)


def accuracy_side_by_side(reference: str, setup: str = "ep1", epochs: int = 1, seed: int = 0,
                          samples: int | None = None, same_init: bool = True, data: str | None = None,
                          schedule_epochs: int | None = None, our_final_lr_factor: float | None = None,
                          log=print, ours_options=(), ours_only: bool = False, theirs_only: bool = False,
                          their_device: int = -1) -> list[dict]:
    """Train neurolearn and the authors' code (checkout at ``reference``) for ``epochs`` epochs on the first
    ``samples`` MNIST training images (all by default) in the same batch order; return one dict per epoch
    with each implementation's direct-association test accuracy ("av", "max") and training seconds.
    ``ours_options``: ``(part, key, value)`` changes of neurolearn's credit/objective, applied after the
    recipe's (:data:`RECIPE_CHOICES`); ``our_final_lr_factor``: ``None`` for the recipe's;
    ``ours_only``: skip the authors' code (its entries are then ``None``); ``theirs_only``: train only the
    authors' code (ours is built for its initial weights, never trained; its entries are ``None``);
    ``their_device``: -1 (CPU) or a CUDA index for the authors' code (their random stream stays on the
    CPU, see :class:`reference_liu.Reference`)."""
    from reference_liu import Reference, load

    if setup not in SETUPS:
        raise ValueError(f"setup must be one of {', '.join(SETUPS)}, got {setup!r}")
    for name, v in (("epochs", epochs), ("samples", 1 if samples is None else samples)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if our_final_lr_factor is None:
        our_final_lr_factor = RECIPE_FINAL_LR_FACTOR.get(setup, 5e-4)
    if not 0.0 <= our_final_lr_factor <= 1.0:
        raise ValueError(f"our_final_lr_factor must be in [0, 1], got {our_final_lr_factor}")
    if ours_only and theirs_only:
        raise ValueError("ours_only and theirs_only exclude each other")
    load(reference)  # a clear error (naming the missing file) before any work
    cfg = SETUPS[setup]
    plan = schedule_epochs or cfg["epochs"]
    if plan < epochs:
        raise ValueError(f"schedule_epochs ({plan}) must be at least epochs ({epochs})")
    ds = load_mnist(data)
    x, y = ds.x_train[:samples], ds.y_train[:samples]
    ours = with_options(make_trainer(setup, cfg, seed, schedule="linear", final_lr_factor=our_final_lr_factor,
                                     epochs_plan=plan), RECIPE_CHOICES.get(setup, []) + list(ours_options))
    theirs = None if ours_only else Reference(reference, cfg["reference"], seed=seed, schedule_epochs=plan,
                                              init_weights=layers_of(ours) if same_init else None,
                                              device=their_device)
    rows = []
    for e in range(epochs):
        line, acc_ours = f"epoch {e + 1:>3}", None
        t_ours = acc_theirs = t_theirs = None
        if not theirs_only:
            t_ours = fit_epochs(ours, x, e + 1)
            acc_ours = direct_accuracy(responses_of(ours, x), y, responses_of(ours, ds.x_test), ds.y_test,
                                       ds.n_classes)
            line += f"  ours av {100 * acc_ours['av']:6.2f}%  max {100 * acc_ours['max']:6.2f}%  ({t_ours:6.1f} s)"
        if theirs is not None:
            batches = [x[idx] for idx in epoch_batches(x.shape[0], cfg["batch"], seed, e)]
            t0 = time.perf_counter()
            theirs.fit_epoch(batches)
            t_theirs = time.perf_counter() - t0
            acc_theirs = direct_accuracy(theirs.responses(x), y, theirs.responses(ds.x_test), ds.y_test, ds.n_classes)
            line += (f"   theirs av {100 * acc_theirs['av']:6.2f}%  max {100 * acc_theirs['max']:6.2f}%  "
                     f"({t_theirs:6.1f} s)")
        rows.append({"epoch": e + 1, "ours": acc_ours, "theirs": acc_theirs, "ours_train_s": t_ours,
                     "theirs_train_s": t_theirs})
        log(line)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, metavar="PATH",
                    help="checkout of github.com/neurophysics-cnrsthales/unsupervised-target (called, never copied)")
    ap.add_argument("--setup", default="ep1", choices=list(SETUPS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--samples", type=int, default=None, help="training samples (default: all 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--different-init", action="store_true",
                    help="each implementation draws its own initial weights (default: theirs start from ours)")
    ap.add_argument("--schedule-epochs", type=int, default=None,
                    help="epochs of the linear learning-rate decay (default: the configuration's)")
    ap.add_argument("--our-final-lr-factor", type=float, default=None,
                    help="end factor of our linear schedule (default: the recipe's, 1e-3 for ep1, else 5e-4)")
    ap.add_argument("--ours", action="append", default=[], metavar="PART.KEY=VALUE",
                    help="change a field of neurolearn's credit method or objective (repeatable), "
                         "e.g. credit.input_dropout=unscaled")
    ap.add_argument("--ours-only", action="store_true", help="train neurolearn alone (no reference run)")
    ap.add_argument("--theirs-only", action="store_true",
                    help="train the authors' code alone (from neurolearn's initial weights unless --different-init)")
    ap.add_argument("--their-device", type=int, default=-1,
                    help="the authors' code's device: -1 the CPU (default), i >= 0 CUDA device i")
    ap.add_argument("--data", help="MNIST folder (default: located like recipes with source = 'mnist')")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="benchmarks/results/accuracy_side_by_side.json")
    args = ap.parse_args(argv)
    if args.ours_only and args.theirs_only:
        ap.error("--ours-only and --theirs-only exclude each other")
    prepare(ap, args.reference, args.threads)
    try:
        options = [parse_option(o) for o in args.ours]
        rows = accuracy_side_by_side(args.reference, args.setup, args.epochs, args.seed, args.samples,
                                     not args.different_init, args.data, args.schedule_epochs,
                                     args.our_final_lr_factor, ours_options=options, ours_only=args.ours_only,
                                     theirs_only=args.theirs_only, their_device=args.their_device)
    except ValueError as e:
        ap.error(str(e))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": args.setup, "seed": args.seed, "samples": args.samples,
                               "same_init": not args.different_init, "threads": torch.get_num_threads(),
                               "their_device": args.their_device,
                               "ours_options": [f"{p}.{k}={v}" for p, k, v in RECIPE_CHOICES.get(args.setup, [])] + args.ours,
                               "our_final_lr_factor": (args.our_final_lr_factor if args.our_final_lr_factor is not None
                                                       else RECIPE_FINAL_LR_FACTOR.get(args.setup, 5e-4)),
                               "command": "python benchmarks/compare_accuracy.py " + " ".join(argv or sys.argv[1:]),
                               "epochs": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
