"""``neurolearn evaluate``: a finished run's trained network read out again (experiment.evaluate_run).

With the run's own [eval] settings it repeats the run's numbers exactly (same weights, same seeded probe, same
untrained network rebuilt from the seed); another probe gives other numbers; the run's metrics.json and weights
are never touched; keys that would change what was trained are refused by name; the note about a transformed
test set that is not the run's says truly why (other parameters, or the same parameters with other pixels).
Embedded digits, one short epoch: seconds."""

import json
from pathlib import Path

import pytest

from neurolearn import recipe as recipes
from neurolearn.cli import main
from neurolearn.experiment import evaluate_run, run_recipe

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda s: None, "progress": False}
OVER = {"training": {"epochs": 1, "threads": 0}, "network": {"sizes": [40]},
        "eval": {"spiking": "none", "linear_epochs": 3, "receptive_fields": 0, "locality": False,
                 "test_transform": "tang_affine_mnist"}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate") / "run"
    r = recipes.resolve((ROOT / "models" / "digits_bp_1layer.toml").read_text(), "digits_bp_1layer", OVER)
    run_recipe(r, folder, **QUIET)
    return folder


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_same_settings_repeat_the_runs_numbers(run_dir, tmp_path):
    saved = json.loads((run_dir / "metrics.json").read_text())
    before = _snapshot(run_dir)
    m = evaluate_run(run_dir, None, tmp_path / "again.json", log=lambda s: None)
    for row in ("untrained", "trained"):
        for key in ("direct_av", "direct_max", "linear", "linear_transformed"):
            assert m[row][key] == saved[row][key], (row, key)
    assert "differs_from_run" not in m["transformed_test"]
    assert _snapshot(run_dir) == before  # the run folder is left as it was
    written = json.loads((tmp_path / "again.json").read_text())
    evaluate_run(run_dir, None, tmp_path / "new" / "folder" / "e.json", log=lambda s: None)  # a folder made for it
    assert (tmp_path / "new" / "folder" / "e.json").exists()
    assert written["trained"] == m["trained"] and written["overrides"] == {}


def test_another_probe_gives_other_numbers_and_is_recorded(run_dir):
    saved = json.loads((run_dir / "metrics.json").read_text())
    before = (run_dir / "metrics.json").read_bytes()
    m = evaluate_run(run_dir, {"eval": {"linear_epochs": 40}}, log=lambda s: None)
    assert m["trained"]["linear"] != saved["trained"]["linear"]
    assert m["trained"]["direct_av"] == saved["trained"]["direct_av"]  # the network is the same
    assert m["eval"]["linear_epochs"] == 40 and m["overrides"] == {"eval": {"linear_epochs": 40}}
    assert json.loads((run_dir / "evaluation.json").read_text())["eval"]["linear_epochs"] == 40
    assert (run_dir / "metrics.json").read_bytes() == before


def test_keys_that_change_the_training_are_refused_by_name(run_dir, tmp_path):
    with pytest.raises(recipes.RecipeError, match=r"may change only eval\.\*, training\.device, training\.threads; "
                                                  r"got training\.lr"):
        evaluate_run(run_dir, {"training": {"lr": 1.0}, "eval": {"linear_epochs": 2}}, tmp_path / "x.json")
    with pytest.raises(recipes.RecipeError, match="got seed"):
        evaluate_run(run_dir, {"seed": 3}, tmp_path / "x.json")
    with pytest.raises(FileExistsError, match="one of the run's own files"):
        evaluate_run(run_dir, None, run_dir / "metrics.json")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        evaluate_run(tmp_path, None)
    # the command line: the same refusal, exit status 2
    assert main(["evaluate", str(run_dir), "--set", "training.lr=1.0"]) == 2
    with pytest.raises(recipes.RecipeError, match="got seed"):
        evaluate_run(run_dir, recipes.parse_overrides(["seed=3"]), tmp_path / "x.json")


def test_the_note_on_a_transformed_set_that_is_not_the_runs_says_why(run_dir, tmp_path):
    m = evaluate_run(run_dir, {"eval": {"transform_seed": 5}}, tmp_path / "a.json", log=lambda s: None)
    assert m["transformed_test"]["differs_from_run"].startswith("other transform parameters")
    # the same parameters, other pixels (as a run made by another torch build): a copy whose recorded hash differs
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in run_dir.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    rec = json.loads((copy / "transformed_test.json").read_text())
    rec["sha256_float32"] = "0" * 64
    (copy / "transformed_test.json").write_text(json.dumps(rec))
    m = evaluate_run(copy, None, log=lambda s: None)
    assert m["transformed_test"]["differs_from_run"].startswith("the same transform parameters, other pixels")


def test_command_line_prints_the_table_and_writes_the_record(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.json"
    assert main(["evaluate", str(run_dir), "--set", "eval.linear_epochs=3", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "trained" in text and "untrained" in text and f"wrote {out}" in text
    assert json.loads(out.read_text())["eval"]["linear_epochs"] == 3
