"""benchmarks/bench_dtp_floor.py: its kernels have the shapes DTP's step needs on E-MNIST3, and the floor formula."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_dtp_floor  # noqa: E402
from bench_tang import make_trainer, recipe_of  # noqa: E402


def test_kernels_compute_what_dtp_and_backprop_need_on_e_mnist3():
    recipe, why = recipe_of("e2e_bp", 4)
    assert recipe is not None, why
    net = make_trainer(recipe)[0].net
    rows = bench_dtp_floor.kernels(net, 3, torch.Generator().manual_seed(0))
    out = {name: fn() for name, (fn, _, _) in rows.items()}
    grads_in = out["bp: input gradients of conv2, conv3"]
    assert [g[0].shape for g in grads_in] == [(3, 32, 14, 14), (3, 64, 7, 7)]  # errors sent down to h1, h2
    assert [e.shape for e in out["dtp: noise for the inverses' inputs"]] == [(3, 32, 14, 14), (3, 64, 7, 7)]
    assert [u.shape for u in out["dtp: conv2, conv3 on the noisy inputs"]] == [(3, 64, 14, 14), (3, 128, 7, 7)]
    inverses = out["dtp: inverses g2, g3 (3 inputs each)"]
    assert [g.shape for g in inverses] == [(3, 32, 14, 14)] * 3 + [(3, 64, 7, 7)] * 3  # g_l maps h_l back to h_{l-1}
    assert [w[1].shape for w in out["dtp: inverses' weight gradients"]] == [(64, 32, 3, 3), (128, 64, 3, 3)]
    # the noisy conv maps pooled to the layers' outputs, and in [-1, 1] after tanh
    pooled = out["dtp: max pool and tanh of the noisy conv maps"]
    assert [p.shape for p in pooled] == [(3, 64, 7, 7), (3, 128, 3, 3)]
    assert all(float(p.abs().max()) <= 1 for p in pooled)
    # which variant needs what: backprop's input gradients are no variant's; the noise and the noisy forward only
    # the noisy one's; the inverses both
    variants = {name: v for name, (_, v, _) in rows.items()}
    assert variants["bp: input gradients of conv2, conv3"] == set()
    assert variants["dtp: noise for the inverses' inputs"] == {"noisy"}
    assert variants["dtp: max pool and tanh of the noisy conv maps"] == {"noisy"}
    assert variants["dtp: inverses g2, g3 (3 inputs each)"] == {"noisy", "no_noise"}
    assert variants["dtp: tanh of the inverses' outputs (3 each)"] == {"noisy", "no_noise"}


def test_floor_formula():
    rows = {"bp input grads": (None, set(), "kernel"), "noise": (None, {"noisy"}, "kernel"),
            "inverses": (None, {"noisy", "no_noise"}, "kernel"), "sums": (None, {"noisy"}, "elementwise"),
            "tanh": (None, {"noisy", "no_noise"}, "elementwise")}
    times = {"bp step": 100.0, "bp input grads": 20.0, "noise": 5.0, "inverses": 10.0, "sums": 3.0, "tanh": 7.0}
    f = bench_dtp_floor.floors(times, rows)
    assert f[("noisy", "kernels")] == pytest.approx((100 - 20 + 5 + 10) / 100)
    assert f[("noisy", "all")] == pytest.approx((100 - 20 + 5 + 10 + 3 + 7) / 100)
    assert f[("no_noise", "kernels")] == pytest.approx((100 - 20 + 10) / 100)
    assert f[("no_noise", "all")] == pytest.approx((100 - 20 + 10 + 7) / 100)
