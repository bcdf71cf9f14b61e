"""The model of a run's checkpoint, as ``gkl evaluate`` loads it for every task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from gkl.models import create_model, load_weights
from gkl.utils.errors import InputError


def load_run_model(cfg: Any, path: Path, num_classes: int, *, name: str, weights: str) -> tuple[nn.Module, int | None]:
    """``cfg.model`` with the weights of checkpoint ``path`` (``name`` "best" or "last"; the EMA
    weights of the last checkpoint when ``weights == "ema"``) and the checkpoint's epoch.
    A file that cannot be read or does not match the model is an :class:`InputError`."""
    key = "ema" if (name == "last" and weights == "ema") else "model"
    model = create_model(cfg.model.name, num_classes, **cfg.model.kwargs)
    try:
        contents = load_weights(model, path, key=key)
    except InputError:
        raise
    except ValueError as err:  # the file cannot be read or does not match the model
        raise InputError(str(err)) from err
    epoch = contents.get("epoch") if isinstance(contents, dict) else None
    return model, epoch if isinstance(epoch, int) else None
