"""Data loaders: embedded digits, IDX (raw and gzipped), errors, named-set lookup, deterministic batching."""

import gzip
import hashlib
import importlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from neurolearn._validate import ParameterError
from neurolearn.data import (
    DataError,
    Dataset,
    batch_indices,
    data_record,
    load_dataset,
    load_digits,
    load_idx,
    locate,
    read_idx,
)

locate_mod = importlib.import_module("neurolearn.data.locate")


def _mnist():
    try:
        return locate("mnist")
    except DataError:
        return Path("/nonexistent")


MNIST = _mnist()


def _write_idx(path: Path, arr: np.ndarray, gz: bool, code: int = 0x08, dtype: str = ">u1"):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">i", d) for d in arr.shape)
    data = header + arr.astype(dtype).tobytes()
    with gzip.open(path.with_name(path.name + ".gz"), "wb") if gz else open(path, "wb") as fh:
        fh.write(data)


def _folder(tmp_path, n_train=12, n_test=5, gz=False, labels_train=None, labels_test=None):
    """Four small IDX files; the training labels cover every class 0-9 (a set's classes all occur)."""
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 4, 3)), gz)
    labels = labels_train if labels_train is not None else rng.permutation(np.arange(n_train) % 10)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, gz)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 4, 3)), gz)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels_test if labels_test is not None else rng.integers(0, 10, n_test), gz)
    return tmp_path


def test_digits_shapes_ranges_and_determinism():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert a.x_train.shape[1] == 64 and a.image_shape == (8, 8) and a.n_classes == 10
    assert a.x_train.shape[0] + a.x_test.shape[0] == 1797
    assert 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    ds = load_idx(_folder(tmp_path, gz=gz))
    assert ds.x_train.shape == (12, 12) and ds.x_test.shape == (5, 12) and ds.image_shape == (4, 3)
    raw = read_idx(next(tmp_path.glob("train-images*")))
    assert torch.allclose(ds.x_train, torch.tensor(raw.reshape(12, -1) / 255.0, dtype=torch.float32))
    assert load_dataset("idx:" + str(tmp_path)).x_train.shape == (12, 12)


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_idx(tmp_path / "nope")
    folder = _folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_idx(folder)


def test_idx_bad_magic_and_truncation(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="magic"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 100) + b"\x00" * 10)
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)


def test_idx_count_mismatch(tmp_path):
    folder = _folder(tmp_path, labels_train=np.zeros(7))
    with pytest.raises(DataError, match="12 images but 7 labels"):
        load_idx(folder)


def test_dataset_rejects_nan_and_bad_labels():
    x = torch.rand(4, 4)
    x[1, 2] = float("nan")
    with pytest.raises(DataError, match="1 NaN"):
        Dataset("t", x, torch.zeros(4, dtype=torch.long), torch.rand(2, 4), torch.zeros(2, dtype=torch.long), (2, 2), 3)
    with pytest.raises(DataError, match="labels must be in"):
        Dataset("t", torch.rand(4, 4), torch.full((4,), 5), torch.rand(2, 4), torch.zeros(2, dtype=torch.long), (2, 2), 3)
    with pytest.raises(DataError, match="shape"):
        Dataset("t", torch.rand(4, 5), torch.zeros(4, dtype=torch.long), torch.rand(2, 4), torch.zeros(2, dtype=torch.long), (2, 2), 3)


def test_load_dataset_rejects_bad_source():
    with pytest.raises(ValueError, match="source"):
        load_dataset("")


def test_batch_indices_deterministic_and_complete():
    a = batch_indices(50, 16, seed=3, epoch=2)
    b = batch_indices(50, 16, seed=3, epoch=2)
    c = batch_indices(50, 16, seed=3, epoch=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(c))
    assert sorted(torch.cat(a).tolist()) == list(range(50))
    assert [len(x) for x in a] == [16, 16, 16, 2]
    assert len(batch_indices(50, 16, 0, 0, drop_last=True)) == 3
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(10, 0, 0, 0)


@pytest.mark.skipif(not MNIST.is_dir(), reason="shared MNIST files not present")
def test_shared_mnist_loads():
    ds = load_idx(MNIST)
    assert ds.x_train.shape == (10000, 784) and ds.x_test.shape == (10000, 784)
    counts = torch.bincount(ds.y_train, minlength=10)
    assert counts.min() > 700 and counts.max() < 1300


# ------------------------------------------------------------------ damaged gzip, extra bytes, labels, NaN
def test_truncated_gzip_is_a_data_error_naming_the_file(tmp_path):
    folder = _folder(tmp_path, gz=True)
    assert load_idx(folder).x_train.shape == (12, 12)  # the intact file loads
    p = folder / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupted gzip"):
        load_idx(folder)


def test_corrupted_gzip_is_a_data_error_naming_the_file(tmp_path):
    folder = _folder(tmp_path, gz=True)
    p = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(p.read_bytes())
    for i in range(12, len(raw) - 8):
        raw[i] ^= 0x5A
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: (truncated or )?corrupted gzip"):
        load_idx(folder)
    p.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupted gzip"):
        read_idx(p)


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(6).reshape(2, 3)
    _write_idx(tmp_path / "a", arr, gz=True)
    (tmp_path / "a.gz").rename(tmp_path / "a")  # gzip bytes under a plain name
    assert np.array_equal(read_idx(tmp_path / "a"), arr)


def test_extra_bytes_after_the_data_are_refused(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 3) + b"\x01\x02\x03")
    assert read_idx(p).tolist() == [1, 2, 3]
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 3) + b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="1 bytes after the data"):
        read_idx(p)


def test_label_outside_named_set_range_is_refused(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    assert load_idx(_folder(folder)).n_classes == 10  # named set: 10 classes, valid labels load
    labels = np.random.default_rng(1).permutation(np.arange(12) % 10)
    labels[4] = 200
    _folder(folder, labels_train=labels)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label 200 at index 4 .* allowed range 0-9"):
        load_idx(folder)


def test_label_in_test_file_outside_range_names_that_file(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    _folder(folder, labels_test=np.array([0, 1, 10, 2, 3]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 10 .* allowed range 0-9"):
        load_idx(folder)


def test_inferred_class_count_needs_every_class_present(tmp_path):
    labels = np.arange(12) % 3  # classes 0, 1, 2 all present: 3 classes
    ds = load_idx(_folder(tmp_path, labels_train=labels, labels_test=np.array([0, 1, 2, 0, 1])))
    assert ds.n_classes == 3
    labels[5] = 200  # one stray label would have made 201 classes
    _folder(tmp_path, labels_train=labels, labels_test=np.array([0, 1, 2, 0, 1]))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label 200 would make 201 classes, "
                                        r"but classes 3, 4, 5, 6, 7, \.\.\. \(197 of them\) never occur"):
        load_idx(tmp_path)
    assert load_idx(tmp_path, n_classes=201).n_classes == 201  # stated explicitly: accepted


def test_explicit_class_count_is_enforced_and_validated(tmp_path):
    _folder(tmp_path)
    assert load_idx(tmp_path, n_classes=10).n_classes == 10
    with pytest.raises(DataError, match=r"label 9 .* allowed range 0-7"):
        load_idx(tmp_path, n_classes=8)
    with pytest.raises(ParameterError, match="n_classes"):
        load_idx(tmp_path, n_classes=1)


def test_labels_must_be_one_dimensional_integers(tmp_path):
    _folder(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((12, 2)), gz=False)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: labels must be a 1-D integer"):
        load_idx(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_pixels_in_float_idx_are_refused(tmp_path, bad):
    _folder(tmp_path)
    x = np.random.default_rng(2).random((12, 4, 3))
    _write_idx(tmp_path / "train-images-idx3-ubyte", x, gz=False, code=0x0D, dtype=">f4")
    assert torch.isfinite(load_idx(tmp_path).x_train).all()  # finite float pixels load unscaled
    x[3, 1, 1] = bad
    _write_idx(tmp_path / "train-images-idx3-ubyte", x, gz=False, code=0x0D, dtype=">f4")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: 1 NaN or infinite"):
        load_idx(tmp_path)


# ------------------------------------------------------------------ locate and the data record
def _named(root: Path, sub: str = "mnist") -> Path:
    (root / sub).mkdir(parents=True)
    return _folder(root / sub, gz=True)


def test_locate_uses_neurolearn_data(tmp_path, monkeypatch):
    _named(tmp_path)
    monkeypatch.setenv("NEUROLEARN_DATA", str(tmp_path))
    assert locate("mnist") == tmp_path / "mnist"
    assert load_dataset("mnist").n_classes == 10


def test_locate_env_missing_folder_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    home = tmp_path / "home"
    _named(home / ".neurolearn" / "data")  # a valid fallback exists, and must not be used
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NEUROLEARN_DATA", str(tmp_path / "nonexistent"))
    with pytest.raises(DataError, match=r"NEUROLEARN_DATA=.*nonexistent: folder does not exist"):
        locate("mnist")
    monkeypatch.setenv("NEUROLEARN_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"NEUROLEARN_DATA=.*empty: no mnist folder in it"):
        locate("mnist")
    monkeypatch.delenv("NEUROLEARN_DATA")
    assert locate("mnist") == home / ".neurolearn" / "data" / "mnist"
    monkeypatch.setenv("NEUROLEARN_DATA", "")  # empty counts as unset
    assert locate("mnist") == home / ".neurolearn" / "data" / "mnist"


def test_locate_incomplete_folder_names_the_missing_file(tmp_path, monkeypatch):
    (_named(tmp_path) / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("NEUROLEARN_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"NEUROLEARN_DATA=.*missing t10k-labels-idx1-ubyte"):
        locate("mnist")


def test_locate_default_roots_in_order_with_debian_layout(tmp_path, monkeypatch):
    home, usr = tmp_path / "home", tmp_path / "usr-share-datasets"
    monkeypatch.delenv("NEUROLEARN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(locate_mod, "DEFAULT_ROOTS", ("~/.neurolearn/data", str(usr)))
    with pytest.raises(DataError, match=r"no folder found .*fashion-mnist.*apt-get install dataset-fashion-mnist"):
        locate("fashion-mnist")
    _named(usr, "fashion-mnist")  # Debian: /usr/share/datasets/fashion-mnist/*-ubyte.gz
    assert locate("fashion-mnist") == usr / "fashion-mnist"
    _named(home / ".neurolearn" / "data", "fashion_mnist")  # the user's folder comes first
    assert locate("fashion-mnist") == home / ".neurolearn" / "data" / "fashion_mnist"


def test_locate_rejects_unknown_names():
    with pytest.raises(ParameterError, match="name must be one of 'mnist', 'fashion-mnist'"):
        locate("cifar")


def test_data_record_hashes_the_files_read(tmp_path, monkeypatch):
    folder = _named(tmp_path)
    monkeypatch.setenv("NEUROLEARN_DATA", str(tmp_path))
    rec = data_record("mnist")
    assert rec["folder"] == str(folder.resolve()) and len(rec["files"]) == 4
    p = folder / "train-labels-idx1-ubyte.gz"
    assert rec["files"][p.name] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert data_record("idx:" + str(folder))["files"] == rec["files"]
    _folder(folder, gz=True, labels_train=np.arange(12) % 10)  # different labels: a different record
    assert data_record("mnist")["files"][p.name] != rec["files"][p.name]
    assert data_record("digits")["files"]  # the embedded file is recorded too
    with pytest.raises(DataError, match="does not exist"):
        data_record(str(tmp_path / "nope"))
