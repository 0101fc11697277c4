"""Tang et al. 2022 Table 4 rows over seeds: mean and spread of finished runs, read from their run folders.

Every run folder given (``neurolearn run models/tang2022/<row>.toml --out DIR --set seed=S ...``) is grouped by its
recipe name; its seed comes from its ``recipe.toml``, its epochs from ``metrics.json``, and its accuracies (linear
probe on clean MNIST, ``linear``, and on the seeded transformed test set, ``linear_transformed``) from
``--evaluation NAME`` in the folder when given (a record written by ``neurolearn evaluate RUN --out RUN/NAME``,
e.g. every run read again by the same probe on the same machine), else from the run's own ``metrics.json``.
Per row: the seeds, the epochs each reached, mean and sample standard deviation (n - 1) of both accuracies,
the paper's number. Prints a Markdown table and writes JSON (each run's numbers and where they were read).

    python benchmarks/tang_table.py RUN_DIR [RUN_DIR ...] [--evaluation evaluation_cpu.json]
        [--out benchmarks/results/tang_t4_seeds.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tomllib
from pathlib import Path


def read_run(folder: Path, evaluation: str | None) -> dict:
    """One run's recipe name, seed, epochs and accuracies (module docstring)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    recipe = tomllib.loads((folder / "recipe.toml").read_text())
    source = folder / "metrics.json"
    if evaluation:
        source = folder / evaluation
        if not source.exists():
            raise FileNotFoundError(f"--evaluation: {source} does not exist (run neurolearn evaluate {folder} "
                                    f"--out {source} first, or drop --evaluation)")
        trained = json.loads(source.read_text())["trained"]
    else:
        trained = metrics["trained"]
    return {"folder": str(folder), "recipe": metrics["recipe"], "seed": recipe.get("seed", 0),
            "epochs": metrics.get("epochs"), "stopped_early": "stopped_early" in metrics,
            "clean": 100 * trained["linear"], "transformed": 100 * trained.get("linear_transformed", float("nan")),
            "read_from": str(source), "paper": recipe.get("paper", {}).get("value")}


def summarise(runs: list[dict]) -> list[dict]:
    """Per recipe: seeds, epochs, mean and sample standard deviation of both accuracies."""
    rows = []
    for name in dict.fromkeys(r["recipe"] for r in runs):
        mine = sorted((r for r in runs if r["recipe"] == name), key=lambda r: r["seed"])
        seeds = [r["seed"] for r in mine]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{name}: seed given twice ({seeds}); pass one run folder per seed")
        row = {"recipe": name, "seeds": seeds, "epochs": [r["epochs"] for r in mine], "paper": mine[0]["paper"]}
        for key in ("clean", "transformed"):
            vals = [r[key] for r in mine]
            row[key] = {"values": vals, "mean": statistics.fmean(vals),
                        "sd": statistics.stdev(vals) if len(vals) > 1 else None}
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(s: dict) -> str:
        return f"{s['mean']:.2f}" + (f" ± {s['sd']:.2f}" if s["sd"] is not None else "")

    lines = ["| row | seeds | epochs reached | paper (transformed) | clean, mean ± sd | transformed, mean ± sd | transformed per seed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| `{r['recipe']}` | {', '.join(map(str, r['seeds']))} | {', '.join(map(str, r['epochs']))} | "
                     f"{r['paper'] if r['paper'] is not None else '-'} | {cell(r['clean'])} | {cell(r['transformed'])} | "
                     + " / ".join(f"{v:.2f}" for v in r["transformed"]["values"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="finished run folders (metrics.json, recipe.toml)")
    ap.add_argument("--evaluation", help="read the accuracies from this record in each folder (neurolearn evaluate --out)")
    ap.add_argument("--out", default="benchmarks/results/tang_t4_seeds.json")
    args = ap.parse_args(argv)
    folders = [Path(f) for f in args.runs]
    missing = [str(f) for f in folders if not (f / "metrics.json").exists() or not (f / "recipe.toml").exists()]
    if missing:
        ap.error(f"not finished run folders (no metrics.json or recipe.toml): {', '.join(missing)}")
    runs = [read_run(f, args.evaluation) for f in folders]
    rows = summarise(runs)
    print(markdown(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/tang_table.py " + " ".join(argv or sys.argv[1:]),
                               "rows": rows, "runs": runs}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
