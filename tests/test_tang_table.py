"""benchmarks/tang_table.py: rows over seeds from run folders (mean, sample sd, the record it read)."""

import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tang_table  # noqa: E402


def fake_run(folder: Path, recipe: str, seed: int, clean: float, transformed: float, epochs: int = 5,
             evaluation: tuple | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "recipe.toml").write_text(f'name = "{recipe}"\nseed = {seed}\npaper = {{value = 80.2}}\n')
    (folder / "metrics.json").write_text(json.dumps({"recipe": recipe, "epochs": epochs,
                                                     "trained": {"linear": clean, "linear_transformed": transformed}}))
    if evaluation is not None:
        (folder / "ev.json").write_text(json.dumps({"trained": {"linear": evaluation[0], "linear_transformed": evaluation[1]}}))
    return folder


def test_mean_and_sample_sd_per_row(tmp_path, capsys):
    a = [fake_run(tmp_path / f"a{s}", "row_a", s, 0.97 + 0.001 * s, 0.40 - 0.01 * s, epochs=100 + s) for s in range(3)]
    b = [fake_run(tmp_path / "b0", "row_b", 0, 0.95, 0.30)]
    out = tmp_path / "t.json"
    assert tang_table.main([str(p) for p in a + b] + ["--out", str(out)]) == 0
    rows = {r["recipe"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["row_a"]["seeds"] == [0, 1, 2] and rows["row_a"]["epochs"] == [100, 101, 102]
    assert rows["row_a"]["transformed"]["mean"] == pytest.approx(39.0)
    assert rows["row_a"]["transformed"]["sd"] == pytest.approx(statistics.stdev([40.0, 39.0, 38.0]))
    assert rows["row_b"]["clean"]["sd"] is None  # one seed: no spread
    text = capsys.readouterr().out
    assert "| `row_a` | 0, 1, 2 | 100, 101, 102 | 80.2 | 97.10 ± 0.10 | 39.00 ± 1.00 |" in text


def test_evaluation_records_replace_the_runs_metrics_and_must_exist(tmp_path):
    runs = [fake_run(tmp_path / f"r{s}", "row", s, 0.9, 0.3, evaluation=(0.98, 0.41 + 0.01 * s)) for s in range(2)]
    out = tmp_path / "t.json"
    tang_table.main([str(p) for p in runs] + ["--evaluation", "ev.json", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"][0]["clean"]["mean"] == pytest.approx(98.0)
    assert all(r["read_from"].endswith("ev.json") for r in data["runs"])
    with pytest.raises(FileNotFoundError, match="neurolearn evaluate"):
        tang_table.main([str(runs[0]), "--evaluation", "other.json", "--out", str(out)])


def test_a_seed_given_twice_and_unfinished_folders_are_refused(tmp_path):
    runs = [fake_run(tmp_path / f"r{i}", "row", 0, 0.9, 0.3) for i in range(2)]
    with pytest.raises(ValueError, match="seed given twice"):
        tang_table.main([str(p) for p in runs] + ["--out", str(tmp_path / "t.json")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        tang_table.main([str(tmp_path / "empty"), "--out", str(tmp_path / "t.json")])
    assert not (tmp_path / "t.json").exists()
