"""benchmarks/bench_tang.py: the nominal work it divides by, counted by hand for E-MNIST3."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_tang  # noqa: E402

# E-MNIST3 per image, 2 x multiply-adds: conv1 1->32 on 28x28, conv2 32->64 on 14x14, conv3 64->128 on 7x7 (3x3
# kernels, before pooling), the head 1152 -> 64; the inverses g2: 64x7x7 -> 32 channels, g3: 128x3x3 -> 64 channels
# (3x3 transposed kernels: every input cell feeds C_out x 9 outputs)
F = [2 * 1 * 9 * 32 * 28 * 28, 2 * 32 * 9 * 64 * 14 * 14, 2 * 64 * 9 * 128 * 7 * 7, 2 * 1152 * 64]
G = [2 * 64 * 7 * 7 * 32 * 9, 2 * 128 * 3 * 3 * 64 * 9]


def trainer_of(method):
    recipe, why = bench_tang.recipe_of(method, 4)
    assert recipe is not None, why
    return bench_tang.make_trainer(recipe)[0]


def test_forward_and_e2e_counts():
    net = trainer_of("e2e_bp").net
    assert bench_tang.forward_flops(net) == F
    assert bench_tang.nominal_flops_per_pair(net, "e2e") == 2 * (3 * sum(F) - F[0])


@pytest.mark.parametrize("method, noisy", [("e2e_dtp", False), ("e2e_dtp_noise", True)])
def test_dtp_count_has_the_inverses_and_the_noisy_forwards(method, noisy):
    trainer = trainer_of(method)
    inverses, sigma = bench_tang.dtp_inverse_flops(trainer)
    assert inverses == G
    assert (sigma > 0) == noisy  # the recipe: Algorithm 1, no noise; the row "_noise": the authors' code, sigma 1
    expected = 2 * (2 * sum(F) + F[3] + 4 * sum(G) + (F[1] + F[2] if noisy else 0))
    assert bench_tang.dtp_flops_per_pair(trainer.net, inverses, sigma) == expected
    assert bench_tang.dtp_inverse_flops(trainer_of("e2e_bp")) is None  # not DTP: no inverses
