"""The least DTP can cost against E2E BP on E-MNIST3, from the work it cannot avoid, measured in one run.

DTP with pooling (Tang et al. 2022 Algorithm 1; METHODS.md section 4) shares with E2E backprop the forward pass
and the weight gradients. In place of backprop's input gradients (the errors sent down through conv2 and conv3)
it needs, in both variants -- the authors' code's (``noisy``: the inverses learn on ``tilde h_{l-1} = h_{l-1} +
sigma eps``, sigma = 1, the recipe's setting) and Algorithm 1's as the paper writes it (``no_noise``: sigma = 0,
``f_l(tilde h_{l-1})`` is the forward's own ``h_l``):

* the inverses ``g_l`` (transposed convolutions) three times each: on ``h_l`` and ``hat h_l`` (the targets'
  difference correction) and on ``f_l(tilde h_{l-1})`` (the reconstruction loss), and their weight gradients;
* elementwise: the inverses' activation on those three outputs; the targets' ``h - g(h) + g(hat h)``, the
  reconstruction error, its scale and ``act'``, the layer loss's difference and scale (7 passes over the maps);

and, the noisy variant only:

* the noise ``eps ~ N(0, I)`` (l = 2, 3: 32x14x14 + 64x7x7 normal draws per view) and the sum ``h + eps``;
* the forward of conv2 and conv3 on the noisy inputs, ``f_l(tilde h_{l-1})``: the convolutions, then max
  pooling and tanh.

This script times, per 1,000 views (``--batch`` pairs = 2 x batch views), one E2E BP training step as the library
runs it (the recipe ``e2e_bp`` on the fused executor, views included), backprop's input-gradient convolutions
alone, and each piece of DTP's work above alone (the elementwise ones in place on buffers made beforehand), with
the shapes of the recipe's network. For each variant,

    floor = (t_BP - t_input_gradients + sum of the variant's pieces) / t_BP

from the kernels alone and with the elementwise passes: a lower bound of DTP's cost ratio with torch's kernels
(it leaves out the inverses' optimiser, the top target and every fresh buffer). Prints a table, writes JSON.

    python benchmarks/bench_dtp_floor.py [--batch 500] [--repeats 7] [--threads 2] [--out benchmarks/results/dtp_floor.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neurolearn.credit.dtp import DTP  # noqa: E402
from bench_tang import load_images, make_trainer, recipe_of  # noqa: E402
from bench_training import matmul_peak  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after two untimed calls (no autograd recording)."""
    with torch.no_grad():
        fn()
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


#: DTP's variants: the code's (noise sigma = 1 on the inverses' inputs) and Algorithm 1's (sigma = 0)
VARIANTS = ("noisy", "no_noise")


def kernels(net, views: int, generator: torch.Generator) -> dict:
    """``name -> (callable, variants, kind)`` of backprop's input gradients (``variants`` empty: the work DTP does
    not do) and DTP's own work for ``views`` views of ``net`` (E-MNIST3: conv layers 1 and 2 are the ones whose
    inputs get noise and inverses). ``variants``: the DTP variants (:data:`VARIANTS`) that need the row;
    ``kind``: ``"kernel"`` (convolutions, the noise draw) or ``"elementwise"`` (passes over the maps DTP adds,
    each in place on a buffer made beforehand: the least they cost with torch's kernels)."""
    both, noisy = set(VARIANTS), {"noisy"}
    convs = [layer for layer in net.layers if isinstance(layer, torch.nn.Conv2d)]
    shapes = [tuple(s) for s in net.shapes]  # (C, H, W) of each population after pooling
    out = {}
    grads_in = []
    for l in (1, 2):  # conv2, conv3: their input gradients (backprop sends errors down through them)
        conv = convs[l]
        c_in, h, w = shapes[l]
        x = torch.rand(views, c_in, h, w, generator=generator)
        go = torch.randn(views, conv.out_channels, h, w, generator=generator)
        grads_in.append((go, x, conv.weight.detach()))
    out["bp: input gradients of conv2, conv3"] = (lambda: [
        torch.ops.aten.convolution_backward(go, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, (True, False, False))
        for go, x, w in grads_in], set(), "kernel")
    noisy_inputs = [torch.rand(views, *shapes[l], generator=generator) for l in (1, 2)]
    out["dtp: noise for the inverses' inputs"] = (
        lambda: [torch.randn((views, *shapes[l]), generator=generator) for l in (1, 2)], noisy, "kernel")
    out["dtp: conv2, conv3 on the noisy inputs"] = (lambda: [
        F.conv2d(x, convs[l].weight, convs[l].bias, padding=1) for x, l in zip(noisy_inputs, (1, 2))], noisy, "kernel")
    # the inverses as the library's DTP makes them: g_{l+1} maps layer l+1's output back to layer l's (its geometry:
    # kernel, stride, padding, output padding from inverse_geometry), the input in channels-last order as fused.inverse
    geo = DTP().inverse_geometry(net)
    inverse_in = {l: torch.rand(views, *shapes[l + 1], generator=generator).contiguous(memory_format=torch.channels_last)
                  for l in (1, 2)}
    inverse_w = {l: torch.randn(shapes[l + 1][0], shapes[l][0], *geo[l + 1]["kernel"], generator=generator) * 0.05
                 for l in (1, 2)}

    def transposed(l, h):
        g = geo[l + 1]
        return F.conv_transpose2d(h, inverse_w[l], None, stride=g["stride"], padding=g["padding"],
                                  output_padding=g["output_padding"])

    out["dtp: inverses g2, g3 (3 inputs each)"] = (
        lambda: [transposed(l, inverse_in[l]) for l in (1, 2) for _ in range(3)], both, "kernel")
    inv_grad = {l: torch.randn(views, *shapes[l], generator=generator) for l in (1, 2)}
    out["dtp: inverses' weight gradients"] = (lambda: [
        torch.ops.aten.convolution_backward(inv_grad[l], inverse_in[l].contiguous(), inverse_w[l], [shapes[l][0]],
                                            list(geo[l + 1]["stride"]), list(geo[l + 1]["padding"]), [1, 1], True,
                                            list(geo[l + 1]["output_padding"]), 1, (False, True, True)) for l in (1, 2)],
        both, "kernel")
    # elementwise work on buffers made here: h_{l-1}-sized maps (a, b, c) and the noisy conv maps before pooling
    a = [torch.rand(views, *shapes[l], generator=generator) for l in (1, 2)]
    b = [torch.rand(views, *shapes[l], generator=generator) for l in (1, 2)]
    c = [torch.rand(views, *shapes[l], generator=generator) for l in (1, 2)]
    maps = [torch.rand(views, shapes[l + 1][0], shapes[l][1], shapes[l][2], generator=generator) for l in (1, 2)]

    def noisy_sum():  # tilde h = eps + h, in the noise's buffer
        return [x.add_(y) for x, y in zip(a, b)]

    def noisy_pool_tanh():  # f_l(tilde h) = tanh(maxpool(u)): the maximum over the 4 offsets, tanh on the pooled cells
        outs = []
        for m in maps:
            v = [m[:, :, i::2, j::2][:, :, : m.shape[2] // 2, : m.shape[3] // 2] for i in (0, 1) for j in (0, 1)]
            p = torch.maximum(v[0], v[1])
            torch.maximum(p, v[2], out=p)
            torch.maximum(p, v[3], out=p)
            outs.append(p.tanh_())
        return outs

    def inverse_tanh():  # act of g_l on its three outputs
        return [x.tanh_() for x in c for _ in range(3)]

    def dtp_passes():  # targets' h - g(h) + g(hat h) (2), reconstruction r - tilde h, its scale and act' (3),
        for x, y, z in zip(a, b, c):  # the layer loss h - hat h and its scale (2): 7 passes over each map
            torch.sub(x, y, out=z).add_(y)
            torch.sub(x, y, out=z).mul_(0.5)
            torch.ops.aten.tanh_backward.grad_input(z, y, grad_input=z)
            torch.sub(x, y, out=z).mul_(0.5)

    out["dtp: noisy inputs h + eps"] = (noisy_sum, noisy, "elementwise")
    out["dtp: max pool and tanh of the noisy conv maps"] = (noisy_pool_tanh, noisy, "elementwise")
    out["dtp: tanh of the inverses' outputs (3 each)"] = (inverse_tanh, both, "elementwise")
    out["dtp: targets, reconstruction and layer-loss passes (7)"] = (dtp_passes, both, "elementwise")
    return out


def floors(per_1000: dict, rows: dict) -> dict:
    """``{(variant, kinds): floor}``: ``(t_BP - t_input_gradients + sum of the variant's rows of those kinds) / t_BP``
    for each variant of :data:`VARIANTS` and ``kinds`` ``"kernels"`` (kernels only) or ``"all"`` (kernels and
    elementwise passes). ``per_1000``: ms per row, the BP step first, then the rows of :func:`kernels`
    (``rows``: name -> (callable, variants, kind))."""
    t_bp = next(iter(per_1000.values()))
    t_in = sum(per_1000[n] for n, (_, variants, _) in rows.items() if not variants)
    out = {}
    for variant in VARIANTS:
        for kinds, allowed in (("kernels", {"kernel"}), ("all", {"kernel", "elementwise"})):
            extra = sum(per_1000[n] for n, (_, variants, kind) in rows.items() if variant in variants and kind in allowed)
            out[(variant, kinds)] = (t_bp - t_in + extra) / t_bp
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=500, help="pairs per batch (2 views each)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/dtp_floor.json")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.threads < 1:
        ap.error("--batch, --repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    peak = matmul_peak()
    recipe, why = recipe_of("e2e_bp", args.batch)
    if recipe is None:
        print(f"cannot run: {why}")
        return 1
    trainer, _ = make_trainer(recipe)
    steps = 4  # batches per timed epoch (the epoch's own overhead spread over them)
    x = load_images(steps * args.batch)
    views = 2 * args.batch

    def bp_epoch():
        with torch.enable_grad():  # as the trainer runs
            trainer.fit(x, epochs=trainer.epoch + 1)

    rows = {"bp: one E2E BP step (fused executor, views included)": median_ms(bp_epoch, args.repeats) / steps}
    generator = torch.Generator().manual_seed(0)
    table = kernels(trainer.net, views, generator)
    for name, (fn, _, _) in table.items():
        rows[name] = median_ms(fn, args.repeats)
    per_1000 = {k: v * 1000 / views for k, v in rows.items()}
    names = list(per_1000)
    result = floors(per_1000, table)
    print(f"matrix-multiply peak (float32, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s; "
          f"executor {trainer.executor}; {views} views per batch")
    width = max(len(n) for n in names)
    print(f"{'work':<{width}}  ms / 1,000 views  DTP variants")
    for n in names:
        variants = ", ".join(sorted(table[n][1])) if n in table else "-"
        print(f"{n:<{width}}  {per_1000[n]:16.1f}  {variants}")
    for variant in VARIANTS:
        print(f"DTP floor against E2E BP, {variant}: {result[(variant, 'kernels')]:.2f}x from the kernels, "
              f"{result[(variant, 'all')]:.2f}x with the elementwise passes")
    load_after = os.getloadavg()[0]
    if max(load_before, load_after) > (os.cpu_count() or 1):
        print(f"warning: the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} after)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/bench_dtp_floor.py " + " ".join(argv or sys.argv[1:]),
                               "threads": torch.get_num_threads(), "peak_gflops": peak, "torch": torch.__version__,
                               "machine": platform.machine(), "views_per_batch": views, "executor": trainer.executor,
                               "ms_per_1000_views": per_1000,
                               "variants": {n: sorted(v) for n, (_, v, _) in table.items()},
                               "kinds": {n: k for n, (_, _, k) in table.items()},
                               "floor": {f"{v} {k}": f for (v, k), f in result.items()},
                               "load_average_before": load_before, "load_average_after": load_after}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
