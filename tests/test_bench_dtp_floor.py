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
    out = {name: fn() for name, fn in bench_dtp_floor.kernels(net, 3, torch.Generator().manual_seed(0)).items()}
    grads_in = out["bp: input gradients of conv2, conv3"]
    assert [g[0].shape for g in grads_in] == [(3, 32, 14, 14), (3, 64, 7, 7)]  # errors sent down to h1, h2
    assert [e.shape for e in out["dtp: noise for the inverses' inputs"]] == [(3, 32, 14, 14), (3, 64, 7, 7)]
    assert [u.shape for u in out["dtp: conv2, conv3 on the noisy inputs"]] == [(3, 64, 14, 14), (3, 128, 7, 7)]
    inverses = out["dtp: inverses g2, g3 (3 inputs each)"]
    assert [g.shape for g in inverses] == [(3, 32, 14, 14)] * 3 + [(3, 64, 7, 7)] * 3  # g_l maps h_l back to h_{l-1}
    assert [w[1].shape for w in out["dtp: inverses' weight gradients"]] == [(64, 32, 3, 3), (128, 64, 3, 3)]


def test_floor_formula():
    times = {"bp step": 100.0, "bp input grads": 20.0, "noise": 5.0, "noisy": 15.0, "inverses": 10.0, "inv wgrad": 2.0}
    floor, no_noise = bench_dtp_floor.floors(times)
    assert floor == pytest.approx((100 - 20 + 32) / 100) and no_noise == pytest.approx((100 - 20 + 27) / 100)
