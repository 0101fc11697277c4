"""Data: embedded digits, IDX folders, named-set lookup, deterministic batching (nothing is ever downloaded)."""

from .datasets import (
           DataError,
           Dataset,
           batch_indices,
           idx_files,
           load_dataset,
           load_digits,
           load_idx,
           read_idx,
)
from .locate import DATA_ENV, NAMED, data_record, locate, sha256_file

__all__ = [
           "DATA_ENV",
           "NAMED",
           "DataError",
           "Dataset",
           "batch_indices",
           "data_record",
           "idx_files",
           "load_dataset",
           "load_digits",
           "load_idx",
           "locate",
           "read_idx",
           "sha256_file",
]
