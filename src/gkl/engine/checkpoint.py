"""Atomic checkpoint files.

``checkpoint.pt`` (written every ``checkpoint_every`` epochs by rank 0) holds all
state needed to continue a run; ``best.pt`` holds the best weights in the
community format ``{"model": state_dict, "epoch": int, "top1": float}``.
Files are written to a temporary file in the same directory, fsync'ed and moved
into place with ``os.replace``, so a crash leaves either the old or the new file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
CHECKPOINT_FORMAT = "gkl-train-checkpoint"
CHECKPOINT_VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (tmp file + fsync + os.replace + directory fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a training checkpoint written by the engine (tensors and plain types only).

    Returns its contents; to load weights into a model use :func:`gkl.models.load_weights`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"path: {path} is not a gkl training checkpoint (format {CHECKPOINT_FORMAT!r})")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"path: {path} has checkpoint version {state.get('version')!r}, "
                         f"expected {CHECKPOINT_VERSION}")
    return state


def save_best(path: str | os.PathLike, model_state: dict, *, epoch: int, top1: float) -> None:
    """Write ``{"model": state_dict, "epoch": epoch, "top1": top1}`` atomically."""
    atomic_save({"model": model_state, "epoch": int(epoch), "top1": float(top1)}, path)


def model_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Key → shape of a state_dict, for checking that a checkpoint fits a model."""
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def layout_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str | None:
    """Human-readable description of the differences between two layouts, or None."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for key in shapes[:5]:
        parts.append(f"{key}: checkpoint {tuple(found[key])} vs model {tuple(expected[key])}")
    return "; ".join(parts)


def dict_differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two nested dicts differ."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(found), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in expected or key not in found:
                out.append(name)
            else:
                out.extend(dict_differences(expected[key], found[key], name))
        return out
    if isinstance(expected, (list, tuple)) and isinstance(found, (list, tuple)):
        return [] if list(expected) == list(found) else [prefix or "<root>"]
    return [] if expected == found else [prefix or "<root>"]
