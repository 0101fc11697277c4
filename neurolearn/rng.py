"""Random streams keyed by what they are for, so that results never depend on how work is grouped.

Every random draw of a training step (dropout masks, the sign of beta, augmentations) comes from the
generator of its batch,

    seed_of(seed, epoch, batch) = splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ batch)      (Steele et al. 2014)

so a fast executor that processes several batches at once (:mod:`neurolearn.engine`) draws exactly
what the reference executor draws batch by batch, and a resumed run draws what the uninterrupted run
drew. Other streams (a credit method's feedback matrices) use a name instead of ``(epoch, batch)``.
"""

from __future__ import annotations

import hashlib

import torch

_MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixing function (Steele, Lea & Flood 2014) on a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The 63-bit seed of batch ``batch`` of epoch ``epoch`` (see module docstring)."""
    return splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ batch) >> 1


def batch_generator(seed: int, epoch: int, batch: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh generator for one batch (see module docstring)."""
    return torch.Generator(device=device).manual_seed(batch_seed(seed, epoch, batch))


def named_generator(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh generator for the stream called ``name`` (e.g. ``"credit"``) of run ``seed``."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return torch.Generator(device=device).manual_seed(splitmix64(splitmix64(seed) ^ digest) >> 1)
