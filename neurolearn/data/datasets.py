"""Datasets: the embedded digits, IDX folders (MNIST, Fashion-MNIST), deterministic batching.

Nothing is ever downloaded. ``load_digits`` reads scikit-learn's embedded 8x8 digits;
``load_idx`` reads the four standard IDX files of a folder, raw or gzipped; ``locate`` (in
``locate.py``) finds the folder of a named IDX set.

IDX format (LeCun et al.): big-endian; bytes 0-1 zero, byte 2 the type code (0x08 unsigned byte,
0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), byte 3 the number of
dimensions d, then d big-endian int32 sizes, then the data in C order (exactly prod(sizes) items).

Faults are ``DataError`` naming the file: a damaged or truncated gzip stream, a bad magic number, data
shorter or longer than the header says, labels that are not 1-D integers, a label outside
``[0, n_classes)``, NaN or infinite pixels. How ``n_classes`` is known (``load_idx``): given explicitly;
else 10 when the set is one of the named IDX sets (MNIST, Fashion-MNIST have classes 0-9); else
``max(label) + 1``, accepted only if every class ``0 .. max(label)`` occurs in the training labels, so
one stray label (e.g. 200) can never create empty extra classes.
"""

from __future__ import annotations

import gzip
import zlib
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
#: class counts of the named IDX sets (LeCun et al. 1998 MNIST; Xiao et al. 2017 Fashion-MNIST: 10 each)
KNOWN_CLASSES = {"mnist": 10, "fashion-mnist": 10, "fashion_mnist": 10}
GZIP_MAGIC = b"\x1f\x8b"


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
                raise DataError(f"Dataset {self.name!r}: x_{split} must have shape (N, {d}) for images {self.image_shape}, "
                                f"got {tuple(x.shape)}")
            if y.shape != (x.shape[0],):
                raise DataError(f"Dataset {self.name!r}: y_{split} must have {x.shape[0]} labels (one per row of x_{split}), "
                                f"got shape {tuple(y.shape)}")
            bad = (~torch.isfinite(x)).sum().item()
            if bad:
                raise DataError(f"Dataset {self.name!r}: x_{split} has {bad} NaN or infinite values")
            if y.numel() and (y.min() < 0 or y.max() >= self.n_classes):
                raise DataError(f"Dataset {self.name!r}: y_{split} labels must be in [0, {self.n_classes}), "
                                f"got [{int(y.min())}, {int(y.max())}]")

    @property
    def n_features(self) -> int:
        """Number of input features (pixels)."""
        return self.x_train.shape[1]

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
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


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when they start with the gzip magic number 1f 8b (any name)."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected an IDX file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); expected a readable IDX file") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated or corrupted gzip file (the compressed data ends before its end-of-stream "
                        "marker); expected a complete gzip-compressed IDX file: copy it again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path}: corrupted gzip file ({exc}); expected a valid gzip-compressed IDX file: "
                        "copy it again") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed: detected from its first bytes) into a numpy array.

    Format (LeCun et al. 1998): ``00 00 type ndim``, ``ndim`` big-endian int32 sizes, then exactly
    ``prod(sizes)`` items; anything else is a ``DataError`` naming the file."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() if len(raw) >= 4 else raw.hex()!r}; "
                        "expected 0000 then a type code 08, 09, 0b, 0c, 0d or 0e and the number of dimensions)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions need {4 + 4 * ndim} bytes, file has {len(raw)})")
    dims = tuple(int(v) for v in np.frombuffer(raw, ">i4", ndim, 4))
    if any(d < 0 for d in dims):
        raise DataError(f"{path}: negative dimension in IDX header {dims}")
    dtype = np.dtype(IDX_TYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    start = 4 + 4 * ndim
    need, have = count * dtype.itemsize, len(raw) - start
    if have < need:
        raise DataError(f"{path}: truncated: dimensions {dims} need {need} bytes of data, file has {have}")
    if have > need:
        raise DataError(f"{path}: {have - need} bytes after the data: dimensions {dims} need exactly {need} bytes, "
                        f"file has {have} (damaged header or file)")
    return np.frombuffer(raw, dtype, count, start).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    names = (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz")
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"IDX folder {folder}: missing {stem} (looked for {', '.join(names)})")


def idx_files(folder: str | Path) -> dict[str, Path]:
    """The four IDX files of ``folder`` as ``{"x_train": path, "y_train": ..., "x_test": ..., "y_test": ...}``,
    each found under its standard name (``train-images-idx3-ubyte``) or a variant (``.gz``, ``.idx3``)."""
    folder = Path(folder).expanduser()
    return {key: _find(folder, stem) for key, stem in IDX_FILES.items()}


def _check_labels(arrays: dict, files: dict, folder: Path, n_classes: int | None) -> int:
    """Labels must be 1-D non-negative integers below ``n_classes``; returns the class count used."""
    for key in ("y_train", "y_test"):
        a = arrays[key]
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise DataError(f"{files[key]}: labels must be a 1-D integer IDX array, got {a.ndim}-D {a.dtype}")
    if n_classes is None:
        y = arrays["y_train"]
        if y.size == 0:
            raise DataError(f"{files['y_train']}: no training labels")
        top = int(y.max())
        present = np.zeros(top + 1, bool) if top >= 0 else np.zeros(0, bool)
        present[y[y >= 0]] = True
        missing = np.flatnonzero(~present)
        if top >= 0 and missing.size:
            shown = ", ".join(str(int(v)) for v in missing[:5]) + (", ..." if missing.size > 5 else "")
            raise DataError(
                f"{files['y_train']}: label {top} would make {top + 1} classes, but classes {shown} "
                f"({missing.size} of them) never occur; give n_classes (labels must be in [0, n_classes)) "
                f"or fix the file")
        n_classes = top + 1
    for key in ("y_train", "y_test"):
        a = arrays[key]
        bad = (a < 0) | (a >= n_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{files[key]}: label {int(a[i])} at index {i} ({int(bad.sum())} such) is outside "
                            f"the allowed range 0-{n_classes - 1} ({n_classes} classes)")
    return n_classes


def load_idx(folder: str | Path, train_limit: int | None = None, test_limit: int | None = None,
             name: str | None = None, n_classes: int | None = None) -> Dataset:
    """The four standard IDX files of ``folder`` (train/t10k images and labels); uint8 pixels / 255.

    ``n_classes``: labels must lie in ``[0, n_classes)``. ``None``: 10 when ``name`` (default: the
    folder's name) is a named IDX set (``mnist``, ``fashion-mnist``), else ``max(label) + 1`` with every
    class below it present in the training labels (see the module docstring)."""
    folder = Path(folder).expanduser()
    if n_classes is not None:
        check_int("load_idx", "n_classes", n_classes, 2)
    if not folder.is_dir():
        raise DataError(f"IDX folder {folder} does not exist (nothing is downloaded; give the folder holding the four IDX files)")
    name = name or folder.name
    if n_classes is None:
        n_classes = KNOWN_CLASSES.get(name)
    files = idx_files(folder)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        nx, ny = arrays[f"x_{split}"].shape[0], arrays[f"y_{split}"].shape[0]
        if nx != ny:
            raise DataError(f"IDX folder {folder}: {split} has {nx} images but {ny} labels")
    shape = tuple(arrays["x_train"].shape[1:])
    if len(shape) != 2 or tuple(arrays["x_test"].shape[1:]) != shape:
        raise DataError(f"IDX folder {folder}: train and test images must be 2-D of the same size, got "
                        f"{arrays['x_train'].shape[1:]} and {arrays['x_test'].shape[1:]}")
    n_classes = _check_labels(arrays, files, folder, n_classes)
    scale = 255.0 if arrays["x_train"].dtype == np.uint8 else 1.0
    for key in ("x_train", "x_test"):
        a = arrays[key]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise DataError(f"{files[key]}: {int((~np.isfinite(a)).sum())} NaN or infinite pixel values; "
                            "expected finite numbers")

    def x(a, limit):
        return torch.tensor(a[:limit].reshape(len(a[:limit]), -1).astype(np.float32) / scale)

    def y(a, limit):
        return torch.tensor(a[:limit].astype(np.int64))

    return Dataset(name, x(arrays["x_train"], train_limit), y(arrays["y_train"], train_limit),
                   x(arrays["x_test"], test_limit), y(arrays["y_test"], test_limit), shape, n_classes)


def load_dataset(source: str, **kw) -> Dataset:
    """``"digits"`` (embedded), a named IDX set (``"mnist"``, ``"fashion-mnist"``: found by ``locate``),
    or a folder of IDX files (optionally written ``"idx:<folder>"``)."""
    from .locate import NAMED, locate

    if not isinstance(source, str) or not source:
        raise ParameterError(f"load_dataset: source must be 'digits', one of {', '.join(NAMED)} or a folder of IDX files, got {source!r}")
    if source == "digits":
        return load_digits(**kw)
    if source in NAMED:
        kw.setdefault("name", source)
        return load_idx(locate(source), **kw)
    source = source.removeprefix("idx:")
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
