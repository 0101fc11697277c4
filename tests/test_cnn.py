"""Convolutional layers behind the layer protocol, and the CNN recipe (Liu et al. 2024, Table 8).

The weight gradient of a convolution is the sum over output positions of the same local outer
product of the post error and the pre patch (weight sharing):

    g_oc.. = sum_b sum_p post[b, o, p] patch(pre)[b, c.., p]

which is checked here against an explicit unfold-based computation and against autograd.
"""

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from neurolearn import recipe as recipes
from neurolearn.credit import Backprop
from neurolearn.networks.feedforward import FeedForward
from neurolearn.networks.layers import Conv, Dense, Factors, ops
from neurolearn.objectives import SelfDefinedTarget
from neurolearn.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "models" / "mnist_cnn_bp.toml"


def _unfold_gradient(conv: nn.Conv2d, post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """``sum_b sum_p post[b, o, p] patch(pre)[b, c.., p]`` written out with ``unfold`` (the patches)."""
    patches = nn.functional.unfold(pre, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C k k, P)
    g = torch.einsum("bop,bcp->oc", post.flatten(2), patches)
    return g.view_as(conv.weight)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (1, 2)])
def test_conv_gradient_is_sum_of_local_outer_products(stride, padding):
    """The layer protocol's ``gradient`` equals the unfold sum and autograd's weight gradient; the bias
    gradient is ``post`` summed over samples and positions."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding)
    pre = torch.randn(4, 3, 9, 9)
    out_shape = conv(pre).shape
    post = torch.randn(out_shape)
    f = Factors(post=post, pre=pre)
    g = ops(conv).gradient(conv, f)
    assert g.shape == conv.weight.shape
    explicit = _unfold_gradient(conv, post, pre)
    assert torch.allclose(g, explicit, atol=1e-4)
    conv.zero_grad()
    (conv(pre) * post).sum().backward()  # d/dW of sum post * u = the weight gradient for error `post`
    assert torch.allclose(g, conv.weight.grad, atol=1e-4)
    assert torch.allclose(f.bias, conv.bias.grad, atol=1e-4)
    # the opposite: the error shifted by one position is another gradient (positions matter)
    shifted = _unfold_gradient(conv, torch.roll(post, 1, dims=3), pre)
    assert not torch.allclose(g, shifted, atol=1e-2)


def test_conv_send_down_and_sgd_follow_autograd():
    """``send_down`` is the input gradient ``e W`` (the transpose of the convolution); ``sgd`` is
    ``W <- W - lr g_W`` and ``b <- b - lr g_b``; without ``input_shape`` send_down raises."""
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 4, 5, padding=2)
    pre = torch.randn(3, 2, 8, 8, requires_grad=True)
    e = torch.randn(3, 4, 8, 8)
    (conv(pre) * e).sum().backward()
    down = ops(conv).send_down(conv, e, input_shape=pre.shape)
    assert torch.allclose(down, pre.grad, atol=1e-4)
    other = ops(conv).send_down(conv, e, weight=torch.zeros_like(conv.weight), input_shape=pre.shape)
    assert torch.count_nonzero(other) == 0 and torch.count_nonzero(down) > 0  # the weight given replaces W
    with pytest.raises(ValueError, match="input_shape"):
        ops(conv).send_down(conv, e)
    w0, b0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    f = Factors(post=e, pre=pre.detach())
    with torch.no_grad():
        ops(conv).sgd(conv, f, 0.1, 0.01)
    assert torch.allclose(conv.weight, w0 - 0.1 * conv.weight.grad, atol=1e-5)
    assert torch.allclose(conv.bias, b0 - 0.01 * conv.bias.grad, atol=1e-5)
    assert not torch.allclose(conv.weight, w0)


def _tiny_net(seed=0, dropout=(0.0, 0.0, 0.0)):
    return FeedForward((1, 8, 8), [Conv(channels=4, kernel=3, padding=1, pool="avg", pool_kernel=2, pool_stride=2),
                                   Dense(units=12)], dropout=dropout, seed=seed)


def test_backprop_step_on_a_conv_network_is_the_mse_gradient():
    """One SGD step of Backprop with the self-defined target on a conv network: every weight moves by
    ``-lr dL/dW``, L the mean squared error to the (fixed) kWTA target of the batch (Liu et al. 2024, Eq. 3)."""
    torch.manual_seed(2)
    x = torch.rand(16, 64)
    net = _tiny_net(seed=3)
    before = [p.detach().clone() for p in net.parameters()]
    ref = _tiny_net(seed=3)
    y = ref(x)
    d = torch.zeros_like(y).scatter_(1, y.detach().argmax(1, keepdim=True), 1.0)  # k = 1, H = 0 at the start
    ((y - d) ** 2).mean().backward()
    lr = 0.5
    Trainer(net, SelfDefinedTarget(k=1, gamma=1.0), Backprop(),
            {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": lr, "schedule": "none"}, progress=False).fit(x)
    for p0, p, q in zip(before, net.parameters(), ref.parameters()):
        assert torch.allclose(p, p0 - lr * q.grad, atol=1e-6)
    assert not torch.allclose(net.layers[0].weight, before[0], atol=1e-6)  # the conv layer did learn


@pytest.mark.parametrize("lr,moves", [(1e-2, True), (1e-9, False)])
def test_trainer_changes_conv_weights_by_lr(lr, moves):
    """A tiny conv network on digits-sized random images, trained by Backprop with the self-defined
    target through the Trainer (Adam, dropout on): the conv weights move with a usable learning rate
    and stay (nearly) where they were with a tiny one."""
    torch.manual_seed(4)
    x = torch.rand(64, 64)
    net = _tiny_net(seed=5, dropout=(0.1, 0.2, 0.3))
    w0 = net.layers[0].weight.detach().clone()
    tr = Trainer(net, SelfDefinedTarget(k=1, gamma=1.0), Backprop(),
                 {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": lr, "schedule": "none"}, progress=False)
    tr.fit(x)
    assert tr.epoch == 2 and all(torch.isfinite(p).all() for p in net.parameters())
    change = (net.layers[0].weight - w0).abs().max().item()
    if moves:
        assert change > 1e-3
    else:
        assert change < 1e-6


def test_cnn_recipe_resolves_and_builds():
    """``models/mnist_cnn_bp.toml`` (Liu et al. 2024 Table 8, MNIST): 28x28 -> 32 x 14x14 -> 128 x 7x7
    (6272) -> 3000 cells, k = 1, gamma = 1, Adam, batch 16; dropout 0.2 before the FC layer, 0.3 on its output."""
    r = recipes.resolve(RECIPE.read_text(), str(RECIPE))
    parts = recipes.describe_recipe(r)
    net = parts["network"].build((1, 28, 28), seed=0)
    assert net.shapes == ((1, 28, 28), (32, 14, 14), (128, 7, 7), (3000,))
    assert net.sizes == (784, 6272, 6272, 3000)
    assert [tuple(layer.weight.shape) for layer in net.layers] == [(32, 1, 5, 5), (128, 32, 3, 3), (3000, 6272)]
    assert net.dropout == (0.0, 0.0, 0.2, 0.3)
    assert (r["objective"]["k"], r["objective"]["gamma"]) == (1, 1.0)
    assert (r["training"]["optimizer"], r["training"]["batch_size"]) == ("adam", 16)
    assert r["data"]["source"] == "mnist"
    out = net(torch.rand(2, 784))
    assert out.shape == (2, 3000)
    # the opposite: a dense layer cannot be followed by a conv layer
    with pytest.raises(ValueError, match="cannot follow a dense"):
        FeedForward((1, 28, 28), [Dense(units=10), Conv()])


@pytest.mark.slow
def test_cnn_recipe_reaches_97_percent_linear(tmp_path):
    """The full recipe on the MNIST files (10k training subset, official test set): linear probe >= 97%."""
    from neurolearn.experiment import run_recipe

    if not os.environ.get("NEUROLEARN_DATA"):
        os.environ["NEUROLEARN_DATA"] = str(ROOT.parent / "shared" / "data")
    r = recipes.resolve(RECIPE.read_text(), str(RECIPE))
    m = run_recipe(r, tmp_path / "run", progress=False, log=lambda s: None)
    assert m["trained"]["linear"] >= 0.97


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_pruned_conv_weights_stay_zero(optimizer):
    """``prune = 0.5``: half the kernel weights are removed at initialisation and stay zero through
    training (their gradient is masked); the others learn. ``prune = 0``: a plain conv, nothing zero."""
    torch.manual_seed(6)
    layers = [Conv(channels=4, kernel=3, padding=1, pool="avg", pool_kernel=2, pool_stride=2, prune=0.5),
              Dense(units=12)]
    net = FeedForward((1, 8, 8), layers, seed=7)
    conv = net.layers[0]
    removed = conv.mask == 0
    assert removed.sum().item() == round(0.5 * conv.weight.numel())
    assert torch.all(conv.weight[removed] == 0) and torch.all(conv.weight[~removed] != 0)
    w0 = conv.weight.detach().clone()
    Trainer(net, SelfDefinedTarget(k=1, gamma=1.0), Backprop(),
            {"epochs": 2, "batch_size": 16, "optimizer": optimizer,
             "lr": 1e-2 if optimizer == "adam" else 1.0, "schedule": "none"}, progress=False).fit(torch.rand(64, 64))
    assert torch.all(conv.weight[removed] == 0)
    assert (conv.weight[~removed] - w0[~removed]).abs().max() > 1e-4
    # the same seed without pruning: a plain convolution, with the dense layer drawn identically
    plain = FeedForward((1, 8, 8), [Conv(channels=4, kernel=3, padding=1, pool="avg", pool_kernel=2, pool_stride=2),
                                    Dense(units=12)], seed=7)
    assert type(plain.layers[0]) is nn.Conv2d and torch.count_nonzero(plain.layers[0].weight) == w0.numel()
    assert torch.equal(plain.layers[0].weight * (~removed), w0)
    assert torch.equal(plain.layers[1].weight, FeedForward((1, 8, 8), layers, seed=7).layers[1].weight)


def test_prune_fraction_is_validated():
    with pytest.raises(ValueError, match="prune"):
        Conv(prune=1.0)
    with pytest.raises(ValueError, match="prune"):
        Conv(prune=-0.1)
