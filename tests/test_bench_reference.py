"""The side-by-side plumbing of benchmarks/ (bench_training.py, reference_liu.py, compare_accuracy.py).

The checks that need the authors' code run only when ``NEUROLEARN_LIU_REFERENCE`` names a checkout of
github.com/neurophysics-cnrsthales/unsupervised-target (nothing is downloaded; nothing of it is copied).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_training  # noqa: E402  (benchmarks/ is not a package: put on the path first)
import compare_accuracy  # noqa: E402
import reference_liu  # noqa: E402

LIU = os.environ.get("NEUROLEARN_LIU_REFERENCE")
needs_liu = pytest.mark.skipif(not LIU, reason="NEUROLEARN_LIU_REFERENCE does not name the authors' checkout")


def fake_checkout(root: Path, missing: str | None = None) -> Path:
    """Empty files at the paths a checkout must hold, except ``missing``."""
    for f in reference_liu.REQUIRED_FILES:
        if f != missing:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            (root / f).write_text("")
    return root


def test_checkout_missing_file_is_named(tmp_path):
    fake_checkout(tmp_path, missing="ep/train_test.py")
    with pytest.raises(reference_liu.NotACheckout, match="ep/train_test.py is missing"):
        reference_liu.check_checkout(tmp_path)


def test_checkout_with_every_file_is_accepted(tmp_path):
    assert reference_liu.check_checkout(fake_checkout(tmp_path)) == tmp_path.resolve()


def test_checkout_not_a_directory(tmp_path):
    with pytest.raises(reference_liu.NotACheckout, match="not a directory"):
        reference_liu.check_checkout(tmp_path / "nowhere")


def test_benchmark_rejects_a_wrong_reference_before_any_work(tmp_path, capsys):
    fake_checkout(tmp_path, missing="bp/network.py")
    with pytest.raises(SystemExit) as e:
        bench_training.main(["--reference", str(tmp_path), "--setups", "bp1", "--out", str(tmp_path / "t.json")])
    assert e.value.code == 2
    assert "bp/network.py is missing" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_accuracy_mode_rejects_a_wrong_reference(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_accuracy.main(["--reference", str(tmp_path), "--out", str(tmp_path / "a.json")])
    assert "ep/network.py is missing" in capsys.readouterr().err


def test_benchmark_rejects_unknown_setup(capsys):
    with pytest.raises(SystemExit):
        bench_training.main(["--setups", "bp1,nope"])
    assert "unknown nope" in capsys.readouterr().err


@pytest.mark.parametrize("setup", ["ep1", "ep2"])
def test_ep_configuration_is_reversed_like_their_main(setup):
    given, jp = reference_liu.CONFIGS[setup], reference_liu.jparams(setup)
    for key in ("fcLayers", "lr", "dropProb"):
        assert jp[key] == given[key][::-1]
    assert reference_liu.CONFIGS[setup]["fcLayers"][0] == 784  # the table itself is not modified


def test_bp_configuration_is_not_reversed():
    jp = reference_liu.jparams("bp1")
    assert jp["fcLayers"] == [784, 2000] and jp["dropProb"] == [0.3, 0.2]


def test_unknown_reference_setup():
    with pytest.raises(ValueError, match="setup must be one of"):
        reference_liu.jparams("ep3")


def test_stub_names_itself_when_reached():
    m = reference_liu._stub("somepkg", "not installed", kept=1)
    assert m.kept == 1
    with pytest.raises(RuntimeError, match=r"somepkg\.read_csv: stubbed"):
        _ = m.read_csv
    with pytest.raises(AttributeError):
        _ = m.__path__


def test_median_range():
    assert bench_training.median_range([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0,
                                                            "all": [3.0, 1.0, 2.0]}


def test_every_setup_has_an_authors_configuration():
    assert {c["reference"] for c in bench_training.SETUPS.values()} <= set(reference_liu.CONFIGS)


@needs_liu
@pytest.mark.parametrize("setup", ["bp1", "ep1", "ep2"])
def test_same_initial_weights_give_the_same_responses(setup):
    """Their network started from our initial weights answers as ours does (BP: the same forward pass;
    EP: their T Euler steps against our free phase): the weight layout is copied the right way round."""
    cfg = bench_training.SETUPS[setup]
    ours = bench_training.make_trainer(setup, cfg, seed=0)
    theirs = reference_liu.Reference(LIU, cfg["reference"], seed=0, init_weights=bench_training.layers_of(ours))
    x = torch.rand(32, 784, generator=torch.Generator().manual_seed(1))
    a, b = bench_training.responses_of(ours, x), theirs.responses(x)
    assert a.abs().max() > 0
    torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


@needs_liu
def test_different_initial_weights_give_different_responses():
    cfg = bench_training.SETUPS["bp1"]
    ours = bench_training.make_trainer("bp1", cfg, seed=0)
    theirs = reference_liu.Reference(LIU, "bp1", seed=1)
    x = torch.rand(32, 784, generator=torch.Generator().manual_seed(1))
    assert (bench_training.responses_of(ours, x) - theirs.responses(x)).abs().max() > 1e-3


@needs_liu
def test_their_epoch_changes_their_weights_and_zeroed_biases():
    theirs = reference_liu.Reference(LIU, "ep1", seed=0)
    w0, b0 = (t.clone() for t in theirs.layers()[0])
    assert torch.equal(b0, torch.zeros_like(b0))  # their uninitialised biases are zeroed
    x = torch.rand(48, 784, generator=torch.Generator().manual_seed(2))
    theirs.fit_epoch(list(x.split(16)))
    w1, _ = theirs.layers()[0]
    assert not torch.equal(w0, w1)
    assert theirs.optimizer.param_groups[0]["lr"] < 0.03  # their LinearLR stepped once


@needs_liu
def test_set_weights_rejects_wrong_shapes():
    theirs = reference_liu.Reference(LIU, "bp1", seed=0)
    with pytest.raises(ValueError, match="do not match"):
        theirs.set_weights([(torch.zeros(10, 784), torch.zeros(10))])


def test_table_columns_stay_apart_with_wide_numbers(capsys):
    wide = bench_training.median_range([178.404, 110.53, 328.859])
    row = {"setup": "ep2", "samples": 320, "s_per_1000": wide, "first_epoch_s_per_1000": wide,
           "reference_s_per_1000": wide, "ratio_reference_over_ours": 1.0,
           "ratio_per_repeat": bench_training.median_range([1.0]), "ratio_fastest": 1.0, "gflops": 1.0,
           "fraction_of_peak": 0.1}
    bench_training.print_table([row], 100.0, reference=True)
    line = capsys.readouterr().out.splitlines()[3]
    assert "178.404 110.530-328.859" in " ".join(line.split())
    assert line.split()[:4] == ["ep2", "320", "178.404", "110.530-328.859"]


def test_table_without_reference_has_no_authors_column(capsys):
    one = bench_training.median_range([0.05])
    row = {"setup": "bp1", "samples": 10, "s_per_1000": one, "first_epoch_s_per_1000": one, "gflops": 1.0,
           "fraction_of_peak": 0.1}
    bench_training.print_table([row], 100.0, reference=False)
    out = capsys.readouterr().out
    assert "theirs" not in out and "bp1" in out


@pytest.mark.parametrize("device,needle", [(-2, r"device must be -1 \(CPU\) or a CUDA device index"),
                                            ("0", r"device must be -1 \(CPU\) or a CUDA device index")]
                         + ([] if torch.cuda.is_available() else [(0, "torch sees no CUDA device here")]))
def test_their_device_is_checked(device, needle):
    with pytest.raises(ValueError, match=needle):
        reference_liu.jparams("ep1", device)


def test_their_configuration_carries_the_device():
    assert reference_liu.jparams("ep1")["device"] == -1 and reference_liu.jparams("bp1", -1)["device"] == -1


def test_ours_only_and_theirs_only_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_accuracy.main(["--reference", str(fake_checkout(tmp_path / "ck")), "--ours-only", "--theirs-only",
                               "--out", str(tmp_path / "a.json")])
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()


@needs_liu
def test_theirs_only_trains_theirs_alone(tmp_path):
    rows = compare_accuracy.accuracy_side_by_side(LIU, "ep1", epochs=1, samples=64, theirs_only=True, log=lambda s: None)
    assert rows[0]["ours"] is None and rows[0]["ours_train_s"] is None
    assert 0.0 <= rows[0]["theirs"]["av"] <= 1.0 and rows[0]["theirs_train_s"] > 0
