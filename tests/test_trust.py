"""Runs a user can trust (issue 11): every fault gets a clear error or an honest warning before anything is
written, nothing is silently wrong, no run folder is left inconsistent. Each fault beside its legal twin."""

import json

import pytest
import torch

from neurolearn import recipe as recipes
from neurolearn.cli import main
from neurolearn.credit import Backprop
from neurolearn.data import DataError, load_digits
from neurolearn.experiment import SetupError, run_recipe
from neurolearn.networks import MLP
from neurolearn.objectives import SelfDefinedTarget, SupervisedTarget
from neurolearn.runs import RunFolderError, RunLock
from neurolearn.train import DivergenceError, Trainer, TrainingConfig, TrainingInputError


def small(**over):
    base = {"network": {"sizes": [40]}, "objective": {"k": 3}, "training": {"epochs": 2},
            "eval": {"linear": False, "locality": False, "untrained_baseline": False, "receptive_fields": 0}}
    for section, kv in over.items():
        base.setdefault(section, {}).update(kv)
    return recipes.resolve(recipes.find_recipe(None)[1], "default", base)


def quiet(**kw):
    return dict(progress=False, log=lambda s: None, **kw)


def _write(tmp_path, recipe, name="r.toml"):
    p = tmp_path / name
    p.write_text(recipes.dumps(recipe))
    return str(p)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    lock = RunLock(out, command="neurolearn run holder").acquire()
    try:
        with pytest.raises(RunFolderError, match="being written by another run: pid .*neurolearn run holder"):
            run_recipe(small(), out, **quiet())
    finally:
        lock.release()
    run_recipe(small(), out, **quiet())  # the holder gone, the same folder works
    assert (out / "metrics.json").exists() and not (out / ".neurolearn.lock").exists()


def test_an_error_found_at_start_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SetupError, match="k must be <= the number of output cells"):
        run_recipe(small(objective={"k": 50}), out, **quiet())
    assert not out.exists()
    run_recipe(small(), out, **quiet())  # the corrected rerun is not refused
    assert recipes.resolve((out / "recipe.toml").read_text())["objective"]["k"] == 3


def test_spiking_on_a_network_it_cannot_convert_is_refused_before_training(tmp_path):
    r = small(network={"type": "mlp", "sizes": [20, 20], "hidden_activation": "hardsigmoid", "dropout": [0, 0, 0]},
              credit={"type": "equilibrium"}, eval={"spiking": "snntorch"})
    with pytest.raises(SetupError, match="spiking"):
        run_recipe(r, tmp_path / "run", **quiet())
    assert not (tmp_path / "run").exists()


def test_resume_rules(tmp_path, capsys):
    rec = _write(tmp_path, small(training={"epochs": 1}))
    out = str(tmp_path / "run")
    assert main(["run", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no run" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert main(["run", rec, "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", "--out", out, "--resume", "--set", "training.lr=3"]) == 2
    assert "training.lr = 8.0 in the run, 3.0 given" in capsys.readouterr().err
    assert main(["run", "mnist_bp_1layer", "--out", out, "--resume"]) == 2
    assert "differs from the run's recipe" in capsys.readouterr().err
    assert main(["run", rec, "--out", out, "--resume", "--epochs", "0"]) == 2
    assert "can only be extended" in capsys.readouterr().err
    assert main(["run", rec, "--out", out, "--resume", "--epochs", "2", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "the checkpoint after epoch 1 of 1" in said and "epochs raised from 1 to 2" in said
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 2
    assert recipes.resolve((tmp_path / "run" / "recipe.toml").read_text())["training"]["epochs"] == 2


@pytest.mark.parametrize("damage", ["garbage", "truncate", "nan"])
def test_a_damaged_checkpoint_is_never_resumed(tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert main(["run", _write(tmp_path, small(training={"epochs": 1})), "--out", str(out), "--quiet"]) == 0
    ck = out / "checkpoint.safetensors"
    raw = ck.read_bytes()
    if damage == "garbage":  # finite garbage over the weights: same length, valid format
        from safetensors.torch import load_file, save_file

        t = load_file(str(ck))
        t["net.layers.0.weight"] = torch.rand_like(t["net.layers.0.weight"])
        save_file(t, str(ck))
    elif damage == "truncate":
        ck.write_bytes(raw[: len(raw) // 2])
    else:
        from safetensors.torch import load_file, save_file

        t = load_file(str(ck))
        t["net.layers.0.weight"].fill_(float("nan"))
        save_file(t, str(ck))
    capsys.readouterr()
    assert main(["run", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and ("checksum" in err or "finite" in err), err
    assert "Traceback" not in err


def test_unwritable_out_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", _write(tmp_path, small()), "--out", str(blocker / "run"), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err


def test_data_folder_is_recorded_and_a_missing_one_is_an_error(tmp_path, monkeypatch):
    run_recipe(small(), tmp_path / "run", **quiet())
    rec = json.loads((tmp_path / "run" / "data.json").read_text())
    assert rec["source"] == "digits" and "scikit_learn" in rec
    monkeypatch.setenv("NEUROLEARN_DATA", str(tmp_path / "nonexistent"))
    with pytest.raises(DataError, match="NEUROLEARN_DATA"):
        run_recipe(small(data={"source": "mnist"}), tmp_path / "run2", **quiet())
    assert not (tmp_path / "run2").exists()


def test_resume_on_changed_data_is_refused(tmp_path):
    run_recipe(small(training={"epochs": 1}), tmp_path / "run", **quiet())
    rec = json.loads((tmp_path / "run" / "data.json").read_text())
    rec["files"] = {k: "0" * 64 for k in rec["files"]}
    (tmp_path / "run" / "data.json").write_text(json.dumps(rec))
    with pytest.raises(DataError, match="data differ"):
        run_recipe(small(training={"epochs": 2}), tmp_path / "run", resume=True, **quiet())


@pytest.mark.parametrize("make,needle", [
    (lambda x: x.clone().fill_(float("nan")), "finite"),
    (lambda x: torch.where(torch.arange(x.shape[1]) == 3, float("inf"), x), "finite"),
    (lambda x: x[:, :10], "shape"),
    (lambda x: x[0], "non-empty batch"),
    (lambda x: (x * 16).long(), "floating-point"),
    (lambda x: x[:0], "non-empty batch"),
    (lambda x: x.numpy(), "torch tensor"),
])
def test_fit_checks_its_input_before_any_update(make, needle):
    x = load_digits().x_train[:64]
    net = MLP((64, 20), seed=0)
    w0 = net.layers[0].weight.detach().clone()
    tr = Trainer(net, SelfDefinedTarget(k=2), Backprop(), {"epochs": 1}, progress=False)
    with pytest.raises(TrainingInputError, match=needle):
        tr.fit(make(x))
    assert torch.equal(net.layers[0].weight, w0) and tr.epoch == 0
    tr.fit(x)  # the legal input trains
    assert not torch.equal(net.layers[0].weight, w0)


def test_fit_needs_labels_for_a_supervised_target():
    x = load_digits().x_train[:32]
    tr = Trainer(MLP((64, 10), seed=0), SupervisedTarget(), Backprop(), {"epochs": 1}, progress=False)
    with pytest.raises(TrainingInputError, match="needs labels"):
        tr.fit(x)
    with pytest.raises(TrainingInputError, match="labels must be an integer tensor"):
        tr.fit(x, torch.zeros(5, dtype=torch.long))
    tr.fit(x, torch.zeros(32, dtype=torch.long))


@pytest.mark.parametrize("training,needle", [
    ({"lr": 0}, "lr must be a finite number > 0"), ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"optimizer": "adamw"}, "optimizer must be one of 'sgd', 'adam'"), ({"epochz": 1}, "unknown key 'epochz'"),
    ({"lr": "fast"}, "lr must be"), ({"threads": 999}, "threads must be an integer in [0, "),
    ({"lr": [1.0, 2.0, 3.0]}, "one per layer (1)"), ("sgd", "training must be a TrainingConfig or a dict"),
])
def test_trainer_settings_are_validated(training, needle):
    with pytest.raises(ValueError) as e:
        Trainer(MLP((4, 3), seed=0), SelfDefinedTarget(k=1), Backprop(), training, progress=False)
    assert needle in str(e.value)


def test_trainer_settings_fill_defaults():
    tr = Trainer(MLP((4, 3), seed=0), SelfDefinedTarget(k=1), Backprop(), {"epochs": 3}, progress=False)
    assert tr.config == TrainingConfig(epochs=3) and tr.config.batch_size == 16


@pytest.mark.parametrize("with_folder", [False, True])
def test_divergence_tells_the_truth_and_restores_the_network(tmp_path, monkeypatch, with_folder):
    calls = {"n": 0}
    original = Backprop.step

    def blowing_up(self, net, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                net.layers[0].weight.fill_(float("nan"))
        return original(self, net, *a, **kw)

    monkeypatch.setattr(Backprop, "step", blowing_up)
    net = MLP((64, 20), seed=0)
    w0 = net.layers[0].weight.detach().clone()
    tr = Trainer(net, SelfDefinedTarget(k=2), Backprop(), {"epochs": 2, "engine": "reference"},
                 out_dir=tmp_path / "o" if with_folder else None, progress=False)
    with pytest.raises(DivergenceError) as e:
        tr.fit(load_digits().x_train[:128])
    msg = str(e.value)
    assert "epoch 1, batch 3 of 8" in msg and "update produced" in msg
    assert ("no checkpoint exists yet" if with_folder else "no checkpoint folder was given") in msg
    assert "last good checkpoint" not in msg
    assert torch.equal(net.layers[0].weight, w0)  # restored to the start of the epoch


def test_run_reports_each_phase_with_its_time(tmp_path):
    lines = []
    run_recipe(small(eval={"linear": True, "linear_epochs": 2, "untrained_baseline": True, "locality": True}),
               tmp_path / "run", progress=False, log=lines.append)
    text = "\n".join(lines)
    for phase in ("untrained baseline evaluated", "trained network evaluated", "locality checked"):
        assert phase in text and " s)" in text.split(phase)[1].split("\n")[0]


def test_compare_a_finished_run_without_retraining(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    run_recipe(small(), out, **quiet())
    import neurolearn.experiment as exp

    monkeypatch.setattr(exp, "run_recipe", lambda *a, **k: pytest.fail("retrained"))
    assert main(["compare", str(out), "--steps", "10", "--test-limit", "20", "--no-brian2"]) == 0
    said = capsys.readouterr().out
    assert "no retraining" in said and "snnTorch" in said
    assert (out / "compare" / "compare.json").exists()
    assert main(["compare", str(out), "--epochs", "3"]) == 2
