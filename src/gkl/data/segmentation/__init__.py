"""Semantic-segmentation data: ADE20K, Cityscapes, Pascal VOC 2012 readers, the bundled
digit-scenes task and paired image/label transforms.

Items are ``(image float (3, H, W), label int64 (H, W))`` with 255 = ignore. Registered in
the dataset registry as ``ade20k``, ``cityscapes``, ``voc2012`` and ``digit_scenes`` (input
kind ``"segmentation"``); :func:`build_segmentation_dataset` takes the recipe's crop size
and augmentation ranges.
"""

from __future__ import annotations

from gkl.data.registry import register_dataset

from .base import IGNORE_INDEX, SegmentationFiles, check_label, read_image, read_label
from .digit_scenes import DIGIT_SCENES_INFO, DigitScenes, make_scenes
from .folders import ADE20K_INFO, CITYSCAPES_INFO, VOC_INFO, ade20k_label_map, build_folder_dataset
from .transforms import Compose, train_transform

SEGMENTATION_DATASETS = ("ade20k", "cityscapes", "voc2012", "digit_scenes")


def build_segmentation_dataset(
    name: str,
    root: str,
    train: bool,
    *,
    normalize: bool = True,
    augment: bool | None = None,
    crop_size: int | None = None,
    scale: tuple[float, float] = (0.5, 2.0),
    rotate: float = 10.0,
    blur: bool = True,
    flip: bool = True,
    voc_aug: bool = False,
    seed: int = 0,
    size: int | None = None,
):
    """One split of a segmentation dataset; ``augment=None`` = augment the training split only.

    digit_scenes ignores root and every augmentation (scenes are generated; ``seed`` and
    ``size`` choose them; mirrored digits would change their meaning).
    """
    augment = bool(train) if augment is None else bool(augment)
    if name == "digit_scenes":
        return DigitScenes(train, seed=seed, normalize=normalize, size=size)
    if name not in SEGMENTATION_DATASETS:
        raise ValueError(f"unknown segmentation dataset {name!r}; expected one of {list(SEGMENTATION_DATASETS)}")
    return build_folder_dataset(
        name,
        root,
        train,
        normalize=normalize,
        augment=augment,
        crop_size=crop_size,
        scale=scale,
        rotate=rotate,
        blur=blur,
        flip=flip,
        voc_aug=voc_aug,
    )


def _registry_builder(name: str):
    def build(root: str, train: bool, *, download: bool, normalize: bool, augment: bool):
        return build_segmentation_dataset(name, root, train, normalize=normalize, augment=augment)

    build.__doc__ = f"{name} with the default recipe transforms (see gkl.data.segmentation)."
    return build


for _info in (ADE20K_INFO, CITYSCAPES_INFO, VOC_INFO, DIGIT_SCENES_INFO):
    register_dataset(_info)(_registry_builder(_info.name))

__all__ = [
    "ADE20K_INFO",
    "CITYSCAPES_INFO",
    "Compose",
    "DIGIT_SCENES_INFO",
    "DigitScenes",
    "IGNORE_INDEX",
    "SEGMENTATION_DATASETS",
    "SegmentationFiles",
    "VOC_INFO",
    "ade20k_label_map",
    "build_folder_dataset",
    "build_segmentation_dataset",
    "check_label",
    "make_scenes",
    "read_image",
    "read_label",
    "train_transform",
]
