"""Datasets: the embedded digits, IDX folders (MNIST, Fashion-MNIST), deterministic batching.

Nothing is ever downloaded. ``load_digits`` reads scikit-learn's embedded 8x8 digits;
``load_idx`` reads the four standard IDX files of a folder, raw or gzipped.

IDX format (LeCun et al.): big-endian; bytes 0-1 zero, byte 2 the type code (0x08 unsigned byte,
0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), byte 3 the number of
dimensions d, then d big-endian int32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._validate import ParameterError, check_float, check_int

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class DataError(ValueError):
    """Data that cannot be used: a missing folder or file, a malformed file, NaN, mismatched sizes."""


@dataclass(frozen=True)
class Dataset:
    """Train and test split: ``x`` float32 ``(N, D)`` in [0, 1], ``y`` int64 ``(N,)`` in ``[0, n_classes)``."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple
    n_classes: int

    def __post_init__(self):
        d = int(np.prod(self.image_shape))
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or x.shape[1] != d:
                raise DataError(f"Dataset {self.name!r}: x_{split} must have shape (N, {d}) for images {self.image_shape}, got {tuple(x.shape)}")
            if y.shape != (x.shape[0],):
                raise DataError(f"Dataset {self.name!r}: y_{split} must have {x.shape[0]} labels (one per row of x_{split}), got shape {tuple(y.shape)}")
            bad = (~torch.isfinite(x)).sum().item()
            if bad:
                raise DataError(f"Dataset {self.name!r}: x_{split} has {bad} NaN or infinite values")
            if y.numel() and (y.min() < 0 or y.max() >= self.n_classes):
                raise DataError(f"Dataset {self.name!r}: y_{split} labels must be in [0, {self.n_classes}), got [{int(y.min())}, {int(y.max())}]")

    @property
    def n_features(self) -> int:
        """Number of input features (pixels)."""
        return self.x_train.shape[1]

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first ``n_train`` training and ``n_test`` test samples (``None``: all)."""
        for name, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None:
                check_int("Dataset.subset", name, n, 1)
        return Dataset(self.name, self.x_train[:n_train], self.y_train[:n_train], self.x_test[:n_test],
                       self.y_test[:n_test], self.image_shape, self.n_classes)


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's embedded 8x8 digits (1,797 images), pixels / 16, shuffled by ``seed`` then split:
    the last ``round(test_fraction * N)`` samples of the permutation are the test set."""
    from sklearn.datasets import load_digits as _sk

    check_float("load_digits", "test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    check_int("load_digits", "seed", seed, 0)
    bunch = _sk()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    tr, te = perm[: len(x) - n_test], perm[len(x) - n_test :]
    return Dataset("digits", x[tr], y[tr], x[te], y[te], (8, 8), 10)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw, or gzipped if the name ends in ``.gz``) into a numpy array."""
    path = Path(path)
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() if len(raw) >= 4 else raw.hex()!r})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(v) for v in np.frombuffer(raw, ">i4", ndim, 4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    start = 4 + 4 * ndim
    if len(raw) - start < count * dtype.itemsize:
        raise DataError(f"{path}: truncated: dimensions {dims} need {count * dtype.itemsize} bytes of data, file has {len(raw) - start}")
    return np.frombuffer(raw, dtype, count, start).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"IDX folder {folder}: missing {stem} (looked for {stem} and {stem}.gz)")


def load_idx(folder: str | Path, train_limit: int | None = None, test_limit: int | None = None,
             name: str | None = None) -> Dataset:
    """The four standard IDX files of ``folder`` (train/t10k images and labels), pixels / 255."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"IDX folder {folder} does not exist (nothing is downloaded; give the folder holding the four IDX files)")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        nx, ny = arrays[f"x_{split}"].shape[0], arrays[f"y_{split}"].shape[0]
        if nx != ny:
            raise DataError(f"IDX folder {folder}: {split} has {nx} images but {ny} labels")
    shape = tuple(arrays["x_train"].shape[1:])
    if len(shape) != 2 or tuple(arrays["x_test"].shape[1:]) != shape:
        raise DataError(f"IDX folder {folder}: train and test images must be 2-D of the same size, got {arrays['x_train'].shape[1:]} and {arrays['x_test'].shape[1:]}")
    scale = 255.0 if arrays["x_train"].dtype == np.uint8 else 1.0

    def x(a, limit):
        return torch.tensor(a[:limit].reshape(len(a[:limit]), -1).astype(np.float32) / scale)

    def y(a, limit):
        return torch.tensor(a[:limit].astype(np.int64))

    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    return Dataset(name or folder.name, x(arrays["x_train"], train_limit), y(arrays["y_train"], train_limit),
                   x(arrays["x_test"], test_limit), y(arrays["y_test"], test_limit), shape, n_classes)


def load_dataset(source: str, **kw) -> Dataset:
    """``"digits"`` (embedded), or a folder of IDX files (optionally written ``"idx:<folder>"``)."""
    if not isinstance(source, str) or not source:
        raise ParameterError(f"load_dataset: source must be 'digits' or a folder of IDX files, got {source!r}")
    if source == "digits":
        return load_digits(**kw)
    if source.startswith("idx:"):
        source = source[4:]
    return load_idx(source, **kw)


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  drop_last: bool = False) -> list[torch.Tensor]:
    """Index batches of one epoch: a permutation from ``Generator().manual_seed(seed * 1_000_003 + epoch)``
    cut into ``batch_size`` pieces, so a resumed run sees exactly the batches of an uninterrupted one."""
    check_int("batch_indices", "n", n, 0)
    check_int("batch_indices", "batch_size", batch_size, 1)
    check_int("batch_indices", "epoch", epoch, 0)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)) if shuffle else torch.arange(n)
    out = list(order.split(batch_size))
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    return out
