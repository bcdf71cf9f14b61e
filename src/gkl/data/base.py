"""The dataset wrapper every builder returns, and the in-memory view of a split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset

from gkl.utils.errors import InputError

from .registry import DatasetInfo

Augmentation = Literal["none", "crop_flip", "imagenet"]


@dataclass(frozen=True)
class MemorySplit:
    """A whole split as tensors, for the device-side loader.

    ``images`` is uint8 ``(N, C, H, W)`` (scaled by 1/255) or float ``(N, C, ...)``
    already in [0, 1]. ``mean``/``std`` are ``None`` when the split is not normalised.
    ``augmentation`` is ``"none"`` or ``"crop_flip"`` (random crop with zero padding
    ``padding`` followed by a horizontal flip with probability 1/2).
    """

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    augmentation: Augmentation
    padding: int = 4

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("MemorySplit: mean and std must both be given or both be None")


class InfoDataset(Dataset):
    """Wraps a map-style dataset of ``(image, label)`` and carries its ``DatasetInfo``.

    ``augmentation`` names the training transform that was applied per image;
    ``image_transform`` (when set) maps a PIL image to the model input, so other
    images (e.g. generated ones) can go through the same pipeline; ``memory``
    (when set) returns the split as a `MemorySplit` for ``in_memory`` loading.
    """

    def __init__(
        self,
        base: Dataset,
        info: DatasetInfo | None,  # None: a wrapped dataset that carries no DatasetInfo
        *,
        augmentation: Augmentation,
        normalize: bool,
        image_transform: Callable | None = None,
        memory: Callable[[], MemorySplit] | None = None,
    ) -> None:
        self.base = base
        self.info = info
        self.augmentation = augmentation
        self.normalize = normalize
        self.image_transform = image_transform
        self._memory = memory

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return image, int(label)

    @property
    def supports_in_memory(self) -> bool:
        return self._memory is not None

    def memory_split(self) -> MemorySplit:
        """The split as tensors; InputError when the dataset cannot be held/augmented in memory."""
        if self._memory is None:
            raise InputError(
                f"data.in_memory: in-memory loading is not supported for dataset {getattr(self.info, 'name', None)!r} "
                f"(its per-image transform {self.augmentation!r} cannot be reproduced on whole batches); "
                "use data.in_memory=false"
            )
        return self._memory()


class TensorPairs(Dataset):
    """Map-style dataset over float inputs ``(N, ...)`` and labels ``(N,)``, normalised per item."""

    def __init__(
        self, inputs: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
    ) -> None:
        if (mean is None) != (std is None):
            raise ValueError("mean and std must both be given or both be None")
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(f"inputs/labels: lengths differ ({inputs.shape[0]} vs {labels.shape[0]})")
        self.inputs = inputs
        self.labels = labels
        view = (-1,) + (1,) * (inputs.dim() - 2)
        self._mean = None if mean is None else torch.tensor(mean, dtype=inputs.dtype).view(view)
        self._std = None if std is None else torch.tensor(std, dtype=inputs.dtype).view(view)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.inputs[index]
        if self._mean is not None and self._std is not None:  # both or neither (__init__)
            x = x.sub(self._mean).div(self._std)
        return x, int(self.labels[index])
