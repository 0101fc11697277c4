"""The extension points, proved by extensions written outside the package (examples/extending/):
a credit method with its own state (feedback alignment) and an objective over pairs of samples."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from neurolearn import recipe as recipes
from neurolearn.credit import Backprop
from neurolearn.data import load_digits
from neurolearn.describe import lookup
from neurolearn.experiment import locality_verdict, run_recipe
from neurolearn.locality import check
from neurolearn.networks import MLP
from neurolearn.objectives import SelfDefinedTarget
from neurolearn.train import Trainer

EXT = Path(__file__).resolve().parents[1] / "examples" / "extending"


def _module(name):
    path = EXT / f"{name}.py"
    mod_name = "neurolearn_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if mod_name in sys.modules:  # the same module the recipe's plugins key imports
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


FA = _module("feedback_alignment")
PV = _module("paired_views")


def _fa_recipe(**training):
    over = {"training": {"epochs": 3, **training}, "eval": {"linear_epochs": 3, "untrained_baseline": False}}
    return recipes.resolve((EXT / "fa_digits.toml").read_text(), str(EXT / "fa_digits.toml"), over)


def test_fa_is_registered_from_its_own_file():
    assert lookup("credit", "feedback_alignment") is FA.FeedbackAlignment
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        FA.FeedbackAlignment(scale=0)


def test_fa_step_equals_its_equations_and_differs_from_backprop():
    """One FA step = the delta rule with e_1 = (e_2 B) * f'(u_1); with B = W_2 it is backprop exactly."""
    torch.manual_seed(0)
    x, obj = torch.rand(8, 10), SelfDefinedTarget(k=2, gamma=0.0)
    nets = [MLP((10, 7, 6), dropout=(0, 0, 0), seed=1) for _ in range(3)]
    fa = FA.FeedbackAlignment()
    st = fa.init_state(nets[0], torch.Generator().manual_seed(0))
    opt = [torch.optim.SGD(n.parameters(), lr=0.5) for n in nets]
    fa.step(nets[0], x, obj, obj.init_state(6), st, opt[0])
    Backprop().step(nets[1], x, obj, obj.init_state(6), {}, opt[1])
    fa.step(nets[2], x, obj, obj.init_state(6), {"B1": nets[2].layers[1].weight.detach().clone()}, opt[2])
    assert torch.allclose(nets[2].layers[0].weight, nets[1].layers[0].weight, atol=1e-6)  # B = W: backprop
    assert not torch.allclose(nets[0].layers[0].weight, nets[1].layers[0].weight, atol=1e-4)  # random B: not
    assert torch.equal(nets[0].layers[1].weight, nets[1].layers[1].weight)  # the output layer is the same rule


def test_fa_from_a_recipe_is_local_and_backprop_is_not():
    """The run's locality verdict of FA's whole training step: local (B is a declared fixed matrix), while
    the same network trained by backprop is weight transport."""
    r = _fa_recipe()
    v = locality_verdict(r)
    assert v["local"], v["text"]
    bp = recipes.resolve((EXT / "fa_digits.toml").read_text(), str(EXT / "fa_digits.toml"),
                         {"credit": {"type": "backprop"}})
    v = locality_verdict(bp)
    assert not v["local"] and any("weight transport" in s for s in v["violations"])
    # and the checker sees the difference within FA's own checkable: declare no pathway -> non-local
    ck = FA.FeedbackAlignment().checkable((4, 3, 3))
    bare = type(ck)(ck.name, ck.spec, {k: type(c)(c.name, c.allows, ("target",)) for k, c in ck.contracts.items()}, ck.fn)
    assert not check(bare, seed=0, max_examples=10).local


def test_fa_recipe_trains_and_resume_restores_b(tmp_path, monkeypatch):
    """Trained from a recipe; B is in the checkpoint and a resumed run continues with the saved B (a
    different B made on resume is ignored) and equals the uninterrupted run."""
    full = run_recipe(_fa_recipe(), tmp_path / "a", progress=False, log=lambda s: None)
    assert full["trained"]["direct_av"] > full.get("untrained", {}).get("direct_av", 0.2)
    from neurolearn.runs import load_checkpoint_files

    t, _ = load_checkpoint_files(tmp_path / "a")
    assert "credit.B1" in t
    original = Trainer.save_checkpoint

    def interrupted(self):
        original(self)
        if self.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(_fa_recipe(), tmp_path / "b", progress=False, log=lambda s: None)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    real = FA.FeedbackAlignment.init_state
    monkeypatch.setattr(FA.FeedbackAlignment, "init_state",
                        lambda self, net, g=None: {k: v * -3.0 for k, v in real(self, net, g).items()})
    resumed = run_recipe(_fa_recipe(), tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    assert resumed["history"] == full["history"]
    wa = json.loads((tmp_path / "a" / "metrics.json").read_text())["trained"]
    assert resumed["trained"] == wa


def test_fa_from_python():
    ds = load_digits()
    net = MLP((64, 100, 100), dropout=(0, 0, 0), seed=0)
    tr = Trainer(net, SelfDefinedTarget(k=3), FA.FeedbackAlignment(), {"epochs": 2, "lr": [1.0, 2.0]}, progress=False)
    hist = tr.fit(ds.x_train)
    assert hist[-1]["loss"] < hist[0]["loss"] and set(tr.credit_state) == {"B1"}


def test_paired_views_gradient_is_autograd():
    torch.manual_seed(0)
    y = torch.rand(12, 5, dtype=torch.float64, requires_grad=True)
    obj = PV.PairedViews(margin=0.8)
    out = obj.error(y.detach())
    B = 6
    a, b = y[:B], y[B:]
    ref = (((a - b) ** 2).sum() + torch.relu(0.8 - ((a - b.roll(-1, 0)) ** 2).sum(1)).sum()) / B
    ref.backward()
    assert torch.allclose(out.grad, y.grad) and torch.allclose(out.loss, ref.detach())
    assert (((a - b.roll(-1, 0)) ** 2).sum(1) < 0.8).any() and (((a - b.roll(-1, 0)) ** 2).sum(1) > 0.8).any()


def test_paired_views_train_with_backprop_and_pull_views_together():
    """Two views per image through Backprop: after training the views of one image are closer to each other
    than to other images' views (before training the gap is smaller); the trainer used the reference path."""
    ds = load_digits()
    x = ds.x_train[:512]
    obj = PV.PairedViews(margin=1.0)

    def gap(net):
        with torch.no_grad():
            va, vb = obj.present(x, None, torch.Generator().manual_seed(5))[0].split(len(x))
            ya, yb = net(va), net(vb)
            return ((ya - yb.roll(-1, 0)) ** 2).sum(1).mean() - ((ya - yb) ** 2).sum(1).mean()

    net = MLP((64, 80, 20), output_activation="identity", dropout=(0, 0, 0), seed=0)
    before = gap(net)
    tr = Trainer(net, obj, Backprop(), {"epochs": 5, "lr": 0.05, "batch_size": 32}, progress=False)
    assert tr.executor == "reference"
    tr.fit(x)
    assert gap(net) > before + 0.1
