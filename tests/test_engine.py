"""The engine: executors chosen by the combinations they support, each tested equal to the reference.

(The equality of the blocked executor and the reference on whole training runs, with dropout, is in
tests/test_credit.py; here the pieces and the selection.)"""

import pytest
import torch
from torch import nn

from neurolearn.credit import Backprop, EquilibriumProp
from neurolearn.engine import select_executor
from neurolearn.engine.blocked import DeferredLayer, rows_as_csr
from neurolearn.networks import MLP, Factors
from neurolearn.objectives import SelfDefinedTarget, SupervisedTarget
from neurolearn.train import Trainer


def test_rows_as_csr_is_the_transpose():
    torch.manual_seed(0)
    A = torch.randn(12, 30) * (torch.rand(12, 30) < 0.1)
    A[:, 5] = 0  # an output cell with no error in the block: an empty row of A^T
    assert torch.equal(rows_as_csr(A).to_dense(), A.T)
    assert torch.equal(rows_as_csr(torch.zeros(4, 3)).to_dense(), torch.zeros(3, 4))


@pytest.mark.parametrize("density", [0.02, 0.5])
def test_deferred_flush_equals_the_equation(density):
    """``W <- W_0 - lr E^T X`` whether few post factors are nonzero (sparse write) or many (dense GEMM);
    and each batch's drive is the current under the weights left by the batches before it."""
    torch.manual_seed(1)
    layer = nn.Linear(50, 400)
    W0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    X = torch.rand(64, 50)
    E = torch.randn(64, 400) * (torch.rand(64, 400) < density)
    d = DeferredLayer(layer, 0.1, X)
    for r in range(0, 64, 16):
        u = d.drive(X[r:r + 16])
        W_t = W0 - 0.1 * E[:r].T @ X[:r]
        b_t = b0 - 0.1 * E[:r].sum(0)
        assert torch.allclose(u, X[r:r + 16] @ W_t.T + b_t, atol=1e-4)
        d.add(Factors(post=E[r:r + 16], pre=X[r:r + 16]))
    d.flush()
    assert torch.allclose(layer.weight, W0 - 0.1 * E.T @ X, atol=1e-5)
    assert torch.allclose(layer.bias, b0 - 0.1 * E.sum(0), atol=1e-5)


def _trainer(net, objective=None, credit=None, **training):
    return Trainer(net, objective or SelfDefinedTarget(k=2), credit or Backprop(), training, progress=False)


def test_executor_selection_says_why():
    """One dense layer with plain SGD gets the blocked executor; Adam, two layers, block 1 or another
    objective get the reference, with the reason recorded; asking for an unsupported one is an error."""
    one = MLP((10, 8), seed=0)
    assert _trainer(one).executor == "blocked"
    for tr, why in [(_trainer(one, optimizer="adam"), "plain SGD"), (_trainer(MLP((10, 8, 6), seed=0)), "one dense"),
                    (_trainer(one, block=1), "block is 1")]:
        assert tr.executor == "reference" and why in tr.executor_reasons["blocked"]
    with pytest.raises(ValueError, match="does not support"):
        _trainer(one, optimizer="adam", engine="blocked")
    with pytest.raises(ValueError, match="engine must be one of"):
        _trainer(one, engine="turbo")


def test_executor_selection_is_by_type_not_by_name():
    """A user's subclass of Backprop that changes the step is not run by the blocked executor."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Louder(Backprop):
        def step(self, *a, **kw):
            return super().step(*a, **kw)

    assert _trainer(MLP((10, 8), seed=0), credit=Louder()).executor == "reference"
    assert _trainer(MLP((10, 8), seed=0), credit=EquilibriumProp(), objective=SupervisedTarget()).executor == "blocked"
    cls, reasons = select_executor(_trainer(MLP((10, 8), seed=0), credit=Louder()))
    assert cls.name == "reference" and "Louder" in reasons["blocked"]
