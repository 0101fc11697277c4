"""Recipes, run folders, resume, divergence, the CLI and the README/CI contract."""

import json
import re
from pathlib import Path

import pytest
import torch

from neurolearn import recipe as recipes
from neurolearn.cli import main
from neurolearn.experiment import run_recipe
from neurolearn.runs import load_tensors
from neurolearn.train import DivergenceError

ROOT = Path(__file__).resolve().parents[1]


def small(**over):
    text = recipes.find_recipe(None)[1]
    base = {"network": {"sizes": [60]}, "objective": {"k": 3}, "training": {"epochs": 3},
            "eval": {"linear_epochs": 3, "locality": False}}
    for section, kv in over.items():
        if "type" in kv:
            base[section] = dict(kv)
        else:
            base.setdefault(section, {}).update(kv)
    return recipes.resolve(text, "default", base)


def test_every_builtin_recipe_resolves():
    names = recipes.builtin_recipes()
    assert {"digits_bp_1layer", "mnist_bp_1layer", "mnist_ep_1layer", "tang2022/e2e_bp"} <= set(names)
    for name, res in names.items():
        r = recipes.resolve(res.read_text(), name)
        assert r["name"] == name or "/" in name and r["name"].startswith(name.split("/")[0])  # tang2022/x: tang2022_x
        assert recipes.resolve(recipes.dumps(r), name) == r  # the resolved recipe round-trips


@pytest.mark.parametrize("text,needle", [
    ("[training]\nepochz = 3\n", "[training] unknown key 'epochz' for TrainingConfig; its keys are: epochs"),
    ("[credit]\ntype = 'backprop'\nfree_solver = 'alternating'\n", "[credit] unknown key 'free_solver' for 'backprop'"),
    ("[training]\nlr = 0\n", "[training] lr must be a finite number > 0"),
    ("[training]\noptimizer = 'adamw'\n", "[training] optimizer must be one of 'sgd', 'adam'"),
    ("[training]\nthreads = 999\n", "[training] threads must be an integer in [0, "),
    ("", "the recipe is empty"),
    ("[trainin]\nepochs = 3\n", "unknown section [trainin]"),
    ("[objective]\nk = 0\n", "[objective] k must be an integer >= 1, got 0"),
    ("[credit]\ntype = 'magic'\n", "[credit] type must be one of 'backprop', 'dtp', 'equilibrium'"),
    ("[network]\nsizes = [10]\ndropout = [0.1]\n", "dropout must have 2 entries"),
    ("[network]\ndropout = [0.1, 1.0]\n", "each in [0, 1)"),
    ("colour = 'red'\n", "unknown top-level key 'colour'"),
    ("[training\n", "not valid TOML"),
    ("[training]\ndevice = 'gpu0'\n", "[training] device must be a torch device"),
    ("[credit]\ntype = 'equilibrium'\nnudged_solver = 'rk4'\n", "[credit] nudged_solver must be one of 'euler', 'alternating'"),
])
def test_recipe_errors_name_the_key(text, needle):
    with pytest.raises(recipes.RecipeError) as e:
        recipes.resolve(text, "my.toml")
    assert needle in str(e.value) and "my.toml" in str(e.value)


def test_unknown_recipe_lists_builtins():
    with pytest.raises(recipes.RecipeError, match="digits_bp_1layer"):
        recipes.find_recipe("no_such_recipe")


def test_run_folder_contents_and_untrained_baseline(tmp_path):
    m = run_recipe(small(), tmp_path / "run", progress=False, log=lambda s: None)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"recipe.toml", "metrics.json", "weights.safetensors", "receptive_fields.png", "checkpoint.safetensors"} <= files
    assert not any(n.endswith(".tmp") for n in files)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["trained"] == m["trained"] and "untrained" in saved
    w = load_tensors(tmp_path / "run" / "weights.safetensors")
    assert w["layers.0.weight"].shape == (60, 64) and "objective.H" in w
    assert recipes.resolve((tmp_path / "run" / "recipe.toml").read_text())["network"]["sizes"] == [60]


def test_refuses_to_overwrite_a_run(tmp_path):
    run_recipe(small(), tmp_path / "run", progress=False, log=lambda s: None)
    with pytest.raises(FileExistsError, match="--resume"):
        run_recipe(small(), tmp_path / "run", progress=False, log=lambda s: None)


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    full = run_recipe(small(training={"epochs": 4}), tmp_path / "a", progress=False, log=lambda s: None)
    from neurolearn.train import Trainer

    original = Trainer.save_checkpoint

    def interrupted(self):
        original(self)
        if self.epoch == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after epoch 2

    monkeypatch.setattr(Trainer, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(small(training={"epochs": 4}), tmp_path / "b", progress=False, log=lambda s: None)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    assert not (tmp_path / "b" / "weights.safetensors").exists()
    resumed = run_recipe(small(training={"epochs": 4}), tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    wa = load_tensors(tmp_path / "a" / "weights.safetensors")
    wb = load_tensors(tmp_path / "b" / "weights.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    assert [h["loss"] for h in full["history"]] == pytest.approx([h["loss"] for h in resumed["history"]])


def test_divergence_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """A run whose weights blow up during epoch 2 stops with a clear error; the checkpoint of epoch 1
    is intact (finite, readable) and no final weights are written."""
    from neurolearn.credit import Backprop

    calls = {"n": 0}
    original = Backprop.step

    def blowing_up(self, net, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 100:  # epoch 2 (85 batches per epoch)
            with torch.no_grad():
                net.layers[0].weight.mul_(float("inf"))
        return original(self, net, *a, **kw)

    monkeypatch.setattr(Backprop, "step", blowing_up)
    with pytest.raises(DivergenceError, match="last good checkpoint") as e:
        run_recipe(small(training={"engine": "reference"}), tmp_path / "run", progress=False, log=lambda s: None)
    assert "epoch 2, batch 15 of 85" in str(e.value) and "update produced" in str(e.value)
    ck = load_tensors(tmp_path / "run" / "checkpoint.safetensors")
    assert all(torch.isfinite(v).all() for v in ck.values() if v.is_floating_point())
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["epoch"] == 1
    assert not (tmp_path / "run" / "weights.safetensors").exists()


def test_cli_run_and_errors(tmp_path, capsys):
    rec = tmp_path / "r.toml"
    rec.write_text(recipes.dumps(small(eval={"locality": True, "spiking": "both", "spiking_steps": 50})))
    assert main(["run", str(rec), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "untrained" in out and "trained" in out and "direct av" in out
    assert "locality of the training step (Backprop (1 layer)): LOCAL" in out
    assert "locality of the homeostasis (Homeostasis (batch mean), " in out and "NON-LOCAL -- batch statistics" in out
    assert "spiking (snnTorch, 50 steps): direct av" in out and "spiking (Brian2, 50 steps): direct av" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nlearning_rate = 1\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "[training] unknown key 'learning_rate'" in capsys.readouterr().err
    # --set overrides one key (TOML value, or a bare word as a string) and is validated like the file
    assert main(["run", str(rec), "--out", str(tmp_path / "o3"), "--no-progress", "--set", "training.epochs=1",
                 "--set", "eval.spiking=none", "--set", "eval.locality=false"]) == 0
    assert json.loads((tmp_path / "o3" / "metrics.json").read_text())["epochs"] == 1
    assert main(["run", str(rec), "--out", str(tmp_path / "o4"), "--set", "credit.free_solver=newton"]) == 2
    assert "free_solver" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["run", str(rec), "--out", str(tmp_path / "o6"), "--set", "training.device=cuda"]) == 2
        assert "device" in capsys.readouterr().err
    assert main(["run", str(rec), "--out", str(tmp_path / "o5"), "--set", "epochs"]) == 2
    assert "SECTION.KEY=VALUE" in capsys.readouterr().err


def test_supervised_and_equilibrium_recipes_train(tmp_path):
    r = small(objective={"type": "supervised"}, network={"sizes": [10], "dropout": [0.0, 0.0]},
              training={"lr": 0.3, "epochs": 10})
    m = run_recipe(r, tmp_path / "sup", progress=False, log=lambda s: None)
    assert m["trained"]["direct_av"] > 0.5 > m["untrained"]["direct_av"]
    r = small(credit={"type": "equilibrium"}, network={"sizes": [60], "hidden_activation": "hardsigmoid"},
              training={"lr": 0.03, "epochs": 2})
    m = run_recipe(r, tmp_path / "ep", progress=False, log=lambda s: None)
    assert m["trained"]["direct_av"] > 0.3


def test_quick_start_block_matches_ci():
    """The README's first bash block under '## Quick start' holds the install, run and test commands,
    and .ci/run runs exactly that install and test command."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [l.strip() for l in block.splitlines() if l.strip() and not l.strip().startswith("#")]
    install = next(l for l in lines if l.startswith("pip install"))
    test = next(l for l in lines if "pytest" in l)
    assert "neurolearn run" in lines
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and test in ci


def _small_run(name, tmp_path):
    r = recipes.resolve(recipes.find_recipe(name)[1], name)
    r["data"] = {**r["data"], "source": "digits"}
    r["network"]["sizes"] = [30, 20]
    r["training"]["epochs"] = 1
    r["eval"].update(linear=False, locality=False, untrained_baseline=False)
    return run_recipe(r, tmp_path / "run", progress=False, log=lambda s: None)


def test_fixed_point_solver_recipe_reports_its_sweeps(tmp_path):
    """The two-layer EP recipe with the fixed-point solver trains and reports sweeps per solve."""
    m = _small_run("mnist_ep_2layer_fp", tmp_path)
    st = m["solver"]
    assert st["free"]["solves"] == st["nudged"]["solves"] == -(-1348 // 32)  # one of each per batch
    assert 1 <= st["nudged"]["sweeps_per_solve"] <= st["free"]["sweeps_per_solve"] <= 60
    assert any(line.startswith("fixed-point solver, free phase:") for line in m["extra_lines"])


def test_free_phase_fixed_point_recipe_keeps_published_nudged_steps(tmp_path):
    """``mnist_ep_2layer_free_fp``: only the free phase goes to the solver; the nudged phase is the
    published Euler steps (no nudged solves counted)."""
    m = _small_run("mnist_ep_2layer_free_fp", tmp_path)
    assert set(m["solver"]) == {"free"} and m["solver"]["free"]["solves"] == -(-1348 // 32)


def test_locality_verdict_of_recipes():
    from neurolearn.experiment import locality_verdict

    for name, local in (("mnist_bp_2layer", False), ("mnist_ep_2layer", True), ("digits_bp_1layer", True)):
        r = recipes.resolve(recipes.find_recipe(name)[1], name)
        v = locality_verdict(r)
        assert v["local"] is local, v["text"]
    assert any("weight transport" in s for s in locality_verdict(recipes.resolve(recipes.find_recipe("mnist_bp_2layer")[1]))["violations"])
    # the homeostasis of the self-defined target: a batch mean in mini-batch mode, local in sequential mode
    r = recipes.resolve(recipes.find_recipe("digits_bp_1layer")[1], "d")
    assert locality_verdict(r)["homeostasis"]["local"] is False
    r["objective"]["mode"] = "sequential"
    assert locality_verdict(r)["homeostasis"]["local"] is True
    r = recipes.resolve(recipes.find_recipe("digits_bp_1layer")[1], "d", {"objective": {"type": "supervised"}})
    assert "homeostasis" not in locality_verdict(r)
