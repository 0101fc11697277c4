"""Data loaders: embedded digits, IDX (raw and gzipped), errors, deterministic batching."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from neurolearn.data import DataError, Dataset, batch_indices, load_dataset, load_digits, load_idx, read_idx

def _mnist():
    from neurolearn.experiment import locate

    try:
        return Path(locate("mnist"))
    except FileNotFoundError:
        return Path("/nonexistent")


MNIST = _mnist()


def _write_idx(path: Path, arr: np.ndarray, gz: bool):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">i", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open(path.with_name(path.name + ".gz"), "wb") if gz else open(path, "wb")).write(data)


def _folder(tmp_path, n_train=12, n_test=5, gz=False, labels_train=None):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 4, 3)), gz)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels_train if labels_train is not None else rng.integers(0, 10, n_train), gz)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 4, 3)), gz)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test), gz)
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
