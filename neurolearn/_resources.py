"""Where the shipped TOML files are: ``models/`` (recipes) and ``circuits/`` (circuit parameter sets).

Installed (``pip install .``) they are the package data ``neurolearn.recipes`` and
``neurolearn.circuit_params``; in a source checkout or an editable install they are the top-level
folders of the repository, found beside the ``neurolearn`` package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_FOLDERS = {"neurolearn.recipes": "models", "neurolearn.circuit_params": "circuits"}


def shipped(package: str):
    """A traversable folder for ``neurolearn.recipes`` or ``neurolearn.circuit_params``."""
    try:
        root = resources.files(package)
        if any(True for _ in root.iterdir()):
            return root
    except (ModuleNotFoundError, FileNotFoundError, TypeError):
        pass
    folder = Path(__file__).resolve().parent.parent / _FOLDERS[package]
    if folder.is_dir():
        return folder
    raise FileNotFoundError(f"the shipped folder {_FOLDERS[package]}/ ({package}) is missing from this installation")
