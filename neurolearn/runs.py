"""Run folders (DESIGN.md section 6): resolved recipe, metrics, weights, plots, checkpoints.

Every file is written atomically: to a temporary file in the same folder, flushed, then renamed over
the target with ``os.replace``, so an interrupted or diverging run never leaves a broken file and
the last good checkpoint stays readable. Weights and checkpoints are safetensors; the non-tensor
part of a checkpoint (epoch, metrics so far) is JSON beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success rename it over ``path`` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_tensors(path: str | Path, tensors: dict, metadata: dict | None = None) -> None:
    """Save a dict of tensors as safetensors atomically (tensors made contiguous, on CPU)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_tensors(path: str | Path) -> dict:
    """Load a safetensors file into a dict of CPU tensors."""
    return load_file(str(path))
