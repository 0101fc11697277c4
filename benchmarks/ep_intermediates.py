"""One-layer equilibrium propagation step by step against the authors' code (issue 14).

Both implementations start from the same weights (neurolearn's initialisation copied into theirs) and
take the same mini-batches of MNIST with the same random draws: neurolearn's ``EquilibriumProp.step``
draws its input mask, output mask and sign of beta from the batch's generator
(:func:`neurolearn.rng.batch_generator`); the same draws are made first from a copy of that generator
and handed to the authors' epoch function ``train_unsupervised_ep`` (their ``drop_all_layers`` and
their ``torch.randn`` for the sign are replaced, for this process, by functions returning those
draws). Their loop itself runs unchanged; what it computes is recorded around their own functions
(``define_unsupervised_target``, ``nudge_weight_update``), and neurolearn's around ``relax``. For every
batch the script prints the largest absolute difference of

* the free output state (theirs is multiplied by the output mask inside their dynamics, so ours is
  compared times the mask),
* the winners (cells whose kWTA membership differs, counted) and the target ``d`` (smoothed, masked),
* the homeostatic thresholds ``H`` after the batch,
* the nudged output state (masked),
* the weight and bias change of the batch, divided by the learning rate,

relative to the size of each quantity. A difference beyond float rounding (about 1e-6 of the size) is
a lead. Options switch neurolearn's choices one at a time (``--input-dropout``,
``--homeostasis-from``, ``--euler``), so that the difference each one accounts for is visible.

    python benchmarks/ep_intermediates.py --reference /path/to/unsupervised-target [--batches 3]
        [--seed 0] [--input-dropout scaled|unscaled] [--homeostasis-from winners|target] [--euler]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch
from bench_training import SETUPS, layers_of, load_mnist, make_trainer, prepare

QUANTITIES = ("free", "winners", "target", "H", "nudged", "dW", "db")


class _Torch:
    """``torch`` for the authors' epoch function, with ``randn`` returning the given signs of beta."""

    def __init__(self, signs):
        self._signs = list(signs)

    def randn(self, *shape, **kw):
        return torch.tensor([self._signs.pop(0)], dtype=torch.float32)

    def __getattr__(self, name):
        return getattr(torch, name)


def our_draws(trainer, x: torch.Tensor, generator: torch.Generator):
    """The input mask, output mask and sign of beta that ``EquilibriumProp.step`` draws from
    ``generator`` for batch ``x`` (drawn from a copy: ``generator`` is left as it is)."""
    from neurolearn.networks.feedforward import keep_mask

    g = torch.Generator().set_state(generator.get_state())
    net = trainer.net
    p_in, p_out = net.dropout[0], net.dropout[-1]
    m_in = keep_mask(x.shape, 1 - p_in, g, x.device) if p_in > 0 else torch.ones_like(x)
    m_out = keep_mask((x.shape[0], net.sizes[-1]), 1 - p_out, g, x.device) if p_out > 0 else \
        torch.ones(x.shape[0], net.sizes[-1], device=x.device)
    sign = -1.0 if torch.randint(0, 2, (1,), generator=g).item() else 1.0
    return m_in, m_out, sign


def run_ours(trainer, batches, epoch: int = 0) -> list[dict]:
    """neurolearn's steps on ``batches`` (the reference executor's calls); per batch the recorded
    free and nudged output states, target, H after the batch, and the weight/bias change over lr."""
    from neurolearn.rng import batch_generator

    credit, net = trainer.credit, trainer.net
    rec = {}
    relax = type(credit).relax

    def recording_relax(self, *a, **k):
        out = relax(self, *a, **k)
        rec["nudged" if (k.get("beta", a[4] if len(a) > 4 else 0.0)) else "free"] = out[-1].clone()
        return out

    decide = type(trainer.objective).decide

    def recording_decide(self, y, state, mask=None, labels=None):
        d = decide(self, y, state, mask, labels)
        rec["target"] = d.clone()
        return d

    rows = []
    type(credit).relax, type(trainer.objective).decide = recording_relax, recording_decide
    try:
        lr = trainer.optimizer.param_groups[0]["lr"]
        trainer.objective.on_epoch_start(trainer.state)
        for b, xb in enumerate(batches):
            g = batch_generator(trainer.seed, epoch, b)
            m_in, m_out, sign = our_draws(trainer, xb, g)
            W0, b0 = (p.detach().clone() for p in (net.layers[0].weight, net.layers[0].bias))
            credit.step(net, xb, trainer.objective, trainer.state, trainer.credit_state, trainer.optimizer, None, g)
            rows.append({"free": rec["free"] * m_out, "nudged": rec["nudged"] * m_out, "target": rec["target"],
                         "H": trainer.state.H.clone(),
                         "dW": (net.layers[0].weight.detach() - W0) / lr, "db": (net.layers[0].bias.detach() - b0) / lr,
                         "draws": (m_in, m_out, sign)})
    finally:
        type(credit).relax, type(trainer.objective).decide = relax, decide
    return rows


def run_theirs(ref, batches, draws, epoch: int = 0) -> list[dict]:
    """The authors' epoch function on ``batches`` with the given ``draws`` (input mask, output mask,
    sign of beta per batch); per batch the same quantities as :func:`run_ours`."""
    tt = ref.mods["ep_train"]
    net = ref.net
    lr = ref.optimizer.param_groups[0]["lr"]
    masks = [[m_out, m_in] for m_in, m_out, _ in draws]  # their list: output first, input last
    rows, cur = [], {}
    saved = {k: getattr(tt, k) for k in ("drop_all_layers", "define_unsupervised_target", "nudge_weight_update", "torch")}

    def drop_all_layers(s, p):
        return masks.pop(0)

    def define_unsupervised_target(output, N, device, homeo=None):
        if cur:  # the previous batch ends here: H after it is the H handed to this one
            rows[-1]["H"] = homeo.clone()
        t, idx = saved["define_unsupervised_target"](output, N, device, homeo)
        cur.update(free=output.clone(), W0=net.W[0].detach().T.clone(), b0=net.bias[0].detach().clone())
        rows.append(cur.copy())
        return t, idx

    def nudge_weight_update(net_, s, targets, p, error_estimate, loss):
        nudged = net_.forward([v.clone() for v in s], p, target=targets, beta=net_.beta)
        rows[-1].update(target=targets.clone(), nudged=nudged[0].clone())
        return saved["nudge_weight_update"](net_, s, targets, p, error_estimate, loss)

    tt.drop_all_layers, tt.define_unsupervised_target = drop_all_layers, define_unsupervised_target
    tt.nudge_weight_update, tt.torch = nudge_weight_update, _Torch([s for _, _, s in draws])
    try:
        loader = ((xb, torch.zeros(xb.shape[0], dtype=torch.long)) for xb in batches)
        H = tt.train_unsupervised_ep(net, ref.jp, loader, ref.optimizer, epoch)
    finally:
        for k, v in saved.items():
            setattr(tt, k, v)
    rows[-1]["H"] = H.clone()
    ends = [(r["W0"], r["b0"]) for r in rows[1:]] + [(net.W[0].detach().T.clone(), net.bias[0].detach().clone())]
    for r, (W1, b1) in zip(rows, ends):
        r["dW"], r["db"] = (W1 - r.pop("W0")) / lr, (b1 - r.pop("b0")) / lr
    return rows


def winners(target: torch.Tensor, k: int) -> torch.Tensor:
    """The cells each row's target singles out (its ``k`` largest entries) as a 0/1 mask."""
    idx = target.topk(k, dim=1).indices
    return torch.zeros_like(target).scatter_(1, idx, 1.0)


def compare(ours: list[dict], theirs: list[dict], k: int) -> list[dict]:
    """Per batch: ``{quantity: (max |ours - theirs|, max |theirs|)}``; for winners the count of cells
    whose membership differs (out of ``B k``)."""
    out = []
    for o, t in zip(ours, theirs):
        row = {}
        for q in QUANTITIES:
            if q == "winners":
                row[q] = (float((winners(o["target"], k) != winners(t["target"], k)).sum()) / 2,
                          float(o["target"].shape[0] * k))
            else:
                row[q] = (float((o[q] - t[q]).abs().max()), float(t[q].abs().max()))
        out.append(row)
    return out


def intermediates(reference: str, seed: int = 0, n_batches: int = 3, credit_options=None, objective_options=None,
                  data: str | None = None) -> list[dict]:
    """Run both implementations on the first ``n_batches`` batches of epoch 0 (neurolearn's order)
    from the same weights; return :func:`compare`'s rows."""
    from neurolearn.data import batch_indices
    from neurolearn.train import Trainer
    from reference_liu import Reference

    cfg = SETUPS["ep1"]
    base = make_trainer("ep1", cfg, seed, schedule="none")
    ours = Trainer(base.net, replace(base.objective, **(objective_options or {})),
                   replace(base.credit, **(credit_options or {})), base.config, seed, progress=False)
    theirs = Reference(reference, "ep1", seed=seed, init_weights=layers_of(ours))
    ds = load_mnist(data)
    batches = [ds.x_train[idx] for idx in batch_indices(ds.x_train.shape[0], cfg["batch"], seed, 0)[:n_batches]]
    rows_ours = run_ours(ours, batches)
    rows_theirs = run_theirs(theirs, batches, [r["draws"] for r in rows_ours])
    return compare(rows_ours, rows_theirs, cfg["k"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, metavar="PATH", help="checkout of the authors' repository")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=3, help="consecutive batches from the same start")
    ap.add_argument("--input-dropout", choices=("scaled", "unscaled"), default=None,
                    help="neurolearn's EquilibriumProp.input_dropout (default: the library's default)")
    ap.add_argument("--homeostasis-from", choices=("winners", "target"), default=None,
                    help="neurolearn's SelfDefinedTarget.homeostasis_from (default: the library's default)")
    ap.add_argument("--euler", action="store_true", help="neurolearn relaxes by Euler steps (exact_single_layer=false)")
    ap.add_argument("--data")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.batches < 1:
        ap.error(f"--batches must be >= 1, got {args.batches}")
    prepare(ap, args.reference, args.threads)
    credit = {"input_dropout": args.input_dropout} if args.input_dropout else {}
    if args.euler:
        credit["exact_single_layer"] = False
    objective = {"homeostasis_from": args.homeostasis_from} if args.homeostasis_from else {}
    print("neurolearn options:", credit, objective, "| command: python benchmarks/ep_intermediates.py",
          " ".join(argv or sys.argv[1:]))
    rows = intermediates(args.reference, args.seed, args.batches, credit, objective, args.data)
    print(f"{'batch':>5}  " + "  ".join(f"{q:>19}" for q in QUANTITIES))
    print(f"{'':>5}  " + "  ".join(f"{'max|diff| / size':>19}" for _ in QUANTITIES))
    for b, row in enumerate(rows):
        print(f"{b:>5}  " + "  ".join(f"{d:9.3g} /{s:9.3g}" for d, s in (row[q] for q in QUANTITIES)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
