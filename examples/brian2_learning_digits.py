"""Train the one-layer kWTA network inside Brian2 and its rate version on the same digits subset.

    python examples/brian2_learning_digits.py [--n-train 300] [--cells 50] [--target numpy|cython]

The same KWTAHebbian rule (all of eta, k, c, theta_plus, tau_theta) drives both: in Brian2 as the
rule's own synaptic equations and namespace (traces, adaptive thresholds, the one kWTA circuit) during
one run over the presentations, in torch as the rate update applied sample by sample. Each is
evaluated by direct association (cells labelled on the training subset).
"""

import argparse
import json
import time

import torch

from neurolearn.data import load_digits
from neurolearn.eval.association import direct_association_accuracy
from neurolearn.plasticity.hebbian_kwta import KWTAHebbian
from neurolearn.sim.brian2_learning import Brian2KWTALearner


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--cells", type=int, default=50)
    ap.add_argument("--target", default="numpy", choices=["numpy", "cython"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ds = load_digits()
    x, y = ds.x_train[: args.n_train], ds.y_train[: args.n_train]
    xt, yt = ds.x_test[: args.n_test], ds.y_test[: args.n_test]
    rule = KWTAHebbian(eta=0.1, theta_plus=0.2)
    rows = {}

    t0 = time.perf_counter()
    learner = Brian2KWTALearner(64, args.cells, rule, target=args.target)
    rows["Brian2, untrained"] = direct_association_accuracy(torch.tensor(learner.responses(x.numpy())), y,
                                                            torch.tensor(learner.responses(xt.numpy())), yt, 10)
    learner.train(x.numpy())
    rows["Brian2, trained"] = direct_association_accuracy(torch.tensor(learner.responses(x.numpy())), y,
                                                          torch.tensor(learner.responses(xt.numpy())), yt, 10)
    b2_seconds = time.perf_counter() - t0

    def winners(u):
        return torch.zeros_like(u).scatter_(1, u.topk(rule.k, dim=1).indices, 1.0)

    W, theta = rule.train_rate(x, args.cells)
    rows["rate, trained"] = direct_association_accuracy(winners(x @ W.T - theta), y, winners(xt @ W.T - theta), yt, 10)
    print(f"{args.n_train} training digits presented once, {args.cells} cells, test on {args.n_test}")
    print(f"{'network':<20}{'direct av':>11}{'direct max':>12}")
    for name, r in rows.items():
        print(f"{name:<20}{100 * r['av']:>10.2f}%{100 * r['max']:>11.2f}%")
    print(f"Brian2 ({args.target}): {b2_seconds:.1f} s for untrained responses, training and trained responses")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "brian2_seconds": b2_seconds, **vars(args)}, fh, indent=2)


if __name__ == "__main__":
    main()
