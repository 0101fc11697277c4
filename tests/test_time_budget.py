"""[training] max_minutes (a wall-clock budget) and the settings a --resume may change."""

import json
import warnings

import brian2  # noqa: F401  (importing Brian2 sends warnings to logging: do it before pytest.warns records)
import pytest
import torch

from neurolearn import recipe as recipes
from neurolearn.cli import main
from neurolearn.experiment import resume_recipe, run_recipe
from neurolearn.runs import load_tensors


def small(**training):
    text = recipes.find_recipe(None)[1]
    over = {"network": {"sizes": [40]}, "objective": {"k": 3}, "training": {"epochs": 3, **training},
            "eval": {"linear_epochs": 2, "locality": False, "untrained_baseline": False, "receptive_fields": 0,
                     "spiking": "none"}}
    return recipes.resolve(text, "default", over)


def test_budget_stops_after_the_epoch_that_passes_it(tmp_path):
    with pytest.warns(UserWarning, match=r"stopped after epoch 1 of 3: the time budget \[training\] max_minutes"):
        m = run_recipe(small(max_minutes=1e-9), tmp_path / "a", progress=False, log=lambda s: None)
    assert m["epochs"] == 1 and len(m["history"]) == 1
    assert m["stopped_early"] == {"epochs_done": 1, "epochs_planned": 3, "max_minutes": 1e-9}
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["stopped_early"]["epochs_done"] == 1


def test_no_budget_or_a_large_one_trains_every_epoch(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "stopped" warning
        for name, budget in (("a", 0.0), ("b", 60.0)):
            m = run_recipe(small(max_minutes=budget), tmp_path / name, progress=False, log=lambda s: None)
            assert m["epochs"] == 3 and "stopped_early" not in m


def test_negative_budget_is_refused():
    with pytest.raises(recipes.RecipeError, match=r"\[training\] max_minutes must be"):
        small(max_minutes=-1)


def test_resume_may_change_device_threads_and_budget_but_not_the_model(tmp_path):
    with pytest.warns(UserWarning, match="stopped after epoch 1"):
        run_recipe(small(max_minutes=1e-9, threads=1), tmp_path / "r", progress=False, log=lambda s: None)
    recipe, lines = resume_recipe(tmp_path / "r", None, {"training": {"max_minutes": 0.0, "threads": 2}})
    assert recipe["training"]["max_minutes"] == 0.0 and recipe["training"]["threads"] == 2
    assert any("training.threads changed from 1 to 2" in s for s in lines)
    with pytest.raises(recipes.RecipeError, match=r"training.lr = .* in the run"):
        resume_recipe(tmp_path / "r", None, {"training": {"lr": 0.5}})


def test_a_budget_stopped_run_resumed_equals_the_uninterrupted_one(tmp_path):
    full = run_recipe(small(), tmp_path / "full", progress=False, log=lambda s: None)
    with pytest.warns(UserWarning, match="stopped after epoch 1"):
        run_recipe(small(max_minutes=1e-9), tmp_path / "cut", progress=False, log=lambda s: None)
    assert main(["run", "--out", str(tmp_path / "cut"), "--resume", "--set", "training.max_minutes=0",
                 "--quiet"]) == 0
    done = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert done["epochs"] == 3 and "stopped_early" not in done
    assert [h["loss"] for h in done["history"]] == pytest.approx([h["loss"] for h in full["history"]])
    wa, wb = load_tensors(tmp_path / "full" / "weights.safetensors"), load_tensors(tmp_path / "cut" / "weights.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
