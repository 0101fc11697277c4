"""Check training steps written in plain torch on an nn.Module (docs/locality.md, "Plain torch").

    python examples/locality_torch_module.py

No state is wired by hand: check_module_step runs the step once, records what it reads (the weights
and biases, the inputs, each nn.Linear's output via a hook, buffers, the target) and checks the layers
named in the contracts.
"""

import torch
from torch import nn

from neurolearn.locality import Contract
from neurolearn.locality.modules import check_module_step

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def backprop(model, x, target):
    """Plain autograd on L = 1/2 sum_b |f(x_b) - d_b|^2: the checked update is -W.grad."""
    loss = 0.5 * ((model(x) - target) ** 2).sum()
    loss.backward()


hidden = Contract("hidden: pre and post", allows={"pre", "post"})
output = Contract("output: delta rule", allows={"pre", "post", "neuron_signal"}, pathways=("target",))
kw = {"inputs": {"x": 3}, "signals": {"target": "target"}, "max_examples": 5, "synapses_per_layer": 3}
print(check_module_step(net, backprop, {"2": output}, **kw), end="\n\n")   # the output layer alone: local
print(check_module_step(net, backprop, {"0": hidden}, **kw), end="\n\n")   # the first layer: weight transport


class FANet(nn.Module):
    """Two layers and a fixed random feedback matrix B, registered as a buffer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)
        self.register_buffer("B", torch.randn(2, 4))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def feedback_alignment(model, x, target):
    """Lillicrap et al. 2016: e2 = y - d, e1 = (e2 B) * relu'(u1); returns {weight name: dW}."""
    u1 = model.fc1(x)
    h = torch.relu(u1)
    e2 = model.fc2(h) - target
    e1 = (e2 @ model.B) * (u1 > 0).float()
    return {"fc1.weight": -e1.T @ x, "fc2.weight": -e2.T @ h}


fed_back = Contract("hidden: feedback B", allows={"pre", "post", "neuron_signal"}, pathways=("feedback B",))
print(check_module_step(FANet(), feedback_alignment, {"fc1": fed_back, "fc2": output},
                        fixed={"B": "feedback B"}, **kw))
