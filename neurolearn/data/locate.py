"""Finding named IDX datasets on disk, and recording exactly which files a run read.

Nothing is ever downloaded. A named set (``"mnist"``, ``"fashion-mnist"``) is a folder holding the four
standard IDX files (LeCun et al. 1998 format; Fashion-MNIST: Xiao, Rasul & Vollgraf 2017), looked for
as ``<root>/<folder name>`` under these roots, in this order:

1. ``$NEUROLEARN_DATA`` -- when set (and not empty), it is the ONLY root: a missing folder, a missing
   dataset folder under it, or a missing file is a ``DataError`` naming the variable and the path,
   never a silent fallback to another root. (An empty value counts as unset, as for the XDG base
   directory variables.)
2. ``~/.neurolearn/data``
3. ``/usr/share/datasets`` -- where Debian's ``dataset-fashion-mnist`` package installs
   ``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.

A dataset folder that exists under a root but lacks one of the four files is an error too (it is not
skipped in favour of a later root). ``data_record`` returns what a run read: the resolved folder and
the SHA-256 (FIPS 180-4) of every data file, for the run folder's record.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .._validate import ParameterError
from .datasets import IDX_FILES, DataError, idx_files

#: environment variable naming the data root
DATA_ENV = "NEUROLEARN_DATA"
#: named IDX datasets -> folder names accepted under a root (first match wins)
NAMED = {"mnist": ("mnist",), "fashion-mnist": ("fashion-mnist", "fashion_mnist")}
#: roots searched when $NEUROLEARN_DATA is not set, in order
DEFAULT_ROOTS = ("~/.neurolearn/data", "/usr/share/datasets")


def _check_name(name) -> str:
    if name not in NAMED:
        raise ParameterError(f"locate: name must be one of {', '.join(repr(n) for n in NAMED)}, got {name!r}")
    return name


def search_roots() -> tuple[list[Path], bool]:
    """The roots ``locate`` searches, in order, and whether they come from ``$NEUROLEARN_DATA``."""
    env = os.environ.get(DATA_ENV, "")
    if env:
        return [Path(env).expanduser()], True
    return [Path(r).expanduser() for r in DEFAULT_ROOTS], False


def _complete(folder: Path, where: str) -> Path:
    """``folder`` if it holds the four IDX files, else a ``DataError`` saying which one is missing."""
    try:
        idx_files(folder)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    return folder


def locate(name: str) -> Path:
    """Folder of the named IDX dataset ``name`` (``"mnist"`` or ``"fashion-mnist"``), searched under
    ``$NEUROLEARN_DATA`` alone when it is set, else ``~/.neurolearn/data`` then ``/usr/share/datasets``.

    Raises ``ParameterError`` for an unknown name, ``DataError`` naming every path tried (or the
    variable and its path) when the folder is absent or incomplete."""
    _check_name(name)
    roots, from_env = search_roots()
    if from_env:
        root = roots[0]
        if not root.is_dir():
            raise DataError(f"{DATA_ENV}={root}: folder does not exist (or is not a folder); set {DATA_ENV} to "
                            f"the folder holding {'/ or '.join(NAMED[name])}/ with the four IDX files, or unset it")
        for sub in NAMED[name]:
            if (root / sub).is_dir():
                return _complete(root / sub, f"{DATA_ENV}={root}")
        raise DataError(f"{DATA_ENV}={root}: no {' or '.join(NAMED[name])} folder in it (looked for "
                        f"{', '.join(str(root / s) for s in NAMED[name])}); nothing is ever downloaded, and no "
                        f"other folder is searched while {DATA_ENV} is set")
    tried = []
    for root in roots:
        for sub in NAMED[name]:
            p = root / sub
            tried.append(str(p))
            if p.is_dir():
                return _complete(p, f"dataset {name!r} found at {p}")
    raise DataError(f"dataset {name!r}: no folder found (nothing is ever downloaded); looked in {', '.join(tried)}. "
                    f"Set {DATA_ENV} to the folder holding {NAMED[name][0]}/ or give the folder path as source"
                    + ("; Debian: apt-get install dataset-fashion-mnist" if name == "fashion-mnist" else ""))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 (FIPS 180-4) of a file's bytes, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _digits_file() -> Path:
    from importlib import resources

    return Path(str(resources.files("sklearn.datasets").joinpath("data", "digits.csv.gz")))


def data_record(source: str) -> dict:
    """What a run reads for ``source``: ``{"source", "folder", "files": {file name: sha256}}``.

    ``source`` as for ``load_dataset``: ``"digits"`` (scikit-learn's embedded file, whose version is
    recorded too), a named IDX set (resolved by ``locate``), or an IDX folder (``"idx:<folder>"`` or a
    path). ``folder`` is the resolved absolute folder; the files are exactly those ``load_idx`` reads."""
    if not isinstance(source, str) or not source:
        raise ParameterError(f"data_record: source must be 'digits', one of {', '.join(NAMED)} or a folder, got {source!r}")
    if source == "digits":
        import sklearn

        f = _digits_file()
        files = {f.name: sha256_file(f)} if f.is_file() else {}  # another layout: the version identifies it
        return {"source": source, "folder": str(f.parent.resolve()), "files": files,
                "scikit_learn": sklearn.__version__}
    folder = locate(source) if source in NAMED else Path(source.removeprefix("idx:")).expanduser()
    if not folder.is_dir():
        raise DataError(f"IDX folder {folder} does not exist (expected the folder holding {', '.join(IDX_FILES.values())})")
    files = idx_files(folder)
    return {"source": source, "folder": str(folder.resolve()),
            "files": {p.name: sha256_file(p) for p in files.values()}}
