"""Spiking inference speed of the 784-2000 network: snnTorch examples/s, Brian2 seconds per example.

Converts a 784-2000 self-defined-target network (trained for one epoch on the MNIST files, so its
outputs are those of a working network) with :func:`neurolearn.sim.to_spiking` and times inference
on MNIST test images: snnTorch (batched, CPU) and Brian2 (code-generation target ``cython`` by
default, ``copies`` examples per run; the first run, which compiles, is not timed). Reference:
Diehl & Cook's Brian2 code takes 0.93 s per example here (REFERENCES.md). The machine's float32
matrix-multiply peak is measured in the same run; snnTorch's achieved GFLOP/s counts the input
layer's product per step.

    python benchmarks/bench_spiking.py [--steps 100] [--n 200] [--target cython]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from neurolearn.credit import Backprop
from neurolearn.data import load_idx
from neurolearn.eval.association import assign_classes, predict_direct
from neurolearn.experiment import locate
from neurolearn.networks import MLP
from neurolearn.objectives import SelfDefinedTarget
from neurolearn.sim import to_spiking
from neurolearn.train import Trainer

from bench_training import matmul_peak

DIEHL_COOK_S_PER_EXAMPLE = 0.93


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="simulated steps (1 ms) per example")
    ap.add_argument("--n", type=int, default=1000, help="test examples for snnTorch")
    ap.add_argument("--n-brian2", type=int, default=100, help="test examples for Brian2")
    ap.add_argument("--copies", type=int, default=25, help="Brian2 examples per run")
    ap.add_argument("--target", default="cython", choices=["cython", "numpy"])
    ap.add_argument("--weights", help="weights.safetensors of a trained 784-2000 run (default: train one epoch)")
    ap.add_argument("--out", default="benchmarks/results/spiking.json")
    args = ap.parse_args(argv)
    ds = load_idx(locate("mnist"))
    net = MLP((784, 2000), dropout=(0.3, 0.2), seed=0)
    tr = {"epochs": 1, "batch_size": 16, "lr": 8.0, "optimizer": "sgd", "schedule": "none", "final_lr_factor": 1.0,
          "block": 8}
    if args.weights:
        from neurolearn.runs import load_tensors

        w = load_tensors(args.weights)
        net.layers[0].load_state_dict({"weight": w["layers.0.weight"], "bias": w["layers.0.bias"]})
    else:
        Trainer(net, SelfDefinedTarget(k=6, gamma=0.4), Backprop(), tr, 0, progress=False).fit(ds.x_train)
    peak = matmul_peak()
    x = ds.x_test[: args.n]
    snn = to_spiking(net, "snntorch")
    snn.rates(x[:50], 10)
    t0 = time.perf_counter()
    spk = snn.rates(x, args.steps)
    snn_s = time.perf_counter() - t0
    with torch.no_grad():  # accuracy at this many steps, cell classes assigned on rate outputs
        assignment = assign_classes(net(ds.x_train[:5000]), ds.y_train[:5000], 10)
        rate_acc = (predict_direct(net(x), assignment, 10) == ds.y_test[: args.n]).double().mean().item()
    snn_acc = (predict_direct(spk, assignment, 10) == ds.y_test[: args.n]).double().mean().item()
    gflops = 2 * 784 * 2000 * args.steps * x.shape[0] / snn_s / 1e9

    b2m = to_spiking(net, "brian2", target=args.target, copies=args.copies)
    t0 = time.perf_counter()
    b2m.rates(ds.x_test[: args.copies], args.steps)  # builds and compiles
    build_s = time.perf_counter() - t0
    xb = ds.x_test[args.copies : args.copies + args.n_brian2]
    t0 = time.perf_counter()
    b2m.rates(xb, args.steps)
    b2_s = (time.perf_counter() - t0) / xb.shape[0]
    res = {"steps": args.steps, "peak_gflops": peak, "snntorch_examples_per_s": x.shape[0] / snn_s,
           "snntorch_gflops": gflops, "rate_direct_av": rate_acc, "snntorch_direct_av": snn_acc, "brian2_s_per_example": b2_s,
           "brian2_target": args.target,
           "brian2_copies": args.copies, "brian2_build_and_compile_s": build_s,
           "diehl_cook_s_per_example": DIEHL_COOK_S_PER_EXAMPLE}
    print(f"matrix-multiply peak (float32, 2048^3): {peak:.1f} GFLOP/s")
    print(f"{'simulator':<10}{'steps':>7}{'examples/s':>12}{'s/example':>11}{'target':>9}  notes")
    print(f"{'snnTorch':<10}{args.steps:>7}{res['snntorch_examples_per_s']:>12.0f}{1 / res['snntorch_examples_per_s']:>11.4f}"
          f"{'>=1000/s':>9}  {gflops:.1f} GFLOP/s ({100 * gflops / peak:.0f}% of peak); direct av "
          f"{100 * snn_acc:.2f}% vs rate {100 * rate_acc:.2f}% on {x.shape[0]} test images")
    print(f"{'Brian2':<10}{args.steps:>7}{1 / b2_s:>12.1f}{b2_s:>11.4f}{'<=0.1 s':>9}  {args.target}, {args.copies} copies per run; "
          f"Diehl & Cook 0.93 s ({DIEHL_COOK_S_PER_EXAMPLE / b2_s:.1f}x); build+compile {build_s:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
