import torch
import pytest
from neurolearn.networks import FeedForward
from neurolearn.networks.layers import Conv, Dense
from neurolearn._validate import ParameterError

def test_torch_init_bounds_and_layer_activation():
    net = FeedForward((1, 28, 28), [Conv(8, 3, padding=1, pool="max", activation="tanh"), Dense(16, bias=False)],
                      hidden_activation="relu", output_activation="identity", seed=0, init="torch")
    w = net.layers[0].weight
    b = 1 / 9 ** 0.5
    assert w.abs().max() <= b and w.abs().max() > 0.9 * b and net.layers[0].bias.abs().max() > 0.5 * b
    assert net.activation_of(0) == "tanh" and net.activation_of(1) == "identity"
    h = net.forward_all(torch.randn(2, 1, 28, 28))
    assert h[1].abs().max() < 1 and h[1].min() < 0  # tanh, not relu
    x = FeedForward((1, 28, 28), [Conv(8, 3, padding=1, pool="max"), Dense(16)], seed=0)
    assert x.layers[0].bias.abs().max() == 0  # xavier: zero bias
    with pytest.raises(ParameterError, match="init"):
        FeedForward((4,), [Dense(3)], init="kaiming")
