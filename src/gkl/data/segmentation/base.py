"""File-backed segmentation datasets: a list of (image file, label file) pairs, checked on read.

Items are ``(image, label)``: a float tensor (3, H, W) (normalised, or in [0, 1] with
``normalize=False``) and an int64 tensor (H, W) of class indices in [0, C) or the ignore
index 255. A label file whose values fall outside [0, C) ∪ {255} (after the dataset's
mapping), an image/label size mismatch, or a missing file is an :class:`InputError` naming
the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gkl.data.registry import DatasetInfo
from gkl.utils.errors import InputError

from .transforms import IMAGENET_MEAN_255, IMAGENET_STD_255, Compose, eval_transform, train_transform

IGNORE_INDEX = 255
LabelMap = Callable[[np.ndarray], np.ndarray]


def read_image(path: str) -> torch.Tensor:
    """RGB image file -> float tensor (3, H, W) in [0, 255]; unreadable file -> InputError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"image file {path}: cannot be read as an image ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float()


def read_label(path: str) -> np.ndarray:
    """Single-channel (or palette-indexed) PNG -> int64 array (H, W) of raw values."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise InputError(f"label file {path}: expected a single-channel or palette PNG, got mode {img.mode}")
            return np.asarray(img, dtype=np.int64).copy()
    except FileNotFoundError:
        raise InputError(f"label file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"label file {path}: cannot be read as an image ({err})") from None


def check_label(label: np.ndarray, num_classes: int, path: str) -> None:
    """Every value must be a class index in [0, num_classes) or 255."""
    bad = (label != IGNORE_INDEX) & ((label < 0) | (label >= num_classes))
    if bad.any():
        values = sorted(set(np.unique(label[bad]).tolist()))[:5]
        raise InputError(
            f"label file {path}: values {values} outside [0, {num_classes}) and not {IGNORE_INDEX} (ignore)"
        )


class SegmentationFiles(Dataset):
    """Map-style dataset over (image, label) file pairs with a raw-label mapping and a paired transform."""

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        info: DatasetInfo,
        *,
        transform: Compose,
        label_map: LabelMap | None = None,
    ) -> None:
        if not pairs:
            raise InputError(f"dataset {info.name!r}: no image/label pairs found")
        for image_path, label_path in pairs:
            for path in (image_path, label_path):
                if not os.path.isfile(path):
                    raise InputError(f"dataset {info.name!r}: file not found: {path}")
        self.pairs = list(pairs)
        self.info = info
        self.transform = transform
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Untransformed ``(image in [0, 255], label)`` of item ``index``, checked."""
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        raw = read_label(label_path)
        if tuple(raw.shape) != tuple(image.shape[1:]):
            raise InputError(
                f"label file {label_path}: size {raw.shape[1]}x{raw.shape[0]} differs from its "
                f"image {image_path} ({image.shape[2]}x{image.shape[1]})"
            )
        label = self.label_map(raw) if self.label_map is not None else raw
        check_label(label, self.info.num_classes, label_path)
        return image, torch.from_numpy(label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        return self.transform(image, label)


def make_transform(
    train: bool,
    augment: bool,
    normalize: bool,
    crop_size: int,
    *,
    scale: tuple[float, float] = (0.5, 2.0),
    rotate: float = 10.0,
    blur: bool = True,
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN_255,
    std: Sequence[float] = IMAGENET_STD_255,
) -> Compose:
    """Training pipeline when ``augment``, else the whole image; values / 255 when not normalised."""
    if not normalize:  # keep [0, 1] inputs
        mean, std = (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)
    if augment:
        return train_transform(crop_size, scale=scale, rotate=rotate, blur=blur, flip=flip, mean=mean, std=std)
    return eval_transform(mean=mean, std=std)
