"""The ``neurolearn`` command.

    neurolearn run [RECIPE] [--out DIR] [--resume] [--epochs N] [--no-progress]
    neurolearn evaluate RUN_DIR [--set eval.KEY=VALUE ...] [--out FILE]
    neurolearn recipes
    neurolearn check-locality [...]
    neurolearn compare RECIPE [...]

``run`` with no recipe runs the default one (``models/digits_bp_1layer.toml``): the one-layer
self-defined-target network on the embedded digits, trained by backprop, evaluated by direct
association and a linear classifier beside the same network untrained.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import recipe as recipes
from .runs import RunFolderError
from .train import DivergenceError


def _run(args) -> int:
    from .experiment import resume_recipe, run_recipe

    overrides = recipes.parse_overrides(args.set or [])
    if args.epochs is not None:
        overrides.setdefault("training", {})["epochs"] = args.epochs
    say = (lambda s: None) if args.quiet else print
    if args.resume:
        if not args.out:
            raise recipes.RecipeError("--resume needs --out: the run folder to continue")
        recipe, lines = resume_recipe(args.out, args.recipe, overrides)
        for line in lines:
            say(line)
    else:
        label, text = recipes.find_recipe(args.recipe)
        recipe = recipes.resolve(text, label, overrides)
    out = Path(args.out) if args.out else Path("runs") / f"{recipe['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = run_recipe(recipe, out, resume=args.resume, progress=not (args.no_progress or args.quiet), log=say)
    print()
    print(metrics["table"])
    print(f"\ntraining: {metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s "
          f"({metrics['seconds_per_1000_samples']:.3f} s per 1,000 samples, executor {metrics['executor']})")
    for line in metrics.get("extra_lines", []):
        print(line)
    print(f"run folder: {out}")
    return 0


def _evaluate(args) -> int:
    from .experiment import evaluate_run

    overrides = recipes.parse_overrides(args.set or [])
    m = evaluate_run(args.run_dir, overrides, args.out, log=(lambda s: None) if args.quiet else print)
    print()
    print(m["table"])
    for line in m["extra_lines"]:
        print(line)
    print(f"wrote {m['out']}")
    return 0


def _keys(args) -> int:
    print(recipes.keys_text(args.section))
    return 0


def _recipes(args) -> int:
    for name, res in sorted(recipes.builtin_recipes().items()):
        r = recipes.resolve(res.read_text(), name)
        print(f"{name:<28} {r['description']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neurolearn`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="neurolearn", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train and evaluate a recipe (default: the one-layer digits network)")
    p.add_argument("recipe", nargs="?", help="path to a recipe .toml or a built-in recipe name")
    p.add_argument("--out", help="run folder (default runs/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, help="override [training] epochs")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one recipe key, VALUE in TOML syntax (repeatable), e.g. "
                        "--set credit.free_solver='\"alternating\"' or --set training.device=cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no stage lines (for scripts): "
                   "the result table and errors only")
    p.set_defaults(func=_run)
    p = sub.add_parser("evaluate", help="evaluate a finished run's trained network again, e.g. with another probe "
                                        "(its metrics.json and weights are left as they are)")
    p.add_argument("run_dir", help="a finished run folder (recipe.toml and weights.safetensors)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="change an [eval] key, or training.device / training.threads (repeatable), e.g. "
                        "--set eval.linear_epochs=1000 --set training.device='\"cpu\"'")
    p.add_argument("--out", help="where to write the record (default RUN_DIR/evaluation.json)")
    p.add_argument("--quiet", action="store_true", help="the result table and errors only")
    p.set_defaults(func=_evaluate)
    p = sub.add_parser("recipes", help="list the built-in recipes")
    p.set_defaults(func=_recipes)
    p = sub.add_parser("keys", help="every recipe key: defaults, allowed values, help (per registered type)")
    p.add_argument("section", nargs="?", choices=recipes.sections(), help="one section only")
    p.set_defaults(func=_keys)
    sub.add_parser("check-locality", help="check every built-in rule and credit method for locality (--help for options)")
    sub.add_parser("compare", help="rate vs spiking (snnTorch) comparison of a recipe's network (--help for options)")
    argv = sys.argv[1:] if argv is None else list(argv)
    delegated = {"check-locality": ("neurolearn.locality.report", "main_check_locality"),
                 "compare": ("neurolearn.sim.compare", "main_compare")}
    if argv and argv[0] in delegated:  # these parse their own options
        args = argparse.Namespace(func=lambda a: _delegate(*delegated[argv[0]], argv[1:]))
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (recipes.RecipeError, FileExistsError, FileNotFoundError, ValueError, RunFolderError, DivergenceError) as e:
        print(f"neurolearn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurolearn: interrupted; the last checkpoint is intact (continue with --resume)", file=sys.stderr)
        return 130


def _delegate(module: str, func: str, argv) -> int:
    import importlib

    return importlib.import_module(module).__dict__[func](list(argv)) or 0


if __name__ == "__main__":
    sys.exit(main())
