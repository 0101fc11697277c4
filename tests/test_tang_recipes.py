"""Tang, Yang & Amit 2022 Table 4 recipes (models/tang2022/): they resolve, their encoders build with the documented
shapes, the probe reads the chosen population, the transformed test set is evaluated and recorded, the paper's
number is printed beside ours, pre-training data may differ from the probe data; the cross-entropy objective
against autograd. Everything on tiny subsets (a few seconds each)."""

import json
import tomllib
from pathlib import Path

import pytest
import torch

from neurolearn import recipe as recipes
from neurolearn._validate import ParameterError
from neurolearn.data import load_dataset
from neurolearn.data.datasets import DataError
from neurolearn.describe import registered
from neurolearn.experiment import SetupError, features, format_table, paper_rows, run_recipe, transformed_test
from neurolearn.objectives.cross_entropy import CrossEntropy

ROOT = Path(__file__).resolve().parents[1]
TANG = sorted((ROOT / "models" / "tang2022").glob("*.toml"))
QUIET = {"log": lambda s: None, "progress": False}


def _missing_types(path: Path) -> list[str]:
    """The ``kind 'name'`` of every type the recipe names that is not registered (yet)."""
    raw = tomllib.loads(path.read_text())
    out = []
    for section, kind in (("network", "network"), ("objective", "objective"), ("credit", "credit")):
        name = raw.get(section, {}).get("type")
        if name is not None and name not in registered(kind):
            out.append(f"{kind} {name!r}")
    return out


def _tang(name: str, **over) -> dict:
    path = ROOT / "models" / "tang2022" / f"{name}.toml"
    missing = _missing_types(path)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}, not registered in this checkout")
    return recipes.resolve(path.read_text(), str(path), over)


@pytest.fixture(scope="module")
def tiny_mnist():
    try:
        return load_dataset("mnist").subset(200, 100)
    except DataError as e:  # a checkout without the shared MNIST files beside it
        pytest.skip(f"MNIST not available: {e}")


def test_the_table_4_rows_are_all_there():
    names = {p.stem for p in TANG}
    rows = {"e2e_bp", "e2e_dtp", "e2e_rf", "gll_bp", "gll_rf", "rll_bp", "rll_rf", "simclr_e2e_bp", "supervised",
            "random_encoder"}
    assert rows <= names
    assert {f"fmnist_{r}" for r in rows - {"supervised", "random_encoder"}} <= names
    assert "conv6_network" in names


@pytest.mark.parametrize("path", TANG, ids=[p.stem for p in TANG])
def test_every_tang_recipe_resolves_with_its_paper_number(path):
    missing = _missing_types(path)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}, not registered in this checkout")
    r = recipes.resolve(path.read_text(), str(path))
    assert r["paper"]["value"] > 0 and r["paper"]["source"].startswith("Tang et al. 2022")
    assert recipes.resolve(recipes.dumps(r), str(path)) == r  # round-trips, paper table included
    if path.stem != "conv6_network":
        assert r["eval"]["test_transform"] == "tang_affine_mnist" and r["eval"]["direct_association"] is False
        assert r["eval"]["linear_lr"] == 1e-3 and r["eval"]["linear_dropout"] == 0.0 and r["eval"]["linear_batch"] == 500
        assert r["data"]["source"] == "mnist"
        assert r["data"]["pretrain_source"] == ("fashion-mnist" if path.stem.startswith("fmnist_") else "")


def test_emnist3_builds_with_the_documented_shapes():
    r = recipes.resolve((ROOT / "models/tang2022/supervised.toml").read_text(), "supervised")
    net, _, _ = recipes.build(r, (28, 28))
    assert net.shapes == ((1, 28, 28), (32, 14, 14), (64, 7, 7), (128, 3, 3), (10,))
    assert [net.activation_of(l) for l in range(4)] == ["tanh", "tanh", "tanh", "identity"]
    head = tomllib.loads((ROOT / "models/tang2022/e2e_bp.toml").read_text())["network"]["layers"][-1]
    assert head == {"type": "dense", "units": 64, "bias": False, "activation": "identity"}


def test_conv6_builds_with_the_documented_shapes():
    r = recipes.resolve((ROOT / "models/tang2022/conv6_network.toml").read_text(), "conv6") \
        if not _missing_types(ROOT / "models/tang2022/conv6_network.toml") else None
    if r is None:  # the network section alone does not need the objective
        raw = tomllib.loads((ROOT / "models/tang2022/conv6_network.toml").read_text())
        net = recipes.section_class("network", raw["network"]).from_values(
            {k: v for k, v in raw["network"].items() if k != "type"}).build((3, 32, 32), seed=0)
    else:
        net, _, _ = recipes.build(r, (3, 32, 32))
    assert net.shapes == ((3, 32, 32), (32, 32, 32), (32, 16, 16), (64, 16, 16), (64, 8, 8), (512, 4, 4), (64,))
    assert all(layer.bias is None for layer in net.layers)
    assert [net.activation_of(l) for l in range(6)] == ["hardtanh", "identity", "hardtanh", "identity", "identity",
                                                        "identity"]
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 64)


def test_probe_on_population_3_reads_the_1152_last_conv_cells(tiny_mnist):
    r = recipes.resolve((ROOT / "models/tang2022/supervised.toml").read_text(), "supervised")
    parts = recipes.describe_recipe(r)
    net = parts["network"].build((28, 28), seed=0)
    f = features(parts["credit"], net, tiny_mnist.x_test[:7], 3)
    assert f.shape == (7, 1152)
    expected = net.forward_all(tiny_mnist.x_test[:7].view(7, 1, 28, 28))[3].flatten(1)
    assert torch.allclose(f, expected)
    assert features(parts["credit"], net, tiny_mnist.x_test[:7], -1).shape == (7, 10)  # the output, as before
    with pytest.raises(ParameterError, match="population must be -1"):
        features(parts["credit"], net, tiny_mnist.x_test[:7], 5)


def test_probe_population_beyond_the_network_is_refused_before_anything_is_written(tmp_path, tiny_mnist):
    r = recipes.resolve((ROOT / "models/tang2022/supervised.toml").read_text(), "supervised",
                        {"eval": {"probe_population": 5}})
    with pytest.raises(SetupError, match=r"probe_population must be -1 .* \[0, 4\]"):
        run_recipe(r, tmp_path / "run", dataset=tiny_mnist, **QUIET)
    assert not (tmp_path / "run").exists()


def _views_available() -> bool:
    try:
        from neurolearn.data.views import transformed_test_set  # noqa: F401
    except ImportError:
        return False
    return True


needs_views = pytest.mark.skipif(not _views_available(), reason="neurolearn.data.views.transformed_test_set is not in "
                                                                "this checkout (branch tangobj)")

TINY = {"training": {"epochs": 1, "batch_size": 50, "threads": 0}, "eval": {"linear_epochs": 2}}


@needs_views
def test_supervised_row_evaluates_the_transformed_test_set_and_records_it(tmp_path, tiny_mnist):
    r = recipes.resolve((ROOT / "models/tang2022/supervised.toml").read_text(), "supervised", TINY)
    m = run_recipe(r, tmp_path / "run", dataset=tiny_mnist, **QUIET)
    for row in ("untrained", "trained"):
        assert 0 <= m[row]["linear"] <= 1 and 0 <= m[row]["linear_transformed"] <= 1
    rec = json.loads((tmp_path / "run" / "transformed_test.json").read_text())
    assert rec["transform"] == "tang_affine_mnist" and rec["seed"] == 0 and rec["n"] == 100
    assert rec["rotation"] == 0.375 and rec["log_scale"] == 0.375 and rec["shift"] == 0.5
    assert rec["params"]["seed"] == 0 and rec["params"]["n_images"] == 100
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["transformed_test"]["sha256_float32"] == rec["sha256_float32"]
    assert "transformed" in m["table"] and "paper" in m["table"] and "75.60%" in m["table"]
    assert any(line.startswith("paper (Tang et al. 2022 Table 4") for line in m["extra_lines"])
    # another seed: another transformed set (the record tells them apart); "none": no transformed set at all
    again = transformed_test(tiny_mnist, r["eval"])
    assert torch.equal(again[0], transformed_test(tiny_mnist, r["eval"])[0]) and again[1]["sha256_float32"] == rec["sha256_float32"]
    other = transformed_test(tiny_mnist, {**r["eval"], "transform_seed": 1})
    assert other[1]["sha256_float32"] != rec["sha256_float32"] and not torch.equal(other[0], again[0])
    assert transformed_test(tiny_mnist, {**r["eval"], "test_transform": "none"}) is None


@needs_views
def test_random_encoder_row_is_every_rows_untrained_network(tmp_path, tiny_mnist):
    over = {"eval": {"linear_epochs": 2}, "training": {"threads": 0}}
    ds = tiny_mnist.subset(60, 40)
    enc = run_recipe(_tang("random_encoder", **over), tmp_path / "enc", dataset=ds, **QUIET)
    row = run_recipe(_tang("e2e_bp", **{**over, "training": {"epochs": 1, "batch_size": 30, "threads": 0}}),
                     tmp_path / "row", dataset=ds, **QUIET)
    assert "untrained" not in enc and enc["epochs"] == 0
    assert enc["trained"]["probe_features"] == row["untrained"]["probe_features"] == 1152
    assert enc["trained"]["linear"] == row["untrained"]["linear"]  # same seed, same network, same probe
    assert enc["trained"]["linear_transformed"] == row["untrained"]["linear_transformed"]
    assert row["trained"]["linear"] != row["untrained"]["linear"] or row["history"][0]["loss"] > 0


def test_pretrain_source_trains_on_other_data_and_records_it(tmp_path):
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if not mnist.is_dir():
        pytest.skip("the shared MNIST folder is not beside this checkout")
    over = {"data": {"pretrain_source": str(mnist), "pretrain_limit": 120, "train_limit": 200, "test_limit": 100},
            **TINY, "eval": {"linear_epochs": 2, "test_transform": "none", "untrained_baseline": False}}
    r = recipes.resolve((ROOT / "models/tang2022/supervised.toml").read_text(), "supervised", over)
    m = run_recipe(r, tmp_path / "run", **QUIET)
    assert m["n_pretrain"] == 120 and m["n_train"] == 200
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["pretrain"]["folder"] == str(mnist.resolve()) and data["pretrain"]["files"]
    # the opposite case: pre-training images of another shape (8x8 digits) than the probe's are refused, naming both
    bad = recipes.resolve((ROOT / "models/tang2022/supervised.toml").read_text(), "supervised",
                          {"data": {"pretrain_source": "digits", "train_limit": 200, "test_limit": 100}, **TINY})
    with pytest.raises(SetupError, match=r"pretrain_source 'digits' has samples of shape \(8, 8\)"):
        run_recipe(bad, tmp_path / "bad", **QUIET)
    with pytest.raises(recipes.RecipeError, match="pretrain_limit applies to pretrain_source"):
        recipes.resolve("[data]\npretrain_limit = 5\n", "x.toml")


@pytest.mark.parametrize("paper,needle", [
    ("{value = 180.0}", "paper.value must be a percentage in [0, 100]"),
    ("{value = 80.0, metric = 'accuracy'}", "paper.metric must be one of 'linear', 'linear_transformed'"),
    ("{value = 80.0, colour = 'red'}", "unknown key(s) ['colour']"),
    ("'80.2'", "paper must be a table"),
])
def test_bad_paper_entries_name_the_key(paper, needle):
    with pytest.raises(recipes.RecipeError) as e:
        recipes.resolve(f"paper = {paper}\n", "p.toml")
    assert needle in str(e.value)


def test_paper_rows_print_ours_beside_the_published_number():
    recipe = {"paper": {"value": 80.2, "metric": "linear_transformed", "source": "T4", "baseline": 62.66}}
    metrics = {"trained": {"linear": 0.98, "linear_transformed": 0.7}, "untrained": {"linear": 0.9, "linear_transformed": 0.5}}
    rows, lines = paper_rows(recipe, metrics)
    assert rows.keys() == {"paper", "paper untr."}
    assert rows["paper"]["linear_transformed"] == pytest.approx(0.802)
    assert rows["paper untr."]["linear_transformed"] == pytest.approx(0.6266)
    assert lines == ["paper (T4, linear_transformed): 80.20%; ours 70.00% (-10.20 points); untrained: paper 62.66%, ours 50.00%"]
    table = format_table(metrics | rows)
    assert "80.20%" in table and "70.00%" in table
    assert paper_rows({"paper": None}, metrics) == ({}, [])


# ----------------------------------------------------------------------------- cross-entropy
def _autograd_ce(y, labels):
    y = y.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(y, labels)
    loss.backward()
    return loss.detach(), y.grad


def test_cross_entropy_equals_autograd_and_a_wrong_gradient_is_caught():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(13, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (13,), generator=g)
    out = CrossEntropy().error(y, None, None, labels)
    loss, grad = _autograd_ce(y, labels)
    assert torch.allclose(out.loss, loss) and torch.allclose(out.grad, grad)
    # the equation by hand: (softmax(y) - onehot) / B
    hand = (torch.softmax(y, 1) - torch.nn.functional.one_hot(labels, 10)) / 13
    assert torch.allclose(out.grad, hand)
    # opposite cases: the same comparison rejects a gradient without the 1/B and one with the wrong labels
    assert not torch.allclose(out.grad * 13, grad)
    wrong = CrossEntropy().error(y, None, None, (labels + 1) % 10)
    assert not torch.allclose(wrong.grad, grad)
    # an output mask zeroes the masked cells' gradients
    mask = (torch.rand(13, 10, generator=g) > 0.3).to(y.dtype)
    assert torch.equal(CrossEntropy().error(y, None, mask, labels).grad, out.grad * mask)


def test_cross_entropy_refuses_bad_labels():
    y = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="labels are required"):
        CrossEntropy().error(y, None, None, None)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        CrossEntropy().error(y, None, None, torch.tensor([0, 1, 2, 3]))
    assert CrossEntropy.needs_labels and "cross_entropy" in registered("objective")
