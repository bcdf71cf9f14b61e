"""Generated (e.g. diffusion-model) CIFAR-sized images stored as an npz, as used by DM-AT."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gkl.utils.errors import InputError

EXPECTED = "an npz with 'image' uint8 of shape (N, 32, 32, 3) and 'label' integer of shape (N,)"


class GeneratedImages(Dataset):
    """Images and labels from ``path`` (npz with ``image`` uint8 N x 32 x 32 x 3, ``label`` int N).

    Items are ``(transform(PIL image), label)``; the default transform gives a
    float tensor ``(3, 32, 32)`` in [0, 1]. ``num_classes`` (optional) bounds the labels.
    """

    def __init__(self, path: str | os.PathLike, *, num_classes: int | None = None, transform=None) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise InputError(f"generated-image file not found: {self.path!r}; expected {EXPECTED}")
        try:
            with np.load(self.path, allow_pickle=False) as data:
                missing = {"image", "label"} - set(data.files)
                if missing:
                    raise InputError(
                        f"{self.path}: missing keys {sorted(missing)} (found {data.files}); expected {EXPECTED}"
                    )
                images, labels = data["image"], data["label"]
        except InputError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise InputError(
                f"{self.path}: cannot read the npz ({type(err).__name__}: {err}); expected {EXPECTED}"
            ) from None
        if images.dtype != np.uint8:
            raise InputError(f"{self.path}: 'image' must be uint8, got {images.dtype}; expected {EXPECTED}")
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise InputError(f"{self.path}: 'image' must have shape (N, 32, 32, 3), got {images.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{self.path}: 'label' must be integer, got {labels.dtype}")
        if labels.shape != (images.shape[0],):
            raise InputError(f"{self.path}: 'label' must have shape ({images.shape[0]},), got {labels.shape}")
        if len(labels) == 0:
            raise InputError(f"{self.path}: the file holds no images")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise InputError(f"{self.path}: labels must be in {bound}, got range [{low}, {high}]")
        self.images = np.ascontiguousarray(images)
        self.labels = labels.astype(np.int64)
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.transform is None:
            image = torch.from_numpy(self.images[index]).permute(2, 0, 1).to(torch.float32).div(255)
        else:
            image = self.transform(Image.fromarray(self.images[index]))
        return image, int(self.labels[index])

    def with_transform(self, transform) -> GeneratedImages:
        """A view sharing the arrays, with a different per-image ``transform``."""
        view = object.__new__(GeneratedImages)
        view.__dict__.update(self.__dict__)
        view.transform = transform
        return view

    def uint8_nchw(self) -> torch.Tensor:
        """All images as a uint8 tensor ``(N, 3, 32, 32)`` (for the in-memory loader)."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous()
