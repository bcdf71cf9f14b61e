"""Atomic checkpoint files.

``checkpoint.pt`` (written every ``checkpoint_every`` epochs by rank 0) holds all
state needed to continue a run (:mod:`gkl.engine.train_state`); ``best.pt`` holds the best
weights (:mod:`gkl.engine.selection`).
Files are written to a temporary file in the same directory, fsync'ed and moved
into place with ``os.replace``, so a crash leaves either the old or the new file
(a temporary file left by a killed save is removed by :func:`remove_stale_temporaries`
when the run starts again). Files get the permissions of the umask, like ``open``.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from gkl.utils.errors import InputError

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
CHECKPOINT_FORMAT = "gkl-train-checkpoint"
CHECKPOINT_VERSION = 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed :func:`atomic_save` left in ``directory``."""
    removed = []
    for tmp in Path(directory).glob(".*.pt.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (tmp file + fsync + os.replace + directory fsync).

    A full disk (``ENOSPC``/``EDQUOT``) raises :class:`InputError` naming the file; the
    previous file at ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(
                f"{path}: no space left on the device while saving "
                f"({error.strerror}); the previous {path.name} is intact"
            ) from None
        if isinstance(error, RuntimeError) and "No space left" in str(error):  # torch's zip writer
            raise InputError(
                f"{path}: no space left on the device while saving; the previous {path.name} is intact"
            ) from None
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
        raise InputError(f"{path}: no checkpoint at this path")
    state = _torch_load(path, map_location=map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a gkl training checkpoint (format {CHECKPOINT_FORMAT!r})")
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise InputError(f"{path}: damaged training checkpoint (missing {', '.join(missing)})")
    return state


_REQUIRED_KEYS = (
    "epoch",
    "model",
    "optimizer",
    "schedule",
    "scaler",
    "objective",
    "rng",
    "best",
    "world_size",
    "settings",
    "config",
)


def _torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` (no code from the file runs); an unreadable,
    truncated or non-tensor file raises :class:`InputError` naming it."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        RuntimeError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        UnicodeDecodeError,
        OSError,
    ) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise InputError(
            f"{path}: cannot read this checkpoint (truncated, damaged or not a weights-only torch file): {first}"
        ) from None


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
