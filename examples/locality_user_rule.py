"""Check the locality of rules you write yourself (docs/locality.md).

    python examples/locality_user_rule.py
"""

import torch

from neurolearn.locality import Contract, check, single_layer


def oja(s):
    """Oja (1982): dW_ij = sum_b y_bi (x_bj - y_bi W_ij) -- pre, post and the synapse's own weight."""
    x, y, W = s["pre"], s["post"], s["W"]
    return y.T @ x - (y * y).sum(0)[:, None] * W


def softmax_hebb(s):
    """Hebbian rule on post activity normalised by a softmax over the layer: reads every post cell."""
    return torch.softmax(s["post"], dim=1).T @ s["pre"]


contract = Contract("pre, post and own weight", allows={"pre", "post", "weight"})
for rule in (oja, softmax_hebb):
    print(check(single_layer(rule, contract, n_pre=3, n_post=3), max_examples=15))
    print()
