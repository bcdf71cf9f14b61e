"""Seeding and RNG-state capture for reproducible (and exactly resumable) runs."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 31-bit seed derived from ``(seed, epoch, rank)``; distinct tuples give distinct seeds."""
    mixed = np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1)[0]
    return int(mixed) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (warn, not fail, where none exists)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark


def capture_rng_state(device: torch.device | None = None) -> dict:
    """RNG states of python, numpy, torch CPU and -- for a CUDA ``device`` -- that device's CUDA
    generator only (a resume may see fewer GPUs), as tensors/plain types (safe to ``torch.load``)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # the global RandomState is MT19937: legacy=True gives its tuple
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": (
            torch.cuda.get_rng_state(device)
            if device is not None and device.type == "cuda" and torch.cuda.is_available()
            else None
        ),
    }
    return state


def restore_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng_state` (the CUDA state goes to ``device``)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["key"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint may have been mapped to a GPU
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):  # older checkpoints: every visible GPU's state
        index = (device.index or 0) if device is not None and device.type == "cuda" else None
        cuda = cuda[index] if index is not None and index < len(cuda) else None
    if isinstance(cuda, torch.Tensor) and device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda.cpu(), device)
