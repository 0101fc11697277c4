"""Data: embedded digits, IDX folders, deterministic batching (nothing is ever downloaded)."""

from .datasets import DataError, Dataset, batch_indices, load_dataset, load_digits, load_idx, read_idx

__all__ = ["Dataset", "DataError", "load_digits", "load_idx", "load_dataset", "read_idx", "batch_indices"]
