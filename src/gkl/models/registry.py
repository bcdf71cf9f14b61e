"""The model registry: names -> builders, in the style of timm's ``create_model``.

A family module registers each architecture with :func:`register_model`; users
build one with :func:`create_model`. Every entry records the input it expects
(``"cifar"``, ``"imagenet"``, ``"mnist1d"`` or ``"digits"``) so a caller can
check that a dataset and a model fit together before any work starts.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from torch import nn

InputKind = Literal["cifar", "imagenet", "mnist1d", "digits", "segmentation"]

#: Shape of one input example (no batch dimension) for each input kind.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "cifar": (3, 32, 32),
    "imagenet": (3, 224, 224),
    "mnist1d": (1, 40),
    "digits": (1, 8, 8),
    "segmentation": (3, 473, 473),  # any H x W; dense labels (gkl.models.segmentation)
}

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture: its name, builder and expected input kind."""

    name: str
    builder: ModelBuilder
    input_kind: InputKind


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, input_kind: InputKind) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(num_classes, **kwargs) -> nn.Module`` under ``name``.

    Raises ValueError for an empty or already registered name, or an unknown input kind.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model: name must be a non-empty string, got {name!r}")
    if input_kind not in get_args(InputKind):
        raise ValueError(
            f"register_model({name!r}): input_kind must be one of {list(get_args(InputKind))}, got {input_kind!r}"
        )

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"register_model: a model named {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name=name, builder=builder, input_kind=input_kind)
        return builder

    return decorator


def list_models(input_kind: InputKind | None = None) -> list[str]:
    """Sorted names of the registered models, optionally only those for one input kind."""
    if input_kind is not None and input_kind not in get_args(InputKind):
        raise ValueError(
            f"list_models: input_kind must be one of {list(get_args(InputKind))} or None, got {input_kind!r}"
        )
    return sorted(entry.name for entry in _REGISTRY.values() if input_kind is None or entry.input_kind == input_kind)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises ValueError listing the known ones."""
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry
    known = list_models()
    lowered = {known_name.lower(): known_name for known_name in known}
    suggestions = difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(lowered[s]) for s in suggestions)}?" if suggestions else ""
    raise ValueError(f"unknown model name {name!r}.{hint} Known models: {', '.join(known)}")


def model_input_kind(name: str) -> InputKind:
    """The input kind (``"cifar"``, ``"imagenet"``, ``"mnist1d"``, ``"digits"``) model ``name`` expects."""
    return get_model_entry(name).input_kind


def model_input_shape(name: str) -> tuple[int, ...]:
    """Shape of one input example (without batch dimension) for model ``name``."""
    return INPUT_SHAPES[model_input_kind(name)]


def create_model(
    name: str,
    num_classes: int,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    checkpoint_key: str | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build registered model ``name`` with ``num_classes`` outputs; ``forward(x)`` returns logits.

    checkpoint: optional weights file, loaded strictly by :func:`gkl.models.load_weights`
        (``checkpoint_key`` selects an entry such as ``"ema"``).
    kwargs: architecture options passed to the builder (e.g. ``activation`` for robust WRNs).
    """
    entry = get_model_entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"create_model({name!r}): num_classes must be a positive int, got {num_classes!r}")
    if checkpoint_key is not None and checkpoint is None:
        raise ValueError(f"create_model({name!r}): checkpoint_key={checkpoint_key!r} given without a checkpoint")
    model = entry.builder(num_classes, **kwargs)
    if checkpoint is not None:
        from gkl.models.checkpoint import load_weights

        load_weights(model, checkpoint, key=checkpoint_key)
    return model
