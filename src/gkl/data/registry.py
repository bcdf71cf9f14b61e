"""Dataset registry: names -> metadata (`DatasetInfo`) and builders.

Builders are registered by the dataset modules (``cifar``, ``imagenet``, ...);
`dataset_info` answers from static metadata without touching the disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch.utils.data import Dataset

InputKind = Literal["cifar", "imagenet", "digits", "mnist1d", "segmentation"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset's inputs and classes.

    ``input_shape`` is ``(C, H, W)`` for images and ``(C, L)`` for 1-D signals.
    ``mean``/``std`` are the per-channel statistics used for normalisation of
    inputs in [0, 1]. ``class_groups`` maps ``"many"``/``"medium"``/``"few"`` to
    class indices (ImageNet-LT: many > 100 training images, few < 20).
    """

    name: str
    num_classes: int
    input_kind: InputKind
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None
    class_groups: dict[str, list[int]] | None = None


Builder = Callable[..., Dataset]


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(info: DatasetInfo) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(root, train, *, download, normalize, augment)`` under ``info.name``."""

    def wrap(builder: Builder) -> Builder:
        if info.name in _REGISTRY:
            raise ValueError(f"dataset {info.name!r} is already registered")
        _REGISTRY[info.name] = _Entry(info, builder)
        return builder

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by `build_dataset`, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"name: unknown dataset {name!r}; expected one of {list_datasets()}")
    return _REGISTRY[name]


def dataset_info(name: str) -> DatasetInfo:
    """Static metadata of dataset ``name`` (no data is read).

    For folder datasets (``imagenet``, ``imagenet_lt``) this gives the canonical
    1000 classes; the ``.info`` of a built dataset reflects the classes found on disk.
    """
    return _entry(name).info


def build_dataset(
    name: str,
    root: str | os.PathLike,
    train: bool,
    *,
    download: bool = False,
    normalize: bool = True,
    augment: bool | None = None,
) -> Dataset:
    """Build split ``train``/test of dataset ``name`` stored under ``root``.

    Items are ``(float image tensor, int label)``; the result has ``.info``.
    ``normalize=False`` keeps inputs in [0, 1]. ``augment=None`` means "the
    recipe augmentation on the training split, none on the test split".
    """
    entry = _entry(name)
    if augment is None:
        augment = bool(train)
    return entry.builder(os.fspath(root), bool(train), download=download, normalize=normalize, augment=bool(augment))
