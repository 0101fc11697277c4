"""The snnTorch engine is exact: block-wise, sparse-input simulation gives the spikes of the plain
step-by-step simulation with ``snntorch.Leaky``, and the fused membrane update is ``Leaky``'s."""

import pytest
import snntorch as snn
import torch

import neurolearn.sim.snntorch_sim as snn_sim
from neurolearn.sim.snntorch_sim import SnnTorchNetwork, leaky_subtract_step


def reference_counts(weights, biases, x, steps):
    """Step by step, one ``snntorch.Leaky`` per layer, one matrix product per step and layer; for
    inputs in {0, 1} the Bernoulli input is deterministic (a pixel of 1 spikes at every step)."""
    cells = [snn.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract", reset_delay=False) for _ in weights]
    mems = [torch.zeros(x.shape[0], w.shape[0]) for w in weights]
    counts = [torch.zeros_like(m) for m in mems]
    with torch.no_grad():
        for _ in range(steps):
            s = x.clone()
            for l, (w, b, cell) in enumerate(zip(weights, biases, cells)):
                s, mems[l] = cell(s @ w.T + b, mems[l])
                counts[l] += s
    return counts


def test_fused_update_is_snntorch_leaky():
    """Random currents, including ones above threshold that leave excess potential (the carry)."""
    g = torch.Generator().manual_seed(0)
    cell = snn.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract", reset_delay=False)
    mem_ref, mem = torch.zeros(64, 50), torch.zeros(64, 50)
    carry = False
    for t in range(300):
        scale = 3.0 if t % 50 < 5 else 0.6  # bursts of large currents create carries
        current = torch.randn(64, 50, generator=g) * scale + 0.2
        spk_ref, mem_ref = cell(current, mem_ref)
        spk, carry = leaky_subtract_step(mem, current, carry)
        assert torch.equal(spk.float(), spk_ref) and torch.allclose(mem, mem_ref, atol=1e-5), t


@pytest.mark.parametrize("density", [0.2, 0.9])  # sparse-input path and dense path
@pytest.mark.parametrize("depth", [1, 2])
def test_engine_equals_step_by_step_simulation(monkeypatch, density, depth):
    g = torch.Generator().manual_seed(depth)
    sizes = [30, 20, 12][: depth + 1]
    weights = [torch.randn(b, a, generator=g) * 0.4 for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [torch.randn(b, generator=g) * 0.1 for b in sizes[1:]]
    x = (torch.rand(23, sizes[0], generator=g) < density).float()
    monkeypatch.setattr(snn_sim, "_BLOCK_ELEMENTS", 3000)  # several batches and several time blocks
    for engine in ("fused", "snntorch"):
        run = SnnTorchNetwork(weights, biases, engine=engine).run(x, 37, record_steps=[5, 37])
        ref = reference_counts(weights, biases, x, 37)
        for c, r in zip(run["counts"], ref):
            assert torch.equal(c, r), engine
        assert torch.equal(run["checkpoints"][-1][1], ref[-1])
        assert torch.equal(run["checkpoints"][0][1], reference_counts(weights, biases, x, 5)[-1])
        assert torch.equal(run["input_spikes"], x.sum(1) * 37)


def test_engines_agree_on_poisson_input_and_seed():
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(40, 64, generator=g) * 0.3, torch.zeros(40)
    x = torch.rand(50, 64, generator=g) * (torch.rand(50, 64, generator=g) < 0.3)
    a = SnnTorchNetwork([w], [b]).run(x, 60, seed=5)
    c = SnnTorchNetwork([w], [b], engine="snntorch").run(x, 60, seed=5)
    assert torch.equal(a["counts"][0], c["counts"][0]) and torch.equal(a["input_spikes"], c["input_spikes"])
    assert not torch.equal(a["counts"][0], SnnTorchNetwork([w], [b]).run(x, 60, seed=6)["counts"][0])


def test_bad_input_is_named():
    net = SnnTorchNetwork([torch.zeros(3, 4)], [torch.zeros(3)])
    with pytest.raises(ValueError, match="engine"):
        SnnTorchNetwork([torch.zeros(3, 4)], [torch.zeros(3)], engine="jit")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\)"):
        net.run(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\]"):
        net.run(torch.full((2, 4), 1.5))
    with pytest.raises(ValueError, match="without NaN"):
        net.run(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="steps"):
        net.run(torch.zeros(2, 4), steps=0)
    with pytest.raises(ValueError, match="layer 1"):
        SnnTorchNetwork([torch.zeros(3, 4), torch.zeros(2, 5)], [torch.zeros(3), torch.zeros(2)])
