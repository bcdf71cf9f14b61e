"""ImageNet as an image folder: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch.utils.data import Dataset

from gkl.utils.errors import InputError

from .base import InfoDataset
from .registry import DatasetInfo, register_dataset
from .transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_transform

IMAGENET_LAYOUT = "root/train/<class>/<image> and root/val/<class>/<image> (one subfolder per class, e.g. n01440764)"


class ImageList(Dataset):
    """Map-style dataset over ``(path, label)`` pairs, images opened as RGB and passed through ``transform``."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform) -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        from torchvision.datasets.folder import default_loader

        return self.transform(default_loader(path)), label


def class_folders(folder: str) -> list[str]:
    """Sorted names of the subfolders of ``folder`` (the classes)."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


IMAGENET_INFO = DatasetInfo("imagenet", 1000, "imagenet", (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD)


@register_dataset(IMAGENET_INFO)
def build_imagenet(root: str, train: bool, *, download: bool, normalize: bool, augment: bool) -> InfoDataset:
    """ImageNet folder split; class indices follow the sorted class folders of ``root/train``."""
    if download:
        raise InputError("data.download: ImageNet cannot be downloaded automatically; place it as " + IMAGENET_LAYOUT)
    split_dir = os.path.join(root, "train" if train else "val")
    if not os.path.isdir(split_dir):
        raise InputError(f"ImageNet split folder not found: {split_dir!r}; expected layout {IMAGENET_LAYOUT}")
    train_dir = os.path.join(root, "train")
    classes = class_folders(train_dir if os.path.isdir(train_dir) else split_dir)
    if not classes:
        raise InputError(f"no class subfolders in {split_dir!r}; expected layout {IMAGENET_LAYOUT}")
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    samples = make_dataset(
        split_dir, {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS, allow_empty=True
    )
    if not samples:
        raise InputError(f"no images found under {split_dir!r}; expected layout {IMAGENET_LAYOUT}")
    info = replace(IMAGENET_INFO, num_classes=len(classes), class_names=tuple(classes))
    transform = imagenet_transform(train=train, augment=augment, normalize=normalize)
    return InfoDataset(
        ImageList(samples, transform),
        info,
        augmentation="imagenet" if (train and augment) else "none",
        normalize=normalize,
        image_transform=transform,
    )
