"""Strict loading of model weights from the checkpoint formats the project meets.

Accepted file contents (read with ``torch.load(..., weights_only=True)``):

- a bare state_dict (``{name: tensor}``);
- the community CIFAR teacher format ``{"model": state_dict, "epoch": ..., ...}``
  (files named ``<arch>_vanilla/ckpt_epoch_240.pth``);
- our own training checkpoints, dicts with a ``"model"`` entry and possibly an
  ``"ema"`` entry (select it with ``key="ema"``), which may itself be a state_dict
  or a dict holding one under ``"model"`` (the engine's EMA format);
- a ``{"state_dict": state_dict, ...}`` dict, as many other repositories write.

A leading ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (torch.compile)
prefix shared by every key is removed, as is the ``n_averaged`` counter of a
``torch.optim.swa_utils.AveragedModel``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from gkl.utils.errors import InputError

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED_KEYS = 25


def _is_state_dict(obj: object) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _select_state_dict(obj: object, key: str | None, path: Path) -> Mapping[str, torch.Tensor]:
    """Pick the state_dict out of a loaded checkpoint object."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise InputError(f"checkpoint {path}: no entry {key!r}; top-level entries: {found}")
        selected = obj[key]
        if selected is None:
            raise InputError(f"checkpoint {path}: entry {key!r} is empty (None)")
        if _is_state_dict(selected):
            return selected
        # e.g. the engine's EMA entry {"decay": ..., "updates": ..., "model": state_dict}
        if isinstance(selected, Mapping):
            for candidate in ("model", "state_dict"):
                if candidate in selected and _is_state_dict(selected[candidate]):
                    return selected[candidate]
        raise InputError(
            f"checkpoint {path}: entry {key!r} is neither a state_dict (a mapping of names to tensors) "
            f"nor a dict holding one under 'model' or 'state_dict'"
        )
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, Mapping):
        for candidate in ("model", "state_dict"):
            if candidate in obj and _is_state_dict(obj[candidate]):
                return obj[candidate]
    found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
    raise InputError(
        f"checkpoint {path}: expected a state_dict or a dict with a 'model' (or 'state_dict') "
        f"state_dict entry, found {found}"
    )


def _strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP / torch.compile / AveragedModel wrapping from the key names."""
    result = dict(state_dict)
    if "n_averaged" in result and all(k.startswith("module.") for k in result if k != "n_averaged"):
        del result["n_averaged"]
    changed = True
    while changed and result:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in result):
                result = {k[len(prefix) :]: v for k, v in result.items()}
                changed = True
    return result


def _format_keys(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = f", ... and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else ""
    return f"\n  {label} ({len(keys)}): {shown}{more}"


def _read(file: Path) -> Any:
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {file}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or pickled objects other than tensors/containers
        raise InputError(f"checkpoint {file}: could not be read with torch.load(weights_only=True): {err}") from err


def read_state_dict(path: str | os.PathLike[str], *, key: str | None = None) -> Mapping[str, torch.Tensor]:
    """The state_dict stored in ``path`` (chosen as :func:`load_weights` chooses it; key names as stored).

    Raises FileNotFoundError naming ``path`` if there is no such file, :class:`InputError` if it cannot be
    read or holds no state_dict."""
    file = Path(path)
    return _select_state_dict(_read(file), key, file)


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, key: str | None = None) -> Any:
    """Load the weights stored in ``path`` into ``model`` strictly (in place).

    Returns the file's whole contents, so callers can read metadata (e.g. ``"epoch"``)
    without loading the file a second time.

    key: entry of a checkpoint dict to load (e.g. ``"ema"``); by default a bare
        state_dict, else the ``"model"`` (or ``"state_dict"``) entry.

    Raises FileNotFoundError naming ``path`` if there is no such file, and
    :class:`~gkl.utils.errors.InputError` (a ValueError) naming the file if it cannot be read or its
    keys/shapes do not match ``model`` (the message lists missing keys, unexpected keys and shape mismatches).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_weights: model must be a torch.nn.Module, got {type(model).__name__}")
    file = Path(path)
    obj = _read(file)
    state_dict = _strip_wrapper_prefixes(_select_state_dict(obj, key, file))

    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        message = f"checkpoint {file} does not match {type(model).__name__}:"
        if missing:
            message += _format_keys("missing keys", missing)
        if unexpected:
            message += _format_keys("unexpected keys", unexpected)
        if mismatched:
            message += _format_keys("shape mismatches", mismatched)
        raise InputError(message)
    model.load_state_dict(state_dict, strict=True)
    return obj


def load_run_weights(
    model: nn.Module, path: str | os.PathLike[str], *, which: str = "best", weights: str = "raw"
) -> int | None:
    """Load the weights of a gkl run checkpoint into ``model`` (the EMA weights of the ``last``
    checkpoint when ``weights == "ema"``, else its ``model`` entry) and return the checkpoint's
    epoch (None if it has none). A file that cannot be read or does not match is an
    :class:`~gkl.utils.errors.InputError` naming it."""
    key = "ema" if (which == "last" and weights == "ema") else "model"
    try:
        contents = load_weights(model, path, key=key)
    except InputError:
        raise
    except ValueError as err:  # the file cannot be read or does not match the model
        raise InputError(str(err)) from err
    epoch = contents.get("epoch") if isinstance(contents, dict) else None
    return epoch if isinstance(epoch, int) else None
