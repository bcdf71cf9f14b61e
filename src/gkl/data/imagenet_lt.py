"""ImageNet-LT: split files ``ImageNet_LT_{train,val,test}.txt`` under ``root``.

Each line is ``<relative image path> <label>``, e.g.
``train/n01440764/n01440764_10026.JPEG 0``, with the image path relative to ``root``.
Class groups (the long-tail convention): many > 100
training images, few < 20, medium otherwise, counted on the train split.

Every image a split file names is checked to exist when the dataset is built, so a
wrong ``root`` or an incomplete copy fails at once (naming the first missing files and
their count) rather than in the middle of an epoch.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace

from gkl.utils.errors import InputError

from .base import InfoDataset
from .imagenet import IMAGENET_INFO, ImageList
from .registry import register_dataset
from .transforms import imagenet_transform

SPLIT_FILES = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}
LAYOUT = (
    "root/ImageNet_LT_train.txt, root/ImageNet_LT_test.txt (and ImageNet_LT_val.txt), lines "
    "'train/n01440764/n01440764_10026.JPEG 0' with image paths relative to root"
)
MANY_THRESHOLD = 100
FEW_THRESHOLD = 20


def read_split_file(root: str, split: str) -> list[tuple[str, int]]:
    """``(absolute path, label)`` pairs listed in ``root/ImageNet_LT_<split>.txt``."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split: expected one of {sorted(SPLIT_FILES)}, got {split!r}")
    path = os.path.join(root, SPLIT_FILES[split])
    if not os.path.isfile(path):
        raise InputError(f"ImageNet-LT split file not found: {path!r}; expected layout {LAYOUT}")
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                raise InputError(
                    f"{path}:{number}: expected '<relative image path> <label >= 0>', got {line.strip()!r}"
                )
            samples.append((os.path.join(root, parts[0]), int(parts[1])))
    if not samples:
        raise InputError(f"{path}: the split file lists no images")
    return samples


def check_images_exist(samples: list[tuple[str, int]], split_file: str, *, show: int = 3) -> None:
    """InputError naming the first ``show`` missing images (and how many are missing) of ``split_file``."""
    missing = [image for image, _ in samples if not os.path.isfile(image)]
    if missing:
        first = ", ".join(missing[:show])
        raise InputError(
            f"{split_file}: {len(missing)} of {len(samples)} listed images are missing "
            f"(first: {first}); image paths are relative to data.root; expected layout {LAYOUT}"
        )


def class_groups(train_labels: list[int], num_classes: int) -> dict[str, list[int]]:
    """Many (> 100 train images) / medium / few (< 20) class indices from training labels."""
    counts = Counter(train_labels)
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for c in range(num_classes):
        n = counts.get(c, 0)
        key = "many" if n > MANY_THRESHOLD else "few" if n < FEW_THRESHOLD else "medium"
        groups[key].append(c)
    return groups


def build_imagenet_lt_split(
    root: str, split: str, *, normalize: bool = True, augment: bool | None = None
) -> InfoDataset:
    """Any ImageNet-LT split (``"train"``, ``"val"``, ``"test"``); groups always come from the train split."""
    train_samples = read_split_file(root, "train")
    samples = train_samples if split == "train" else read_split_file(root, split)
    check_images_exist(samples, os.path.join(root, SPLIT_FILES[split]))
    train_labels = [label for _, label in train_samples]
    num_classes = max(max(train_labels), max(label for _, label in samples)) + 1
    info = replace(
        IMAGENET_INFO, name="imagenet_lt", num_classes=num_classes, class_groups=class_groups(train_labels, num_classes)
    )
    is_train = split == "train"
    augment = is_train if augment is None else augment
    transform = imagenet_transform(train=is_train, augment=augment, normalize=normalize)
    return InfoDataset(
        ImageList(samples, transform),
        info,
        augmentation="imagenet" if (is_train and augment) else "none",
        normalize=normalize,
        image_transform=transform,
    )


@register_dataset(replace(IMAGENET_INFO, name="imagenet_lt"))
def build_imagenet_lt(root: str, train: bool, *, download: bool, normalize: bool, augment: bool) -> InfoDataset:
    """ImageNet-LT train split (``train=True``) or test split (``train=False``)."""
    if download:
        raise InputError("data.download: ImageNet-LT cannot be downloaded automatically; expected layout " + LAYOUT)
    return build_imagenet_lt_split(root, "train" if train else "test", normalize=normalize, augment=augment)
